"""A reply as the window draws it: the transcript, the gauges and the status line, from the
controller's turn signals (``turnStarted``, ``token``, ``turnFinished``, ``turnFailed``) and
from an API client's finished request.

A turn is a sent message (``mode`` "send"), a new version of the last reply ("regen") or an
edited message answered again ("edit"); all three stream the same way, so the gauges always
show the reply just made.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer

from desklm.engine import LoadInfo, Settings, TurnResult


def short_name(name: str) -> str:
    """A model's name for the transcript and the title: a server's model id is often a whole
    file path ("/models/qwen2.5-7b-instruct-q4_k_m.gguf"): its file name without .gguf."""
    if "/" in name or "\\" in name or name.lower().endswith(".gguf"):
        base = Path(name.replace("\\", "/")).name
        return base[:-5] if base.lower().endswith(".gguf") else base
    return name


class TurnDrawer:
    def __init__(self, w: Any) -> None:  # the MainWindow (not imported: no cycle)
        self.w = w
        self.remote = False
        self.n_ctx = 0
        self._t0 = 0.0
        self._first: float | None = None
        self._live_tokens = 0
        self._prompt_tokens = 0
        self._text = ""
        self.live_timer = QTimer(w)
        self.live_timer.setInterval(250)
        self.live_timer.timeout.connect(self._update_live)

    def model_name(self) -> str:
        info = self.w.load_info
        return short_name(info.name) if info is not None else "Model"

    # --- the model ---
    def loaded(self, info: LoadInfo, remote: bool) -> None:
        w = self.w
        self.remote = remote
        w.gauges.set_remote(remote)
        self.n_ctx = info.n_ctx
        w.setWindowTitle(f"DeskLM — {self.model_name()}")
        self._model_line(info, info.chat_format)
        w.statusline.set(f"Ready — loaded in {info.load_s:.1f} s")
        w.gauges.set_context(0, info.n_ctx)
        w.notices.dismiss("base-model")
        for note in info.notes:
            w.notices.add(note)
        if getattr(info, "base_model", False):
            w.notices.add(
                f"{info.format_note}. It is here to try DeskLM; for a real assistant get an "
                "instruct model: the welcome's Download button, or File > Models.",
                key="base-model",
            )

    def _model_line(self, info: LoadInfo, chat_format: str) -> None:
        where = "server" if self.remote else info.architecture
        text = f"{self.model_name()} · {where} · {chat_format} format"
        if getattr(info, "base_model", False):
            text += " · base model"
        self.w.statusline.set_model(text, f"{text}\n{info.path}")  # the whole line, the file

    def settings_changed(self, settings: Settings) -> None:
        """The chat format in the model line follows /set chat_format."""
        info = self.w.load_info
        if info is None:
            return
        fmt = str(settings["chat_format"]) if "chat_format" in settings.to_dict() else ""
        self._model_line(info, info.chat_format if fmt in ("", "auto") else fmt)

    def context_cleared(self) -> None:
        self.w.gauges.set_context(0, self.n_ctx)

    # --- a turn ---
    def on_started(self, info: dict[str, Any]) -> None:
        w = self.w
        self._prompt_tokens = info["prompt_tokens"]
        self.n_ctx = info["n_ctx"]
        self._first = None
        self._live_tokens = 0
        self._t0 = time.perf_counter()
        self._text = info["text"]
        dropped = info["dropped"]
        if dropped:
            w.notices.add(
                f"Dropped {len(dropped)} earlier message(s) to fit the {self.n_ctx}-token "
                "context: " + "; ".join(f"{d['role']}: “{d['preview']}”" for d in dropped),
                key="dropped",
            )
        mode = info.get("mode", "send")
        if mode == "regen":
            w.chat.replace_from_message("")
        elif mode == "edit":
            w.chat.replace_from_message(info.get("message_id", ""))
        if mode in ("send", "edit"):
            names: list[str] = []
            if mode == "send":  # the chips over the box went with it
                names = [str(getattr(a, "name", "?")) for a in w.attachments.attachments()]
            w.chat.add_user(info["text"], attachments=names)
        w.chat.follow = True  # a turn the user started: show it
        w.chat.begin_reply(self.model_name())
        w.gauges.set_context(self._prompt_tokens, self.n_ctx)
        w.statusline.set(
            f"Reading the prompt ({info['prompt_tokens'] - info['reused']} "
            f"new tokens, {info['reused']} reused)…"
        )
        self.live_timer.start()

    def on_token(self, piece: str, n_tokens: int) -> None:
        self._live_tokens = n_tokens
        if self._first is None:
            self._first = time.perf_counter()
            self.w.gauges.set_ttft(self._first - self._t0)
            self.w.statusline.set("Generating…")
            self.w.firstToken.emit()
        self.w.chat.append_stream(piece)

    def _update_live(self) -> None:
        if self._first is None:
            return
        n = self._live_tokens
        dt = time.perf_counter() - self._first
        if dt > 0.2 and n > 1:
            self.w.gauges.set_speed((n - 1) / dt, live=True)
        self.w.gauges.set_context(self._prompt_tokens + n, self.n_ctx)

    def on_finished(self, result: TurnResult) -> None:
        w, s = self.w, result.stats
        w.attachments.clear()  # they went with the message
        self.live_timer.stop()
        w.chat.finish_reply(result.reply, s.to_dict())
        w.gauges.set_speed(s.gen_tokens_per_s, live=False, shared_with=s.shared_with)
        w.gauges.set_ttft(s.ttft_s)
        w.gauges.set_context(s.context_used, s.n_ctx)
        w.statusline.set("Stopped" if s.finish_reason == "cancelled" else "Ready")
        note = getattr(s, "note", "")
        if s.finish_reason == "error":  # cut mid-reply (a server gone): kept, and why
            w.notices.add(f"The reply was cut: {note or 'the backend failed'}", "error", key="cut")
            w.statusline.set("Reply cut: " + (note or "the backend failed"))
        if getattr(s, "restored_tokens", 0):
            w.statusline.set(
                f"Ready — restored {s.restored_tokens:,} tokens of this chat from its KV cache"
            )
        w.replyFinished.emit(result)

    def on_failed(self, reason: str, text: str) -> None:
        """Not sent: the message and its empty reply leave the transcript (the session kept
        nothing), the text goes back into the box, and one notice says why."""
        w = self.w
        self.live_timer.stop()
        if not (text and w.chat.drop_unsent(text)) and w.chat.streaming:
            w.chat.abandon_reply()
        w.notices.add(f"Not sent: {reason}", "error", key="not-sent")
        if text and not w.input.toPlainText().strip():
            w.input.setPlainText(text)  # a message that could not be sent is not lost
        w.statusline.set("Not sent")
        w.failed.emit(reason)

    def on_api_request(self, rec: Any) -> None:
        """An API client's request ended: the gauges show what it cost, labelled "API", so
        the speed of the model stays visible whoever asked (the chat's next turn redraws
        them as its own)."""
        if rec.status != 200 or not rec.completion_tokens:
            return
        g = self.w.gauges
        g.set_speed(rec.tokens_per_s, live=False, api=True)
        g.set_ttft(rec.ttft_s, api=True)
        if rec.n_ctx:
            g.set_context(rec.prompt_tokens + rec.completion_tokens, rec.n_ctx, api=True)
