"""The main window: layout and menus, and drawing what the controller emits.

It never touches the model, the session or a thread: every request goes to the
:class:`~desklm.ui.controller.ChatController`, and everything shown comes back from it as a
signal. What the window is doing is ``controller.state`` (see ``controller.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRect, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QIcon,
    QKeySequence,
    QPainter,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import (
    AppConfig,
    ConversationStore,
    LoadInfo,
    SearchIndex,
    Settings,
    Snapshot,
    TurnResult,
    title_from,
)
from desklm.ui import theme, tool_prompt
from desklm.ui.attachment_chip import AttachmentBar
from desklm.ui.chat_view import ChatInput, ChatView
from desklm.ui.controller import STOPPABLE, ChatController, State
from desklm.ui.panels.conversations import ConversationList
from desklm.ui.panels.gauges import GaugePanel
from desklm.ui.panels.search_panel import SearchPanel
from desklm.ui.panels.server_panel import ServerPanel
from desklm.ui.panels.settings_panel import SettingsPanel
from desklm.ui.welcome import WelcomeWidget

DEFAULT_SIZE = (1280, 800)
FRAME_ALLOWANCE = (16, 40)  # a window manager's borders and title bar, in pixels

log = logging.getLogger("desklm.ui")


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" when it does not fit (a plain QLabel in the status
    bar was cut off at its left edge: "emma 3 270m · gemma3 · …")."""

    def shown_text(self) -> str:
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                             max(0, self.contentsRect().width()))

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())


