"""The main window: layout, and drawing what the controller emits.

It never touches the model, the session, a file or a thread: every request is a method of the
:class:`~desklm.ui.controller.ChatController` (``attach``, ``save_preset``, ``regenerate``...),
and everything shown comes back from it as a signal. The controller owns the API server, the
search index and the app settings file. What the window is doing is ``controller.state``.
The parts: :mod:`~desklm.ui.menus` (menus and toolbar), :mod:`~desklm.ui.docks` (the side
panels, drawers when narrow), :mod:`~desklm.ui.status` (the status bar),
:mod:`~desklm.ui.turns` (a reply as it streams), :mod:`~desklm.ui.views` (loads, settings,
chats, messages), :mod:`~desklm.ui.dialogs.openers` (the dialogs), :mod:`~desklm.ui.notices`.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QResizeEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import AppConfig, ConversationStore, LoadInfo, Settings, title_from
from desklm.ui import theme, tool_prompt, workers
from desklm.ui.attachment_chip import AttachmentBar
from desklm.ui.chat_view import ChatInput, ChatView
from desklm.ui.controller import STOPPABLE, ChatController, State
from desklm.ui.dialogs.openers import WindowDialogs
from desklm.ui.docks import DEFAULT_SIZE, SidePanels, first_geometry
from desklm.ui.menus import Menus
from desklm.ui.notices import NoticeArea
from desklm.ui.panels.conversations import ConversationList
from desklm.ui.panels.gauges import GaugePanel
from desklm.ui.panels.search_panel import SearchPanel
from desklm.ui.panels.server_panel import ServerPanel
from desklm.ui.panels.settings_panel import SettingsPanel
from desklm.ui.status import ElidedLabel, StatusLine
from desklm.ui.turns import TurnDrawer
from desklm.ui.views import WindowViews
from desklm.ui.welcome import WelcomeWidget

__all__ = ["DEFAULT_SIZE", "ElidedLabel", "MainWindow", "first_geometry"]

log = logging.getLogger("desklm.ui")


class MainWindow(QMainWindow):
    """Signals for observers (self-test, tests, bench), emitted on the UI thread:
    modelLoaded(object), firstToken(), replyFinished(object), commandFinished(object),
    settingsSynced(object), failed(str), tuned(object), conversationShown(object),
    conversationsRefreshed(object).
    """

    tuned = Signal(object)
    conversationShown = Signal(object)
    conversationsRefreshed = Signal(object)
    modelLoaded = Signal(object)
    firstToken = Signal()
    settingsSynced = Signal(object)
    replyFinished = Signal(object)
    commandFinished = Signal(object)
    failed = Signal(str)

    def __init__(
        self,
        settings: Settings,
        model_path: str = "",
        *,
        show_dialogs: bool = True,
        store: ConversationStore | None = None,
        config: AppConfig | None = None,
        saved: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else AppConfig()
        self.setObjectName("DeskLM")
        self.setWindowTitle("DeskLM")
        self.setAcceptDrops(True)
        self.show_dialogs = show_dialogs
        self.initial_model = model_path
        self.load_info: LoadInfo | None = None
        self.errors: list[str] = []
        self.last_dialog: QMessageBox | None = None
        self.models_dialog: Any = None
        self._closing = False
        self._list_problems_shown: set[str] = set()
        self.welcome: WelcomeWidget | None = None
        self._editing = ""  # the id of a sent message being edited in the input box
        saved = saved or {}
        store = store if store is not None else ConversationStore()
        self.controller = c = ChatController(settings, store, config=self.config)
        self._shown_id = c.conversation_id  # the (empty) chat a fresh session starts with
        self._build_central()
        self.settings_panel = SettingsPanel(settings)
        self.settings_panel.reloads = lambda values: c.session.reloads(values)
        self.gauges = GaugePanel()
        self.chats = ConversationList()
        self.search = SearchPanel(c.search_index)
        self.server_panel = ServerPanel(c.api_server)
        chats_box = QWidget()
        cb = QVBoxLayout(chats_box)
        cb.setContentsMargins(theme.SPACE[2], theme.SPACE[2], theme.SPACE[2], 0)
        cb.addWidget(self.search)
        cb.addWidget(self.chats, 1)
        self.panels = SidePanels(
            self, chats_box, self.settings_panel, self.gauges, self.server_panel
        )
        self.statusline = StatusLine(self.statusBar())
        self.status, self.progress = self.statusline.status, self.statusline.progress
        self.menus = Menus(self, self.panels.by_name())
        self.turns = TurnDrawer(self)
        self.views = WindowViews(self)
        self.dialogs = WindowDialogs(self)
        self._connect()
        tool_prompt.install(self, self.menus.chat)  # Tools…, the permission bar, calls in the chat
        workers.set_error_reporter(self.report_error)
        server_values = saved.get("api_server")
        if isinstance(server_values, dict):
            self.server_panel.set_values(server_values)
            if server_values.get("enabled"):
                c.runtime.local.api_slots = True  # the first load makes them: no reload
                QTimer.singleShot(0, self.server_panel.start)
        if not saved.get("welcome_dismissed"):
            self._show_welcome()
        mode = saved.get("theme")
        if mode in theme.MODES:
            self.set_theme(mode, save=False)
        self._restore_layout(saved)
        self._on_state(c.state)
        c.list_conversations()

    # --- construction ---
    def _build_central(self) -> None:
        self.chat = ChatView()
        self.input = ChatInput()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("send")
        self.send_button.setMinimumWidth(90)
        self.queue_label = QLabel("")
        self.queue_label.setObjectName("queued")
        self.queue_label.setWordWrap(True)
        self.queue_label.hide()
        self.notices = NoticeArea()
        self.attachments = AttachmentBar()  # the next message's files (× removes one)
        row = QHBoxLayout()
        row.setSpacing(theme.SPACE[2])
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        central = QWidget()
        self.central_layout = cl = QVBoxLayout(central)
        m = theme.SPACE[3]
        cl.setContentsMargins(m, theme.SPACE[2], m, theme.SPACE[2])
        cl.setSpacing(theme.SPACE[2])
        cl.addWidget(self.chat, 1)
        cl.addWidget(self.notices)
        cl.addWidget(self.queue_label)
        cl.addWidget(self.attachments)
        cl.addLayout(row)
        self.setCentralWidget(central)

    def _connect(self) -> None:
        """Every connection between the widgets, the window and the controller, in one place."""
        c, m, sp, t, v = (self.controller, self.menus, self.settings_panel, self.turns, self.views)
        # menus
        m.models.triggered.connect(self.show_models)
        m.open.triggered.connect(self.dialogs.open_model_dialog)
        m.connect.triggered.connect(self.dialogs.show_connect)
        m.attach.triggered.connect(self.dialogs.attach_dialog)
        m.export.triggered.connect(self.dialogs.export_dialog)
        m.quit.triggered.connect(self.close)
        m.new_chat.triggered.connect(self.new_conversation)
        m.reset.triggered.connect(self.reset_conversation)
        m.stop.triggered.connect(self.stop)
        m.regen.triggered.connect(c.regenerate)
        for mode, act in m.themes.items():
            act.triggered.connect(lambda _c=False, mode=mode: self.set_theme(mode))
        m.serve.triggered.connect(self._toggle_server)
        m.commands.triggered.connect(c.show_help)
        m.about.triggered.connect(self.dialogs.about)
        # widgets -> controller
        self.send_button.clicked.connect(self._send_or_stop)
        self.input.submitted.connect(self.submit)
        sp.changed.connect(c.apply_settings)
        sp.applyRequested.connect(self._apply_reload)
        sp.tuneRequested.connect(c.tune)
        sp.presetChosen.connect(c.apply_preset)
        sp.presetSaveRequested.connect(c.save_preset)
        sp.presetDeleteRequested.connect(c.delete_preset)
        self.chats.newRequested.connect(self.new_conversation)
        self.chats.openRequested.connect(self.open_conversation)
        self.chats.deleteRequested.connect(c.delete_conversation)
        self.chats.renameRequested.connect(c.rename_conversation)
        self.chat.copied.connect(lambda _t: self.statusBar().showMessage("Copied", 1500))
        self.attachments.removed.connect(c.remove_attachment)
        self.chat.regenerateRequested.connect(c.regenerate)
        self.chat.versionRequested.connect(c.select_version)
        self.chat.deleteRequested.connect(c.delete_message)
        self.chat.editRequested.connect(self.edit_message)
        self.search.openRequested.connect(self.open_at)
        self.server_panel.stateChanged.connect(self._on_server_state)
        self.server_panel.requestLogged.connect(t.on_api_request)
        self.server_panel.settingsChanged.connect(lambda v: c.save_config({"api_server": v}))
        self.server_panel.failed.connect(self.report_error)
        self.server_panel.noted.connect(self._on_server_note)
        # controller -> drawing
        c.messageRevealed.connect(self.chat.reveal)
        c.stateChanged.connect(self._on_state)
        c.queueChanged.connect(v.show_queue)
        c.message.connect(v.on_message)
        c.output.connect(self.chat.add_output)
        c.helpShown.connect(self.chat.add_help)
        c.attachmentsChanged.connect(self._show_attachments)
        c.loadStarted.connect(v.on_load_started)
        c.loadProgress.connect(lambda p: self.progress.setValue(int(p * 100)))
        c.loaded.connect(v.on_loaded)
        c.loadEnded.connect(v.on_load_ended)
        c.modelUnloaded.connect(v.on_unloaded)
        c.modelInfo.connect(sp.set_model_info)
        c.turnStarted.connect(t.on_started)
        c.token.connect(t.on_token)
        c.turnFinished.connect(t.on_finished)
        c.tailStored.connect(self.chat.sync_tail)
        c.serverMetrics.connect(self.gauges.on_server_metrics)
        c.turnFailed.connect(t.on_failed)
        c.commandDone.connect(self.commandFinished.emit)
        c.settingChanged.connect(sp.set_setting)
        c.settingsLoaded.connect(v.on_settings_loaded)
        c.tuneProgress.connect(v.on_tune_progress)
        c.tuned.connect(v.on_tuned)
        c.conversationsListed.connect(v.on_conversations)
        c.kvUsage.connect(sp.set_kv_usage)
        c.presetsListed.connect(sp.set_presets)
        c.conversationOpened.connect(v.on_conversation_opened)
        c.snapshot.connect(v.on_snapshot)

    def set_theme(self, mode: str, save: bool = True) -> None:
        theme.set_mode(mode)
        self.menus.check_theme(mode)
        if save:
            self.controller.save_config({"theme": mode})

    def _toggle_server(self, on: bool) -> None:
        if on:
            self.panels.server.show()
            self.panels.server.raise_()
            self.server_panel.start()
        else:
            self.server_panel.stop()

    def _on_server_state(self, state: Any) -> None:
        text = getattr(state, "text", str(state))
        self.statusline.server_state.setText("" if text == "off" else f"API: {text}")
        self.menus.serve.setChecked(text != "off")
        self.settings_panel.set_api_on(bool(getattr(state, "listening", False)))

    def _on_server_note(self, note: str) -> None:
        self.notices.add(note + ".", key="api-slots")  # the status line shows the API's state

    def resizeEvent(self, e: QResizeEvent) -> None:
        super().resizeEvent(e)
        self.panels.fit(e.size().width())

    # --- dialogs ---
    def attach_file(self, path: str) -> None:
        """Read and measure ``path`` on the inference thread; a chip shows it (or a notice
        says why it cannot go)."""
        self.controller.attach(path)

    def _show_attachments(self, pending: list[dict[str, Any]]) -> None:
        self.attachments.clear()
        for meta in pending:
            self.attachments.add(
                SimpleNamespace(**{"tokens": None, "note": "", **meta}), self.turns.n_ctx
            )

    def dragEnterEvent(self, e: QDragEnterEvent) -> None:
        urls = e.mimeData().urls() if e.mimeData().hasUrls() else []
        if any(u.isLocalFile() for u in urls):
            e.acceptProposedAction()

    def dropEvent(self, e: QDropEvent) -> None:
        """A dropped model file loads; any other file is attached to the next message."""
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        model = next((p for p in files if p.lower().endswith(".gguf")), None)
        if model is not None:
            self.load_model(model)
        else:
            for path in files:
                self.attach_file(path)
        if files:
            e.acceptProposedAction()

    def show_models(self) -> Any:
        """The Models dialog (non-modal): local models and Hugging Face downloads."""
        return self.dialogs.show_models()

    # --- the welcome ---
    def _show_welcome(self) -> None:
        from desklm.engine import logical_cores

        self.welcome = WelcomeWidget(cores=logical_cores())
        self.welcome.useModel.connect(self._welcome_model)
        self.welcome.dismissed.connect(
            lambda: self.controller.save_config({"welcome_dismissed": True})
        )
        self.welcome.browseRequested.connect(self.show_models)
        self.central_layout.insertWidget(0, self.welcome)

    def _welcome_model(self, path: str) -> None:
        self.load_model(path)
        if self.welcome is not None:
            self.welcome.dismiss()

    def _hide_welcome(self) -> None:
        """The chat has begun (or a chat with messages is shown): the welcome steps aside for
        this session; it comes back at the next launch until dismissed."""
        if self.welcome is not None and not self.welcome.progress.isVisible():
            self.welcome.hide()

    # --- lifecycle ---
    def start(self) -> None:
        """Show first, then load: the window appears before the model is ready, with the
        keyboard in the message box."""
        self.show()
        self.input.setFocus()
        QTimer.singleShot(0, lambda: self.controller.load(self.initial_model))

    def load_model(self, path: str) -> None:
        self.controller.load(path)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        event.accept()

    def shutdown(self) -> float:
        """Stop work, save the chat and the app settings, join the threads (2 s each)."""
        if self._closing:
            return 0.0
        self._closing = True
        workers.set_error_reporter(None)
        for part in (self.models_dialog, self.welcome, self.server_panel, self.search):
            if part is not None:
                part.shutdown()
        self.turns.live_timer.stop()
        layout = {
            "geometry": _b64(self.saveGeometry()),
            "window_state": _b64(self.panels.state_to_save()),
        }
        return self.controller.close(layout)

    def _restore_layout(self, saved: dict[str, Any]) -> None:
        screen = self.screen()
        g = first_geometry(screen.availableGeometry()) if screen is not None else None
        if not saved.get("geometry"):
            if g is None:
                self.resize(*DEFAULT_SIZE)
            else:
                self.setGeometry(g)
            self.panels.size_to(self.width(), self.height())
        for key, fn in (("geometry", self.restoreGeometry), ("window_state", self.restoreState)):
            v = saved.get(key)
            if isinstance(v, str) and v:
                fn(QByteArray.fromBase64(v.encode("ascii")))
        self.panels.fit(self.width())

    # --- user actions ---
    def edit_message(self, message_id: str, text: str) -> None:
        """Put a sent message back in the input box; sending it resends it (Esc cancels)."""
        self._editing = message_id
        self.menus.stop.setEnabled(True)  # Esc cancels the edit
        self.input.setPlainText(text)
        self.input.setFocus()
        self.statusline.set(
            "Editing a sent message: Enter resends it (the old version is kept), Esc cancels"
        )

    def submit(self, text: str) -> None:
        """Send a message or run a slash command (queued while the model is busy)."""
        if self._editing and not text.lstrip().startswith("/"):
            message_id, self._editing = self._editing, ""
            self.controller.edit_message(message_id, text)
            return
        self._hide_welcome()
        if self._shown_id in self.chats.pending and not text.lstrip().startswith("/"):
            # the new chat's entry takes its first message as title, as the saved one will
            self.chats.add_pending(
                {"id": self._shown_id, "title": title_from(text), "messages": [text]}
            )
        self.controller.submit(text)

    def _send_or_stop(self) -> None:
        if self.controller.state is State.GENERATING:
            self.stop()
        else:
            self.input.submit()

    def stop(self) -> None:
        if self._editing:  # Esc while editing a sent message: leave it as it was
            self._editing = ""
            self.input.clear()
            self.statusline.set("Edit cancelled")
            return
        if self.controller.stop():
            self.statusline.set("Stopping…")

    def reset_conversation(self) -> None:
        if self.controller.state is State.GENERATING:
            self._requeue_to_input()
        self.controller.reset_conversation()

    def new_conversation(self) -> None:
        self._requeue_to_input()
        self.controller.new_conversation()

    def open_at(self, conv_id: str, message_id: str) -> None:
        """Open a chat at a message (a search result), scrolled to it and selected."""
        self._requeue_to_input()
        self.controller.open_at(conv_id, message_id)

    def open_conversation(self, conv_id: str) -> None:
        self._requeue_to_input()
        self.controller.open_conversation(conv_id)

    def _requeue_to_input(self) -> None:
        """Messages waiting in the queue go back into the input box instead of being lost."""
        waiting = self.controller.take_queue()
        if waiting:
            current = self.input.toPlainText().strip()
            self.input.setPlainText("\n\n".join([*waiting, current] if current else waiting))
            self.notices.add(
                f"{len(waiting)} queued message(s) not sent: back in the input box", key="requeued"
            )

    def _apply_reload(self, values: dict[str, Any]) -> None:
        self.statusline.set("Reloading the model with new settings…")
        self.controller.apply_settings(values)

    # --- drawing what the controller emits ---
    def _on_state(self, state: State) -> None:
        m, sp = self.menus, self.settings_panel
        gen = state is State.GENERATING
        idle = state in (State.IDLE, State.NO_MODEL)
        self.send_button.setText("Stop" if gen else "Send")
        self.send_button.setToolTip("Stop the reply (Esc)" if gen else "Send (Enter)")
        m.stop.setEnabled(state in STOPPABLE or bool(self._editing))
        for act in (m.open, m.models):
            act.setEnabled(state is not State.CLOSING)
        sp.apply_button.setEnabled(bool(sp.pending) and idle)
        # a model is known before its load job ends: tuning waits until the window is at rest
        sp.tune_button.setEnabled(
            state is State.IDLE and sp.model_info is not None and not self.turns.remote
        )
        if not gen:
            self.turns.live_timer.stop()
        self.statusline.on_state(state)

    # --- errors ---
    def report_error(self, reason: str) -> None:
        """Show a one-line reason in a dialog (non-blocking) and keep running."""
        self.errors.append(reason)
        log.warning("shown to the user: %s", reason)
        self.failed.emit(reason)
        if self.show_dialogs and not self._closing:
            box = QMessageBox(
                QMessageBox.Icon.Warning, "DeskLM", reason, QMessageBox.StandardButton.Ok, self
            )
            box.setObjectName("error_dialog")
            box.open()
            self.last_dialog = box


def _b64(data: QByteArray) -> str:
    return bytes(data.toBase64().data()).decode("ascii")
