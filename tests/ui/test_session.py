"""A user's whole session in the real window (issue 21), with what a person would see checked
after every step: the newest message in view (the transcript follows unless scrolled up), the
gauges from the reply just made, one notice per fact, no setting lost, and nothing in the saved
history that was not sent.

Real everything: the embedded model, a real ``llama_cpp.server`` (started, then killed), the
window's own OpenAI-compatible server called with the ``openai`` client. Replies are short
(max_tokens 8) so the session stays around a minute or two on two cores.
"""

from __future__ import annotations

import json

import openai
from PySide6.QtWidgets import QApplication

from desklm.engine import Connection, typed_text
from desklm.ui.controller import State
from desklm.ui.dialogs.connect_dialog import ChosenConnection
from tests.remote_fixtures import start_llama_server, stop_server
from tests.ui.conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, send_and_wait, synced_with


def settle(qtbot, ms: int = 60) -> None:
    qtbot.wait(ms)
    QApplication.processEvents()


def at_rest(qtbot, w) -> None:
    qtbot.waitUntil(
        lambda: w.controller.state in (State.IDLE, State.NO_MODEL), timeout=REPLY_TIMEOUT_MS
    )
    settle(qtbot)


class Seen:
    """What the person at the window sees, checked the same way after every step."""

    def __init__(self, qtbot, w) -> None:
        self.qtbot, self.w = qtbot, w

    def newest_in_view(self, step: str) -> None:
        w = self.w
        settle(self.qtbot)
        sb = w.chat.verticalScrollBar()
        assert w.chat.follow, step
        assert sb.value() == sb.maximum(), f"{step}: not at the bottom"
        msgs = [it for it in w.chat.items if it.kind in ("user", "assistant")]
        if msgs:
            r = w.chat.item_rect(msgs[-1])
            assert r.bottom() > 0 and r.top() < w.chat.viewport().height(), step

    def gauges_from(self, result, step: str) -> None:
        g, s = self.w.gauges, result.stats
        assert g.tps.detail == "last reply", step
        assert g.tps.value_text == (
            "—" if s.gen_tokens_per_s is None else f"{s.gen_tokens_per_s:.1f}"
        ), step
        if s.n_ctx:
            assert g.ctx.value_text == f"{s.context_used:,} / {s.n_ctx:,}", step

    def one_notice_per_fact(self, step: str) -> None:
        texts = self.w.notices.texts()
        assert len(texts) == len(set(texts)), f"{step}: {texts}"
        keys = self.w.notices.notice_keys()
        assert len(keys) == len(set(keys)), f"{step}: {keys}"

    def history_is_what_was_sent(self, step: str) -> None:
        """The chat on disk is the chat on screen: same messages, none empty."""
        w = self.w
        session = w.controller.session
        if session.store is None or not session.conversation.messages:
            return
        rec = json.loads(session.store.path(session.conv_id).read_text("utf-8"))
        disk = [(m["role"], m["content"]) for m in rec["messages"]]
        screen = [(it.kind, it.text) for it in w.chat.items if it.kind in ("user", "assistant")]
        assert [r for r, _ in disk] == [r for r, _ in screen], step
        assert all(c.strip() for r, c in disk if r == "user"), f"{step}: an empty message"
        for (r, c), (_r2, shown) in zip(disk, screen, strict=True):
            assert r != "user" or c == shown, f"{step}: {c!r} on disk, {shown!r} on screen"
        typed = [typed_text(c) for r, c in disk if r == "user"]
        assert all(t.strip() for t in typed), f"{step}: a message with nothing typed"

    def all(self, step: str, result=None) -> None:
        self.newest_in_view(step)
        if result is not None:
            self.gauges_from(result, step)
        self.one_notice_per_fact(step)
        at_rest(self.qtbot, self.w)
        self.history_is_what_was_sent(step)


