"""The search panel and the attachment chip, on real saved chats and real files (offscreen)."""

import itertools
import time

import pytest

from desklm.bench.search import make_chats
from desklm.engine.chat.attachments import read_attachment
from desklm.engine.store.files import ConversationStore
from desklm.engine.store.search import SearchHit, SearchIndex
from desklm.ui.attachment_chip import AttachmentBar, AttachmentChip
from desklm.ui.panels.search_panel import SearchPanel, rich_snippet


@pytest.fixture
def store(tmp_path):
    st = ConversationStore(tmp_path / "conversations")
    st.save(
        {
            "id": "c1",
            "title": "Sorting <b>lists</b>",
            "created": 1.0,
            "settings": {},
            "messages": [
                {"id": "m1", "role": "user", "content": "How do I sort a list?"},
                {
                    "id": "m2",
                    "role": "assistant",
                    "content": "Use sorted(x).",
                    "alternatives": [
                        {"id": "m0", "role": "assistant", "content": "Try x.sort() in place."}
                    ],
                    "alt_index": 1,
                },
            ],
        }
    )
    return st


@pytest.fixture
def panel(qtbot, store, tmp_path):
    p = SearchPanel(SearchIndex(store, path=tmp_path / "index.sqlite3"), delay_ms=10)
    qtbot.addWidget(p)
    p.show()
    yield p
    p.shutdown()


def test_typing_shows_results_and_enter_opens_the_match(qtbot, panel):
    with qtbot.waitSignal(panel.searched, timeout=10_000) as got:
        qtbot.keyClicks(panel.box, "sort")
    assert got.args[0] == "sort" and got.args[1] >= 2
    assert panel.results.count() == got.args[1] and panel.results.isVisible()
    assert "match" in panel.status.text()
    with qtbot.waitSignal(panel.openRequested, timeout=5_000) as opened:
        qtbot.keyClick(panel.box, "\r")
    conv_id, msg_id = opened.args
    assert conv_id == "c1" and msg_id in ("m0", "m1", "m2", "")  # "sort" finds "sorted"


def test_an_older_version_is_labelled_and_html_is_escaped(qtbot, panel):
    with qtbot.waitSignal(panel.searched, timeout=10_000):
        panel.box.setText("place")
    item = panel.results.item(0)
    label = panel.results.itemWidget(item)
    assert "older version" in label.text() and "<b><u>place</u></b>" in label.text()
    with qtbot.waitSignal(panel.searched, timeout=10_000):
        panel.box.setText("lists")
    texts = [
        panel.results.itemWidget(panel.results.item(i)).text() for i in range(panel.results.count())
    ]
    assert any("Sorting &lt;b&gt;" in t for t in texts)


def test_only_the_newest_query_is_shown_and_no_match_says_so(qtbot, panel):
    with qtbot.waitSignal(panel.searched, timeout=10_000) as got:
        for text in ("s", "so", "sor", "zzz-nothing"):
            panel.box.setText(text)
    assert got.args[0] == "zzz-nothing" and got.args[1] == 0
    assert panel.status.text() == "No matches" and not panel.results.isVisible()
    panel.box.setText("")
    qtbot.waitUntil(lambda: not panel.status.isVisible(), timeout=5_000)


def test_search_keeps_the_ui_responsive_on_2000_chats(qtbot, tmp_path):
    root = tmp_path / "big"
    make_chats(root, 2000)
    p = SearchPanel(
        SearchIndex(ConversationStore(root), path=tmp_path / "big.sqlite3"), delay_ms=10
    )
    qtbot.addWidget(p)
    p.show()
    try:
        # the first build runs in the background; the UI thread is never blocked meanwhile
        ticks = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            qtbot.wait(10)
            ticks.append(time.perf_counter())
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) < 0.5
        with qtbot.waitSignal(p.searched, timeout=60_000) as got:
            p.box.setText("python sort")
        print(f"\nsearch in the panel: {got.args[2] * 1000:.1f} ms, {got.args[1]} hits")
        assert got.args[1] > 0
    finally:
        p.shutdown()


def test_attachment_chips(qtbot, tmp_path, engine):
    f = tmp_path / "notes.md"
    f.write_text("# Notes\nSome notes to attach.\n", "utf-8")
    a = read_attachment(f, engine.tokenize, (1000, 1500, 2048))
    chip = AttachmentChip(a, 2048)
    qtbot.addWidget(chip)
    assert chip.label.text().startswith("notes.md · ") and f"{a.tokens} tokens" in chip.label.text()
    assert chip.property("fit") == "fits" and "fits the context" in chip.fit_label.toolTip()
    tight = read_attachment(f, engine.tokenize, (1, 1500, 2048))
    tchip = AttachmentChip(tight, 2048)
    qtbot.addWidget(tchip)
    assert tchip.property("fit") == "tight" and "dropped" in tchip.fit_label.toolTip()
    bar = AttachmentBar()
    qtbot.addWidget(bar)
    bar.show()
    with qtbot.waitSignal(bar.changed) as got:
        c = bar.add(a, 2048)
    assert got.args == [1] and bar.attachments() == [a] and bar.isVisible()
    with qtbot.waitSignal(bar.changed) as got:
        c.remove.click()
    assert got.args == [0] and bar.attachments() == [] and not bar.isVisible()


def test_rich_snippet_escapes_everything_but_the_marks():
    hit = SearchHit("c", "m", "user", "t", "a <script> b", [(2, 10)], True)
    assert rich_snippet(hit) == "a <b><u>&lt;script&gt;</u></b> b"


def test_revealing_the_oldest_message_of_a_long_chat_draws_it_in_one_go(qtbot):
    import time as _time

    from desklm.bench import engine as bench
    from desklm.ui.chat_view import ChatView

    v = ChatView()
    qtbot.addWidget(v)
    v.resize(800, 600)
    v.show()
    msgs = [m.to_dict() for m in bench.synthetic_history(2000)]
    v.show_conversation(msgs, "Model")
    assert v.pending_older > 1000  # the newest are drawn first, the rest on demand
    t0 = _time.perf_counter()
    assert v.reveal(msgs[0]["id"])
    took = _time.perf_counter() - t0
    assert v.pending_older == 0 and v.textCursor().selectedText().startswith("You")
    # generous: laid out once it takes well under a second; laid out per message, 22 s
    assert took < 10.0, took


def test_scrolling_to_the_top_of_a_long_chat_renders_it_in_few_slices(qtbot):
    import time as _time

    from desklm.bench import engine as bench
    from desklm.ui.chat_view import ChatView

    v = ChatView()
    qtbot.addWidget(v)
    v.resize(800, 600)
    v.show()
    v.show_conversation([m.to_dict() for m in bench.synthetic_history(2000)], "Model")
    t0 = _time.perf_counter()
    while v.pending_older and _time.perf_counter() - t0 < 60:
        v.verticalScrollBar().setValue(0)  # a reader going up
        qtbot.wait(10)
    assert v.pending_older == 0
    # each slice is laid out once: ~20 slices; laid out per message it took ~1,000 slices
    # and 24 s. Generous bound: a hang or the quadratic path fails, a busy machine does not.
    assert len(v.slice_log) < 200, len(v.slice_log)
    assert _time.perf_counter() - t0 < 15
