"""Stop, /reset, switching chat or model, and quitting, during a load and during a reply:
no crash, no hang, no lost message, and the transcript matches what is saved."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import QTimer

from desklm.engine.store.files import ConversationStore
from desklm.ui.controller import State
from tests.ui.conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, send_and_wait


def saved(conv_id: str) -> list[tuple[str, str]]:
    rec = ConversationStore().load(conv_id)
    return [(m["role"], m["content"]) for m in rec["messages"]]


def transcript_matches(w, conv_id: str) -> None:
    """What the window shows is exactly what is saved: same messages, same order."""
    on_screen = [(r, " ".join(t.split())) for r, t in w.chat.shown]
    on_disk = [(r, " ".join(t.split())) for r, t in saved(conv_id)]
    assert on_screen == on_disk


def long_reply_running(qtbot, w, text="Tell me a very long story about the sea."):
    with qtbot.waitSignal(w.firstToken, timeout=REPLY_TIMEOUT_MS):
        w.submit(text)


def test_reset_during_a_reply_stops_it_and_keeps_the_old_chat(make_window, qtbot):
    w = make_window(max_tokens=4000)
    send_and_wait(qtbot, w, "First question")
    old = w.controller.session.conv_id
    long_reply_running(qtbot, w)
    with qtbot.waitSignal(w.commandFinished, timeout=REPLY_TIMEOUT_MS):
        w.menus.reset.trigger()
    assert w.chat.toPlainText().strip() == "" and w.controller.state is not State.GENERATING
    assert w.controller.runtime.local.kv_cache_pos_max() == -1
    msgs = saved(old)  # the old chat, with the stopped reply, is in history untouched
    assert [r for r, _ in msgs] == ["user", "assistant", "user", "assistant"]
    assert w.controller.session.conv_id != old
    r = send_and_wait(qtbot, w, "Fresh start")
    assert r.stats.prompt_tokens_reused == 0
    transcript_matches(w, w.controller.session.conv_id)


def test_switching_chat_during_a_reply(make_window, qtbot):
    w = make_window(max_tokens=4000)
    send_and_wait(qtbot, w, "Chat one")
    one = w.controller.session.conv_id
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        w.new_conversation()
    long_reply_running(qtbot, w, "Chat two, long story please")
    two = w.controller.session.conv_id
    w.submit("queued behind the reply")  # must not be lost by the switch
    with qtbot.waitSignal(w.conversationShown, timeout=REPLY_TIMEOUT_MS):
        w.open_conversation(one)
    assert w.input.toPlainText() == "queued behind the reply"
    transcript_matches(w, one)
    assert [r for r, _ in saved(two)] == ["user", "assistant"]  # the stopped reply is saved
    assert w.controller.runtime.local.kv_cache_pos_max() == -1


def test_switching_model_during_a_reply_keeps_the_chat(make_window, qtbot, model_path):
    w = make_window(max_tokens=4000)
    send_and_wait(qtbot, w, "Before the switch")
    long_reply_running(qtbot, w)
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        w.load_model(str(model_path))
    assert w.controller.state is not State.GENERATING
    conv = w.controller.session.conv_id
    assert [r for r, _ in saved(conv)] == ["user", "assistant"] * 2
    send_and_wait(qtbot, w, "After the switch")
    transcript_matches(w, conv)


def test_quitting_during_a_reply_saves_what_was_said(make_window, qtbot):
    w = make_window(max_tokens=4000)
    long_reply_running(qtbot, w)
    conv = w.controller.session.conv_id
    assert w.shutdown() < 10.0
    msgs = saved(conv)
    assert [r for r, _ in msgs] == ["user", "assistant"] and msgs[1][1]


def test_stop_during_a_load_then_load_again(make_window, qtbot, model_path):
    w = make_window(wait_loaded=False, use_mmap=False)
    qtbot.waitUntil(lambda: w.progress.isVisible(), timeout=10000)
    w.menus.stop.trigger()
    qtbot.waitUntil(lambda: "Loading stopped" in w.notices.text(), timeout=LOAD_TIMEOUT_MS)
    # the notice comes from the load job; the window is at rest once that job has ended
    qtbot.waitUntil(lambda: w.controller.state is not State.LOADING, timeout=LOAD_TIMEOUT_MS)
    assert w.errors == []  # a stop is not an error
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        w.load_model(str(model_path))
    send_and_wait(qtbot, w, "Loaded after all")


def test_commands_and_switches_during_a_load_wait_for_it(make_window, qtbot):
    w = make_window(wait_loaded=False)
    w.submit("/reset")
    w.submit("Sent while loading")
    with qtbot.waitSignal(w.replyFinished, timeout=REPLY_TIMEOUT_MS):
        pass
    conv = w.controller.session.conv_id
    assert saved(conv)[0] == ("user", "Sent while loading")


def test_rapid_repeated_sends_are_answered_in_order(window, qtbot):
    done = []
    window.replyFinished.connect(done.append)
    for i in range(5):
        window.submit(f"rapid {i}")
    qtbot.waitUntil(lambda: len(done) == 5, timeout=REPLY_TIMEOUT_MS)
    conv = window.controller.session.conv_id
    assert [c for r, c in saved(conv) if r == "user"] == [f"rapid {i}" for i in range(5)]
    transcript_matches(window, conv)


def test_odd_input_in_the_window(window, qtbot):
    window.submit("")
    window.submit("   ")
    assert window.controller.state is not State.GENERATING
    assert window.controller.session.conversation.messages == []
    send_and_wait(qtbot, window, "RTL مرحبا, emoji 🚀👩‍👩‍👧, combining e\u0301, NUL\x00end")
    msg = window.controller.session.conversation.messages[0].content
    assert "\x00" not in msg and "🚀" in msg and "مرحبا" in msg
    paste = "word " * 20000  # 100 kB
    with qtbot.waitSignal(window.failed, timeout=REPLY_TIMEOUT_MS):
        window.submit(paste)
    assert window.input.toPlainText() == paste  # refused, but not lost


def test_no_listening_socket_in_the_window(window, qtbot):
    send_and_wait(qtbot, window, "Hello")
    conns = psutil.Process().net_connections(kind="all")
    assert [c for c in conns if c.status == psutil.CONN_LISTEN] == []


@pytest.mark.qt_no_exception_capture
def test_an_unhandled_exception_in_the_ui_thread_is_logged_shown_and_survived(window, qtbot):
    from desklm.logs import install_excepthooks, setup_logging
    from desklm.ui.app import make_thread_safe_reporter

    setup_logging()
    log_file = Path(logging.getLogger("desklm")._desklm_log_file)
    install_excepthooks(make_thread_safe_reporter(window))

    def boom():
        raise RuntimeError("bug in a UI slot")

    QTimer.singleShot(0, boom)
    qtbot.waitUntil(lambda: any("bug in a UI slot" in e for e in window.errors), timeout=5000)
    assert window.last_dialog is not None and window.last_dialog.isVisible()
    assert "Unexpected error: RuntimeError: bug in a UI slot" in window.last_dialog.text()
    for h in logging.getLogger("desklm").handlers:
        h.flush()
    text = log_file.read_text("utf-8")
    assert "Traceback" in text and "bug in a UI slot" in text
    window.last_dialog.accept()

    t = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError("bug in a thread")))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: any("bug in a thread" in e for e in window.errors), timeout=5000)
    send_and_wait(qtbot, window, "Still alive?")  # the app continues


def test_a_failed_chat_switch_never_leaves_messages_stuck(window, qtbot, data_dir):
    """Issue: any non-DeskLMError during a switch left `switching` set forever, and every later
    message sat in the queue unsent. Now every failure returns the controller to a rest state
    and the queue drains."""
    import json

    store = window.controller.session.store
    bad = {
        "schema": 1,
        "id": "badchat",
        "title": "Broken",
        "created": 1.0,
        "updated": 2.0,
        "model": "x",
        "settings": {},
        "context_start": 0,
        "messages": ["a plain string where a message object belongs", 42],
    }
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "badchat.json").write_text(json.dumps(bad))
    states = []
    window.controller.stateChanged.connect(states.append)
    window.open_conversation("badchat")
    window.submit("Queued while switching")  # waits in the queue behind the switch
    with qtbot.waitSignal(window.replyFinished, timeout=REPLY_TIMEOUT_MS):
        pass
    assert State.SWITCHING in states
    qtbot.waitUntil(lambda: window.controller.state is State.IDLE, timeout=10000)
    assert window.controller.queue == []
    assert window.controller.session.conversation.messages[-2].content == "Queued while switching"
