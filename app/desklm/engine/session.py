"""ChatSession: a conversation, its settings and an engine, as one unit.

The CLI's ``desklm chat`` and the GUI's ``InferenceWorker`` both drive a ChatSession, so
budgeting, slash commands and settings behave the same in both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desklm.engine import commands, kvcache
from desklm.engine.commands import CommandResult
from desklm.engine.conversation import Conversation, Message, PlanCancelled, PromptPlan
from desklm.engine.llm import ChatEngine, LoadInfo, TurnStats
from desklm.engine.settings import SCHEMA, Settings, get_setting
from desklm.engine.store import ConversationStore, StoreError, export_record, title_from
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")


@dataclass
class TurnResult:
    reply: str
    stats: TurnStats

    def to_dict(self) -> dict[str, Any]:
        return {"reply": self.reply, **self.stats.to_dict()}


class ChatSession:
    """A conversation, its settings and an engine.

    With a ``store``, the conversation is saved (atomically) after every completed turn, and
    can be switched with :meth:`new_conversation` / :meth:`open_conversation`.
    """

    def __init__(self, model_path: Path, settings: Settings | None = None,
                 engine: ChatEngine | None = None,
                 store: ConversationStore | None = None,
                 kv: kvcache.SnapshotCache | None = None) -> None:
        self.model_path = Path(model_path)
        self.settings = settings.copy() if settings is not None else Settings()
        self.engine = engine or ChatEngine()
        self.conversation = Conversation(self.settings["system_prompt"])
        self.last_stats: TurnStats | None = None
        self.store = store
        self.save_error: str | None = None  # the last save failure, for the UI to report
        self.kv = kv  # KV snapshots of chats left (created on first use when saving chats)
        self._kv_conv: str | None = None  # the chat whose tokens the model's KV cache holds
        self._kv_pending = False  # the open chat may have a snapshot to restore on its next turn
        self._new_ids()

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
        title = self.title or (title_from(msgs[0].content) if msgs else "New chat")
        return {
            "id": self.conv_id, "title": title, "created": self.created,
            "model": self.model_path.name, "settings": self.settings.to_dict(),
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
        from desklm.engine.conversation import Message

        msgs = [Message.from_dict(m) for m in rec["messages"]]
        self.reset()
        self.conversation.messages = msgs
        start = rec.get("context_start", 0)
        self.conversation.context_start = start if isinstance(start, int) and \
            0 <= start <= len(msgs) else 0
        self.conv_id, self.title = rec["id"], rec.get("title") or ""
        self._kv_pending = True  # restored on the next turn if its snapshot still matches
        self.created = rec.get("created") or self.created
        system = (rec.get("settings") or {}).get("system_prompt")
        if isinstance(system, str) and "\x00" not in system:
            self.settings.set("system_prompt", system)
            self.conversation.system_prompt = system
        return rec

    def export(self, path: Path, fmt: str | None = None) -> Path:
        return export_record(self.record(), path, fmt)

    # -- model --
    def load(self, path: Path | None = None,
             progress: Callable[[float], None] | None = None) -> LoadInfo:
        """Load (or switch to) a model. On failure the old model and settings stay."""
        target = Path(path) if path is not None else self.model_path
        info = self.engine.load(target, self.settings, progress=progress)
        self.model_path = target
        assert self.engine.settings is not None
        self.settings.limits = dict(self.engine.settings.limits)
        return info

    @property
    def load_info(self) -> LoadInfo | None:
        return self.engine.load_info

    # -- turns --
    def send(self, text: str, on_text: Callable[[str], None] | None = None,
             on_start: Callable[[PromptPlan, int], None] | None = None) -> TurnResult:
        """Run one user turn. Raises DeskLMError (nothing is added) when it cannot run."""
        if not text.strip():
            raise DeskLMError("empty message: nothing to send")
        text = text.replace("\x00", "")
        eng = self.engine
        if eng.template is None:
            raise DeskLMError("no model is loaded")
        eng.begin_turn()  # a Stop from here on (planning included) ends this turn
        try:
            plan = self.conversation.plan(
                text, eng.template, eng.tokenize, eng.n_ctx, int(self.settings["max_tokens"]),
                cancelled=eng.stop_requested,
            )
        except PlanCancelled:  # nothing was added; the turn simply ends as cancelled
            return TurnResult("", TurnStats(finish_reason="cancelled", n_ctx=eng.n_ctx,
                                            context_used=eng.context_used))
        restored = self._restore_kv(plan.tokens) if self._kv_pending else 0
        self._kv_conv = self.conv_id
        conv = self.conversation
        start = conv.context_start
        user = conv.commit_user(text, plan)
        if on_start is not None:
            on_start(plan, eng.reusable_prefix(plan.tokens))
        try:
            reply, stats = eng.generate(plan.tokens, self.settings, on_text, clear_stop=False)
        except BaseException:  # leave the conversation as it was before this turn
            conv.messages.remove(user)
            conv.context_start = start
            raise
        stats.trimmed = plan.dropped
        stats.restored_tokens = min(restored, stats.prompt_tokens_reused)
        self.conversation.add_assistant(reply.strip(), stats.to_dict())
        self.last_stats = stats
        self.save()
        if plan.dropped:
            log.info("trimmed %d message(s) to fit n_ctx=%d", len(plan.dropped), stats.n_ctx)
        return TurnResult(reply, stats)

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
        return saved

    # -- KV snapshots (engine.kvcache) --
    def _snapshots(self) -> kvcache.SnapshotCache | None:
        if self.kv is None and self.store is not None:
            self.kv = kvcache.SnapshotCache(ram_bytes=self.settings["kv_snapshot_ram_mb"] * 2**20,
                                            disk_bytes=self.settings["kv_snapshot_disk_mb"]
                                            * 2**20)
        return self.kv

    def _keep_kv(self) -> None:
        """Leaving a chat: snapshot the part of the KV cache its next prompt will start with."""
        cache, eng = self._snapshots(), self.engine
        if cache is None or self._kv_conv != self.conv_id or eng.template is None:
            return
        self._kv_conv = None
        try:
            conv = self.conversation
            probe = conv.as_msgs([*conv.in_context(), Message("user", "…")])
            snap = kvcache.capture(eng, self.conv_id,
                                   eng.reusable_prefix(eng.tokenize(eng.template.render(probe))))
            if snap is not None:
                cache.put(snap)
        except Exception as e:  # best effort: a snapshot must never break leaving a chat
            log.warning("no KV snapshot for %s: %s", self.conv_id, e, exc_info=True)

    def _restore_kv(self, tokens: list[int]) -> int:
        self._kv_pending = False
        cache, eng = self._snapshots(), self.engine
        snap = cache.get(self.conv_id, kvcache.fingerprint(eng)) if cache is not None else None
        if snap is None or not snap.matches(tokens) or \
                eng.reusable_prefix(tokens) >= len(snap.tokens):
            return 0
        try:
            n = kvcache.restore(eng, snap)
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
        return cache.usage() if cache is not None else {
            "ram_bytes": 0, "ram_snapshots": 0, "ram_budget": 0, "disk_bytes": 0,
            "disk_snapshots": 0, "disk_budget": 0}

    # -- settings --
    def apply_settings(self, values: dict[str, Any]) -> CommandResult:
        """Validate and apply settings; threads apply live, load settings reload the model."""
        new = self.settings.copy()
        changed = new.update(values)  # raises with the range before anything changes
        reload = [n for n in changed if SCHEMA[n].needs_reload]
        old = self.settings
        self.settings = new
        self.conversation.system_prompt = new["system_prompt"]
        if self.kv is not None and {"kv_snapshot_ram_mb", "kv_snapshot_disk_mb"} & set(changed):
            self.kv.set_budgets(new["kv_snapshot_ram_mb"] * 2**20,
                                new["kv_snapshot_disk_mb"] * 2**20)
        notes = []
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
            notes.append("model reloaded for " + ", ".join(reload)
                         + "; the conversation is kept and re-read on the next turn")
        desc = ", ".join(f"{n} = {new[n]}" for n in changed) or "nothing changed"
        msg = desc + ("; " + "; ".join(notes) if notes else "")
        return CommandResult("set", msg, {"changed": {n: new[n] for n in changed},
                                          "reloaded": bool(reload and self.engine.loaded)},
                             reloaded=bool(reload and self.engine.loaded))

    # -- commands --
    def run_command(self, text: str) -> CommandResult:
        cmd = commands.parse(text)
        if cmd.name == "reset":
            # like "New chat": the previous chat stays saved in history, untouched
            self.new_conversation()
            return CommandResult("reset", "conversation and KV cache cleared",
                                 {"context_used": self.engine.context_used,
                                  "conversation_id": self.conv_id}, reset=True)
        if cmd.name == "help":
            return CommandResult("help", commands.help_text(),
                                 {"commands": {f"/{k}": h for k, (_, h) in
                                               commands.COMMANDS.items()}})
        if cmd.name == "system":
            if not cmd.arg:
                return CommandResult("system", f"system prompt: {self.settings['system_prompt']}",
                                     {"system_prompt": self.settings["system_prompt"]})
            res = self.apply_settings({"system_prompt": cmd.arg})
            res.command = "system"
            return res
        if cmd.name == "set":
            if not cmd.arg:
                lines = [f"{n} = {self.settings[n]}  ({s.range_text(self.settings.maximum(n))}"
                         f"{'; reload' if s.needs_reload else ''})" for n, s in SCHEMA.items()]
                return CommandResult("set", "\n".join(lines), {"settings": self.settings.to_dict()})
            name, _, value = cmd.arg.partition(" ")
            get_setting(name)  # unknown names fail with the list of known ones
            if not value.strip():
                raise DeskLMError(f"usage: /set {name} <value>; allowed: "
                                  f"{SCHEMA[name].range_text(self.settings.maximum(name))}")
            return self.apply_settings({name: value})
        if cmd.name == "stats":
            return CommandResult("stats", self.stats_text(), self.stats_data())
        if cmd.name == "export":
            if not cmd.arg:
                raise DeskLMError("usage: /export PATH (.md for Markdown, .json for JSON)")
            out = self.export(Path(cmd.arg))
            return CommandResult("export", f"conversation written to {out}", {"path": str(out)})
        raise DeskLMError(f"command /{cmd.name} is not available here")  # pragma: no cover

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
                + (f", {s.restored_tokens} of them restored from cache" if s.restored_tokens
                   else "") + f", {fmt_rate(s.prompt_tokens_per_s)} tok/s), "
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
            lines.append(f"chat caches: {kv['ram_snapshots']} in RAM "
                         f"({kv['ram_bytes'] / 2**20:.1f} of {kv['ram_budget'] / 2**20:.0f} MB), "
                         f"{kv['disk_snapshots']} on disk ({kv['disk_bytes'] / 2**20:.1f} of "
                         f"{kv['disk_budget'] / 2**20:.0f} MB)")
        lines.append("load settings: "
                     + ", ".join(f"{k}={v}" for k, v in d["load_settings"].items()))
        return "\n".join(lines)


def fmt_rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def fmt_secs(v: float | None) -> str:
    return "n/a" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")
