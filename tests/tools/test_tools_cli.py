"""`desklm tools` and `desklm chat` with tools: the terminal asks before each call."""

from __future__ import annotations

import json
import sys

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
