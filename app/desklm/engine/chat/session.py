"""ChatSession: a conversation, its settings and an engine, as one unit.

The CLI's ``desklm chat`` and the window's controller both drive a ChatSession (through a
:class:`~desklm.engine.runtime.Runtime`), so budgeting, slash commands and settings behave the
same in both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from desklm.engine.backends.base import Backend, FinishReason, LoadInfo, TurnStats
from desklm.engine.backends.local import kvcache
from desklm.engine.chat import branches, commands
from desklm.engine.chat import tool_commands as _tool_commands  # noqa: F401  (registers /tools)
from desklm.engine.chat.attachments import Attachment, compose, typed_text
from desklm.engine.chat.commands import CommandResult
from desklm.engine.chat.conversation import Conversation, Message, PlanCancelled, PromptPlan
from desklm.engine.fmt import fmt_rate, fmt_secs
from desklm.engine.settings import SCHEMA, Settings
from desklm.engine.store.files import ConversationStore, StoreError, export_record, title_from
from desklm.errors import DeskLMError

if TYPE_CHECKING:
    from desklm.engine.backends.local.engine import ChatEngine
    from desklm.engine.chat.tools import Consent, ToolHub, ToolInfo, ToolStep

log = logging.getLogger("desklm.engine")

FORCED_CALL_TOKENS = 256  # room for a call the user forced, however low max_tokens is


@dataclass
class TurnResult:
    reply: str
    stats: TurnStats
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # ToolStep.to_dict()s
    notes: list[str] = field(default_factory=list)  # e.g. a tool server that could not start

    def to_dict(self) -> dict[str, Any]:
        out = {"reply": self.reply, **self.stats.to_dict()}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.notes:
            out["notes"] = self.notes
        return out


class ChatSession:
    """A conversation, its settings and an engine.

    With a ``store``, the conversation is saved (atomically) after every completed turn, and
    can be switched with :meth:`new_conversation` / :meth:`open_conversation`.
    """

    def __init__(
        self,
        model_path: Path,
        settings: Settings | None = None,
        engine: Backend | None = None,
        store: ConversationStore | None = None,
        kv: kvcache.SnapshotCache | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.settings = settings.copy() if settings is not None else Settings()
        if engine is None:  # the local llama.cpp engine (imported here: a server needs none)
            from desklm.engine.backends.local.engine import ChatEngine

            engine = ChatEngine()
        self.engine: Backend = engine
        self.conversation = Conversation(self.settings["system_prompt"])
        self.last_stats: TurnStats | None = None
        self.store = store
        self.save_error: str | None = None  # the last save failure, for the UI to report
        self.pending_attachments: list[Attachment] = []  # queued by /attach for the next turn
        self._setting_listeners: list[Callable[[str, Any], None]] = []
        self.kv = kv  # KV snapshots of chats left (created on first use when saving chats)
        self._kv_conv: str | None = None  # the chat whose tokens the model's KV cache holds
        self._kv_pending = False  # the open chat may have a snapshot to restore on its next turn
        # tools (desklm.engine.chat.tools), set by whoever owns the session: the MCP servers,
        # who is asked before each call, and who hears of each call ("call" when it is asked
        # for, "result" when it is done)
        self.tools: ToolHub | None = None
        self.consent: Consent | None = None
        self.on_tool: Callable[[str, ToolStep], None] | None = None
        self.force_tool: str | None = None  # "*" or a tool's name: the next turn calls it
        self._new_ids()

    # -- settings ownership --
    def on_setting(self, listener: Callable[[str, Any], None]) -> None:
        """Call ``listener(name, value)`` whenever a setting in effect changes. The session is
        the one owner of the values: others send changes (:meth:`apply_settings`) and listen."""
        self._setting_listeners.append(listener)

    def _notify(self, names: list[str]) -> None:
        for name in names:
            for listener in self._setting_listeners:
                listener(name, self.settings[name])

    def _new_ids(self) -> None:
        import time
        import uuid

        self.conv_id = uuid.uuid4().hex[:16]
        self.title = ""
        self.created = time.time()

    # -- persistence --
    def record(self) -> dict[str, Any]:
        """The conversation as the versioned JSON record the store writes."""
        msgs = self.conversation.messages
        # titled by what was asked, not by the file attached to it
        title = self.title or (
            title_from(typed_text(msgs[0].content) or msgs[0].content) if msgs else "New chat"
        )
        return {
            "id": self.conv_id,
            "title": title,
            "created": self.created,
            "model": getattr(self.engine, "model_label", None) or self.model_path.name,
            "settings": self.settings.to_dict(),
            "context_start": self.conversation.context_start,
            "messages": [m.to_dict() for m in msgs],
        }

    def save(self) -> bool:
        """Save now (if there is a store and something to save). Never raises: a failure is
        kept in ``save_error`` and logged, and the conversation stays in memory."""
        if self.store is None or not self.conversation.messages:
            return False
        try:
            self.store.save(self.record())
            self.save_error = None
            return True
        except (StoreError, OSError) as e:
            self.save_error = f"could not save the conversation: {e}"
            log.error("%s", self.save_error)
            return False

    def new_conversation(self) -> None:
        self.save()
        self.reset()
        self._new_ids()

    def open_conversation(self, conv_id: str) -> dict[str, Any]:
        """Switch to a saved conversation; the KV cache is cleared, not reused across chats."""
        if self.store is None:
            raise DeskLMError("conversations are not being saved in this session")
        try:
            rec = self.store.load(conv_id)
        except StoreError as e:
            raise DeskLMError(str(e)) from None
        self.save()
        msgs = [Message.from_dict(m) for m in rec["messages"]]
        self.reset()
        self.conversation.messages = msgs
        start = rec.get("context_start", 0)
        self.conversation.context_start = (
            start if isinstance(start, int) and 0 <= start <= len(msgs) else 0
        )
        self.conv_id, self.title = rec["id"], rec.get("title") or ""
        self._kv_pending = True  # restored on the next turn if its snapshot still matches
        self.created = rec.get("created") or self.created
        system = (rec.get("settings") or {}).get("system_prompt")
        if isinstance(system, str) and "\x00" not in system:
            if self.settings["system_prompt"] != system:
                self.settings.set("system_prompt", system)
                self._notify(["system_prompt"])
            self.conversation.system_prompt = system
        return rec

    def export(self, path: Path, fmt: str | None = None) -> Path:
        return export_record(self.record(), path, fmt)

    # -- model --
    def load(
        self,
        path: Path | None = None,
        progress: Callable[[float], None] | None = None,
        clamp: bool = False,
    ) -> LoadInfo:
        """Load (or switch to) a model. On failure the old model and settings stay.

        ``clamp=True`` is for settings saved earlier: values above this model's limits (an
        n_ctx of 131072 on a 32k model) are lowered, and ``info.notes`` says so, instead of
        the load failing at every start."""
        target = Path(path) if path is not None else self.model_path
        info = self.engine.load(target, self.settings, progress=progress, clamp=clamp)
        self.model_path = target
        assert self.engine.settings is not None
        self.settings.limits = dict(self.engine.settings.limits)
        if clamp:
            self.settings.update(self.engine.settings.load_values())
        return info

    def use_backend(
        self, backend: Backend, model_path: Path | None = None, *, require_loaded: bool = True
    ) -> None:
        """Switch to another backend that is already loaded or connected (a local engine, a
        server's model, e.g. ``RemoteBackend.connect(url, key, model, self.settings)``),
        keeping the conversation: the new backend reads it whole on the next turn.
        ``require_loaded=False`` takes back a local engine that is about to load."""
        if require_loaded and not backend.loaded:
            raise DeskLMError("that model is not loaded or connected")
        if backend is not self.engine:
            self.engine.stop()
        self.engine = backend
        if model_path is not None:
            self.model_path = Path(model_path)
        if backend.settings is not None:
            self.settings.limits = dict(backend.settings.limits)
        self.last_stats = None

    @property
    def load_info(self) -> LoadInfo | None:
        return self.engine.load_info

    # -- turns --
    def send(
        self,
        text: str,
        on_text: Callable[[str], None] | None = None,
        on_start: Callable[[PromptPlan, int], None] | None = None,
        attachments: Sequence[Attachment] | None = None,
    ) -> TurnResult:
        """Run one user turn. Raises DeskLMError (nothing is added) when it cannot run.
        ``attachments`` (and any queued by /attach) go into the message before ``text``."""
        text = text.replace("\x00", "")  # before the check: NULs alone are an empty message
        files = [*(attachments or []), *self.pending_attachments]
        if files:
            text = compose(text, files)
        if not text.strip():
            raise DeskLMError("empty message: nothing to send")
        eng = self.engine
        if eng.template is None:
            raise DeskLMError("no model is loaded")
        eng.begin_turn()  # a Stop from here on (planning included) ends this turn
        tools, notes = self._turn_tools()
        # a forced call needs no description: the grammar holds the schemas, and the model
        # then answers without being told to write calls
        self.conversation.tools_text = "" if self.force_tool else self._tools_text(tools)
        try:
            plan = self.conversation.plan(
                text,
                eng.template,
                eng.tokenize,
                eng.n_ctx,
                int(self.settings["max_tokens"]),
                cancelled=eng.stop_requested,
            )
        except PlanCancelled:  # nothing was added; the turn simply ends as cancelled
            return TurnResult(
                "",
                TurnStats(
                    finish_reason=FinishReason.CANCELLED,
                    n_ctx=eng.n_ctx,
                    context_used=eng.context_used,
                ),
            )
        restored = self._restore_kv(plan.tokens) if self._kv_pending else 0
        self._kv_conv = self.conv_id
        conv = self.conversation
        start = conv.context_start
        user = conv.commit_user(text, plan)
        user.attachments = [a.meta() for a in files]
        steps: list[ToolStep] = []
        try:
            if on_start is not None:
                on_start(plan, eng.reusable_prefix(plan.tokens))
            if tools:
                reply, stats = self._generate_with_tools(plan, tools, on_text, steps)
            else:
                reply, stats = eng.generate(
                    plan.tokens,
                    self.settings,
                    on_text,
                    reasoning_open=reasoning_opened(plan.text),
                    clear_stop=False,
                )
        except BaseException:  # leave the conversation as it was before this turn
            conv.messages.remove(user)
            conv.context_start = start
            raise
        stats.trimmed = plan.dropped
        stats.restored_tokens = min(restored, stats.prompt_tokens_reused)
        self.pending_attachments = []
        msg = self.conversation.add_assistant(reply.strip(), stats.to_dict())
        msg.tool_calls = [s.to_dict() for s in steps]
        self.last_stats = stats
        self.save()
        if plan.dropped:
            log.info("trimmed %d message(s) to fit n_ctx=%d", len(plan.dropped), stats.n_ctx)
        return TurnResult(reply, stats, list(msg.tool_calls), notes)

    # -- tools (desklm.engine.chat.tools) --
    def _turn_tools(self) -> tuple[list[ToolInfo], list[str]]:
        """The tools on for this turn (their servers started), and notes on servers that
        could not run: their tools are left out and the chat goes on."""
        forced, hub = self.force_tool, self.tools
        if hub is None:
            if forced:
                self.force_tool = None
                raise DeskLMError("no tools are set up: add an MCP server first")
            return [], []
        tools, notes = hub.active_tools()
        for n in notes:
            log.warning("%s", n)
        if forced and not any(forced in ("*", t.model_name) for t in tools):
            self.force_tool = None
            raise DeskLMError(
                f"cannot call {forced!r}: "
                + (
                    "no tool is on"
                    if not tools
                    else "it is not among the tools on: " + ", ".join(t.model_name for t in tools)
                )
            )
        return tools, notes

    @staticmethod
    def _tools_text(tools: list[ToolInfo]) -> str:
        if not tools:
            return ""
        from desklm.engine.chat.tool_format import system_text

        return system_text(tools)

    def _tool_event(self, kind: str, step: ToolStep) -> None:
        if self.on_tool is not None:
            self.on_tool(kind, step)

    def _generate_with_tools(
        self,
        plan: PromptPlan,
        tools: list[ToolInfo],
        on_text: Callable[[str], None] | None,
        steps: list[ToolStep],
    ) -> tuple[str, TurnStats]:
        """The turn loop with tools on: the model answers, or calls a tool (asked first, then
        called), reads the result and goes on, until it answers, the per-turn limit is
        reached, or Stop is pressed. ``steps`` receives each call as it is made."""
        from desklm.engine.chat import tool_format as tf
        from desklm.engine.chat.tools import ToolTurn

        eng, hub = self.engine, self.tools
        assert hub is not None
        limit = int(self.settings["tool_calls_per_turn"])
        turn = ToolTurn(hub, tools, self.consent, eng.stop_requested, limit)
        forced, self.force_tool = self.force_tool, None
        tokens, text = plan.tokens, plan.text
        total = 0
        while True:
            held = tf.HeldStream(on_text)
            if forced and not steps:  # the user asked for a call: a grammar makes it one
                from desklm.engine.backends.local.engine import ChatEngine

                if not isinstance(eng, ChatEngine):
                    raise DeskLMError(
                        "a forced tool call needs a model on this machine (a "
                        "grammar); a server's model chooses its calls itself"
                    )
                sampling = self.settings  # a forced call is not cut short by max_tokens
                if int(sampling["max_tokens"]) < FORCED_CALL_TOKENS:
                    sampling = sampling.copy()
                    sampling.set("max_tokens", FORCED_CALL_TOKENS)
                reply, stats = eng.generate(
                    tokens,
                    sampling,
                    held.feed,
                    reasoning_open=reasoning_opened(text),
                    clear_stop=False,
                    grammar=tf.grammar(tools, forced),
                )
            else:
                reply, stats = eng.generate(
                    tokens,
                    self.settings,
                    held.feed,
                    reasoning_open=reasoning_opened(text),
                    clear_stop=False,
                )
            total += stats.completion_tokens
            # after a forced call the model answers: what it writes then is the answer, even
            # when it looks like another call (a base model copies the call it just saw)
            call = (
                tf.parse_call(reply, tools)
                if stats.finish_reason != FinishReason.CANCELLED and not (forced and steps)
                else None
            )
            if call is None:
                held.flush()
                break
            if steps and steps[-1].status == "limit":  # it calls on after being told no more
                reply = f"[no answer: {steps[-1].note}, and the model asked for another call]"
                if on_text is not None:
                    on_text(reply)
                break
            step = turn.run(call[0], call[1], on_step=lambda s: self._tool_event("call", s))
            steps.append(step)
            if step.status != "limit":
                log.info("tool %s (%s): %s", step.tool, step.server, step.status)
            if step.status == "stopped":
                self._tool_event("result", step)
                stats.finish_reason = FinishReason.CANCELLED
                reply = ""
                break
            tokens, text = self._tool_prompt(steps)
            self._tool_event("result", step)
            if not tokens:
                reply = "[no answer: the tool's result leaves no room in the context]"
                if on_text is not None:
                    on_text(reply)
                stats.finish_reason = FinishReason.LENGTH
                break
        stats.completion_tokens = total
        return reply, stats

    def _tool_prompt(self, steps: list[ToolStep]) -> tuple[list[int], str]:
        """The prompt after the calls so far; the last result is cut to fit the context
        (its note says so). ([], "") when even an empty result would not fit."""
        from desklm.engine.chat.conversation import reply_reserve
        from desklm.engine.chat.tool_format import with_results

        eng, conv = self.engine, self.conversation
        assert eng.template is not None
        budget = eng.n_ctx - reply_reserve(eng.n_ctx, int(self.settings["max_tokens"]))
        base = conv.as_msgs(conv.in_context())
        last = steps[-1]
        note = last.note
        for _ in range(6):
            msgs = with_results(base, steps)
            parts = eng.template.render_parts(msgs)
            tokens = eng.tokenize(parts)
            over = len(tokens) - budget
            if over <= 0:
                return tokens, "".join(p.text for p in parts)
            if not last.result:
                return [], ""
            n = max(1, len(eng.tokenize(last.result)))
            keep = int(len(last.result) * max(0, n - over - 16) / n)
            was = len(last.result)
            last.result = last.result[:keep]
            cut = f"the result was cut from {was:,} to {keep:,} characters to fit the context"
            last.note = f"{note}; {cut}" if note else cut
        return [], ""

    # -- versions and branches (desklm.engine.chat.branches) --
    def _turn_after(
        self,
        prefix: list[Message],
        user_text: str,
        on_text: Callable[[str], None] | None,
        on_start: Callable[[PromptPlan, int], None] | None = None,
    ) -> tuple[str, TurnStats, int]:
        """Generate a reply to ``user_text`` as if the conversation were ``prefix``; the
        conversation is left exactly as it was (the caller applies the result). Returns the
        reply, its stats and the context start to use after it."""
        eng, conv = self.engine, self.conversation
        if eng.template is None:
            raise DeskLMError("no model is loaded")
        if not user_text.strip():
            raise DeskLMError("empty message: nothing to send")
        orig, orig_start = conv.messages, conv.context_start
        conv.tools_text = ""  # a new version of a reply is made without calling tools
        conv.messages = list(prefix)
        conv.context_start = min(orig_start, len(prefix))
        try:
            plan = conv.plan(
                user_text, eng.template, eng.tokenize, eng.n_ctx, int(self.settings["max_tokens"])
            )
            start = conv.context_start + len(plan.dropped)
            if on_start is not None:
                on_start(plan, eng.reusable_prefix(plan.tokens))
            reply, stats = eng.generate(
                plan.tokens, self.settings, on_text, reasoning_open=reasoning_opened(plan.text)
            )
        finally:
            conv.messages, conv.context_start = orig, orig_start
        stats.trimmed = plan.dropped
        return reply.strip(), stats, start

    def _finish_branch_turn(
        self, path: list[Message], reply: str, stats: TurnStats, start: int
    ) -> TurnResult:
        self.conversation.messages = path
        self.conversation.context_start = min(start, len(path))
        self.last_stats = stats
        self.save()
        return TurnResult(reply, stats)

    def regenerate(
        self,
        on_text: Callable[[str], None] | None = None,
        on_start: Callable[[PromptPlan, int], None] | None = None,
    ) -> TurnResult:
        """A new reply to the last user message. The new reply becomes the active version;
        the earlier replies stay as versions of it (``select_alternative`` switches)."""
        msgs = self.conversation.messages
        users = [i for i, m in enumerate(msgs) if m.role == "user"]
        if not users:
            raise DeskLMError("nothing to regenerate: no message has been sent yet")
        u = users[-1]
        reply, stats, start = self._turn_after(msgs[:u], msgs[u].content, on_text, on_start)
        new = Message("assistant", reply, stats=stats.to_dict())
        # the earlier reply (and anything after it) becomes a version; none yet: just append
        path = branches.add_version(msgs, u + 1, new) if u + 1 < len(msgs) else [*msgs, new]
        return self._finish_branch_turn(path, reply, stats, start)

    def edit_and_resend(
        self,
        message_id: str,
        new_text: str,
        on_text: Callable[[str], None] | None = None,
        on_start: Callable[[PromptPlan, int], None] | None = None,
    ) -> TurnResult:
        """Replace a sent user message with ``new_text`` and answer it: the conversation
        branches there; the old text and everything that followed it stay as a version."""
        msgs = self.conversation.messages
        i = branches.index_of(msgs, message_id)
        if msgs[i].role != "user":
            raise DeskLMError("only your own messages can be edited; use regenerate for a reply")
        new_text = new_text.replace("\x00", "")
        reply, stats, start = self._turn_after(msgs[:i], new_text, on_text, on_start)
        user = Message("user", new_text)
        user.attachments = [
            a for a in msgs[i].attachments if f"Attached file {a.get('name')}" in new_text
        ]
        path = branches.add_version(msgs, i, user)
        path.append(Message("assistant", reply, stats=stats.to_dict()))
        return self._finish_branch_turn(path, reply, stats, start)

    def select_alternative(self, message_id: str, index: int) -> Message:
        """Show version ``index`` (0-based) of a message; what followed each version is kept
        with it. Returns the message now shown at that place."""
        conv = self.conversation
        i = branches.index_of(conv.messages, message_id)
        conv.messages = branches.select(conv.messages, i, index)
        conv.context_start = min(conv.context_start, i)
        self.save()
        return conv.messages[i]

    def delete_message(self, message_id: str) -> None:
        """Delete a message (only the version shown, when it has others; a user message takes
        its replies with it)."""
        conv = self.conversation
        i = branches.index_of(conv.messages, message_id)
        conv.messages = branches.delete(conv.messages, i)
        conv.context_start = min(conv.context_start, i)
        if conv.messages:
            self.save()
        elif self.store is not None:  # nothing left: keep the (empty) chat saved as empty
            try:
                self.store.save(self.record())
            except (StoreError, OSError) as e:
                self.save_error = f"could not save the conversation: {e}"

    def reveal_message(self, message_id: str) -> int:
        """Switch branches so that ``message_id`` (found in any branch, e.g. by search) is
        shown; returns its index in ``conversation.messages``."""
        conv = self.conversation
        before = [m.id for m in conv.messages]
        path, i = branches.reveal(conv.messages, message_id)
        if [m.id for m in path] != before:
            first = next(
                (k for k, (a, b) in enumerate(zip(before, path, strict=False)) if a != b.id),
                min(len(before), len(path)),
            )
            conv.messages = path
            conv.context_start = min(conv.context_start, first)
            self.save()
        return i

    def stop(self) -> None:
        self.engine.stop()

    def reset(self) -> None:
        self._keep_kv()
        self.conversation.clear()
        self.last_stats = None
        if self.engine.loaded:
            self.engine.reset()

    def close(self) -> bool:
        """Quitting: save the chat (returns whether it was saved), and write its KV snapshot (and
        any kept in RAM) to disk so that reopening it after a restart evaluates only what is
        new."""
        saved = self.save()
        self._keep_kv()
        if self.kv is not None:
            self.kv.flush()
        if self.engine.loaded:  # then free the model
            self.engine.unload()
        return saved

    # -- KV snapshots (backends.local.kvcache) --
    def _snapshots(self) -> kvcache.SnapshotCache | None:
        if self.kv is None and self.store is not None:
            self.kv = kvcache.SnapshotCache(
                ram_bytes=self.settings["kv_snapshot_ram_mb"] * 2**20,
                disk_bytes=self.settings["kv_snapshot_disk_mb"] * 2**20,
            )
        return self.kv

    def _keep_kv(self) -> None:
        """Leaving a chat: snapshot the part of the KV cache its next prompt will start with."""
        cache, eng = self._snapshots(), self.engine
        if (
            cache is None
            or self._kv_conv != self.conv_id
            or eng.template is None
            or not eng.kv_snapshots
        ):  # a server keeps its own cache
            return
        self._kv_conv = None
        try:
            conv = self.conversation
            probe = conv.as_msgs([*conv.in_context(), Message("user", "…")])
            snap = kvcache.capture(
                cast("ChatEngine", eng),
                self.conv_id,
                eng.reusable_prefix(eng.tokenize(eng.template.render_parts(probe))),
            )
            if snap is not None:
                cache.put(snap)
        except Exception as e:  # best effort: a snapshot must never break leaving a chat
            log.warning("no KV snapshot for %s: %s", self.conv_id, e, exc_info=True)

    def _restore_kv(self, tokens: list[int]) -> int:
        self._kv_pending = False
        cache, eng = self._snapshots(), self.engine
        if not eng.kv_snapshots:
            return 0
        local = cast("ChatEngine", eng)
        snap = cache.get(self.conv_id, kvcache.fingerprint(local)) if cache is not None else None
        if (
            snap is None
            or not snap.matches(tokens)
            or eng.reusable_prefix(tokens) >= len(snap.tokens)
        ):
            return 0
        try:
            n = kvcache.restore(local, snap)
        except Exception as e:  # best effort: evaluate in full instead
            log.warning("KV snapshot of %s not restored: %s", self.conv_id, e, exc_info=True)
            eng.reset()
            return 0
        log.info("restored %d tokens of %s from its KV snapshot", n, self.conv_id)
        return n

    def forget_kv(self, conv_id: str) -> None:
        """A chat was deleted: delete its KV snapshot too (it encodes the chat's text)."""
        cache = self._snapshots()
        if cache is not None:
            cache.drop(conv_id)

    def kv_usage(self) -> dict[str, int]:
        """Bytes the KV snapshots use in RAM and on disk, and the budgets."""
        cache = self._snapshots()
        return (
            cache.usage()
            if cache is not None
            else {
                "ram_bytes": 0,
                "ram_snapshots": 0,
                "ram_budget": 0,
                "disk_bytes": 0,
                "disk_snapshots": 0,
                "disk_budget": 0,
            }
        )

    # -- settings --
    def apply_settings(self, values: dict[str, Any]) -> CommandResult:
        """Validate and apply settings; threads apply live, load settings reload the model."""
        new = self.settings.copy()
        changed = new.update(values)  # raises with the range before anything changes
        reload = self._reloading(changed)
        notes = []
        if "parallel" in changed and "parallel" not in reload:
            # no API listens and the model holds no slots: the next load with the API on
            # makes the new number; a reload now would change nothing
            assert self.engine.settings is not None
            self.engine.settings.set("parallel", new["parallel"])
            notes.append("the API slots are made when the API is turned on")
        old = self.settings
        self.settings = new
        self.conversation.system_prompt = new["system_prompt"]
        if self.kv is not None and {"kv_snapshot_ram_mb", "kv_snapshot_disk_mb"} & set(changed):
            self.kv.set_budgets(
                new["kv_snapshot_ram_mb"] * 2**20, new["kv_snapshot_disk_mb"] * 2**20
            )
        if self.engine.loaded and "chat_format" in changed:
            try:
                used = self.engine.set_chat_format(new["chat_format"])
            except DeskLMError:
                self.settings = old
                self.conversation.system_prompt = old["system_prompt"]
                raise
            notes.append(f"chat format now {used} (from the next turn)")
        if self.engine.loaded and ("n_threads" in changed or "n_threads_batch" in changed):
            self.engine.set_threads(new["n_threads"], new["n_threads_batch"])
            notes.append(f"threads now {new['n_threads']} / {new['n_threads_batch']} (live)")
        if reload and self.engine.loaded:
            try:
                self.load()
            except DeskLMError:
                self.settings = old
                self.conversation.system_prompt = old["system_prompt"]
                raise
            notes.append(
                "model reloaded for "
                + ", ".join(reload)
                + "; the conversation is kept and re-read on the next turn"
            )
        self._notify(changed)
        desc = ", ".join(f"{n} = {new[n]}" for n in changed) or "nothing changed"
        msg = desc + ("; " + "; ".join(notes) if notes else "")
        return CommandResult(
            "set",
            msg,
            {
                "changed": {n: new[n] for n in changed},
                "reloaded": bool(reload and self.engine.loaded),
            },
            reloaded=bool(reload and self.engine.loaded),
        )

    def reloads(self, values: dict[str, Any]) -> bool:
        """Whether applying ``values`` reloads the model (see :meth:`_reloading`)."""
        return bool(
            self._reloading([n for n, v in values.items() if n in SCHEMA and self.settings[n] != v])
        )

    def _reloading(self, changed: Sequence[str]) -> list[str]:
        """The load settings among ``changed`` that reload the model: all of them, except the
        ``parallel`` setting alone while no API slots are made or asked for."""
        reload = [n for n in changed if SCHEMA[n].needs_reload]
        return [] if reload == ["parallel"] and self.slots_unused() else reload

    def slots_unused(self) -> bool:
        """The local model is loaded without API slots and makes none at its next load (no
        API listens): the ``parallel`` setting changes nothing until the API is turned on."""
        eng = self.engine
        return (
            eng.loaded
            and getattr(eng, "api_slots", True) is False
            and getattr(eng, "n_slots", 1) == 0
            and eng.settings is not None
        )

    # -- commands (text a person typed; buttons call the methods below instead) --
    def run_command(self, text: str, on_text: Callable[[str], None] | None = None) -> CommandResult:
        """Run a slash command (see :mod:`desklm.engine.chat.commands`); ``on_text`` streams
        the reply of /regen and /edit."""
        return commands.run(self, text, on_text)

    def attach(self, path: str) -> Attachment:
        """Read a text file or PDF and queue it for the next message, its tokens counted
        against the room the context has left (files already queued take their share)."""
        from desklm.engine.chat.attachments import context_room, read_attachment

        pending = self.pending_attachments
        eng = self.engine
        tokenize = eng.tokenize if eng.template is not None else None
        room = context_room(self) if tokenize is not None else None
        if room is not None:
            used = sum(a.tokens or 0 for a in pending)
            room = (max(0, room[0] - used), max(0, room[1] - used), room[2])
        att = read_attachment(path, tokenize, room)
        pending.append(att)
        return att

    def detach(self, name: str) -> None:
        """Take a queued file off the next message."""
        for k, a in enumerate(self.pending_attachments):
            if a.name == name:
                del self.pending_attachments[k]
                return

    def stats_data(self) -> dict[str, Any]:
        li = self.load_info
        return {
            "last_turn": self.last_stats.to_dict() if self.last_stats else None,
            "context_used": self.engine.context_used,
            "n_ctx": li.n_ctx if li else None,
            "model": li.to_dict() if li else None,
            "load_settings": self.settings.load_values(),
            "kv_snapshots": self.kv_usage(),
        }

    def stats_text(self) -> str:
        d = self.stats_data()
        lines = []
        if self.last_stats:
            s = self.last_stats
            lines.append(
                f"last turn: {s.completion_tokens} tokens, {fmt_rate(s.gen_tokens_per_s)} tok/s, "
                f"first token {fmt_secs(s.ttft_s)}, prompt {s.prompt_tokens} tokens "
                f"({s.prompt_tokens_reused} reused"
                + (
                    f", {s.restored_tokens} of them restored from cache"
                    if s.restored_tokens
                    else ""
                )
                + f", {fmt_rate(s.prompt_tokens_per_s)} tok/s), "
                f"finish: {s.finish_reason}"
            )
        else:
            lines.append("last turn: none yet")
        if d["n_ctx"]:
            pct = 100.0 * d["context_used"] / d["n_ctx"]
            lines.append(f"context: {d['context_used']} / {d['n_ctx']} tokens ({pct:.0f}%)")
        if self.load_info:
            lines.append(f"model: {self.load_info.name} ({self.load_info.path})")
        kv = d["kv_snapshots"]
        if kv["ram_budget"] or kv["disk_budget"]:
            lines.append(
                f"chat caches: {kv['ram_snapshots']} in RAM "
                f"({kv['ram_bytes'] / 2**20:.1f} of {kv['ram_budget'] / 2**20:.0f} MB), "
                f"{kv['disk_snapshots']} on disk ({kv['disk_bytes'] / 2**20:.1f} of "
                f"{kv['disk_budget'] / 2**20:.0f} MB)"
            )
        lines.append(
            "load settings: " + ", ".join(f"{k}={v}" for k, v in d["load_settings"].items())
        )
        return "\n".join(lines)


def reasoning_opened(prompt: str) -> bool:
    """Whether the prompt ends inside an open ``<think>`` (the template opened the reasoning,
    so the reply starts with it and holds only the closing tag)."""
    from desklm.engine.prompt.chat_format import THINK_OPEN

    return prompt.rstrip().endswith(THINK_OPEN)
