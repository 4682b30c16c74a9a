"""Slash commands: one registry. Each command is a function here, registered with
:func:`command`, which carries its usage and help; text is parsed only when a person types it
(``/set n_ctx 8192`` in the terminal or the window's message box). The window's buttons call
the session's methods (``regenerate``, ``attach``, ``save_preset``...) instead of sending text.

A handler gets the session (:class:`desklm.engine.chat.session.ChatSession`), the argument
text and, for commands that run a turn, ``on_text`` to stream the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desklm.engine.chat import branches
from desklm.errors import DeskLMError

OnText = Callable[[str], None] | None
Handler = Callable[[Any, str, OnText], "CommandResult"]


@dataclass
class CommandResult:
    """What a command did: a message for people, and data for ``--json`` and the GUI."""

    command: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    reset: bool = False  # the conversation was cleared
    reloaded: bool = False
    turn: Any = None  # a TurnResult, for commands that run a turn (/regen, /edit)
    redraw: bool = False  # the chat shown changed (a new version, a fresh chat): draw it again

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "message": self.message, **self.data}


@dataclass(frozen=True)
class Command:
    """One registered command: ``usage`` and ``help`` are what /help and the docs show."""

    name: str
    usage: str
    help: str
    handler: Handler


REGISTRY: dict[str, Command] = {}


def command(name: str, usage: str, help: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` as ``/name``."""

    def register(handler: Handler) -> Handler:
        REGISTRY[name] = Command(name, usage, help, handler)
        return handler

    return register


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse(text: str) -> tuple[Command, str]:
    """``/name args`` -> (the command, the argument text); an unknown name fails with the list
    of known ones."""
    name, _, arg = text.strip()[1:].partition(" ")
    name = name.strip().lower()
    if name not in REGISTRY:
        raise DeskLMError(
            f"unknown command '/{name}'; known commands: " + ", ".join(f"/{n}" for n in REGISTRY)
        )
    return REGISTRY[name], arg.strip()


def run(session: Any, text: str, on_text: OnText = None) -> CommandResult:
    """Parse and run a command a person typed."""
    cmd, arg = parse(text)
    return cmd.handler(session, arg, on_text)


def help_text() -> str:
    width = max(len(c.usage) for c in REGISTRY.values())
    return "\n".join(f"{c.usage.ljust(width)}  {c.help}" for c in REGISTRY.values())


def help_rows() -> list[tuple[str, str]]:
    """(usage, help) per command, for a table the window lays out itself."""
    return [(c.usage, c.help) for c in REGISTRY.values()]


# --- the commands --------------------------------------------------------------------------------
@command("reset", "/reset", "clear the conversation and the model's KV cache")
def _reset(session: Any, arg: str, on_text: OnText) -> CommandResult:
    # like "New chat": the previous chat stays saved in history, untouched
    session.new_conversation()
    return CommandResult(
        "reset",
        "conversation and KV cache cleared",
        {"context_used": session.engine.context_used, "conversation_id": session.conv_id},
        reset=True,
        redraw=True,
    )


@command("help", "/help", "list the commands")
def _help(session: Any, arg: str, on_text: OnText) -> CommandResult:
    return CommandResult(
        "help",
        help_text(),
        {"commands": {c.usage.split()[0]: c.help for c in REGISTRY.values()}},
    )


@command("system", "/system [text]", "show or set the system prompt (takes effect next turn)")
def _system(session: Any, arg: str, on_text: OnText) -> CommandResult:
    if not arg:
        return CommandResult(
            "system",
            f"system prompt: {session.settings['system_prompt']}",
            {"system_prompt": session.settings["system_prompt"]},
        )
    res: CommandResult = session.apply_settings({"system_prompt": arg})
    res.command = "system"
    return res


@command("set", "/set [setting value]", "show all settings, or change one (reloads if needed)")
def _set(session: Any, arg: str, on_text: OnText) -> CommandResult:
    from desklm.engine.settings import SCHEMA, get_setting

    s = session.settings
    if not arg:
        lines = [
            f"{n} = {s[n]}  ({spec.range_text(s.maximum(n))}"
            f"{'; reload' if spec.needs_reload else ''})"
            for n, spec in SCHEMA.items()
        ]
        return CommandResult("set", "\n".join(lines), {"settings": s.to_dict()})
    name, _, value = arg.partition(" ")
    get_setting(name)  # unknown names fail with the list of known ones
    if not value.strip():
        raise DeskLMError(
            f"usage: /set {name} <value>; allowed: {SCHEMA[name].range_text(s.maximum(name))}"
        )
    res: CommandResult = session.apply_settings({name: value})
    return res


@command("stats", "/stats", "last turn's speed, context fill, and the load settings")
def _stats(session: Any, arg: str, on_text: OnText) -> CommandResult:
    return CommandResult("stats", session.stats_text(), session.stats_data())


@command("export", "/export PATH", "write the conversation to PATH (.md Markdown, .json JSON)")
def _export(session: Any, arg: str, on_text: OnText) -> CommandResult:
    if not arg:
        raise DeskLMError("usage: /export PATH (.md for Markdown, .json for JSON)")
    out = session.export(Path(arg))
    return CommandResult("export", f"conversation written to {out}", {"path": str(out)})


@command("regen", "/regen", "a new reply to your last message; the earlier replies are kept")
def _regen(session: Any, arg: str, on_text: OnText) -> CommandResult:
    if arg:
        raise DeskLMError("usage: /regen (no arguments)")
    return _turn_result("regen", session, session.regenerate(on_text))


