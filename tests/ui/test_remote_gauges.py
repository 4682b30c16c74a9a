"""The gauges on a model served elsewhere: VRAM is the server's, and a Server card shows what
the server's own /metrics say (real llama_cpp.server; vLLM's exposition text served locally,
since this machine has no GPU cluster)."""

from __future__ import annotations

from pathlib import Path

from desklm.engine.store.connections import Connection
from desklm.ui.dialogs.connect_dialog import ChosenConnection
from tests.remote_fixtures import metrics_server
from tests.ui.conftest import LOAD_TIMEOUT_MS

DATA = Path(__file__).resolve().parents[1] / "data"


def test_a_server_model_shows_the_server_s_gauges(window, qtbot, llama_server, model_path):
    g = window.gauges
    assert not g.server.isVisibleTo(window)
    qtbot.waitUntil(lambda: "NVIDIA" in g.vram.value_text, timeout=10_000)  # a first sample
    chosen = ChosenConnection(
        Connection("box", llama_server.url, str(model_path)), None, [str(model_path)], []
    )
    with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        window.controller.connect_remote(chosen)
    assert g.remote and g.server.isVisibleTo(window)
    qtbot.waitUntil(lambda: g.vram.value_text == "on the server", timeout=5000)
    # llama-cpp-python's server publishes no /metrics: said once, quietly, on the card
    with qtbot.waitSignal(window.controller.serverMetrics, timeout=10_000):
        pass
    assert g.server.value_text == "n/a" and "no /metrics" in g.server.sub
    assert "no /metrics" in g.readings()["server"]
    # a server that does (vLLM's exposition text): its KV cache and queue on the card
    with metrics_server((DATA / "metrics_vllm.txt").read_bytes()) as (url, _seen):
        window.controller._watchServer.emit(url, "")
        qtbot.waitUntil(lambda: g.server.detail == "server KV cache", timeout=10_000)
        assert g.server.value_text.endswith("%") and "running" in g.server.sub
    # back to a local model: this machine's gauges again
    with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS):
        window.load_model(str(model_path))
    assert not g.remote and not g.server.isVisibleTo(window)
    qtbot.waitUntil(lambda: g.vram.value_text != "on the server", timeout=5000)


def test_a_server_killed_mid_reply_keeps_the_partial_reply_and_says_why(
    window, qtbot, model_path, tmp_path
):
    from tests.remote_fixtures import start_llama_server, stop_server
    from tests.ui.conftest import REPLY_TIMEOUT_MS

    srv = start_llama_server(model_path, tmp_path / "dying.log")
    try:
        chosen = ChosenConnection(
            Connection("box", srv.url, str(model_path)), None, [str(model_path)], []
        )
        with qtbot.waitSignal(window.modelLoaded, timeout=LOAD_TIMEOUT_MS):
            window.controller.connect_remote(chosen)
        window.controller.session.settings.update({"max_tokens": 400})
        window.firstToken.connect(lambda *_: srv.proc.kill())
        with qtbot.waitSignal(window.replyFinished, timeout=REPLY_TIMEOUT_MS) as done:
            window.submit("Write a very long story.")
        r = done.args[0]
        assert r.stats.finish_reason == "error" and r.reply
        text = window.chat.toPlainText()
        assert (
            "The reply was cut: the connection to the server was cut mid-reply"
            in window.notices.text()
        )
        assert "finish: error" in text and window.status.text().startswith("Reply cut")
    finally:
        stop_server(srv)
