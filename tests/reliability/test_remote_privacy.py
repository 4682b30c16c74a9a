"""A saved server connection is not used unless asked for: chatting on the local model opens no
network connection even with one configured (and the guard sees a --server chat's attempt)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.reliability.test_privacy import _isolated


def _with_saved_connection(data_dir: Path) -> None:
    cfg = data_dir / "config" / "settings.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        json.dumps(
            {
                "schema": 1,
                "connections": [{"name": "gpu box", "url": "http://10.9.8.7:8000", "model": "m"}],
            }
        )
    )


def test_local_chat_with_a_saved_connection_opens_nothing(tmp_path: Path) -> None:
    _with_saved_connection(Path(os.environ["DESKLM_DATA_DIR"]))
    r = _isolated(
        [sys.executable, "-m", "desklm", "chat", "--json", "--max-tokens", "4"],
        tmp_path,
        stdin="Hello\n",
    )
    assert r.returncode == 0, r.stderr[-1000:]
    assert '"reply"' in r.stdout
    log = tmp_path / "net.log"
    assert not log.exists() or log.read_text() == "", log.read_text()


def test_a_server_chat_is_what_opens_a_connection(tmp_path: Path) -> None:
    _with_saved_connection(Path(os.environ["DESKLM_DATA_DIR"]))
    r = _isolated(
        [sys.executable, "-m", "desklm", "chat", "--server", "gpu box"], tmp_path, stdin="Hello\n"
    )
    assert r.returncode == 2 and "cannot reach the server at http://10.9.8.7:8000" in r.stderr
    assert "10.9.8.7" in (tmp_path / "net.log").read_text()
