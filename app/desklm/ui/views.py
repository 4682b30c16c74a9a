"""The window's drawing of what is not a turn: a model loading and loaded, settings in effect,
tuning, the chat list and the chat opened, the sampler's readings, the queue and messages.
Each method is a slot for one controller signal (see ``MainWindow._connect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from desklm.engine import LoadInfo, Settings, Snapshot


class WindowViews:
    def __init__(self, w: Any) -> None:  # the MainWindow (not imported: no cycle)
        self.w = w

    def on_load_started(self, path: str) -> None:
        w = self.w
        w.progress.setValue(0)
        w.progress.show()
        w.statusline.set(f"Loading {Path(path).name if path else 'the embedded model'}…")

    def on_loaded(self, info: LoadInfo) -> None:
        w = self.w
        w.load_info = info
        w.turns.loaded(info, w.controller.remote)
        w.settings_panel.set_model(info.n_ctx_train, info.n_layers, info.gpu_offload_supported)
        w.settings_panel.set_remote(w.controller.remote)
        w.modelLoaded.emit(info)

    def on_unloaded(self) -> None:
        w = self.w
        w.load_info = None
        w.setWindowTitle("DeskLM")
        w.statusline.set_model("no model", "")

    def on_load_ended(self, how: str) -> None:
        w = self.w
        w.progress.hide()
        if how == "cancelled":
            w.statusline.set(
                "Loading stopped" + ("" if w.load_info else " — open a model with File > Models")
            )
            if not w._closing:
                w.notices.add("Loading stopped.", key="load")
        elif how == "failed":
            w.statusline.set("Ready" if w.load_info else "No model loaded")

    def on_settings_loaded(self, settings: Settings) -> None:
        w = self.w
        w.settings_panel.sync(settings)
        w.turns.settings_changed(settings)
        w._on_state(w.controller.state)
        w.settingsSynced.emit(settings)

    def on_tune_progress(self, step: int, steps: int, what: str) -> None:
        w = self.w
        w.progress.show()
        w.progress.setValue(int(100 * (step - 1) / max(1, steps)))
        w.statusline.set(f"Tuning ({step}/{steps}): {what}…")

    def on_tuned(self, r: Any) -> None:
        w = self.w
        w.progress.hide()
        best = max(r.trials, key=lambda t: t["gen_tps"])
        w.statusline.set(
            f"Tuned: {r.n_threads} threads generating ({r.gen_tps:.1f} tok/s), "
            f"{r.n_threads_batch} reading prompts"
        )
        w.notices.add(
            "Tuned for this machine: "
            + ", ".join(
                f"{t['threads']} thread(s) {t['gen_tps']:.1f} tok/s"
                for t in r.trials
                if t["n_gpu_layers"] == best["n_gpu_layers"]
            )
            + f". Using {r.n_threads} (remembered for this model).",
            "ok",
            key="tuned",
        )
        w.tuned.emit(r)

    def on_conversations(self, items: list[dict[str, Any]], problems: list[str]) -> None:
        w = self.w
        w.chats.set_items(items)
        w.conversationsRefreshed.emit(items)
        for p in problems:
            if p not in w._list_problems_shown:
                w._list_problems_shown.add(p)
                w.notices.add(p, "error")

    def on_conversation_opened(self, record: dict[str, Any]) -> None:
        w = self.w
        name = w.turns.model_name()
        w.chat.show_conversation(record["messages"], name)  # what is visible first
        same = w._shown_id == str(record["id"])  # redrawn after a regenerate, edit, ...
        w._shown_id = str(record["id"])
        if record["messages"]:
            w.chats.set_current(record["id"])
            w._hide_welcome()  # an existing chat (or a search hit) is what matters now
        else:  # a new chat is in the list at once, before anything is saved
            w.chats.add_pending(record)
            self.say_system_prompt()
        if not same:  # another chat: nothing of it is in the context yet
            w.turns.context_cleared()
        w.setWindowTitle(
            f"DeskLM — {record['title']}" if record["messages"] else f"DeskLM — {name}"
        )
        w.conversationShown.emit(record)

    def say_system_prompt(self) -> None:
        """A new chat keeps the system prompt you set (/system, Settings): said, once."""
        w = self.w
        from desklm.engine import SCHEMA

        prompt = str(w.settings_panel.settings["system_prompt"])
        if prompt.strip() and prompt != SCHEMA["system_prompt"].default:
            w.notices.add(
                f"This chat uses your system prompt: “{prompt[:80]}”. Change "
                "it under Settings › System prompt.",
                key="system-prompt",
            )
        else:
            w.notices.dismiss("system-prompt")

    def on_snapshot(self, snap: Snapshot) -> None:
        w = self.w
        w.gauges.on_snapshot(snap)
        w.settings_panel.set_free(*snap.free())
        w.settings_panel.set_gpu_available(
            bool(snap.gpus) and bool(w.load_info and w.load_info.gpu_offload_supported)
        )

    def show_queue(self, queue: list[str]) -> None:
        w = self.w
        if queue:
            items = " · ".join(f"“{' '.join(t.split())[:40]}”" for t in queue)
            w.queue_label.setText(f"Queued ({len(queue)}), sent when the model is free: {items}")
        w.queue_label.setVisible(bool(queue))

    def on_message(self, level: str, text: str) -> None:
        w = self.w
        if level == "info":
            w.statusBar().showMessage(text, 8000)
        elif level == "notice":
            w.notices.add(text)
        elif level == "warning":
            w.notices.add(text, "error")
            w.failed.emit(text)
        else:
            w.report_error(text)
