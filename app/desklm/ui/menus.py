"""The window's menus and toolbar, built once, every action a named attribute.

:class:`Menus` only builds; :class:`~desklm.ui.main_window.MainWindow` connects each action to
what it does (``menus.regen.triggered.connect(...)``). Nothing looks a menu up by position.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QSizePolicy, QToolBar, QWidget

from desklm.ui import theme

THEMES = (("system", "Follow the &system"), ("light", "&Light"), ("dark", "&Dark"))


def _action(
    parent: QMainWindow,
    text: str,
    shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
    tip: str = "",
    checkable: bool = False,
) -> QAction:
    act = QAction(text, parent)
    if shortcut is not None:
        act.setShortcut(QKeySequence(shortcut))
    if tip:
        act.setToolTip(tip)
    act.setCheckable(checkable)
    return act


class Menus:
    """File, Chat, View, Server and Help, and the toolbar. ``docks``: the window's dock
    widgets by name ("chats", "settings", "gauges", "server"), for their View entries."""

    def __init__(self, w: QMainWindow, docks: dict[str, QDockWidget]) -> None:
        mb = w.menuBar()
        self.file: QMenu = mb.addMenu("&File")
        self.models = _action(
            w, "&Models…", "Ctrl+M", "Models on this machine, and downloads from Hugging Face"
        )
        self.open = _action(w, "&Open model file…", QKeySequence.StandardKey.Open)
        self.connect = _action(
            w,
            "&Connect to server…",
            None,
            "Chat with a model served by vLLM, llama-server, Ollama or any "
            "OpenAI-compatible server",
        )
        self.attach = _action(
            w, "&Attach a file…", None, "Put a text file or PDF into your next message"
        )
        self.export = _action(w, "&Export conversation…", "Ctrl+E")
        self.quit = _action(w, "&Quit", QKeySequence.StandardKey.Quit)
        for act in (self.models, self.open, self.connect, self.attach, self.export):
            self.file.addAction(act)
        self.file.addSeparator()
        self.file.addAction(self.quit)

        self.chat: QMenu = mb.addMenu("&Chat")
        self.new_chat = _action(w, "&New chat", "Ctrl+N")
        self.reset = _action(w, "&Reset conversation (/reset)", "Ctrl+R")
        self.stop = _action(w, "&Stop reply", "Esc")
        self.regen = _action(w, "Re&generate reply (/regen)", "Ctrl+Shift+R")
        for act in (self.new_chat, self.reset, self.stop, self.regen):
            self.chat.addAction(act)

        self.view: QMenu = mb.addMenu("&View")
        for name in ("chats", "settings", "gauges", "server"):
            if name in docks:
                self.view.addAction(docks[name].toggleViewAction())
        self.theme_menu: QMenu = self.view.addMenu("&Theme")
        self.themes: dict[str, QAction] = {}
        for mode, label in THEMES:
            act = _action(w, label, checkable=True)
            act.setChecked(mode == theme.mode())
            self.theme_menu.addAction(act)
            self.themes[mode] = act

        self.server: QMenu = mb.addMenu("&Server")
        self.serve = _action(
            w,
            "&Serve the model (OpenAI API)",
            None,
            "Let other apps on this machine use the loaded model through an "
            "OpenAI-compatible API (off by default)",
            checkable=True,
        )
        self.server.addAction(self.serve)
        if "server" in docks:
            self.server.addAction(docks["server"].toggleViewAction())

        self.help: QMenu = mb.addMenu("&Help")
        self.commands = _action(w, "Slash &commands")
        self.about = _action(w, "&About DeskLM")
        self.help.addAction(self.commands)
        self.help.addAction(self.about)

        self.toolbar: QToolBar = w.addToolBar("Main")
        self.toolbar.setObjectName("toolbar")
        self.toolbar.setMovable(False)
        for act in (self.models, self.open, self.new_chat, self.stop):
            self.toolbar.addAction(act)
        # the side panels, one click away (in a narrow window they open as drawers)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.toolbar.addWidget(spacer)
        self.panel_toggles: dict[str, QAction] = {}
        for name in ("chats", "settings", "gauges"):
            if name in docks:
                act = docks[name].toggleViewAction()
                act.setToolTip(f"Show or hide the {name} panel")
                self.toolbar.addAction(act)
                self.panel_toggles[name] = act

    def check_theme(self, mode: str) -> None:
        for m, act in self.themes.items():
            act.setChecked(m == mode)
