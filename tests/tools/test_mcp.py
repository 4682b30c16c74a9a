"""MCP servers through the SDK: mcp.json, import, keys, a real server over stdio and HTTP,
consent each way, the per-turn limit, a server killed mid-call, a 1 MB result."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from desklm.engine.chat.tools import (
    MAX_RESULT_BYTES,
    Decision,
    McpConfig,
    ServerConfig,
    ServerState,
    ToolHub,
    ToolRequest,
    ToolTurn,
    cut_text,
    import_mcp_json,
    key_for,
)
from desklm.errors import DeskLMError
from tests.tools.conftest import stdio_config


def _tool(hub: ToolHub, name: str) -> object:
    tools, notes = hub.active_tools()
    assert not notes, notes
    return next(t for t in tools if t.name == name)


# --- configuration ----------------------------------------------------------------------------
def test_mcp_json_is_claude_desktops_format_and_no_tool_is_on_at_first(
    stdio_hub: ToolHub, data_dir: Path
) -> None:
    path = data_dir / "config" / "mcp.json"
    data = json.loads(path.read_text("utf-8"))
    assert data["mcpServers"]["t"] == {
        "command": sys.executable,
        "args": [str(stdio_config().args[0]), "stdio"],
    }
    assert data["desklm"]["servers"]["t"]["on"] == []
    st = stdio_hub.start("t")
    assert st.state == ServerState.READY and {"add", "weather", "big"} <= {t.name for t in st.tools}
    assert not any(t.on for t in st.tools)
    assert stdio_hub.active_tools() == ([], [])  # nothing on: no tools in the chat
    stdio_hub.set_tool("t", "add", True)
    assert [t.name for t in stdio_hub.active_tools()[0]] == ["add"]
    assert json.loads(path.read_text("utf-8"))["desklm"]["servers"]["t"]["on"] == ["add"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # env values may hold secrets


def test_a_damaged_file_is_moved_aside_and_a_newer_one_is_not_overwritten(data_dir: Path) -> None:
    path = data_dir / "config" / "mcp.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json", "utf-8")
    cfg = McpConfig()
    assert cfg.load() == {} and "damaged" in cfg.problems[0]
    assert path.with_name("mcp.json.corrupt").exists() and not path.exists()
    path.write_text(
        json.dumps(
            {
                "mcpServers": {"a": {"command": "x"}, "b": {"args": 3}, "c": {"url": "ftp://x"}},
                "desklm": {"schema": 99},
            }
        ),
        "utf-8",
    )
    servers = cfg.load()
    assert list(servers) == ["a"]
    assert any("newer DeskLM" in p for p in cfg.problems)
    assert any("'b'" in p for p in cfg.problems) and any("'c'" in p for p in cfg.problems)
    before = path.read_bytes()
    with pytest.raises(DeskLMError, match="newer DeskLM"):
        ToolHub(cfg).add(ServerConfig("d", command="y"))
    assert path.read_bytes() == before


def test_import_reads_claude_desktops_file_and_never_changes_it(
    data_dir: Path, tmp_path: Path, file_keyring: object
) -> None:
    theirs = tmp_path / "claude_desktop_config.json"
    theirs.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "files": {
                        "command": "npx",
                        "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                        "env": {"DEBUG": "1"},
                    },
                    "web": {
                        "url": "https://mcp.example.com/mcp",
                        "headers": {"Authorization": "Bearer sk-web-123", "X-Team": "a"},
                    },
                    "old": {"type": "sse", "url": "http://127.0.0.1:9/sse"},
                    "bad": {"command": ["not", "a", "string"]},
                },
                "globalShortcut": "Ctrl+Space",
            }
        ),
        "utf-8",
    )
    before, mtime = theirs.read_bytes(), theirs.stat().st_mtime_ns
    added, notes = import_mcp_json(theirs)
    assert added == ["files", "web"]
    assert any("'old'" in n and "not supported" in n for n in notes)
    assert any("'bad'" in n for n in notes)
    assert any("keyring" in n for n in notes)
    assert theirs.read_bytes() == before and theirs.stat().st_mtime_ns == mtime
    ours = (data_dir / "config" / "mcp.json").read_text("utf-8")
    assert "sk-web-123" not in ours  # the key went to the keyring
    servers = McpConfig().load()
    assert servers["web"].headers == {"X-Team": "a"}
    assert key_for(servers["web"]) == "sk-web-123"
    assert servers["files"].env == {"DEBUG": "1"} and servers["files"].tools_on == []
    added, notes = import_mcp_json(theirs)  # again: nothing new
    assert added == [] and any("already there" in n for n in notes)
    with pytest.raises(DeskLMError, match="mcpServers"):
        theirs.write_text("[1, 2]", "utf-8")
        import_mcp_json(theirs)


# --- a real server -----------------------------------------------------------------------------
def test_stdio_server_is_called(stdio_hub: ToolHub) -> None:
    stdio_hub.set_tool("t", "add", True)
    out = stdio_hub.call(_tool(stdio_hub, "add"), {"a": 2, "b": 40})
    assert (out.status, out.text, out.note) == ("ok", "42", "")
    stdio_hub.set_tool("t", "fail", True)
    out = stdio_hub.call(_tool(stdio_hub, "fail"), {})
    assert out.status == "error" and "Error executing tool fail" in out.text
    assert out.note == "the tool reported an error"


def test_http_server_with_its_key_in_the_keyring(
    hub: ToolHub, http_server: tuple[str, str], file_keyring: object
) -> None:
    url, key = http_server
    hub.add(ServerConfig("web", url=url))
    with pytest.raises(DeskLMError, match=r"wants a key \(HTTP 401\)"):
        hub.start("web")
    assert hub.status("web").state == ServerState.FAILED
    notes = hub.add(ServerConfig("web", url=url), key=key)
    assert any("keyring" in n for n in notes)
    assert key not in (hub.config.path.read_text("utf-8"))
    st = hub.start("web")
    assert st.state == ServerState.READY and "weather" in {t.name for t in st.tools}
    hub.set_tool("web", "weather", True)
    out = hub.call(_tool(hub, "weather"), {"city": "Oslo"})
    assert out.status == "ok" and out.text == "Sunny and 21 degrees in Oslo."


def test_a_server_that_cannot_start_says_why_in_one_line(hub: ToolHub, tmp_path: Path) -> None:
    hub.add(ServerConfig("nope", command="/no/such/program-xyz"))
    with pytest.raises(DeskLMError) as e:
        hub.start("nope")
    assert "no such program" in str(e.value) and "\n" not in str(e.value)
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\nsys.stderr.write('boom: the config file is missing\\n')\nsys.exit(3)\n",
        "utf-8",
    )
    hub.add(ServerConfig("crash", command=sys.executable, args=[str(script)]))
    hub.set_tool("crash", "anything", True)
    tools, notes = hub.active_tools()  # the chat goes on: no tools, a note why
    assert tools == [] and len(notes) == 1
    assert "boom: the config file is missing" in notes[0], notes


def test_a_server_killed_mid_call(stdio_hub: ToolHub) -> None:
    for name in ("pid", "slow", "add"):
        stdio_hub.set_tool("t", name, True)
    pid = int(stdio_hub.call(_tool(stdio_hub, "pid"), {}).text)
    slow = _tool(stdio_hub, "slow")
    got: list[object] = []
    th = threading.Thread(target=lambda: got.append(stdio_hub.call(slow, {"seconds": 60})))
    th.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    th.join(30)
    assert not th.is_alive() and time.monotonic() - t0 < 20
    out = got[0]
    assert out.status == "error" and "stopped during" in out.note, out
    assert stdio_hub.status("t").state == ServerState.FAILED
    tools, notes = stdio_hub.active_tools()  # later turns go on without it, saying why
    assert tools == [] and "failed" in notes[0]
    stdio_hub.stop("t")
    assert stdio_hub.start("t").state == ServerState.READY  # and it can be started again


def test_a_one_megabyte_result_is_cut_with_a_notice(stdio_hub: ToolHub) -> None:
    stdio_hub.set_tool("t", "big", True)
    out = stdio_hub.call(_tool(stdio_hub, "big"), {"n_bytes": 1_000_000})
    assert out.status == "ok" and len(out.text.encode()) == MAX_RESULT_BYTES
    assert "cut from" in out.note and "64 KB" in out.note
    text, note = cut_text("é" * 10, 5)  # never inside a character
    assert text == "éé" and "cut" in note


def test_stop_during_a_call(stdio_hub: ToolHub) -> None:
    stdio_hub.set_tool("t", "slow", True)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    out = stdio_hub.call(_tool(stdio_hub, "slow"), {"seconds": 30}, cancelled=stop.is_set)
    assert out.status == "stopped" and time.monotonic() - t0 < 5
    assert stdio_hub.status("t").state == ServerState.READY  # the server goes on


# --- consent and the limit -------------------------------------------------------------------
def _turn(
    hub: ToolHub, answers: list[Decision], asked: list[ToolRequest], limit: int = 4
) -> ToolTurn:
    def consent(req: ToolRequest) -> Decision:
        asked.append(req)
        return answers.pop(0)

    tools, _ = hub.active_tools()
    return ToolTurn(hub, tools, consent, lambda: False, limit)


def test_consent_once_always_and_deny(stdio_hub: ToolHub, tmp_path: Path) -> None:
    stdio_hub.set_tool("t", "touch", True)
    asked: list[ToolRequest] = []
    denied = tmp_path / "denied"
    step = _turn(stdio_hub, [Decision.DENY], asked).run("touch", {"path": str(denied)})
    assert step.status == "denied" and not denied.exists()
    assert asked[0].tool == "touch" and str(denied) in asked[0].arguments_text()
    once = tmp_path / "once"
    step = _turn(stdio_hub, [Decision.ONCE], asked).run("touch", {"path": str(once)})
    assert step.status == "ok" and once.exists()
    assert not _tool(stdio_hub, "touch").always  # once is not remembered
    turn = _turn(stdio_hub, [Decision.ALWAYS], asked)
    assert turn.run("touch", {"path": str(tmp_path / "a1")}).status == "ok"
    assert turn.run("touch", {"path": str(tmp_path / "a2")}).status == "ok"
    assert len(asked) == 3  # "always" was asked once, and the second call was not asked
    assert _tool(stdio_hub, "touch").always  # saved: later turns do not ask either
    step = _turn(stdio_hub, [], asked).run("touch", {"path": str(tmp_path / "a3")})
    assert step.status == "ok" and len(asked) == 3
    stdio_hub.set_tool("t", "touch", False)  # off, then on again: it asks again
    stdio_hub.set_tool("t", "touch", True)
    assert not _tool(stdio_hub, "touch").always


def test_the_limit_of_calls_per_turn(stdio_hub: ToolHub) -> None:
    stdio_hub.set_tool("t", "add", True)
    turn = _turn(stdio_hub, [Decision.ONCE] * 5, [], limit=2)
    assert [turn.run("add", {"a": i, "b": 1}).status for i in range(3)] == ["ok", "ok", "limit"]
    step = turn.run("add", {"a": 0, "b": 0})
    assert step.status == "limit" and "limit of 2" in step.note and "limit" in step.model_text()


def test_no_consent_callback_means_no_call(stdio_hub: ToolHub, tmp_path: Path) -> None:
    stdio_hub.set_tool("t", "touch", True)
    tools, _ = stdio_hub.active_tools()
    step = ToolTurn(stdio_hub, tools, None, lambda: False, 4).run(
        "touch", {"path": str(tmp_path / "x")}
    )
    assert step.status == "denied" and not (tmp_path / "x").exists()