@command("alt", "/alt [N]", "show version N of the last reply (lists the versions without N)")
def _alt(session: Any, arg: str, on_text: OnText) -> CommandResult:
    reply = _last(session, "assistant")
    if reply is None:
        raise DeskLMError("no reply yet: /alt switches between versions of the last reply")
    vs = branches.versions(reply)
    if not arg:
        lines = [
            f"{'*' if v is reply else ' '} {k + 1}: " + " ".join(v.content.split())[:70]
            for k, v in enumerate(vs)
        ]
        return CommandResult(
            "alt",
            "\n".join(lines),
            {"version": reply.alt_index + 1, "versions": len(vs), "message_id": reply.id},
            redraw=True,
        )
    try:
        n = int(arg)
    except ValueError:
        raise DeskLMError(f"usage: /alt N, with N from 1 to {len(vs)}") from None
    if not 1 <= n <= len(vs):
        raise DeskLMError(
            f"the last reply has {len(vs)} version(s); choose 1 to {len(vs)}"
            + ("" if len(vs) > 1 else " (/regen makes another)")
        )
    shown = session.select_alternative(reply.id, n - 1)
    return CommandResult(
        "alt",
        f"[version {n}/{len(vs)}]\n{shown.content}",
        {"version": n, "versions": len(vs), "message_id": shown.id, "reply": shown.content},
        redraw=True,
    )


@command(
    "edit", "/edit TEXT", "replace your last message with TEXT and resend (the old branch is kept)"
)
def _edit(session: Any, arg: str, on_text: OnText) -> CommandResult:
    if not arg:
        raise DeskLMError("usage: /edit TEXT (replaces your last message and resends it)")
    user = message_to_edit(session)
    return _turn_result("edit", session, session.edit_and_resend(user.id, arg, on_text))


def message_to_edit(session: Any) -> Any:
    """The message ``/edit TEXT`` replaces: your last one (the window's typed /edit asks too)."""
    user = _last(session, "user")
    if user is None:
        raise DeskLMError("nothing to edit: no message has been sent yet")
    return user


@command(
    "attach",
    "/attach [PATH]",
    "attach a text file or PDF to your next message (lists what is attached without PATH)",
)
def _attach(session: Any, arg: str, on_text: OnText) -> CommandResult:
    pending = session.pending_attachments
    if arg:
        att = session.attach(arg.strip().strip("'\""))
        msg = (
            f"attached {att.name}: {att.chars:,} characters"
            + (f", {att.tokens:,} tokens" if att.tokens is not None else "")
            + (f" ({att.note})" if att.note else "")
            + "; it goes with your next message"
        )
        return CommandResult(
            "attach", msg, {"attachment": att.to_dict(), "pending": [a.chip() for a in pending]}
        )
    if not pending:
        return CommandResult(
            "attach", "nothing attached; /attach PATH adds a file", {"pending": []}
        )
    return CommandResult(
        "attach",
        "\n".join(
            f"{a.name}: {a.chars:,} characters" + (f", {a.tokens:,} tokens" if a.tokens else "")
            for a in pending
        ),
        {"pending": [a.chip() for a in pending]},
    )


@command(
    "preset",
    "/preset [NAME | save NAME | delete NAME]",
    "list presets, load one, save the current settings as one, or delete one",
)
def _preset_cmd(session: Any, arg: str, on_text: OnText) -> CommandResult:
    return _preset(session, arg)


# --- helpers -------------------------------------------------------------------------------
def _last(session: Any, role: str) -> Any:
    for m in reversed(session.conversation.messages):
        if m.role == role:
            return m
    return None


def _turn_result(name: str, session: Any, turn: Any) -> CommandResult:
    last = session.conversation.messages[-1]
    data = {
        **turn.to_dict(),
        "message_id": last.id,
        "version": last.alt_index + 1,
        "versions": len(last.alternatives) + 1,
        "conversation_id": session.conv_id,
    }
    label = branches.version_label(last)
    return CommandResult(
        name, turn.reply + (f"\n[version {label}]" if label else ""), data, turn=turn, redraw=True
    )


def _preset(session: Any, arg: str) -> CommandResult:
    from desklm.engine.chat.presets import PresetStore, apply_preset

    store = PresetStore()
    verb, _, rest = arg.partition(" ")
    if not arg:
        items = store.list_all()
        last = store.last_for(session.model_path)
        notes = [f"note: {p}" for p in store.problems]
        if not items:
            lines = ["no presets yet; /preset save NAME saves the current settings"]
        else:
            lines = [
                f"{'*' if p.name == last else ' '} {p.name}: "
                + ", ".join(f"{k}={v}" for k, v in p.values.items() if k != "system_prompt")
                for p in items
            ]
        return CommandResult(
            "preset",
            "\n".join(notes + lines),
            {
                "presets": [p.to_dict() for p in items],
                "last_for_model": last,
                "problems": store.problems,
            },
        )
    if verb == "save":
        p = store.save(rest, session.settings, session.model_path)
        return CommandResult(
            "preset",
            f"preset '{p.name}' saved ({len(p.values)} settings, the system prompt among them)",
            {"preset": p.name, "settings": p.values},
        )
    if verb == "delete":
        name = store.get(rest).name
        store.delete(name)
        return CommandResult("preset", f"preset '{name}' deleted", {"preset": name})
    return apply_preset(session, arg, store)
