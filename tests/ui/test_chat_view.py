"""The transcript on its own (offscreen): message blocks, code, reasoning, themes, and the lazy
opening of a long chat measured with a heartbeat timer."""

from __future__ import annotations

import itertools
import time

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QGuiApplication

from desklm.ui import theme
from desklm.ui.chat_view import ChatView, code_blocks, segments, split_reasoning

REPLY = (
    "<think>The user wants a reversed string. Slicing.</think>\n"
    "Here:\n\n```python\ndef rev(s):\n    return s[::-1]\n```\n\nDone."
)


def test_split_reasoning_and_segments():
    assert split_reasoning("<think>a b</think>\n\nanswer") == ("a b", "answer")
    assert split_reasoning("only reasoning</think>answer") == ("only reasoning", "answer")
    assert split_reasoning("<think>still thinking") == ("still thinking", "")
    assert split_reasoning("plain") == (None, "plain")
    # the engine's one split: a tag the answer talks about is no reasoning, and its code stays
    assert split_reasoning("Use `<think>` tags.") == (None, "Use `<think>` tags.")
    assert code_blocks("See:\n```\n<think>\n```\n") == ["<think>"]
    segs = segments("a\n\n```py\nx = 1\n```\nb")
    assert segs == [("md", "", "a\n\n"), ("code", "py", "x = 1"), ("md", "", "b")]
    assert code_blocks(REPLY) == ["def rev(s):\n    return s[::-1]"]


def make(qtbot) -> ChatView:
    v = ChatView()
    qtbot.addWidget(v)
    v.resize(700, 500)
    return v


def test_reasoning_is_collapsed_and_the_answer_stays_visible(qtbot):
    v = make(qtbot)
    v.add_user("Reverse a string")
    v.begin_reply("M")
    for ch in REPLY:
        v.append_stream(ch)
    v.flush()
    assert "Thinking" not in v.toPlainText() or "Done" in v.toPlainText()
    v.finish_reply(REPLY, {"completion_tokens": 9, "finish_reason": "stop"})
    text = v.toPlainText()
    assert "Done." in text and "return s[::-1]" in text  # the answer after </think>
    assert "Slicing." not in text and "Reasoning (" in text  # collapsed
    v.anchorClicked.emit(QUrl("think:0"))
    assert "Slicing." in v.toPlainText() and "Done." in v.toPlainText()
    v.anchorClicked.emit(QUrl("think:0"))
    assert "Slicing." not in v.toPlainText()
    assert v.shown == [("user", "Reverse a string"), ("assistant", REPLY)]


def test_thinking_while_streaming_then_answer(qtbot):
    v = make(qtbot)
    v.begin_reply("M")
    v.append_stream("<think>hmm let me see")
    v.flush()
    assert "Thinking" in v.toPlainText() and "hmm" not in v.toPlainText()
    v.append_stream("</think>The answer is 4.")
    v.flush()
    assert "The answer is 4." in v.toPlainText() and "Thinking" not in v.toPlainText()


def test_code_is_highlighted_and_copied(qtbot):
    v = make(qtbot)
    v.begin_reply("M")
    v.finish_reply(REPLY, {})
    doc = v.document()
    pos = v.toPlainText().index("def rev")
    block = doc.findBlock(pos)
    colours = {f.format.foreground().color().name() for f in block.layout().formats()} | {
        it.fragment().charFormat().foreground().color().name() for it in block
    }
    assert len(colours) >= 2  # more than one colour on the line: highlighted
    assert block.charFormat().fontFixedPitch()
    v.anchorClicked.emit(QUrl("code:0:0"))
    assert QGuiApplication.clipboard().text() == "def rev(s):\n    return s[::-1]"


