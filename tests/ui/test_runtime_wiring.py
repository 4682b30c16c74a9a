"""The window's controller talks to the engine only through the Runtime, so whatever backend
the session uses is the one the window reads: on a server's model the live gauges move, and a
load stopped before anything was loaded does not break chatting with a server afterwards.
Both tests use a real llama_cpp.server on 127.0.0.1."""

from __future__ import annotations

from desklm.engine.store.connections import Connection
from desklm.ui.controller import State
from desklm.ui.dialogs.connect_dialog import ChosenConnection
from tests.ui.conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, send_and_wait


def _connect(qtbot, w, llama_server, model_path) -> None:
    chosen = ChosenConnection(
        Connection("box", llama_server.url, str(model_path)), None, [str(model_path)], []
    )
    with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        w.controller.connect_remote(chosen)


def test_on_a_server_the_live_token_count_and_context_come_from_the_server(
    window, qtbot, llama_server, model_path
):
    _connect(qtbot, window, llama_server, model_path)
    started: list[dict] = []
    counts: list[int] = []
    window.controller.turnStarted.connect(started.append)
    window.controller.token.connect(lambda _piece, n: counts.append(n))
    result = send_and_wait(qtbot, window, "Say hello in five words.")
    assert counts, "no token reached the window"
    # before the Runtime, every token carried the local engine's count: 0, and n_ctx raised
    assert max(counts) > 0 and counts == sorted(counts)
    assert max(counts) <= result.stats.completion_tokens
    assert started and started[0]["n_ctx"] == window.controller.session.engine.n_ctx > 0


def test_connecting_after_a_stopped_first_load_chats_and_keeps_only_what_was_sent(
    make_window, qtbot, llama_server, model_path
):
    w = make_window(wait_loaded=False, use_mmap=False)
    qtbot.waitUntil(lambda: w.progress.isVisible(), timeout=10_000)
    w.menus.stop.trigger()
    qtbot.waitUntil(lambda: w.controller.state is State.NO_MODEL, timeout=LOAD_TIMEOUT_MS)
    _connect(qtbot, w, llama_server, model_path)
    failed: list[tuple[str, str]] = []
    w.controller.turnFailed.connect(lambda reason, text: failed.append((reason, text)))
    result = send_and_wait(qtbot, w, "Hello?")
    assert not failed, failed
    assert result.reply.strip()
    msgs = w.controller.session.conversation.messages
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert msgs[0].content == "Hello?"
    qtbot.waitUntil(lambda: w.controller.state is State.IDLE, timeout=REPLY_TIMEOUT_MS)
