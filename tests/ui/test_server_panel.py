"""The server panel over a real ApiServer on 127.0.0.1: start, a logged request, stop."""

from __future__ import annotations

import httpx
import pytest

from desklm.engine.runner import Runner
from desklm.server import ApiServer


@pytest.fixture
def panel(qtbot):
    from desklm.ui.panels.server_panel import ServerPanel

    runner = Runner()
    server = ApiServer(runner, lambda: None)  # no model: requests answer 503, and are logged
    p = ServerPanel(server, key_source=lambda: "a-test-key-0123456789")
    qtbot.addWidget(p)
    p.port.setValue(0)
    yield p
    p.shutdown()
    runner.shutdown()


def test_start_log_a_request_and_stop(qtbot, panel) -> None:
    assert panel.state_label.text() == "off"
    with qtbot.waitSignal(panel.settingsChanged, timeout=10_000) as saved:
        panel.toggle.click()
    assert panel.server.running and panel.toggle.text() == "Stop"
    assert saved.args[0] == {"enabled": True, "host": "127.0.0.1", "port": 0, "cors_origins": []}
    assert panel.state_label.text() == f"listening on {panel.server.url}"
    assert not panel.host.isEnabled() and not panel.copy_key.isEnabled()  # no key on loopback
    with qtbot.waitSignal(panel.requestLogged, timeout=10_000):
        r = httpx.post(
            panel.server.url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 503
    assert panel.table.rowCount() == 1
    row = [panel.table.item(0, c).text() for c in range(panel.table.columnCount())]
    assert row[1] == "POST /v1/chat/completions" and row[2].startswith("503")
    with qtbot.waitSignal(panel.settingsChanged, timeout=10_000) as saved:
        panel.toggle.click()
    assert not panel.server.running and panel.state_label.text() == "off"
    assert saved.args[0]["enabled"] is False


def test_a_network_address_asks_first_and_uses_a_key(qtbot, panel) -> None:
    panel.host.setText("0.0.0.0")
    panel.confirm_network = lambda host: False
    panel.toggle.click()
    assert not panel.server.running and not panel.toggle.isChecked()
    panel.confirm_network = lambda host: host == "0.0.0.0"
    with qtbot.waitSignal(panel.stateChanged, timeout=10_000):
        panel.toggle.click()
    qtbot.waitUntil(lambda: panel.toggle.isEnabled(), timeout=10_000)
    assert panel.server.running and panel.copy_key.isEnabled()
    assert panel.key_field.text() == "a-test-key-0123456789"
    r = httpx.get(f"http://127.0.0.1:{panel.server.port}/v1/models")
    assert r.status_code == 401
    panel.copy_key.click()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == "a-test-key-0123456789"


def test_a_failed_start_says_why(qtbot, panel) -> None:
    panel.host.setText("0.0.0.0")
    panel.confirm_network = lambda host: True
    panel.key_source = lambda: ""  # no key to be had
    with qtbot.waitSignal(panel.failed, timeout=10_000) as failed:
        panel.toggle.click()
    assert "API key" in failed.args[0]
    assert panel.state_label.text().startswith("off: ") and not panel.toggle.isChecked()
