"""SIGTERM (logout, shutdown, kill) and SIGINT quit the window like the Quit menu: settings
saved, exit 0, promptly. Runs the real `desklm` window (offscreen) in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_window_quits_cleanly_on_a_signal(tmp_path: Path, cache_dir: Path, sig) -> None:
    data = tmp_path / "data"
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        DESKLM_DATA_DIR=str(data),
        DESKLM_CACHE_DIR=str(cache_dir),
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "desklm", "--ctx", "1024"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = data / "logs" / "desklm.log"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and p.poll() is None:
        if log.exists() and " loaded " in log.read_text("utf-8", "replace"):
            break
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    t0 = time.monotonic()
    p.send_signal(sig)
    _out, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 0, err
    assert took < 10, f"took {took:.1f} s to quit"
    assert "Traceback" not in err
    saved = json.loads((data / "config" / "settings.json").read_text())
    assert saved["settings"]["n_ctx"] == 1024 and saved.get("window_state")
