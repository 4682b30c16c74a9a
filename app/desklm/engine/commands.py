"""Slash commands, shared by the terminal chat and the GUI: parsing and help text.

Executing a command needs a session (:class:`desklm.engine.session.ChatSession`), so this module
only parses and describes; the session runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from desklm.errors import DeskLMError

COMMANDS: dict[str, tuple[str, str]] = {
    "reset": ("/reset", "clear the conversation and the model's KV cache"),
    "help": ("/help", "list the commands"),
    "system": ("/system [text]", "show or set the system prompt (takes effect next turn)"),
    "set": ("/set [setting value]", "show all settings, or change one (reloads if needed)"),
    "stats": ("/stats", "last turn's speed, context fill, and the load settings"),
    "export": ("/export PATH", "write the conversation to PATH (.md Markdown, .json JSON)"),
    "regen": ("/regen", "a new reply to your last message; the earlier replies are kept"),
    "alt": ("/alt [N]", "show version N of the last reply (lists the versions without N)"),
    "edit": ("/edit TEXT", "replace your last message with TEXT and resend (the old branch "
                           "is kept)"),
    "attach": ("/attach [PATH]", "attach a text file or PDF to your next message (lists "
                                 "what is attached without PATH)"),
    "preset": ("/preset [NAME | save NAME | delete NAME]",
               "list presets, load one, save the current settings as one, or delete one"),
    "tools": ("/tools [on|off TOOL | start SERVER | force TOOL|any|off]",
              "MCP tools: list them, turn one on or off, restart a server, force a call"),
}


@dataclass
class Command:
    name: str
    arg: str = ""


@dataclass
class CommandResult:
    """What a command did: a message for people, and data for ``--json`` and the GUI."""

    command: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    reset: bool = False  # the conversation was cleared
    reloaded: bool = False
    turn: Any = None  # a TurnResult, for commands that run a turn (/regen, /edit)

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "message": self.message, **self.data}


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse(text: str) -> Command:
    """Parse ``/name args``; raises DeskLMError for an unknown command, listing the known ones."""
    body = text.strip()[1:]
    name, _, arg = body.partition(" ")
    name = name.strip().lower()
    if name not in COMMANDS:
        raise DeskLMError(
            f"unknown command '/{name}'; known commands: "
            + ", ".join(f"/{n}" for n in COMMANDS)
        )
    return Command(name, arg.strip())


def help_text() -> str:
    width = max(len(u) for u, _ in COMMANDS.values())
    return "\n".join(f"{u.ljust(width)}  {h}" for u, h in COMMANDS.values())
