"""Workers that own the engine and the sampler, each on its own QThread.

The UI never calls the engine: it emits request signals that are queued to the worker's thread,
and gets results back as signals. The one direct call is :meth:`InferenceWorker.stop`, which
only sets a ``threading.Event`` so that it is not queued behind the running reply.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from desklm.engine.commands import CommandResult
from desklm.engine.conversation import PromptPlan
from desklm.engine.llm import ChatEngine, LoadCancelled
from desklm.engine.models import embedded_model_path
from desklm.engine.monitor import ResourceSampler
from desklm.engine.session import ChatSession
from desklm.engine.settings import Settings
from desklm.engine.store import ConversationStore
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.ui")


class StoreProblem(DeskLMError):
    """A conversation file operation that failed (shown as its one-line reason)."""


class InferenceWorker(QObject):
    """Owns the ChatSession (and so the Llama) on the inference thread.

    Signals:
        loadStarted(str): path being loaded.
        loadProgress(float): 0..1 while loading.
        loaded(object): LoadInfo of the model now loaded.
        loadFailed(str): one-line reason; the previous model (if any) is still loaded.
        loadCancelled(): the load was stopped on request (Stop, or quitting).
        turnStarted(object): dict with prompt_tokens, prompt_tokens_reused, n_ctx, dropped.
        token(str): a piece of the reply text.
        turnFinished(object): TurnResult.
        turnFailed(str): one-line reason; nothing was added to the conversation.
        commandDone(object): CommandResult of a slash command or settings change.
        commandFailed(str): one-line reason.
        settingsChanged(object): a copy of the Settings in effect, after a load or a change.
        modelInfo(object): the loaded model's GGUFInfo (read-only), for the fit estimate.
        tuneProgress(int, int, str): step, steps, what is being measured.
        tuneFinished(object): the TuneResult, already applied and remembered.
        conversationsListed(object, object): summaries (newest first), and problems found.
        conversationOpened(object): the record of the conversation now shown (new or opened).
        errored(str): an unexpected error in the worker (logged with its traceback).
    """

    loadStarted = Signal(str)
    loadProgress = Signal(float)
    loaded = Signal(object)
    loadFailed = Signal(str)
    loadCancelled = Signal()
    turnStarted = Signal(object)
    token = Signal(str)
    turnFinished = Signal(object)
    turnFailed = Signal(str)
    commandDone = Signal(object)
    commandFailed = Signal(str)
    settingsChanged = Signal(object)
    modelInfo = Signal(object)
    tuneProgress = Signal(int, int, str)
    tuneFinished = Signal(object)
    conversationsListed = Signal(object, object)
    conversationOpened = Signal(object)
    errored = Signal(str)

    def __init__(self, settings: Settings, store: ConversationStore | None = None) -> None:
        super().__init__()
        self.engine = ChatEngine()
        self.store = store
        self.session = ChatSession(Path(""), settings, engine=self.engine, store=store)
        self._last_progress = 0.0
        self._tune_cancel = threading.Event()

    # Called directly from the UI thread: only sets Events.
    def stop(self) -> None:
        self._tune_cancel.set()
        self.engine.stop()

    def _fail(self, signal: Any, e: BaseException) -> None:
        if isinstance(e, DeskLMError):
            signal.emit(str(e))
        else:
            log.error("worker error", exc_info=e)
            self.errored.emit(f"internal error: {type(e).__name__}: {e}")

    def _progress(self, p: float) -> None:
        now = time.monotonic()
        if p >= 1.0 or now - self._last_progress > 0.05:  # at most ~20 updates a second
            self._last_progress = now
            self.loadProgress.emit(p)

    def _settings_changed(self) -> None:
        self.settingsChanged.emit(self.session.settings.copy())

    @Slot(str)
    def load(self, path: str) -> None:
        """Load ``path`` ("" = the embedded model, assembled on first use)."""
        self.loadStarted.emit(path)
        try:
            if not path:
                path = str(embedded_model_path())
            self.session.load(Path(path), progress=self._progress)
            self.modelInfo.emit(self.engine.info)
            self.loaded.emit(self.engine.load_info)
            self._apply_tuned(Path(path))
            self._settings_changed()
        except LoadCancelled:
            self.loadCancelled.emit()
        except Exception as e:
            self._fail(self.loadFailed, e)

    @Slot(str)
    def send(self, text: str) -> None:
        if not self.engine.loaded:
            self.turnFailed.emit("no model is loaded yet")
            return
        try:
            def started(plan: PromptPlan, reused: int) -> None:
                self.turnStarted.emit({"prompt_tokens": len(plan.tokens), "reused": reused,
                                       "n_ctx": self.engine.n_ctx, "dropped": plan.dropped})

            result = self.session.send(text, self.token.emit, on_start=started)
            self.turnFinished.emit(result)
        except Exception as e:
            self._fail(self.turnFailed, e)
            return
        if self.session.save_error:
            self.errored.emit(self.session.save_error)
        self.listConversations()

    @Slot(str)
    def command(self, text: str) -> None:
        try:
            result = self.session.run_command(text)
            self.commandDone.emit(result)
            if result.reset:
                self.listConversations()  # a fresh chat: the sidebar follows
            self._settings_changed()
        except Exception as e:
            self._fail(self.commandFailed, e)

    @Slot(object)
    def applySettings(self, values: dict[str, Any]) -> None:
        try:
            result = self.session.apply_settings(values)
            self.commandDone.emit(result)
            if result.reloaded and self.engine.load_info is not None:
                self.loaded.emit(self.engine.load_info)  # n_ctx etc. changed
        except Exception as e:
            self._fail(self.commandFailed, e)
        self._settings_changed()  # in effect now: the new values, or the old ones on failure

    def _apply_tuned(self, path: Path) -> None:
        """Threads found by an earlier Tune for this model on this machine: applied live."""
        from desklm.engine.bench import tuned_for

        t = tuned_for(path)
        if not t:
            return
        values = {k: t[k] for k in ("n_threads", "n_threads_batch")}
        if any(self.session.settings[k] != v for k, v in values.items()):
            res = self.session.apply_settings(values)
            res.message = (f"using the threads tuned for this model: {values['n_threads']} "
                           f"generating, {values['n_threads_batch']} reading the prompt")
            self.commandDone.emit(res)

    @Slot()
    def tune(self) -> None:
        from desklm.engine import bench

        self._tune_cancel.clear()
        self.engine._stop.clear()
        try:
            gpu = None
            li = self.engine.load_info
            if li is not None and li.gpu_offload_supported:
                from desklm.engine.monitor import ResourceSampler

                if ResourceSampler().sample().gpus:
                    gpu = [0, max(1, li.n_layers // 2), -1]
            result = bench.tune(self.session,
                                progress=lambda i, n, what: self.tuneProgress.emit(i, n, what),
                                cancelled=self._tune_cancel.is_set, gpu_layer_options=gpu)
            self.tuneFinished.emit(result)
        except Exception as e:
            self._fail(self.commandFailed, e)
        self._settings_changed()

    # -- conversations --
    @Slot()
    def listConversations(self) -> None:
        if self.store is not None:
            items = self.store.list_all()
            self.conversationsListed.emit(items, list(self.store.problems))

    def _opened(self) -> None:
        self.conversationOpened.emit(self.session.record())
        self.listConversations()

    @Slot()
    def newConversation(self) -> None:
        try:
            self.session.new_conversation()
            self._opened()
        except Exception as e:
            self._fail(self.commandFailed, e)

    @Slot(str)
    def openConversation(self, conv_id: str) -> None:
        try:
            if conv_id != self.session.conv_id:
                self.session.open_conversation(conv_id)
                self._settings_changed()
            self._opened()
        except Exception as e:
            self._fail(self.commandFailed, e)
            self.listConversations()

    @Slot(str)
    def deleteConversation(self, conv_id: str) -> None:
        try:
            if self.store is not None:
                if conv_id == self.session.conv_id:
                    self.session.reset()  # the shown chat is gone: start an empty one
                    self.session.new_conversation()
                    self.conversationOpened.emit(self.session.record())
                self.store.delete(conv_id)
        except Exception as e:
            self._fail(self.commandFailed, StoreProblem(str(e)) if not
                       isinstance(e, DeskLMError) else e)
        self.listConversations()

    @Slot(str, str)
    def renameConversation(self, conv_id: str, title: str) -> None:
        try:
            if conv_id == self.session.conv_id:
                self.session.title = " ".join(title.split())[:200]
                self.session.save()  # an empty chat has no file yet: the title waits for it
            elif self.store is not None:
                self.store.rename(conv_id, title)
        except Exception as e:
            self._fail(self.commandFailed, StoreProblem(str(e)) if not
                       isinstance(e, DeskLMError) else e)
        self.listConversations()

    @Slot(str)
    def export(self, path: str) -> None:
        try:
            out = self.session.export(Path(path))
            self.commandDone.emit(CommandResult("export", f"conversation written to {out}",
                                                {"path": str(out)}))
        except Exception as e:
            self._fail(self.commandFailed, e)

    def shutdown(self) -> None:
        """Called from the UI thread after this worker's thread has ended: save, then free."""
        self.session.save()
        self.engine.unload()


class SamplerWorker(QObject):
    """Samples resources about twice a second on its own thread.

    Signals:
        sampled(object): a monitor.Snapshot.
    """

    sampled = Signal(object)

    def __init__(self, interval_ms: int = 500) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self.sampler: ResourceSampler | None = None
        self.timer: QTimer | None = None
        self.cpu_seconds = 0.0  # CPU time spent sampling, for the benchmark
        self.samples = 0

    @Slot()
    def start(self) -> None:
        self.sampler = ResourceSampler()
        self.timer = QTimer(self)
        self.timer.setInterval(self.interval_ms)
        self.timer.timeout.connect(self.tick)
        self.timer.start()
        self.tick()

    @Slot()
    def tick(self) -> None:
        assert self.sampler is not None
        t0 = time.thread_time()
        snap = self.sampler.sample()
        self.cpu_seconds += time.thread_time() - t0
        self.samples += 1
        self.sampled.emit(snap)

    @Slot()
    def stop(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        if self.sampler is not None:
            self.sampler.close()


def start_thread(worker: QObject, name: str) -> QThread:
    thread = QThread()
    thread.setObjectName(name)
    worker.moveToThread(thread)
    thread.start()
    return thread
