"""The slash commands for versions, branches and presets: /regen, /alt, /edit, /preset.

Kept apart from session.py so that file stays small; ChatSession.run_command sends these here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from desklm.engine import branches
from desklm.engine.commands import Command, CommandResult
from desklm.errors import DeskLMError


def _last(session: Any, role: str) -> Any:
    for m in reversed(session.conversation.messages):
        if m.role == role:
            return m
    return None


def _turn_result(name: str, session: Any, turn: Any) -> CommandResult:
    last = session.conversation.messages[-1]
    data = {**turn.to_dict(), "message_id": last.id, "version": last.alt_index + 1,
            "versions": len(last.alternatives) + 1, "conversation_id": session.conv_id}
    label = branches.version_label(last)
    return CommandResult(name, turn.reply + (f"\n[version {label}]" if label else ""), data,
                         turn=turn)


def run_chat_command(session: Any, cmd: Command,
                     on_text: Callable[[str], None] | None = None) -> CommandResult:
    if cmd.name == "regen":
        if cmd.arg:
            raise DeskLMError("usage: /regen (no arguments)")
        return _turn_result("regen", session, session.regenerate(on_text))
    if cmd.name == "edit":
        if not cmd.arg:
            raise DeskLMError("usage: /edit TEXT (replaces your last message and resends it)")
        user = _last(session, "user")
        if user is None:
            raise DeskLMError("nothing to edit: no message has been sent yet")
        return _turn_result("edit", session, session.edit_and_resend(user.id, cmd.arg, on_text))
    if cmd.name == "alt":
        reply = _last(session, "assistant")
        if reply is None:
            raise DeskLMError("no reply yet: /alt switches between versions of the last reply")
        vs = branches.versions(reply)
        if not cmd.arg:
            lines = [f"{'*' if v is reply else ' '} {k + 1}: "
                     + " ".join(v.content.split())[:70] for k, v in enumerate(vs)]
            return CommandResult("alt", "\n".join(lines),
                                 {"version": reply.alt_index + 1, "versions": len(vs),
                                  "message_id": reply.id})
        try:
            n = int(cmd.arg)
        except ValueError:
            raise DeskLMError(f"usage: /alt N, with N from 1 to {len(vs)}") from None
        if not 1 <= n <= len(vs):
            raise DeskLMError(f"the last reply has {len(vs)} version(s); choose 1 to {len(vs)}"
                              + ("" if len(vs) > 1 else " (/regen makes another)"))
        shown = session.select_alternative(reply.id, n - 1)
        return CommandResult("alt", f"[version {n}/{len(vs)}]\n{shown.content}",
                             {"version": n, "versions": len(vs), "message_id": shown.id,
                              "reply": shown.content})
    if cmd.name == "preset":
        return _preset(session, cmd.arg)
    if cmd.name == "attach":
        return _attach(session, cmd.arg)
    raise DeskLMError(f"command /{cmd.name} is not available here")  # pragma: no cover


def _preset(session: Any, arg: str) -> CommandResult:
    from desklm.engine.presets import PresetStore, apply_preset

    store = PresetStore()
    verb, _, rest = arg.partition(" ")
    if not arg:
        items = store.list_all()
        last = store.last_for(session.model_path)
        notes = [f"note: {p}" for p in store.problems]
        if not items:
            lines = ["no presets yet; /preset save NAME saves the current settings"]
        else:
            lines = [f"{'*' if p.name == last else ' '} {p.name}: "
                     + ", ".join(f"{k}={v}" for k, v in p.values.items()
                                 if k != "system_prompt") for p in items]
        return CommandResult("preset", "\n".join(notes + lines),
                             {"presets": [p.to_dict() for p in items], "last_for_model": last,
                              "problems": store.problems})
    if verb == "save":
        p = store.save(rest, session.settings, session.model_path)
        return CommandResult("preset", f"preset '{p.name}' saved "
                             f"({len(p.values)} settings, the system prompt among them)",
                             {"preset": p.name, "settings": p.values})
    if verb == "delete":
        name = store.get(rest).name
        store.delete(name)
        return CommandResult("preset", f"preset '{name}' deleted", {"preset": name})
    return apply_preset(session, arg, store)


def _pending(a: Any) -> dict[str, Any]:
    """A queued file as the window's chip shows it: name, size, tokens and any fit note."""
    return {**a.meta(), "note": a.note}


def _attach(session: Any, arg: str) -> CommandResult:
    from desklm.engine.attachments import context_room, read_attachment

    pending = session.pending_attachments
    if arg:
        eng = session.engine
        tokenize = eng.tokenize if eng.template is not None else None
        room = context_room(session) if tokenize is not None else None
        if room is not None:  # the files already queued take their share
            used = sum(a.tokens or 0 for a in pending)
            room = (max(0, room[0] - used), max(0, room[1] - used), room[2])
        att = read_attachment(arg.strip().strip("'\""), tokenize, room)
        pending.append(att)
        msg = (f"attached {att.name}: {att.chars:,} characters"
               + (f", {att.tokens:,} tokens" if att.tokens is not None else "")
               + (f" ({att.note})" if att.note else "") + "; it goes with your next message")
        return CommandResult("attach", msg, {"attachment": att.to_dict(),
                                             "pending": [_pending(a) for a in pending]})
    if not pending:
        return CommandResult("attach", "nothing attached; /attach PATH adds a file",
                             {"pending": []})
    return CommandResult("attach", "\n".join(f"{a.name}: {a.chars:,} characters"
                                             + (f", {a.tokens:,} tokens" if a.tokens else "")
                                             for a in pending),
                         {"pending": [_pending(a) for a in pending]})