def test_both_themes_render_with_their_own_colours(qtbot):
    v = make(qtbot)
    v.add_user("hello")
    try:
        theme.set_mode("light")
        light = v.document().rootFrame().childFrames()[0].frameFormat().background().color()
        theme.set_mode("dark")
        dark = v.document().rootFrame().childFrames()[0].frameFormat().background().color()
    finally:
        theme.set_mode("system")
    assert light.name() == theme.LIGHT.user_bubble and dark.name() == theme.DARK.user_bubble
    assert "hello" in v.toPlainText()


def test_opening_5000_messages_never_stalls_the_ui(qtbot):
    v = make(qtbot)
    v.show()
    msgs = []
    for i in range(2500):
        msgs.append(
            {"role": "user", "content": f"Question {i}: what about item {i}?", "created": 1.7e9 + i}
        )
        msgs.append(
            {
                "role": "assistant",
                "content": f"Answer {i}: **item {i}** is fine.\n\n"
                "```python\nprint(" + str(i) + ")\n```",
                "created": 1.7e9 + i,
                "stats": {"completion_tokens": 12, "finish_reason": "stop"},
            }
        )
    beats: list[float] = []
    hb = QTimer()
    hb.setInterval(5)
    hb.timeout.connect(lambda: beats.append(time.perf_counter()))
    hb.start()
    qtbot.wait(50)
    t0 = time.perf_counter()
    v.show_conversation(msgs, "M")
    call = time.perf_counter() - t0
    qtbot.wait(1500)
    hb.stop()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    stall = max(max(gaps), call)
    print(
        f"\nopen 5,000 messages: show_conversation returned in {call * 1000:.0f} ms; "
        f"longest event-loop stall {stall * 1000:.0f} ms; rendered "
        f"{len(v.items) - v.pending_older} of {len(v.items)}"
    )
    assert len(v.shown) == 5000 and v.replies[-1].startswith("Answer 2499")
    assert "Answer 2499" in v.toPlainText()
    assert v.pending_older > 4000  # the rest waits for the user to scroll up
    assert stall < 0.25
    # scrolling to the top renders older ones, a slice at a time
    before = v.pending_older
    v.verticalScrollBar().setValue(0)
    qtbot.waitUntil(lambda: v.pending_older < before, timeout=2000)
    # Copy on an old reply copies that reply
    v.anchorClicked.emit(QUrl(f"copy:{len(v.replies) - 1}"))
    assert QGuiApplication.clipboard().text() == msgs[-1]["content"]


def test_theme_switch_reaches_every_widget_and_outlives_deleted_ones(qtbot):
    import gc

    from desklm.engine.monitor import NA
    from desklm.engine.settings import Settings
    from desklm.ui.panels.conversations import ConversationList
    from desklm.ui.panels.gauges import GaugePanel
    from desklm.ui.panels.settings_panel import SettingsPanel
    from desklm.ui.welcome import WelcomeWidget

    made = [
        ChatView(),
        ConversationList(),
        GaugePanel(),
        SettingsPanel(Settings()),
        WelcomeWidget(free=(8 * 2**30, NA), cores=4),
    ]
    made[-1].shutdown()
    for w in made:
        w.deleteLater()
    qtbot.wait(10)
    del made
    gc.collect()
    keep = SettingsPanel(Settings())
    qtbot.addWidget(keep)
    try:
        theme.set_mode("dark")  # must not call into the deleted ones
        assert QGuiApplication.palette().base().color().name() == theme.DARK.base
        assert theme.DARK.warn in keep.marks["n_ctx"].styleSheet()
    finally:
        theme.set_mode("system")


def test_an_abandoned_reply_keeps_its_text_and_offers_no_copy(qtbot):
    v = make(qtbot)
    v.begin_reply("M")
    v.append_stream("Half an ans")
    v.flush()
    v.abandon_reply()
    v.add_notice("Not sent: the model stopped", "#e05050")
    assert not v.streaming and v.replies == [] and v.shown == []
    v.rerender()  # as after a theme change
    text = v.toPlainText()
    assert "Half an ans" in text and "Copy" not in text and "Not sent" in text
