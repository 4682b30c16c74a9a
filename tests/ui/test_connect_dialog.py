"""File > Connect to server: the dialog against llama_cpp.server on 127.0.0.1 (offscreen)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyrings.alt.file import PlaintextKeyring
from PySide6.QtCore import Qt

from desklm.engine.store.connections import api_key_for, list_connections
from desklm.engine.store.files import AppConfig
from desklm.ui.dialogs.connect_dialog import ChosenConnection, ConnectDialog
from tests.remote_fixtures import KEY, free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    before = keyring.get_keyring()
    kr = PlaintextKeyring()
    kr.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(before)


def _test(qtbot, d: ConnectDialog) -> None:
    qtbot.mouseClick(d.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: d.test_button.isEnabled(), timeout=30_000)


def test_test_lists_models_and_connect_saves(
    qtbot, llama_server_keyed, file_keyring, tmp_path: Path, model_path: Path
) -> None:
    cfg = AppConfig(tmp_path / "settings.json")
    d = ConnectDialog(config=cfg)
    qtbot.addWidget(d)
    assert not d.connect_button.isEnabled()
    d.url.setText(llama_server_keyed.url + "/v1")
    d.key.setText("wrong")
    _test(qtbot, d)
    assert "refused the API key (401" in d.status.text()
    assert not d.connect_button.isEnabled()
    d.key.setText(KEY)
    _test(qtbot, d)
    assert d.model.count() == 1 and d.model.currentText() == str(model_path)
    assert d.connect_button.isEnabled() and d.name.text() == "127.0.0.1"
    d.name.setText("test box")
    with qtbot.waitSignal(d.connectionChosen, timeout=30_000) as blocker:
        qtbot.mouseClick(d.connect_button, Qt.MouseButton.LeftButton)
    chosen: ChosenConnection = blocker.args[0]
    assert chosen.api_key == KEY and chosen.connection.model == str(model_path)
    assert chosen.models == [str(model_path)] and KEY not in repr(chosen)
    assert any("keyring" in n for n in chosen.notes)
    [c] = list_connections(cfg)
    assert (c.name, c.url) == ("test box", llama_server_keyed.url)
    assert KEY not in cfg.path.read_text()
    assert base64.b64encode(KEY.encode()).decode() in Path(file_keyring.file_path).read_text()
    assert api_key_for(c) == KEY

    # the saved connection is offered next time
    d2 = ConnectDialog(config=cfg)
    qtbot.addWidget(d2)
    qtbot.waitUntil(lambda: d2.saved.count() == 2, timeout=10_000)
    d2.saved.setCurrentIndex(1)
    d2.saved.activated.emit(1)
    assert d2.url.text() == llama_server_keyed.url and d2.name.text() == "test box"


def test_unreachable_server_says_why(qtbot, tmp_path: Path) -> None:
    d = ConnectDialog(config=AppConfig(tmp_path / "settings.json"))
    qtbot.addWidget(d)
    d.url.setText(f"http://127.0.0.1:{free_port()}")
    _test(qtbot, d)
    assert "connection refused" in d.status.text()
    assert not d.connect_button.isEnabled() and d.model.count() == 0
    d.url.setText("http://8.8.8.8:8000")
    _test(qtbot, d)
    assert "refusing plain http" in d.status.text()