def first_geometry(avail: QRect) -> QRect:
    """The window's first size and place: 1280x800, or less where the screen is smaller,
    centred, with room left for a window manager's frame. It never starts larger than the
    screen (at 1024x640 the message box used to be below the bottom edge)."""
    w = min(DEFAULT_SIZE[0], avail.width() - FRAME_ALLOWANCE[0])
    h = min(DEFAULT_SIZE[1], avail.height() - FRAME_ALLOWANCE[1])
    return QRect(avail.x() + (avail.width() - w) // 2,
                 avail.y() + max(0, (avail.height() - h - FRAME_ALLOWANCE[1]) // 2), w, h)

STATUS = {
    State.STARTING: "Starting…",
    State.LOADING: "Loading the model…",
    State.NO_MODEL: "No model loaded — open one with File > Models",
    State.IDLE: "Ready",
    State.GENERATING: "Reading the prompt…",
    State.COMMAND: "Working…",
    State.SWITCHING: "Opening the chat…",
    State.TUNING: "Tuning: measuring speed…",
    State.CLOSING: "Closing…",
}


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

    def __init__(self, settings: Settings, model_path: str = "", *,
                 show_dialogs: bool = True, store: ConversationStore | None = None,
                 config: AppConfig | None = None, saved: dict[str, Any] | None = None) -> None:
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
        self._turn_t0 = 0.0
        self._first_token_t: float | None = None
        self._live_tokens = 0
        self._prompt_tokens = 0
        self._n_ctx = 0
        self._closing = False
        self._remote = False
        self._list_problems_shown: set[str] = set()

        # --- central: transcript + input ---
        self.chat = ChatView()
        self.input = ChatInput()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("send")
        self.send_button.setMinimumWidth(90)
        self.queue_label = QLabel("")
        self.queue_label.setObjectName("queued")
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
        # the files that go with the next message, as chips over the box (× removes one)
        self.attachments = AttachmentBar()
        cl.addWidget(self.attachments)
        cl.addLayout(row)
        self.setCentralWidget(central)

        # --- docks ---
        store = store if store is not None else ConversationStore()
        self.settings_panel = SettingsPanel(settings)
        self.gauges = GaugePanel()
        self.chats = ConversationList()
        self.search = SearchPanel(SearchIndex(store))
        chats_box = QWidget()
        cb = QVBoxLayout(chats_box)
        cb.setContentsMargins(0, 0, 0, 0)
        cb.addWidget(self.search)
        cb.addWidget(self.chats, 1)
        self.settings_dock = self._dock("Settings", self.settings_panel,
                                        Qt.DockWidgetArea.LeftDockWidgetArea)
        self.gauges_dock = self._dock("Gauges", self.gauges, Qt.DockWidgetArea.RightDockWidgetArea,
                                      min_width=240)
        self.chats_dock = self._dock("Chats", chats_box, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.splitDockWidget(self.chats_dock, self.settings_dock, Qt.Orientation.Vertical)
        self.resizeDocks([self.chats_dock, self.settings_dock], [150, 600],
                         Qt.Orientation.Vertical)
        self.resizeDocks([self.chats_dock, self.gauges_dock], [340, 270],
                         Qt.Orientation.Horizontal)

        # --- status bar ---
        self.status = QLabel("Starting…")
        self.status.setObjectName("status")
        self.model_label = ElidedLabel("no model")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(180)
        self.progress.hide()
        for label in (self.status, self.model_label):  # long texts never widen the window
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            label.setMinimumWidth(60)
        self.model_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.statusBar().addWidget(self.status, 3)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.model_label, 2)

        self._build_actions()
        self.live_timer = QTimer(self)
        self.live_timer.setInterval(250)
        self.live_timer.timeout.connect(self._update_live)

        self.controller = ChatController(settings, store)
        # the API server (off until the user turns it on) shares the one inference runner
        self.api_server = self.controller.api_server  # off until the user turns it on
        self.server_panel = ServerPanel(self.api_server)
        self.server_dock = self._dock("API server", self.server_panel,
                                      Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.gauges_dock, self.server_dock)  # never a column of its own
        self.gauges_dock.raise_()
        self.server_dock.hide()
        self.server_state = QLabel("")
        self.server_state.setObjectName("server_state")
        self.statusBar().addPermanentWidget(self.server_state)
        self.welcome: WelcomeWidget | None = None
        self._shown_id = ""  # the conversation the transcript shows
        self._editing = ""  # the id of a sent message being edited in the input box
        saved = saved or {}
        self._build_late_actions()
        self._connect()
        server_values = saved.get("api_server")
        if isinstance(server_values, dict):
            self.server_panel.set_values(server_values)
            if server_values.get("enabled"):
                QTimer.singleShot(0, self.server_panel.start)
        if not saved.get("welcome_dismissed"):
            self._show_welcome()
        mode = saved.get("theme")
        if mode in ("system", "light", "dark"):
            self.set_theme(mode, save=False)
        self._restore_layout(saved)
        self._apply_theme()
        self._on_state(self.controller.state)
        self.controller.list_conversations()

    # --- construction ---
    def _connect(self) -> None:
        """Every connection between the widgets, the window and the controller, in one place."""
        c = self.controller
        # widgets -> controller
        self.send_button.clicked.connect(self._send_or_stop)
        self.input.submitted.connect(self.submit)
        self.settings_panel.changed.connect(c.apply_settings)
        self.settings_panel.applyRequested.connect(self._apply_reload)
        self.settings_panel.tuneRequested.connect(c.tune)
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
        c.messageRevealed.connect(self.chat.reveal)
        self.server_panel.stateChanged.connect(self._on_server_state)
        self.server_panel.requestLogged.connect(self._on_api_request)
        self.server_panel.settingsChanged.connect(
            lambda v: self.controller.save_config(self.config, {"api_server": v}))
        self.server_panel.failed.connect(self.report_error)
        # controller -> drawing
        c.stateChanged.connect(self._on_state)
        c.queueChanged.connect(self._show_queue)
        c.message.connect(self._on_message)
        c.loadStarted.connect(self._on_load_started)
        c.loadProgress.connect(lambda p: self.progress.setValue(int(p * 100)))
        c.loaded.connect(self._on_loaded)
        c.loadEnded.connect(self._on_load_ended)
        c.modelUnloaded.connect(self._on_unloaded)
        c.modelInfo.connect(self.settings_panel.set_model_info)
        c.turnStarted.connect(self._on_turn_started)
        c.token.connect(self._on_token)
        c.turnFinished.connect(self._on_turn_finished)
        c.tailStored.connect(self.chat.sync_tail)
        c.serverMetrics.connect(self.gauges.on_server_metrics)
        c.turnFailed.connect(self._on_turn_failed)
        c.commandDone.connect(self._on_command_done)
        c.settingChanged.connect(self._on_setting_changed)
        c.settingsLoaded.connect(self._on_settings_loaded)
        c.tuneProgress.connect(self._on_tune_progress)
        c.tuned.connect(self._on_tuned)
        c.conversationsListed.connect(self._on_conversations)
        c.kvUsage.connect(self.settings_panel.set_kv_usage)
        c.presetsListed.connect(self.settings_panel.set_presets)
        sp = self.settings_panel
        sp.presetChosen.connect(lambda name: self.submit(f"/preset {name}"))
        sp.presetSaveRequested.connect(lambda name: self.submit(f"/preset save {name}"))
        sp.presetDeleteRequested.connect(lambda name: self.submit(f"/preset delete {name}"))
        c.conversationOpened.connect(self._on_conversation_opened)
        c.snapshot.connect(self._on_snapshot)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea,
              min_width: int = 260) -> QDockWidget:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(widget)
        scroll.setMinimumWidth(min_width)
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
        self.view_menu = view = mb.addMenu("&View")
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

    def _build_late_actions(self) -> None:
        """Menu entries for the parts built after the controller (server, remote, chats)."""
        mb = self.menuBar()
        file_menu, chat_menu = mb.actions()[0].menu(), mb.actions()[1].menu()
        self.connect_action = QAction("&Connect to server…", self)
        self.connect_action.setToolTip("Chat with a model served by vLLM, llama-server, Ollama "
                                       "or any OpenAI-compatible server")
        self.connect_action.triggered.connect(self.show_connect)
        file_menu.insertAction(self.export_action, self.connect_action)
        self.attach_action = QAction("&Attach a file…", self)
        self.attach_action.setToolTip("Put a text file or PDF into your next message")
        self.attach_action.triggered.connect(self.attach_dialog)
        file_menu.insertAction(self.export_action, self.attach_action)
        self.regen_action = QAction("Re&generate reply (/regen)", self)
        self.regen_action.setShortcut(QKeySequence("Ctrl+Shift+R"))
        self.regen_action.triggered.connect(lambda: self.submit("/regen"))
        chat_menu.addAction(self.regen_action)
        tool_prompt.install(self, chat_menu)  # Tools…, the permission bar, calls in the chat
        theme_menu = self.view_menu.addMenu("&Theme")
        self.theme_actions: dict[str, QAction] = {}
        for mode, label in (("system", "Follow the &system"), ("light", "&Light"),
                            ("dark", "&Dark")):
            act = QAction(label, self, checkable=True)
            act.setChecked(mode == theme.mode())
            act.triggered.connect(lambda _c=False, m=mode: self.set_theme(m))
            theme_menu.addAction(act)
            self.theme_actions[mode] = act
        server = mb.insertMenu(mb.actions()[3], QMenu("&Server", self)).menu()
        self.serve_action = QAction("&Serve the model (OpenAI API)", self, checkable=True)
        self.serve_action.setToolTip("Let other apps on this machine use the loaded model "
                                     "through an OpenAI-compatible API (off by default)")
        self.serve_action.triggered.connect(self._toggle_server)
        server.addAction(self.serve_action)
        server.addAction(self.server_dock.toggleViewAction())
        self.view_menu.addAction(self.server_dock.toggleViewAction())

    def set_theme(self, mode: str, save: bool = True) -> None:
        theme.set_mode(mode)
        for m, act in self.theme_actions.items():
            act.setChecked(m == mode)
        self._apply_theme()
        if save:
            self.controller.save_config(self.config, {"theme": mode})

    def _toggle_server(self, on: bool) -> None:
        if on:
            self.server_dock.show()
            self.server_panel.start()
        else:
            self.server_panel.stop()

    def _on_server_state(self, state: Any) -> None:
        text = getattr(state, "text", str(state))
        self.server_state.setText("" if text == "off" else f"API: {text}")
        self.serve_action.setChecked(text != "off")

    def show_connect(self) -> Any:
        from desklm.ui.dialogs.connect_dialog import ConnectDialog

        dlg = ConnectDialog(self, config=self.config)
        dlg.connectionChosen.connect(self.controller.connect_remote)
        dlg.open()
        return dlg

    def attach_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Attach a file", str(Path.home()),
            "Text and PDF (*.txt *.md *.csv *.json *.py *.pdf *.*)")
        if path:
            self.attach_file(path)

    def attach_file(self, path: str) -> None:
        """Read and measure ``path`` on the inference thread; a chip shows it (or a notice
        says why it cannot go)."""
        self.submit(f"/attach {path}")

    def _show_attachments(self, pending: list[dict[str, Any]]) -> None:
        from types import SimpleNamespace

        self.attachments.clear()
        for meta in pending:
            self.attachments.add(SimpleNamespace(**{"tokens": None, "note": "", **meta}),
                                 self._n_ctx)

    def _show_welcome(self) -> None:
        from desklm.engine import logical_cores

        self.welcome = WelcomeWidget(cores=logical_cores())
        self.welcome.useModel.connect(self._welcome_model)
        self.welcome.dismissed.connect(self._welcome_dismissed)
        self.welcome.browseRequested.connect(self.show_models)
        self.centralWidget().layout().insertWidget(0, self.welcome)

    def _welcome_model(self, path: str) -> None:
        self.load_model(path)
        if self.welcome is not None:
            self.welcome.dismiss()

    def _welcome_dismissed(self) -> None:
        self.controller.save_config(self.config, {"welcome_dismissed": True})

    def _apply_theme(self) -> None:
        self.queue_label.setStyleSheet(f"color: {theme.color('muted')};")

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
        if self.models_dialog is not None:
            self.models_dialog.shutdown()
        if self.welcome is not None:
            self.welcome.shutdown()
        self.server_panel.shutdown()
        self.search.shutdown()
        self.live_timer.stop()
        layout = {
            "geometry": bytes(self.saveGeometry().toBase64().data()).decode("ascii"),
            "window_state": bytes(self.saveState().toBase64().data()).decode("ascii"),
        }
        session, config, info = self.controller.session, self.config, self.load_info

        def save_app_settings() -> None:  # runs on the inference thread, which owns session
            from desklm.engine import is_embedded

            values = {**layout, "settings": session.settings.to_dict(),
                      "last_model": "" if info is None or is_embedded(info.path)
                      else str(info.path)}
            try:
                config.update(lambda d: d.update(values))
            except OSError as e:
                log.error("could not save app settings: %s", e)

        return self.controller.shutdown(on_close=save_app_settings)

    def _restore_layout(self, saved: dict[str, Any]) -> None:
        from PySide6.QtCore import QByteArray

        if not saved.get("geometry"):
            self._size_to_screen()
        for key, fn in (("geometry", self.restoreGeometry), ("window_state", self.restoreState)):
            v = saved.get(key)
            if isinstance(v, str) and v:
                fn(QByteArray.fromBase64(v.encode("ascii")))

    def _size_to_screen(self) -> None:
        """First launch: see :func:`first_geometry`."""
        screen = self.screen()
        if screen is None:
            self.resize(*DEFAULT_SIZE)
            return
        g = first_geometry(screen.availableGeometry())
        self.setGeometry(g)
        # side columns in proportion, so a small screen keeps a usable chat column
        left = max(260, min(340, int(g.width() * 0.27)))
        right = max(240, min(270, int(g.width() * 0.22)))
        self.resizeDocks([self.chats_dock, self.gauges_dock], [left, right],
                         Qt.Orientation.Horizontal)
        chats = max(150, int(g.height() * 0.28))  # room for 2-3 chats above the settings
        self.resizeDocks([self.chats_dock, self.settings_dock], [chats, g.height() - chats],
                         Qt.Orientation.Vertical)

    # --- user actions ---
    def edit_message(self, message_id: str, text: str) -> None:
        """Put a sent message back in the input box; sending it resends it (Esc cancels)."""
        self._editing = message_id
        self.stop_action.setEnabled(True)  # Esc cancels the edit
        self.input.setPlainText(text)
        self.input.setFocus()
        self.status.setText("Editing a sent message: Enter resends it (the old version is "
                            "kept), Esc cancels")

    def submit(self, text: str) -> None:
        """Send a message or run a slash command (queued while the model is busy)."""
        if self._editing and not text.lstrip().startswith("/"):
            message_id, self._editing = self._editing, ""
            self.controller.edit_message(message_id, text)
            return
        if self.welcome is not None and not self.welcome.progress.isVisible():
            # the chat has begun: the welcome steps aside for this session (it comes back at
            # the next launch until dismissed; File > Models has the same downloads)
            self.welcome.hide()
        if self._shown_id in self.chats.pending and not text.lstrip().startswith("/"):
            # the new chat's entry takes its first message as title, as the saved one will
            self.chats.add_pending({"id": self._shown_id, "title": title_from(text),
                                    "messages": [text]})
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
            self.status.setText("Edit cancelled")
            return
        if self.controller.stop():
            self.status.setText("Stopping…")

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
            self.chat.add_notice(f"{len(waiting)} queued message(s) not sent: back in the "
                                 "input box")

    def _apply_reload(self, values: dict[str, Any]) -> None:
        self.status.setText("Reloading the model with new settings…")
        self.controller.apply_settings(values)

    def export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export conversation", str(Path.home() / "conversation.md"),
            "Markdown (*.md);;JSON (*.json)")
        if path:
            self.controller.export(path)

    def show_models(self) -> Any:
        """The Models dialog (non-modal): local models and Hugging Face downloads."""
        from desklm.ui.dialogs.model_dialog import ModelDialog

        if self.models_dialog is not None:
            self.models_dialog.shutdown()
        dlg = ModelDialog(self, free=self.settings_panel.free,
                          gpu_offload=self.settings_panel.gpu_available)
        dlg.loadRequested.connect(self.load_model)
        dlg.serverChosen.connect(self.controller.connect_saved)
        self.controller.connectionsListed.connect(dlg.set_servers)
        self.controller.list_connections(self.config)
        dlg.show()
        self.models_dialog = dlg
        return dlg

    def tune(self) -> None:
        self.controller.tune()

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.load_model(path)

    def dragEnterEvent(self, e: QDragEnterEvent) -> None:
        urls = e.mimeData().urls() if e.mimeData().hasUrls() else []
        if any(u.isLocalFile() for u in urls):
            e.acceptProposedAction()

    def dropEvent(self, e: QDropEvent) -> None:
        """A dropped model file loads; any other file is attached to the next message."""
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        for path in files:
            if path.lower().endswith(".gguf"):
                self.load_model(path)
                e.acceptProposedAction()
                return
        for path in files:
            self.attach_file(path)
        if files:
            e.acceptProposedAction()

    def _about(self) -> Any:
        from desklm.ui.dialogs.about import AboutDialog

        dlg = AboutDialog(self.load_info, self)
        dlg.open()
        return dlg

    # --- drawing what the controller emits ---
    def _on_state(self, state: State) -> None:
        gen = state is State.GENERATING
        idle = state in (State.IDLE, State.NO_MODEL)
        self.send_button.setText("Stop" if gen else "Send")
        self.send_button.setToolTip("Stop the reply (Esc)" if gen else "Send (Enter)")
        self.stop_action.setEnabled(state in STOPPABLE or bool(self._editing))
        self.open_action.setEnabled(state is not State.CLOSING)
        self.models_action.setEnabled(state is not State.CLOSING)
        self.settings_panel.apply_button.setEnabled(bool(self.settings_panel.pending) and idle)
        # a model is known before its load job ends: tuning waits until the window is at rest
        self.settings_panel.tune_button.setEnabled(
            state is State.IDLE and self.settings_panel.model_info is not None)
        if state is not State.GENERATING:
            self.live_timer.stop()
        if state in (State.IDLE, State.NO_MODEL):
            self.progress.hide()
        if state is not State.IDLE or not self.status.text().startswith(("Ready", "Stopped",
                                                                          "Tuned", "Loaded")):
            self.status.setText(STATUS[state])

    def _show_queue(self, queue: list[str]) -> None:
        if queue:
            items = " · ".join(f"“{' '.join(t.split())[:40]}”" for t in queue)
            self.queue_label.setText(f"Queued ({len(queue)}), sent when the model is "
                                     f"free: {items}")
        self.queue_label.setVisible(bool(queue))

    def _on_message(self, level: str, text: str) -> None:
        if level == "info":
            self.status.setText(text)
        elif level == "notice":
            self.chat.add_notice(text)
        elif level == "warning":
            self.chat.add_notice(text, theme.color("error"))
            self.failed.emit(text)
        else:
            self.report_error(text)

    def _on_load_started(self, path: str) -> None:
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText(f"Loading {Path(path).name if path else 'the embedded model'}…")

    def _on_loaded(self, info: LoadInfo) -> None:
        self.load_info = info
        self._remote = bool(getattr(info, "remote", False)) or self.controller.remote
        self.gauges.set_remote(self._remote)
        self._n_ctx = info.n_ctx
        self.setWindowTitle(f"DeskLM — {info.name}")
        self.model_label.setText(f"{info.name} · {info.architecture} · {info.chat_format} format")
        self.model_label.setToolTip(str(info.path))
        self.status.setText(f"Ready — loaded in {info.load_s:.1f} s")
        self.settings_panel.set_model(info.n_ctx_train, info.n_layers, info.gpu_offload_supported)
        self.gauges.set_context(0, info.n_ctx)
        for note in info.notes:
            self.chat.add_notice(note)
        if getattr(info, "base_model", False):
            self.model_label.setText(self.model_label.text() + " · base model")
            self.chat.add_notice(
                f"{info.format_note}. It is here to try DeskLM; for a real assistant get an "
                "instruct model: the welcome's Download button, or File > Models.")
        # the whole line and the file, however narrow the window makes the label
        self.model_label.setToolTip(f"{self.model_label.text()}\n{info.path}")
        self.modelLoaded.emit(info)

    def _on_unloaded(self) -> None:
        self.load_info = None
        self.setWindowTitle("DeskLM")
        self.model_label.setText("no model")

    def _on_load_ended(self, how: str) -> None:
        self.progress.hide()
        if how == "cancelled":
            self.status.setText("Loading stopped" + ("" if self.load_info else
                                                      " — open a model with File > Models"))
            if not self._closing:
                self.chat.add_notice("Loading stopped.")
        elif how == "failed":
            self.status.setText("Ready" if self.load_info else "No model loaded")

    def _on_setting_changed(self, name: str, value: Any) -> None:
        self.settings_panel.set_setting(name, value)

    def _on_settings_loaded(self, settings: Settings) -> None:
        self.settings_panel.sync(settings)
        self._on_state(self.controller.state)
        self.settingsSynced.emit(settings)

    def _on_turn_started(self, info: dict[str, Any]) -> None:
        self._prompt_tokens = info["prompt_tokens"]
        self._n_ctx = info["n_ctx"]
        self._first_token_t = None
        self._live_tokens = 0
        self._turn_t0 = time.perf_counter()
        dropped = info["dropped"]
        if dropped:
            self.chat.add_notice(
                f"Dropped {len(dropped)} earlier message(s) to fit the {self._n_ctx}-token "
                "context: " + "; ".join(f"{d['role']}: “{d['preview']}”" for d in dropped))
        self.chat.add_user(info["text"])
        self.chat.begin_reply(self.load_info.name if self.load_info else "Model")
        self.gauges.set_context(self._prompt_tokens, self._n_ctx)
        self.status.setText(f"Reading the prompt ({info['prompt_tokens'] - info['reused']} "
                            f"new tokens, {info['reused']} reused)…")
        self.live_timer.start()

    def _on_token(self, piece: str, n_tokens: int) -> None:
        self._live_tokens = n_tokens
        if self._first_token_t is None:
            self._first_token_t = time.perf_counter()
            self.gauges.set_ttft(self._first_token_t - self._turn_t0)
            self.status.setText("Generating…")
            self.firstToken.emit()
        self.chat.append_stream(piece)

    def _update_live(self) -> None:
        if self._first_token_t is None:
            return
        n = self._live_tokens
        dt = time.perf_counter() - self._first_token_t
        if dt > 0.2 and n > 1:
            self.gauges.set_speed((n - 1) / dt, live=True)
        self.gauges.set_context(self._prompt_tokens + n, self._n_ctx)

    def _on_turn_finished(self, result: TurnResult) -> None:
        s = result.stats
        self.attachments.clear()  # they went with the message
        self.live_timer.stop()
        self.chat.finish_reply(result.reply, s.to_dict())
        self.gauges.set_speed(s.gen_tokens_per_s, live=False)
        self.gauges.set_ttft(s.ttft_s)
        self.gauges.set_context(s.context_used, s.n_ctx)
        self.status.setText("Stopped" if s.finish_reason == "cancelled" else "Ready")
        note = getattr(s, "note", "")
        if s.finish_reason == "error":  # cut mid-reply (a server gone): kept, and why
            self.chat.add_notice(f"The reply was cut: {note or 'the backend failed'}",
                                 theme.color("error"))
            self.status.setText("Reply cut: " + (note or "the backend failed"))
        if getattr(s, "restored_tokens", 0):
            self.status.setText(f"Ready — restored {s.restored_tokens:,} tokens of this chat "
                                "from its KV cache")
        self.replyFinished.emit(result)

    def _on_api_request(self, rec: Any) -> None:
        """An API client's request ended: the gauges show what it cost, labelled "API", so
        the speed of the model stays visible whoever asked (the chat's next turn redraws
        them as its own)."""
        if rec.status != 200 or not rec.completion_tokens:
            return
        self.gauges.set_speed(rec.tokens_per_s, live=False, api=True)
        self.gauges.set_ttft(rec.ttft_s, api=True)
        if rec.n_ctx:
            self.gauges.set_context(rec.prompt_tokens + rec.completion_tokens, rec.n_ctx,
                                    api=True)

    def _on_turn_failed(self, reason: str, text: str) -> None:
        self.live_timer.stop()
        if self.chat.streaming:
            self.chat.abandon_reply()
        self.chat.add_notice(f"Not sent: {reason}", theme.color("error"))
        if text and not self.input.toPlainText().strip():
            self.input.setPlainText(text)  # a message that could not be sent is not lost
        self.failed.emit(reason)

    def _on_command_done(self, res: Any) -> None:
        data = res.data if isinstance(res.data, dict) else {}
        if res.command == "preset":
            self.controller.list_presets()
            if "presets" not in data:  # saved, deleted or applied: the status line says so
                self.statusBar().showMessage((res.message.splitlines() or [""])[0], 8000)
                self.commandFinished.emit(res)
                return
        if res.command == "attach" and isinstance(data.get("pending"), list):
            self._show_attachments(data["pending"])
            if "attachment" in data:  # the chip says it; the status line says where it goes
                self.statusBar().showMessage(res.message, 8000)
                self.commandFinished.emit(res)
                return
        if res.reset:
            self.status.setText("Conversation and KV cache cleared")
        elif (res.command in ("regen", "edit") and res.turn is not None) or (
                res.command == "alt" and "reply" in data):
            # the chat was drawn again with the new version in place: no echo of it
            self.statusBar().showMessage(f"Version {data['version']}/{data['versions']}", 4000)
        elif res.message:
            self.chat.add_output(res.message)
        if res.reloaded:
            self.status.setText("Reloaded — the conversation is kept and re-read on the next turn")
        self.commandFinished.emit(res)

    def _on_tune_progress(self, step: int, steps: int, what: str) -> None:
        self.progress.show()
        self.progress.setValue(int(100 * (step - 1) / max(1, steps)))
        self.status.setText(f"Tuning ({step}/{steps}): {what}…")

    def _on_tuned(self, r: Any) -> None:
        self.progress.hide()
        best = max(r.trials, key=lambda t: t["gen_tps"])
        self.status.setText(f"Tuned: {r.n_threads} threads generating ({r.gen_tps:.1f} tok/s), "
                            f"{r.n_threads_batch} reading prompts")
        self.chat.add_notice(
            "Tuned for this machine: " + ", ".join(
                f"{t['threads']} thread(s) {t['gen_tps']:.1f} tok/s" for t in r.trials
                if t["n_gpu_layers"] == best["n_gpu_layers"])
            + f". Using {r.n_threads} (remembered for this model).", theme.color("ok"))
        self.tuned.emit(r)

    def _on_conversations(self, items: list[dict[str, Any]], problems: list[str]) -> None:
        self.chats.set_items(items)
        self.conversationsRefreshed.emit(items)
        for p in problems:
            if p not in self._list_problems_shown:
                self._list_problems_shown.add(p)
                self.chat.add_notice(p, theme.color("error"))

    def _on_conversation_opened(self, record: dict[str, Any]) -> None:
        name = self.load_info.name if self.load_info else "Model"
        self.chat.show_conversation(record["messages"], name)  # what is visible first
        same = self._shown_id == str(record["id"])  # redrawn after a regenerate, edit, ...
        self._shown_id = str(record["id"])
        if record["messages"]:
            self.chats.set_current(record["id"])
        else:  # a new chat is in the list at once, before anything is saved
            self.chats.add_pending(record)
        if not same:  # another chat: nothing of it is in the context yet
            self.gauges.set_context(0, self._n_ctx)
        self.setWindowTitle(f"DeskLM — {record['title']}" if record["messages"] else
                            f"DeskLM — {name}")
        self.conversationShown.emit(record)

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