def test_a_whole_session(make_window, qtbot, model_path, tmp_path):
    w = make_window(max_tokens=8, n_ctx=2048, temperature=0.8)
    w.resize(1600, 1000)
    w.show()
    seen = Seen(qtbot, w)

    # ten questions
    for i in range(10):
        r = send_and_wait(qtbot, w, f"Question {i + 1}: name one animal.")
        seen.all(f"question {i + 1}", r)
    first_chat = w.controller.session.conv_id

    # a live setting (the next reply is longer), then stop one mid-reply
    with qtbot.waitSignal(
        w.settingsSynced, timeout=REPLY_TIMEOUT_MS, check_params_cb=synced_with(max_tokens=200)
    ):
        w.controller.apply_settings({"max_tokens": 200})
    w.firstToken.connect(w.stop)
    r = send_and_wait(qtbot, w, "Tell me a long story about a lighthouse.")
    w.firstToken.disconnect(w.stop)
    assert r.stats.finish_reason == "cancelled"
    seen.all("stopped", r)
    with qtbot.waitSignal(
        w.settingsSynced, timeout=REPLY_TIMEOUT_MS, check_params_cb=synced_with(max_tokens=8)
    ):
        w.controller.apply_settings({"max_tokens": 8})

    # queue one while a reply streams: it is sent when the model is free
    replies = []
    w.replyFinished.connect(replies.append)
    w.submit("First of two.")
    w.submit("Second, queued.")
    assert w.queue_label.isVisible() and "Second, queued." in w.queue_label.text()
    qtbot.waitUntil(lambda: len(replies) == 2, timeout=REPLY_TIMEOUT_MS)
    w.replyFinished.disconnect(replies.append)
    assert not w.queue_label.isVisible()
    seen.all("queued", replies[-1])
    assert w.chat.items[-2].text == "Second, queued."

    # regenerate (the hover bar on the last reply): streams, versions, gauges
    w.chat.hover(w.chat.items[-1])
    with qtbot.waitSignal(w.replyFinished, timeout=REPLY_TIMEOUT_MS) as done:
        w.chat.action_bar.buttons["Regenerate"].click()
    qtbot.waitUntil(lambda: "2/2" in w.chat.toPlainText(), timeout=REPLY_TIMEOUT_MS)
    seen.all("regenerated", done.args[0])

    # edit the last question and resend
    w.chat.hover(w.chat.items[-2])
    w.chat.action_bar.buttons["Edit"].click()
    assert w.input.toPlainText() == "Second, queued."
    w.input.setPlainText("Second, edited.")
    with qtbot.waitSignal(w.replyFinished, timeout=REPLY_TIMEOUT_MS) as done:
        w.input.submit()
    at_rest(qtbot, w)
    assert w.chat.items[-2].text == "Second, edited."
    seen.all("edited", done.args[0])

    # switch chats: a new one, then back; the old one opens at its newest message
    with qtbot.waitSignal(w.conversationShown, timeout=10_000):
        w.new_conversation()
    assert w.gauges.ctx.value_text.startswith("0 / ")
    r = send_and_wait(qtbot, w, "A second chat.")
    seen.all("second chat", r)
    with qtbot.waitSignal(w.conversationShown, timeout=10_000):
        w.open_conversation(first_chat)
    seen.all("back to the first chat")
    assert w.chat.items[-2].text == "Second, edited."

    # attach a file: a chip, then a sign on the sent message; titled by the question
    notes = tmp_path / "notes.txt"
    notes.write_text("Meeting notes, 3 March: the budget is approved.\n", "utf-8")
    with qtbot.waitSignal(w.conversationShown, timeout=10_000):
        w.new_conversation()
    with qtbot.waitSignal(w.controller.attachmentsChanged, timeout=10_000):
        w.attach_file(str(notes))
    assert [c.attachment.name for c in w.attachments.chips] == ["notes.txt"]
    r = send_and_wait(qtbot, w, "What was approved?")
    assert w.chat.items[-2].attachments == ["notes.txt"] and not w.attachments.chips
    seen.newest_in_view("attached")
    at_rest(qtbot, w)
    rec = w.controller.session.record()
    assert rec["title"] == "What was approved?"

    # a live setting and a reload setting together: neither is lost
    sp = w.settings_panel
    sp.editors["n_ctx"].set_value(4096)
    sp._edited("n_ctx", 4096)  # the slider dragged: pending, "reload needed"
    with qtbot.waitSignal(
        w.settingsSynced, timeout=REPLY_TIMEOUT_MS, check_params_cb=synced_with(temperature=0.5)
    ):
        sp.editors["temperature"].set_value(0.5)
        sp._edited("temperature", 0.5)
    assert sp.pending == {"n_ctx": 4096} and sp.reload_marked("n_ctx")
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        sp.apply_button.click()
    at_rest(qtbot, w)
    s = w.controller.session.settings
    assert s["n_ctx"] == 4096 and s["temperature"] == 0.5 and not sp.pending
    seen.one_notice_per_fact("reloaded")
    r = send_and_wait(qtbot, w, "And now?")
    seen.all("after the reload", r)

    # a real llama_cpp.server: connect, chat, then it dies and a message is not sent
    srv = start_llama_server(model_path, tmp_path / "server.log")
    try:
        chosen = ChosenConnection(
            Connection("box", srv.url, str(model_path)), None, [str(model_path)], []
        )
        with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
            w.controller.connect_remote(chosen)
        at_rest(qtbot, w)
        assert w.controller.remote and not sp.groups["reload"].isEnabled()
        r = send_and_wait(qtbot, w, "Hello server.")
        assert "/" not in w.chat.items[-1].name  # not the server's whole file path
        assert w.gauges.server.isVisibleTo(w) and not w.gauges.gpu.isVisibleTo(w)
        assert not w.panels.gauges.widget().verticalScrollBar().isVisible()  # every card fits
        seen.all("on the server", r)
    finally:
        stop_server(srv)
    before = list(w.controller.session.conversation.messages)
    with qtbot.waitSignal(w.failed, timeout=REPLY_TIMEOUT_MS):
        w.submit("Hello?")
    at_rest(qtbot, w)
    assert w.controller.session.conversation.messages == before  # nothing kept
    assert "Hello?" not in [it.text for it in w.chat.items]  # nor shown as sent
    assert w.input.toPlainText() == "Hello?"  # back in the box
    assert sum(t.startswith("Not sent") for t in w.notices.texts()) == 1
    seen.all("not sent")
    w.input.clear()

    # back to the local model; the API on, called by a real client, shown in the gauges
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        w.load_model(str(model_path))
    at_rest(qtbot, w)
    panel = w.server_panel
    panel.port.setValue(0)
    with qtbot.waitSignal(panel.stateChanged, timeout=LOAD_TIMEOUT_MS):
        w.menus.serve.trigger()
    qtbot.waitUntil(
        lambda: w.controller.api_server.running and not panel.busy, timeout=LOAD_TIMEOUT_MS
    )
    assert w.panels.server.isVisible()
    client = openai.OpenAI(base_url=w.controller.api_server.url, api_key="unused", max_retries=0)
    with qtbot.waitSignal(panel.requestLogged, timeout=REPLY_TIMEOUT_MS) as logged:
        out = client.chat.completions.create(
            model="any", max_tokens=8, messages=[{"role": "user", "content": "Say hi."}]
        )
    assert out.choices[0].message.content is not None
    assert logged.args[0].status == 200 and w.gauges.tps.detail == "API request"
    assert panel.table.rowCount() == 1
    seen.one_notice_per_fact("api")
    # nothing the API asked is in the user's chat
    assert "Say hi." not in [it.text for it in w.chat.items]
    # turning the API on reloaded the model for its slots: the chat goes on, read again
    assert w.controller.runtime.local.n_slots == 4
    r = send_and_wait(qtbot, w, "Still there?")
    seen.all("chat with the API on", r)
    with qtbot.waitSignal(panel.stateChanged, timeout=10_000):
        w.menus.serve.trigger()
