"""``desklm tools``: MCP servers from the command line; and the terminal's permission prompt.

desklm tools list [--json] [--no-start]
desklm tools add NAME COMMAND [ARG...] [--env KEY=VALUE]...
desklm tools add NAME --url URL [--key-env VAR | --key-stdin] [--header K=V]...
desklm tools remove NAME
desklm tools import PATH            (e.g. Claude Desktop's claude_desktop_config.json)
desklm tools on|off SERVER TOOL...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from desklm.errors import DeskLMError


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    tools = sub.add_parser(
        "tools",
        parents=[common],
        help="MCP servers whose tools the model may call (asking you first)",
    )
    tsub = tools.add_subparsers(dest="tools_command", metavar="ACTION", required=True)
    tl = tsub.add_parser(
        "list", parents=[common], help="servers, their status and their tools (starts them)"
    )
    tl.add_argument("--json", action="store_true", help="print JSON")
    tl.add_argument(
        "--no-start",
        action="store_true",
        help="do not start the servers (tools are listed only for running ones)",
    )
    ta = tsub.add_parser(
        "add",
        parents=[common],
        help="add a server: a command to run (stdio) or --url "
        "(Streamable HTTP); its tools start off",
    )
    ta.add_argument("name")
    ta.add_argument(
        "program", nargs="?", metavar="COMMAND", help="the program that runs the server"
    )
    ta.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    _add_options(ta)
    tr = tsub.add_parser("remove", parents=[common], help="remove a server (and its key)")
    tr.add_argument("name")
    ti = tsub.add_parser(
        "import",
        parents=[common],
        help="copy the servers of an mcp.json in Claude Desktop's format (the file is only read)",
    )
    ti.add_argument("path")
    for verb in ("on", "off"):
        tv = tsub.add_parser(
            verb,
            parents=[common],
            help=f"turn tools {verb} (on: the model may ask to call them; you are asked each time)",
        )
        tv.add_argument("server")
        tv.add_argument("tool", nargs="+")


def _add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``tools add`` (also read when they follow NAME, before any COMMAND)."""
    p.add_argument(
        "--url", help="the server's Streamable HTTP endpoint, e.g. http://127.0.0.1:8000/mcp"
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the command (repeatable)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an HTTP header that is not a secret (repeatable)",
    )
    p.add_argument(
        "--key-env", metavar="VAR", help="send the key held in environment variable VAR (Bearer)"
    )
    p.add_argument(
        "--key-stdin",
        action="store_true",
        help="read the server's key from stdin and keep it in the OS keyring",
    )


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise DeskLMError(f"{what} {it!r}: write it as NAME=VALUE")
        out[k] = v
    return out


def cmd_tools(args: argparse.Namespace) -> int:
    from desklm.engine.chat.tool_commands import listing
    from desklm.engine.chat.tools import ServerConfig, ToolHub

    hub = ToolHub()
    try:
        cmd = args.tools_command
        if cmd == "list":
            text, data = listing(hub, start=not args.no_start)
            print(json.dumps(data, ensure_ascii=False) if args.json else text)
            return 0
        if cmd == "add":
            if args.program is None and args.args:  # `add NAME --url URL ...`: ours
                more = argparse.ArgumentParser(prog="desklm tools add NAME", add_help=False)
                _add_options(more)
                parsed = more.parse_args(args.args)
                vars(args).update({k: v for k, v in vars(parsed).items()})
                args.args = []
            if bool(args.url) == bool(args.program):
                raise DeskLMError("give either a COMMAND (with its arguments) or --url")
            key = None
            if args.key_stdin:
                if not args.url:
                    raise DeskLMError("--key-stdin is for --url servers")
                key = sys.stdin.readline().strip()
                if not key:
                    raise DeskLMError("--key-stdin: no key on stdin")
            cfg = ServerConfig(
                args.name,
                command=args.program or "",
                args=list(args.args),
                env=_pairs(args.env, "--env"),
                url=args.url or "",
                headers=_pairs(args.header, "--header"),
                key_env=args.key_env or "",
            )
            for note in hub.add(cfg, key):
                print(f"desklm: note: {note}", file=sys.stderr)
            print(
                f"added {cfg.name} ({cfg.where}); its tools are off: `desklm tools list`, "
                f"then `desklm tools on {cfg.name} TOOL`"
            )
            return 0
        if cmd == "remove":
            hub.remove(args.name)
            print(f"removed {args.name}")
            return 0
        if cmd == "import":
            added, notes = hub.import_file(args.path)
            for note in notes:
                print(f"desklm: note: {note}", file=sys.stderr)
            print(
                f"imported {len(added)} server(s)"
                + (": " + ", ".join(added) if added else "")
                + ("; their tools are off until you turn them on" if added else "")
            )
            return 0
        from desklm.engine.chat.tool_commands import find_server

        hub.server(args.server)
        for tool in args.tool:
            if cmd == "on":  # a running server must have it
                find_server(hub, tool, args.server)
            hub.set_tool(args.server, tool, cmd == "on")
        print(f"{', '.join(args.tool)} ({args.server}): {cmd}")
        return 0
    finally:
        hub.close()


# --- the permission prompt of `desklm chat` ---------------------------------------------------
ANSWERS = {
    "o": "once",
    "once": "once",
    "y": "once",
    "yes": "once",
    "a": "always",
    "always": "always",
    "d": "deny",
    "deny": "deny",
    "n": "deny",
    "no": "deny",
}


def terminal_consent(
    read_line: Callable[[Callable[[], bool]], str | None],
    write: Callable[[str], None],
    as_json: bool,
) -> Callable[[Any], Any]:
    """Asks in the terminal before a tool runs; the answer is the next input line: ``o``nce,
    ``a``lways for this tool, ``d``eny (anything else, or the end of input, denies).
    ``read_line`` is the chat's :meth:`~desklm.cli.chat.InputLines.get`: Stop (Ctrl+C) ends
    the wait at once, as a denial, and leaves the next line to the chat."""
    from desklm.engine.chat.tools import Decision

    def ask(req: Any) -> Decision:
        if as_json:
            write(
                json.dumps(
                    {
                        "tool_request": {
                            "server": req.server,
                            "tool": req.tool,
                            "arguments": req.arguments,
                        },
                        "answer": "once | always | deny",
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        else:
            write(
                f"\n[tool] the model wants to call {req.tool} (server {req.server}) with:\n"
                f"{req.arguments_text()}\nallow it? [o]nce, [a]lways for this tool, "
                "[d]eny: "
            )
        line = read_line(req.cancelled)
        if req.cancelled():  # Stop while asking: the turn records "stopped while asking"
            if not as_json:
                write("stopped\n")
            return Decision.DENY
        answer = ANSWERS.get((line or "").strip().lower())
        if answer is None:
            if not as_json:
                write("denied" + (" (no answer)" if line is None else "") + "\n")
            return Decision.DENY
        return Decision(answer)

    return ask


def tool_event_printer(write: Callable[[str], None]) -> Callable[[str, Any], None]:
    def on_tool(kind: str, step: Any) -> None:
        if kind == "result":
            write(f"[tool] {step.line()}\n")

    return on_tool
