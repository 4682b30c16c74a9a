"""Saved connections: in the app config without the key; the key in the keyring (a real
keyring backend: keyrings.alt's file keyring in a temp dir), or not kept at all where the
machine has no keyring (keyring's own 'fail' backend)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail
from keyrings.alt.file import PlaintextKeyring

from desklm.engine.store.connections import (
    Connection,
    api_key_for,
    delete_connection,
    keyring_status,
    list_connections,
    resolve_server,
    save_connection,
)
from desklm.engine.store.files import AppConfig
from desklm.errors import DeskLMError

KEY = "sk-remote-0123456789abcdef"


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    before = keyring.get_keyring()
    kr = PlaintextKeyring()
    kr.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(before)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(before)


def test_key_goes_to_the_keyring_never_the_config(
    file_keyring: PlaintextKeyring, tmp_path: Path
) -> None:
    cfg = AppConfig(tmp_path / "settings.json")
    cfg.save({"last_model": "x.gguf"})
    notes = save_connection(Connection("gpu box", "http://127.0.0.1:8000/v1", "llama"), KEY, cfg)
    assert any("saved in the OS keyring" in n and "unencrypted" in n for n in notes)
    text = cfg.path.read_text()
    assert KEY not in text and "gpu box" in text
    assert cfg.load()["last_model"] == "x.gguf"  # other settings kept
    [c] = list_connections(cfg)
    assert (c.name, c.url, c.model) == ("gpu box", "http://127.0.0.1:8000", "llama")
    assert api_key_for(c) == KEY
    import base64

    stored = Path(file_keyring.file_path).read_text()  # where it really went (base64)
    assert base64.b64encode(KEY.encode()).decode() in stored
    # a URL that is a saved connection finds its key; a name finds url, key and model
    assert resolve_server("http://127.0.0.1:8000/v1", cfg=cfg) == (
        "http://127.0.0.1:8000/v1",
        KEY,
        "llama",
    )
    assert resolve_server("gpu box", cfg=cfg) == ("http://127.0.0.1:8000", KEY, "llama")
    delete_connection("gpu box", cfg)
    assert list_connections(cfg) == [] and api_key_for(c) is None


def test_without_a_keyring_the_key_is_not_kept(
    no_keyring: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, why = keyring_status()
    assert not ok and "no OS keyring" in why
    cfg = AppConfig(tmp_path / "settings.json")
    notes = save_connection(
        Connection("lab", "http://10.1.2.3:8000", "m", api_key_env="LAB_KEY"), KEY, cfg
    )
    assert any("private address" in n for n in notes)
    assert any("the API key was not saved" in n for n in notes)
    assert KEY not in cfg.path.read_text()
    [c] = list_connections(cfg)
    assert api_key_for(c) is None
    monkeypatch.setenv("LAB_KEY", KEY)  # the documented fallback: an environment variable
    assert api_key_for(c) == KEY


def test_bad_connections_are_refused(tmp_path: Path) -> None:
    cfg = AppConfig(tmp_path / "settings.json")
    with pytest.raises(DeskLMError, match="needs a name"):
        save_connection(Connection("  ", "http://127.0.0.1:1"), None, cfg)
    with pytest.raises(DeskLMError, match="refusing plain http"):
        save_connection(Connection("x", "http://8.8.4.4:1"), None, cfg)
    with pytest.raises(DeskLMError, match="not an environment variable name"):
        save_connection(Connection("x", "http://127.0.0.1:1", api_key_env="A B"), None, cfg)
    assert not cfg.path.exists()
