"""The ``/tools`` command of the chat (``desklm chat`` and the window's input line).

/tools                         the servers, their status and their tools (on or off)
/tools on TOOL [SERVER]        turn a tool on (it still asks before every call)
/tools off TOOL [SERVER]       turn it off (and forget "always" for it)
/tools start SERVER            start (or restart) a server that failed
/tools force TOOL|any|off      make the next reply a call to TOOL (or any tool on): for
                               models that do not call tools by themselves
"""

from __future__ import annotations

import contextlib
from typing import Any

from desklm.engine.chat.commands import CommandResult, OnText, command
from desklm.engine.chat.tools import ServerState, ToolHub
from desklm.errors import DeskLMError

USAGE = "usage: /tools [on TOOL [SERVER] | off TOOL [SERVER] | start SERVER | force TOOL|any|off]"


def listing(hub: ToolHub, start: bool = True) -> tuple[str, dict[str, Any]]:
    """Every server with its status line and tools; servers are started when ``start``."""
    lines: list[str] = []
    data: list[dict[str, Any]] = []
    for name in hub.names():
        if start and hub.status(name).state == ServerState.OFF:
            with contextlib.suppress(DeskLMError):  # its status line says why
                hub.start(name)
        st = hub.status(name)
        lines.append(f"{name} ({st.kind}: {st.where}): {st.line()}")
        for t in st.tools:
            mark = "on " if t.on else "off"
            lines.append(
                f"  [{mark}] {t.name}"
                + (" (always allowed)" if t.always else "")
                + (f": {' '.join(t.description.split())[:70]}" if t.description else "")
            )
        data.append(
            {
                "name": name,
                "kind": st.kind,
                "where": st.where,
                "state": str(st.state),
                "reason": st.reason,
                "tools": [{"name": t.name, "on": t.on, "always": t.always} for t in st.tools],
                "tools_on": st.tools_on,
            }
        )
    if not lines:
        lines.append(
            "no tool servers: add one with `desklm tools add` or the window's Tools "
            "dialog (or import an mcp.json with `desklm tools import PATH`)"
        )
    for p in hub.problems:
        lines.append(f"note: {p}")
    return "\n".join(lines), {"servers": data}


def find_server(hub: ToolHub, tool: str, server: str | None) -> str:
    """The server that offers ``tool`` (the one named, else the only one)."""
    if server:
        hub.server(server)
        if hub.status(server).state == ServerState.OFF:
            with contextlib.suppress(DeskLMError):  # not running: it cannot be checked
                hub.start(server)
        st = hub.status(server)
        if st.state == ServerState.READY and tool not in {t.name for t in st.tools}:
            raise DeskLMError(
                f"server {server!r} has no tool {tool!r}; it has: "
                + ", ".join(t.name for t in st.tools)
            )
        return server
    found = []
    for name in hub.names():
        if hub.status(name).state == ServerState.OFF:
            try:
                hub.start(name)
            except DeskLMError:
                continue
        if tool in {t.name for t in hub.status(name).tools}:
            found.append(name)
    if not found:
        raise DeskLMError(f"no running server has a tool {tool!r} (see /tools)")
    if len(found) > 1:
        raise DeskLMError(f"{tool!r} is on several servers ({', '.join(found)}): name one")
    return found[0]


def run_tools_command(session: Any, arg: str) -> CommandResult:
    hub: ToolHub | None = session.tools
    if hub is None:
        raise DeskLMError("tools are not available here")
    words = arg.split()
    if not words:
        text, data = listing(hub)
        return CommandResult("tools", text, data)
    verb, rest = words[0].lower(), words[1:]
    if verb in ("on", "off"):
        if not 1 <= len(rest) <= 2:
            raise DeskLMError(USAGE)
        server = find_server(hub, rest[0], rest[1] if len(rest) > 1 else None)
        hub.set_tool(server, rest[0], verb == "on")
        extra = "; it asks before every call" if verb == "on" else ""
        return CommandResult(
            "tools",
            f"{rest[0]} ({server}) is {verb}{extra}",
            {"server": server, "tool": rest[0], "on": verb == "on"},
        )
    if verb == "start":
        if len(rest) != 1:
            raise DeskLMError("usage: /tools start SERVER")
        hub.stop(rest[0])
        st = hub.start(rest[0])
        return CommandResult(
            "tools", f"{rest[0]}: {st.line()}", {"server": rest[0], "state": str(st.state)}
        )
    if verb == "force":
        if len(rest) != 1:
            raise DeskLMError("usage: /tools force TOOL|any|off")
        name = rest[0]
        if name == "off":
            session.force_tool = None
            return CommandResult("tools", "the next reply chooses for itself", {"force": None})
        tools, notes = hub.active_tools()
        if name != "any" and name not in {t.model_name for t in tools}:
            raise DeskLMError(
                f"{name!r} is not on; on: " + (", ".join(t.model_name for t in tools) or "none")
            )
        if not tools:
            raise DeskLMError(
                "no tool is on: /tools on TOOL first" + (f" ({notes[0]})" if notes else "")
            )
        session.force_tool = "*" if name == "any" else name
        return CommandResult(
            "tools",
            f"the next reply will be a call to "
            f"{'a tool' if name == 'any' else name} (you are still asked)",
            {"force": session.force_tool},
        )
    raise DeskLMError(USAGE)


@command(
    "tools",
    "/tools [on|off TOOL | start SERVER | force TOOL|any|off]",
    "MCP tools: list them, turn one on or off, restart a server, force a call",
)
def _tools(session: Any, arg: str, on_text: OnText) -> CommandResult:
    return run_tools_command(session, arg)
