"""Chatting opens no network connection and DeskLM never listens on a socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

GUARD = r"""
import os, socket
_LOG = os.environ["DESKLM_NET_LOG"]

def _record(what, addr):
    with open(_LOG, "a") as f:
        f.write(f"{what} {addr!r}\n")

_connect, _connect_ex, _gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

def connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record("connect", addr)
        raise OSError("network forbidden in this test")
    return _connect(self, addr)

def connect_ex(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record("connect_ex", addr)
        return 101
    return _connect_ex(self, addr)

def getaddrinfo(host, *a, **k):
    _record("getaddrinfo", host)
    raise socket.gaierror("network forbidden in this test")

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo
"""


def _isolated(cmd: list[str], tmp: Path, stdin: str = "") -> subprocess.CompletedProcess:
    """Run with outbound sockets forbidden: a Python-level guard that records every attempt,
    inside an empty network namespace too where this machine allows one (root + unshare)."""
    guard = tmp / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    # keep a PYTHONPATH already set (a clone's app/ ahead of an editable install): the guard
    # must watch the code under test
    path = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(
        os.environ,
        PYTHONPATH=path,
        DESKLM_NET_LOG=str(tmp / "net.log"),
        QT_QPA_PLATFORM="offscreen",
    )
    env.pop("HF_HUB_OFFLINE", None)  # prove it by behaviour, not by the offline switch
    if (
        os.geteuid() == 0
        and shutil.which("unshare")
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    ):
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300, env=env)


def test_a_full_chat_opens_no_connection(tmp_path):
    r = _isolated(
        [sys.executable, "-m", "desklm", "chat", "--json", "--max-tokens", "8"],
        tmp_path,
        stdin="Hello\nTell me more\n/stats\n/reset\nAgain\n",
    )
    assert r.returncode == 0, r.stderr[-1000:]
    assert len([x for x in r.stdout.splitlines() if '"reply"' in x]) == 3
    log = tmp_path / "net.log"
    assert not log.exists() or log.read_text() == "", log.read_text()


def test_the_window_opens_no_connection(tmp_path):
    r = _isolated([sys.executable, "-m", "desklm", "--self-test", "--max-tokens", "8"], tmp_path)
    assert r.returncode == 0, r.stderr[-1000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["ok"] is True
    log = tmp_path / "net.log"
    assert not log.exists() or log.read_text() == "", log.read_text()


def test_the_guard_itself_catches_a_connection(tmp_path):
    # the checks above can fail: an attempt is recorded (and stopped before any packet)
    code = (
        "import socket\ntry:\n socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
        "except OSError: pass"
    )
    _isolated([sys.executable, "-c", code], tmp_path)
    assert "127.0.0.1" in (tmp_path / "net.log").read_text()


def test_no_listening_socket_while_chatting(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-m", "desklm", "chat", "--max-tokens", "8"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        p.stdin.write("Hello\n")
        p.stdin.flush()
        deadline = time.time() + 120
        while time.time() < deadline and "tok/s" not in (line := p.stdout.readline()):
            pass
        assert "tok/s" in line
        conns = psutil.Process(p.pid).net_connections(kind="all")
        assert [c for c in conns if c.status == psutil.CONN_LISTEN] == []
        assert [c for c in conns if c.raddr] == []  # and no open connection either
    finally:
        p.stdin.close()
        p.wait(60)
