"""The main window: transcript and input in the middle, settings and gauges in docks."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMetaObject, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from desklm import __version__
from desklm.engine import commands
from desklm.engine.llm import LoadInfo
from desklm.engine.monitor import Snapshot
from desklm.engine.session import TurnResult
from desklm.engine.settings import Settings
from desklm.engine.store import AppConfig, ConversationStore
from desklm.ui.chat_view import ChatInput, ChatView
from desklm.ui.conversations import ConversationList
from desklm.ui.gauges import GaugePanel
from desklm.ui.settings_panel import SettingsPanel
from desklm.ui.workers import InferenceWorker, SamplerWorker, start_thread

log = logging.getLogger("desklm.ui")

JOIN_TIMEOUT_MS = 2000


class MainWindow(QMainWindow):
    """Signals (requests to the inference worker, queued to its thread):
    requestLoad(str), requestSend(str), requestCommand(str), requestSettings(object).
    Signals for observers (self-test, tests), always emitted on the UI thread:
    modelLoaded(object), firstToken(), replyFinished(object), commandFinished(object),
    settingsSynced(object), failed(str). Observers use these, never the worker's signals:
    a worker signal runs a plain callable on the worker's thread.
    """

    requestLoad = Signal(str)
    requestSend = Signal(str)
    requestCommand = Signal(str)
    requestSettings = Signal(object)
    requestList = Signal()
    requestNew = Signal()
    requestOpen = Signal(str)
    requestDelete = Signal(str)
    requestRename = Signal(str, str)
    requestExport = Signal(str)
    requestTune = Signal()
    tuned = Signal(object)
    conversationShown = Signal(object)
    conversationsRefreshed = Signal(object)
    modelLoaded = Signal(object)
    firstToken = Signal()
    settingsSynced = Signal(object)
    replyFinished = Signal(object)
    commandFinished = Signal(object)
    failed = Signal(str)
    samplerStart = Signal()

    def __init__(self, settings: Settings, model_path: str = "", *,
                 show_dialogs: bool = True, store: ConversationStore | None = None,
                 config: AppConfig | None = None, saved: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.store = store if store is not None else ConversationStore()
        self.config = config if config is not None else AppConfig()
        self._loading_path = model_path
        self.setObjectName("DeskLM")
        self.setWindowTitle("DeskLM")
        self.setAcceptDrops(True)
        self.show_dialogs = show_dialogs
        self.initial_model = model_path
        self.load_info: LoadInfo | None = None
        self.loading = False
        self.generating = False
        self.switching = False  # a new/open conversation request is on its way to the worker
        self.queue: list[str] = []
        self.errors: list[str] = []
        self.last_dialog: QMessageBox | None = None
        self.models_dialog: Any = None
        self._turn_t0 = 0.0
        self._first_token_t: float | None = None
        self._pending_text = ""  # the message in flight, put back in the box if refused
        self._prompt_tokens = 0
        self._n_ctx = 0
        self._closing = False

        # --- central: transcript + input ---
        self.chat = ChatView()
        self.input = ChatInput()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("send")
        self.send_button.setMinimumWidth(90)
        self.send_button.clicked.connect(self._send_or_stop)
        self.input.submitted.connect(self.submit)
        self.queue_label = QLabel("")
        self.queue_label.setObjectName("queued")
        self.queue_label.setStyleSheet("color: #8a93a3;")
        self.queue_label.setWordWrap(True)
        self.queue_label.hide()
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(6, 6, 6, 6)
        cl.addWidget(self.chat, 1)
        cl.addWidget(self.queue_label)
        cl.addLayout(row)
        self.setCentralWidget(central)

        # --- docks ---
        self.settings_panel = SettingsPanel(settings)
        self.gauges = GaugePanel()
        self.settings_dock = self._dock("Settings", self.settings_panel,
                                        Qt.DockWidgetArea.LeftDockWidgetArea)
        self.gauges_dock = self._dock("Gauges", self.gauges, Qt.DockWidgetArea.RightDockWidgetArea)
        self.chats = ConversationList()
        self.chats_dock = self._dock("Chats", self.chats, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.splitDockWidget(self.chats_dock, self.settings_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.chats_dock, self.settings_dock], [150, 600],
                         Qt.Orientation.Vertical)
        self.resizeDocks([self.chats_dock, self.gauges_dock], [340, 270],
                         Qt.Orientation.Horizontal)
        self.settings_panel.changed.connect(self.requestSettings.emit)
        self.settings_panel.applyRequested.connect(self._apply_reload)
        self.settings_panel.tuneRequested.connect(self.tune)

        # --- status bar ---
        self.status = QLabel("Starting…")
        self.status.setObjectName("status")
        self.model_label = QLabel("no model")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(180)
        self.progress.hide()
        self.statusBar().addWidget(self.status, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.model_label)

        self._build_actions()

        # --- workers ---
        self.worker = InferenceWorker(settings, self.store)
        self.thread = start_thread(self.worker, "inference")
        self.sampler = SamplerWorker()
        self.sampler_thread = start_thread(self.sampler, "sampler")
        w = self.worker
        self.requestLoad.connect(w.load)
        self.requestSend.connect(w.send)
        self.requestCommand.connect(w.command)
        self.requestSettings.connect(w.applySettings)
        w.loadStarted.connect(self._on_load_started)
        w.loadProgress.connect(self._on_load_progress)
        w.loaded.connect(self._on_loaded)
        w.loadFailed.connect(self._on_load_failed)
        w.loadCancelled.connect(self._on_load_cancelled)
        w.turnStarted.connect(self._on_turn_started)
        w.token.connect(self._on_token)
        w.turnFinished.connect(self._on_turn_finished)
        w.turnFailed.connect(self._on_turn_failed)
        w.commandDone.connect(self._on_command_done)
        w.commandFailed.connect(self._on_command_failed)
        w.settingsChanged.connect(self._on_settings_changed)
        w.modelInfo.connect(self.settings_panel.set_model_info)
        w.errored.connect(self.report_error)
        w.conversationsListed.connect(self._on_conversations)
        w.conversationOpened.connect(self._on_conversation_opened)
        self.requestList.connect(w.listConversations)
        self.requestNew.connect(w.newConversation)
        self.requestOpen.connect(w.openConversation)
        self.requestDelete.connect(w.deleteConversation)
        self.requestRename.connect(w.renameConversation)
        self.requestExport.connect(w.export)
        self.requestTune.connect(w.tune)
        w.tuneProgress.connect(self._on_tune_progress)
        w.tuneFinished.connect(self._on_tuned)
        self.chats.newRequested.connect(self.new_conversation)
        self.chats.openRequested.connect(self.open_conversation)
        self.chats.deleteRequested.connect(self.requestDelete.emit)
        self.chats.renameRequested.connect(self.requestRename.emit)
        self.chats.current_id = w.session.conv_id
        self.sampler.sampled.connect(self._on_snapshot)
        self.samplerStart.connect(self.sampler.start)
        self.samplerStart.emit()
        self.live_timer = QTimer(self)
        self.live_timer.setInterval(250)
        self.live_timer.timeout.connect(self._update_live)
        self.chat.copied.connect(lambda _t: self.statusBar().showMessage("Copied", 1500))
        self.resize(1280, 800)
        self._restore_layout(saved or {})
        self._set_busy_ui()
        self._list_problems_shown: set[str] = set()
        self.requestList.emit()

    # --- construction helpers ---
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(widget)
        scroll.setMinimumWidth(270)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock:{title}")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _build_actions(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        self.models_action = QAction("&Models…", self)
        self.models_action.setShortcut(QKeySequence("Ctrl+M"))
        self.models_action.setToolTip("Models on this machine, and downloads from Hugging Face")
        self.models_action.triggered.connect(self.show_models)
        file.addAction(self.models_action)
        self.open_action = QAction("&Open model file…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.open_model_dialog)
        file.addAction(self.open_action)
        self.export_action = QAction("&Export conversation…", self)
        self.export_action.setShortcut(QKeySequence("Ctrl+E"))
        self.export_action.triggered.connect(self.export_dialog)
        file.addAction(self.export_action)
        file.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file.addAction(quit_action)
        chat = mb.addMenu("&Chat")
        self.reset_action = QAction("&Reset conversation (/reset)", self)
        self.reset_action.setShortcut(QKeySequence("Ctrl+R"))
        self.reset_action.triggered.connect(self.reset_conversation)
        self.stop_action = QAction("&Stop reply", self)
        self.stop_action.setShortcut(QKeySequence("Esc"))
        self.stop_action.triggered.connect(self.stop)
        chat.addAction(self.reset_action)
        chat.addAction(self.stop_action)
        view = mb.addMenu("&View")
        view.addAction(self.chats_dock.toggleViewAction())
        view.addAction(self.settings_dock.toggleViewAction())
        view.addAction(self.gauges_dock.toggleViewAction())
        helpm = mb.addMenu("&Help")
        cmds = QAction("Slash &commands", self)
        cmds.triggered.connect(lambda: self.submit("/help"))
        helpm.addAction(cmds)
        about = QAction("&About DeskLM", self)
        about.triggered.connect(self._about)
        helpm.addAction(about)
        tb = self.addToolBar("Main")
        tb.setObjectName("toolbar")
        tb.setMovable(False)
        tb.addAction(self.models_action)
        tb.addAction(self.open_action)
        tb.addAction(self.reset_action)
        tb.addAction(self.stop_action)

    # --- lifecycle ---
    def start(self) -> None:
        """Show first, then load: the window appears before the model is ready."""
        self.loading = True
        self.status.setText("Loading the model…")
        self._set_busy_ui()
        self.show()
        QTimer.singleShot(0, lambda: self.load_model(self.initial_model))

    def load_model(self, path: str) -> None:
        if self.generating:
            self.stop()
        self._loading_path = path
        self.loading = True
        self._set_busy_ui()
        self.requestLoad.emit(path)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        event.accept()

    def shutdown(self) -> float:
        """Stop work, join both threads (within 2 s each), free the model. Returns seconds."""
        if self._closing:
            return 0.0
        self._closing = True
        t0 = time.perf_counter()
        self.queue.clear()
        if self.models_dialog is not None:
            self.models_dialog.shutdown()
        self.worker.stop()  # a direct Event: not queued behind a running reply or load
        self.live_timer.stop()
        if self.sampler_thread.isRunning():
            # run stop() in the sampler's own thread and wait for it: its QTimer must be
            # stopped by the thread that owns it, before that thread ends
            QMetaObject.invokeMethod(self.sampler, "stop",
                                     Qt.ConnectionType.BlockingQueuedConnection)
        for th in (self.thread, self.sampler_thread):
            th.quit()
        ok = all(th.wait(JOIN_TIMEOUT_MS) for th in (self.thread, self.sampler_thread))
        if ok:
            self.worker.shutdown()  # its thread has ended: save the chat, free the model
        else:
            log.error("worker threads did not stop within %d ms", JOIN_TIMEOUT_MS)
        self.save_app_settings()
        return time.perf_counter() - t0

    # --- persistence ---
    def save_app_settings(self) -> None:
        """Last model, setting values and window layout, written atomically."""
        from desklm.engine.models import is_embedded

        info = self.load_info
        embedded = info is not None and is_embedded(info.path)
        data = self.config.load()  # keep what others wrote (the recent models list)
        data.pop("schema", None)
        data.update({
            "last_model": "" if info is None or embedded else str(info.path),
            "settings": self.settings_panel.settings.to_dict(),
            "geometry": bytes(self.saveGeometry().toBase64().data()).decode("ascii"),
            "window_state": bytes(self.saveState().toBase64().data()).decode("ascii"),
        })
        try:
            self.config.save(data)
        except OSError as e:
            log.error("could not save app settings: %s", e)

    def _restore_layout(self, saved: dict[str, Any]) -> None:
        from PySide6.QtCore import QByteArray

        for key, fn in (("geometry", self.restoreGeometry), ("window_state", self.restoreState)):
            v = saved.get(key)
            if isinstance(v, str) and v:
                fn(QByteArray.fromBase64(v.encode("ascii")))

    # --- conversations ---
    def new_conversation(self) -> None:
        self._requeue_to_input()
        if self.generating:
            self.stop()
        self.switching = True  # sends wait until the new chat is on screen
        self.requestNew.emit()

    def open_conversation(self, conv_id: str) -> None:
        self._requeue_to_input()
        if self.generating:
            self.stop()
        self.switching = True
        self.requestOpen.emit(conv_id)

    def export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export conversation", str(Path.home() / "conversation.md"),
            "Markdown (*.md);;JSON (*.json)")
        if path:
            self.requestExport.emit(path)

    def _on_conversations(self, items: list[dict[str, Any]], problems: list[str]) -> None:
        self.chats.set_items(items)
        self.conversationsRefreshed.emit(items)
        for p in problems:
            if p not in self._list_problems_shown:
                self._list_problems_shown.add(p)
                self.chat.add_notice(p, "#e05050")

    def _on_conversation_opened(self, record: dict[str, Any]) -> None:
        self.chat.clear_all()
        name = self.load_info.name if self.load_info else "Model"
        for m in record["messages"]:
            if m["role"] == "user":
                self.chat.add_user(m["content"])
            else:
                self.chat.begin_reply(name)
                self.chat.finish_reply(m["content"], m.get("stats") or {})
        self.chats.set_current(record["id"])
        self.gauges.set_context(0, self._n_ctx)
        self.setWindowTitle(f"DeskLM — {record['title']}" if record["messages"] else
                            f"DeskLM — {name}")
        self.switching = False
        self.conversationShown.emit(record)
        self._drain_queue()

    # --- user actions ---
    def submit(self, text: str) -> None:
        """Send a message or run a slash command (queued while the model is busy)."""
        if not text.strip():
            return
        if self.generating and text.strip().lower() == "/reset":
            self.reset_conversation()
            return
        if self.loading or self.generating or self.switching:
            # shown above the input box, and in the transcript once it is really sent
            self.queue.append(text)
            self._show_queue()
            return
        self._dispatch(text)

    def _show_queue(self) -> None:
        if self.queue:
            items = " · ".join(f"“{' '.join(t.split())[:40]}”" for t in self.queue)
            self.queue_label.setText(f"Queued ({len(self.queue)}), sent when the model is "
                                     f"free: {items}")
        self.queue_label.setVisible(bool(self.queue))

    def _dispatch(self, text: str) -> None:
        if commands.is_command(text):
            self.requestCommand.emit(text)
            return
        if self.load_info is None:
            self._restore_input(text)
            self.report_error("no model is loaded: open one with File > Open model")
            return
        self.chat.add_user(text)
        self.generating = True
        self._pending_text = text
        self._set_busy_ui()
        self._turn_t0 = time.perf_counter()
        self.requestSend.emit(text)

    def _drain_queue(self) -> None:
        if self.queue and not (self.loading or self.generating or self.switching):
            text = self.queue.pop(0)
            self._show_queue()
            self._dispatch(text)

    def reset_conversation(self) -> None:
        """/reset from the menu: a running reply is stopped first, then everything cleared."""
        if self.generating:
            self._requeue_to_input()
            self.stop()
            self.queue.insert(0, "/reset")
        else:
            self.submit("/reset")

    def _requeue_to_input(self) -> None:
        """Messages waiting in the queue go back into the input box instead of being lost."""
        waiting = [t for t in self.queue if not commands.is_command(t)]
        self.queue.clear()
        self._show_queue()
        if waiting:
            current = self.input.toPlainText().strip()
            self.input.setPlainText("\n\n".join([*waiting, current] if current else waiting))
            self.chat.add_notice(f"{len(waiting)} queued message(s) not sent: back in the "
                                 "input box")

    def stop(self) -> None:
        if self.generating or self.loading:
            self.worker.stop()
            self.status.setText("Stopping…")

    def _send_or_stop(self) -> None:
        if self.generating:
            self.stop()
        else:
            self.input.submit()

    def _apply_reload(self, values: dict[str, Any]) -> None:
        if self.generating:
            self.stop()
        self.loading = True
        self._set_busy_ui()
        self.status.setText("Reloading the model with new settings…")
        self.requestSettings.emit(values)

    def show_models(self) -> Any:
        """The Models dialog (non-modal): local models and Hugging Face downloads."""
        from desklm.ui.model_dialog import ModelDialog

        if self.models_dialog is not None:
            self.models_dialog.shutdown()
        dlg = ModelDialog(self, free=self.settings_panel.free,
                          gpu_offload=self.settings_panel.gpu_available)
        dlg.loadRequested.connect(self.load_model)
        dlg.show()
        self.models_dialog = dlg
        return dlg

    def tune(self) -> None:
        """Sweep thread counts (and GPU layers) in the worker; Stop cancels."""
        if self.generating:
            self.stop()
        self.loading = True  # the model is busy: sends queue until the sweep ends
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText("Tuning: measuring speed…")
        self._set_busy_ui()
        self.requestTune.emit()

    def _on_tune_progress(self, step: int, steps: int, what: str) -> None:
        self.progress.setValue(int(100 * (step - 1) / max(1, steps)))
        self.status.setText(f"Tuning ({step}/{steps}): {what}…")

    def _on_tuned(self, r: Any) -> None:
        self.loading = False
        self.progress.hide()
        best = max(r.trials, key=lambda t: t["gen_tps"])
        self.status.setText(f"Tuned: {r.n_threads} threads generating ({r.gen_tps:.1f} tok/s), "
                            f"{r.n_threads_batch} reading prompts")
        self.chat.add_notice(
            "Tuned for this machine: " + ", ".join(
                f"{t['threads']} thread(s) {t['gen_tps']:.1f} tok/s" for t in r.trials
                if t["n_gpu_layers"] == best["n_gpu_layers"])
            + f". Using {r.n_threads} (remembered for this model).", "#3fb68b")
        self._set_busy_ui()
        self.tuned.emit(r)
        self._drain_queue()

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.load_model(path)

    def dragEnterEvent(self, e: QDragEnterEvent) -> None:
        urls = e.mimeData().urls() if e.mimeData().hasUrls() else []
        if any(u.toLocalFile().lower().endswith(".gguf") for u in urls):
            e.acceptProposedAction()

    def dropEvent(self, e: QDropEvent) -> None:
        for u in e.mimeData().urls():
            if u.toLocalFile().lower().endswith(".gguf"):
                self.load_model(u.toLocalFile())
                e.acceptProposedAction()
                return

    def _about(self) -> None:
        QMessageBox.about(self, "About DeskLM",
                          f"DeskLM {__version__}\nPrivate chat with local GGUF models.\n"
                          "Nothing leaves this machine.")

    # --- worker events ---
    def _on_load_started(self, path: str) -> None:
        self.loading = True
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText(f"Loading {Path(path).name if path else 'the embedded model'}…")
        self._set_busy_ui()

    def _on_load_progress(self, p: float) -> None:
        self.progress.setValue(int(p * 100))

    def _on_loaded(self, info: LoadInfo) -> None:
        self.loading = False
        self.load_info = info
        self._n_ctx = info.n_ctx
        self.progress.hide()
        self.setWindowTitle(f"DeskLM — {info.name}")
        self.model_label.setText(f"{info.name} · {info.architecture} · {info.chat_format} format")
        self.model_label.setToolTip(str(info.path))
        self.status.setText(f"Ready — loaded in {info.load_s:.1f} s")
        self.settings_panel.set_model(info.n_ctx_train, info.n_layers, info.gpu_offload_supported)
        self.gauges.set_context(0, info.n_ctx)
        for note in info.notes:
            self.chat.add_notice(note)
        from desklm.engine.models import remember_model

        remember_model(info.path)
        self._set_busy_ui()
        self.modelLoaded.emit(info)
        self._drain_queue()

    def _on_settings_changed(self, settings: Settings) -> None:
        self.settings_panel.sync(settings)
        self._set_busy_ui()
        self.settingsSynced.emit(settings)

    def _on_load_cancelled(self) -> None:
        self.loading = False
        self.progress.hide()
        self.status.setText("Loading stopped" + ("" if self.load_info else
                                                  " — open a model with File > Models"))
        if not self._closing:
            self.chat.add_notice("Loading stopped.")
        self._set_busy_ui()
        self._drain_queue()

    def _on_load_failed(self, reason: str) -> None:
        self.loading = False
        self.progress.hide()
        self.status.setText("Ready" if self.load_info else "No model loaded")
        self._set_busy_ui()
        if self._closing:
            return
        self.report_error(f"Could not load the model: {reason}")
        if self.load_info is None and self._loading_path:
            # the remembered model is gone or broken: fall back to the embedded one
            self.chat.add_notice("Loading the embedded model instead.")
            self.load_model("")
            return
        self._drain_queue()

    def _on_turn_started(self, info: dict[str, Any]) -> None:
        self._prompt_tokens = info["prompt_tokens"]
        self._n_ctx = info["n_ctx"]
        self._first_token_t = None
        dropped = info["dropped"]
        if dropped:
            self.chat.add_notice(
                f"Dropped {len(dropped)} earlier message(s) to fit the {self._n_ctx}-token "
                "context: " + "; ".join(f"{d['role']}: “{d['preview']}”" for d in dropped))
        self.chat.begin_reply(self.load_info.name if self.load_info else "Model")
        self.gauges.set_context(self._prompt_tokens, self._n_ctx)
        self.status.setText(f"Reading the prompt ({info['prompt_tokens'] - info['reused']} "
                            f"new tokens, {info['reused']} reused)…")
        self.live_timer.start()

    def _on_token(self, piece: str) -> None:
        if self._first_token_t is None:
            self._first_token_t = time.perf_counter()
            self.gauges.set_ttft(self._first_token_t - self._turn_t0)
            self.status.setText("Generating…")
            self.firstToken.emit()
        self.chat.append_stream(piece)

    def _update_live(self) -> None:
        if not self.generating or self._first_token_t is None:
            return
        n = self.worker.engine.live_tokens  # an int, documented as readable from any thread
        dt = time.perf_counter() - self._first_token_t
        if dt > 0.2 and n > 1:
            self.gauges.set_speed((n - 1) / dt, live=True)
        self.gauges.set_context(self._prompt_tokens + n, self._n_ctx)

    def _on_turn_finished(self, result: TurnResult) -> None:
        s = result.stats
        self.live_timer.stop()
        self.generating = False
        self.chat.finish_reply(result.reply, s.to_dict())
        self.gauges.set_speed(s.gen_tokens_per_s, live=False)
        self.gauges.set_ttft(s.ttft_s)
        self.gauges.set_context(s.context_used, s.n_ctx)
        self.status.setText("Stopped" if s.finish_reason == "cancelled" else "Ready")
        self._set_busy_ui()
        self.replyFinished.emit(result)
        self._drain_queue()

    def _on_turn_failed(self, reason: str) -> None:
        self.live_timer.stop()
        self.generating = False
        if self.chat.streaming:
            self.chat.abandon_reply()
        self.chat.add_notice(f"Not sent: {reason}", "#e05050")
        self._restore_input(self._pending_text)
        self.status.setText("Ready")
        self._set_busy_ui()
        self.failed.emit(reason)
        self._drain_queue()

    def _restore_input(self, text: str) -> None:
        """A message that could not be sent goes back into an empty input box: nothing lost."""
        if text and not self.input.toPlainText().strip():
            self.input.setPlainText(text)

    def _on_command_done(self, res: commands.CommandResult) -> None:
        if res.reset:
            self.chat.clear_all()
            self.chats.set_current(res.data.get("conversation_id", ""))
            self.gauges.set_context(0, self._n_ctx)
            self.status.setText("Conversation and KV cache cleared")
        elif res.message:
            self.chat.add_output(res.message)
        if res.reloaded:
            self.loading = False
            self.status.setText("Reloaded — the conversation is kept and re-read on the next turn")
        self._set_busy_ui()
        self.commandFinished.emit(res)
        self._drain_queue()

    def _on_command_failed(self, reason: str) -> None:
        self.switching = False
        self.progress.hide()
        if self.loading:
            self.loading = False
            self.status.setText("Ready")
        self.chat.add_notice(reason, "#e05050")
        self._set_busy_ui()
        self.failed.emit(reason)
        self._drain_queue()

    def _on_snapshot(self, snap: Snapshot) -> None:
        self.gauges.on_snapshot(snap)
        self.settings_panel.set_free(*snap.free())
        self.settings_panel.set_gpu_available(bool(snap.gpus) and bool(
            self.load_info and self.load_info.gpu_offload_supported))

    # --- errors ---
    def report_error(self, reason: str) -> None:
        """Show a one-line reason in a dialog (non-blocking) and keep running."""
        self.errors.append(reason)
        log.warning("shown to the user: %s", reason)
        self.failed.emit(reason)
        if self.show_dialogs and not self._closing:
            box = QMessageBox(QMessageBox.Icon.Warning, "DeskLM", reason,
                              QMessageBox.StandardButton.Ok, self)
            box.setObjectName("error_dialog")
            box.open()
            self.last_dialog = box

    # --- state ---
    def _set_busy_ui(self) -> None:
        busy = self.generating
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setToolTip("Stop the reply (Esc)" if busy else "Send (Enter)")
        self.stop_action.setEnabled(busy or self.loading)
        self.open_action.setEnabled(not self.loading)
        self.models_action.setEnabled(not self.loading)
        self.settings_panel.apply_button.setEnabled(
            bool(self.settings_panel.pending) and not self.loading)
        self.settings_panel.tune_button.setEnabled(
            self.load_info is not None and not self.loading and not self.generating)


class ErrorBridge(QObject):
    """Carries exceptions from any thread to the UI thread (queued signal)."""

    raised = Signal(str)


def window_icon() -> QIcon:
    from desklm.resources import icon_path

    p = icon_path()
    return QIcon(str(p)) if p else QIcon()


def make_thread_safe_reporter(window: MainWindow) -> Any:
    bridge = ErrorBridge()
    bridge.raised.connect(window.report_error, Qt.ConnectionType.QueuedConnection)
    window._error_bridge = bridge  # keep it alive

    def on_error(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        bridge.raised.emit(f"Unexpected error: {exc_type.__name__}: {exc} "
                           "(the details are in the log file)")

    return on_error

