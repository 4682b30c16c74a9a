"""`desklm tools` and `desklm chat` with tools: the terminal asks before each call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import run_cli
from tests.tools.conftest import SERVER


def test_tools_add_list_on_remove(data_dir, tmp_path):
    r = run_cli("tools", "add", "t", sys.executable, str(SERVER), "stdio")
    assert r.returncode == 0, r.stderr
    assert "its tools are off" in r.stdout
    r = run_cli("tools", "list", "--json")
    [srv] = json.loads(r.stdout)["servers"]
    assert srv["state"] == "ready" and not any(t["on"] for t in srv["tools"])
    assert run_cli("tools", "on", "t", "add").returncode == 0
    r = run_cli("tools", "on", "t", "no_such_tool")
    assert r.returncode == 2 and "has no tool 'no_such_tool'" in r.stderr
    r = run_cli("tools", "list")
    assert "[on ] add" in r.stdout and "[off] weather" in r.stdout
    theirs = tmp_path / "claude.json"
    theirs.write_text(
        json.dumps({"mcpServers": {"t": {"command": "x"}, "u": {"command": "y", "args": ["1"]}}})
    )
    r = run_cli("tools", "import", str(theirs))
    assert r.returncode == 0 and "imported 1 server(s): u" in r.stdout
    assert "already there" in r.stderr
    assert run_cli("tools", "remove", "u").returncode == 0
    r = run_cli("tools", "remove", "u")
    assert r.returncode == 2 and r.stderr.startswith("desklm: error: no tool server named")
    r = run_cli("tools", "add", "w", "--url", "ftp://x")
    assert r.returncode == 2 and "not an http:// or https:// URL" in r.stderr


def test_chat_asks_in_the_terminal_before_a_call(data_dir):
    assert run_cli("tools", "add", "t", sys.executable, str(SERVER), "stdio").returncode == 0
    assert run_cli("tools", "on", "t", "weather").returncode == 0
    stdin = "/tools force weather\nWhat is the weather in Paris?\no\n"
    r = run_cli(
        "chat",
        "--max-tokens",
        "40",
        "--temperature",
        "0",
        "--seed",
        "7",
        "--ctx",
        "2048",
        stdin=stdin,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "the next reply will be a call to weather" in r.stdout
    assert "[tool] the model wants to call weather (server t) with:" in r.stdout
    assert "allow it? [o]nce, [a]lways for this tool, [d]eny:" in r.stdout
    assert '[tool] weather (t) {"city":' in r.stdout and "done in" in r.stdout
    stdin = "/tools force weather\nAnd in Rome?\nd\n"
    r = run_cli(
        "chat",
        "--max-tokens",
        "40",
        "--temperature",
        "0",
        "--json",
        "--ctx",
        "2048",
        stdin=stdin,
        timeout=600,
    )
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    ask = next(x for x in lines if "tool_request" in x)
    assert ask["tool_request"]["tool"] == "weather" and ask["answer"] == "once | always | deny"
    turn = next(x for x in lines if "reply" in x)
    assert turn["tool_calls"][0]["status"] == "denied"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_the_consent_question_stops_the_turn_at_once(data_dir, sig):
    """Ctrl+C (or SIGTERM) while the terminal asks about a tool call ends the question as a
    denial and stops the turn, without waiting for Enter; Ctrl+C then leaves the chat going
    (the next message is answered), SIGTERM saves and exits 0."""
    assert run_cli("tools", "add", "t", sys.executable, str(SERVER), "stdio").returncode == 0
    assert run_cli("tools", "on", "t", "weather").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "desklm", "chat", "--max-tokens", "8", "--ctx", "2048"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    seen: list[str] = []
    asked = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read(1), ""):
            seen.append(chunk)
            if "[d]eny: " in "".join(seen[-200:]):
                asked.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write("/tools force weather\nWhat is the weather in Paris?\n")
        proc.stdin.flush()
        assert asked.wait(300), "".join(seen) + (proc.stderr.read() if proc.poll() else "")
        proc.send_signal(sig)
        deadline = time.monotonic() + 60  # no Enter needed: the question ends by itself
        while "stopped" not in "".join(seen[-40:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if sig == signal.SIGINT:  # the chat goes on: a message after it is answered
            proc.stdin.write("Say hi.\n")
            proc.stdin.flush()
        proc.stdin.close()
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    out = "".join(seen)
    assert rc == 0, (out, proc.stderr.read() if proc.stderr else "")
    assert "[d]eny: stopped\n" in out and "done in" not in out  # the tool never ran
    if sig == signal.SIGINT:
        assert "you: Say hi." in out and out.count("tokens,") >= 1
    r = run_cli("history", "--json")  # saved, the call with it
    [chat] = json.loads(r.stdout)
    rec = json.loads(run_cli("history", "export", chat["id"], "--format", "json").stdout)
    calls = [c for m in rec["messages"] for c in m.get("tool_calls", [])]
    assert [(c["status"], c["note"]) for c in calls] == [("stopped", "stopped while asking")]
