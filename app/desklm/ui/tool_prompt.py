"""The permission prompt for tool calls: a bar over the message box, never a modal dialog.

Each call the model asks for waits here until the user answers: **Allow once** (this call),
**Always allow** (this tool, from now on; the Tools dialog can take it back) or **Deny** (the
model is told no and answers without it). Stop (Esc) ends the turn and closes the bar.
:func:`install` wires the bar, the transcript's tool lines and the Tools menu entry into the
main window.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class ToolPermissionBar(QFrame):
    """Asks before a tool runs; one request at a time, later ones wait in line.

    Signals:
        answered(str, str): a request's call id and "once", "always" or "deny".
    """

    answered = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("toolPermission")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.arguments = QPlainTextEdit()
        self.arguments.setReadOnly(True)
        self.arguments.setMaximumHeight(110)
        self.arguments.setObjectName("toolArguments")
        self.once_button = QPushButton("Allow once")
        self.always_button = QPushButton("Always allow this tool")
        self.deny_button = QPushButton("Deny")
        self.once_button.setDefault(True)
        self.once_button.clicked.connect(lambda: self._answer("once"))
        self.always_button.clicked.connect(lambda: self._answer("always"))
        self.deny_button.clicked.connect(lambda: self._answer("deny"))
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.deny_button, self.always_button, self.once_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.addWidget(self.title)
        lay.addWidget(self.arguments)
        lay.addLayout(buttons)
        self.waiting: list[Any] = []  # ToolRequests, the one shown first
        allow = QShortcut(QKeySequence("Ctrl+Return"), self)
        allow.activated.connect(lambda: self._answer("once"))
        self.hide()

    @property
    def current(self) -> Any:
        return self.waiting[0] if self.waiting else None

    def ask(self, req: Any) -> None:
        """Show ``req`` (a ToolRequest): its tool, server and arguments."""
        self.waiting.append(req)
        if len(self.waiting) == 1:
            self._show_current()

    def _show_current(self) -> None:
        req = self.current
        if req is None:
            self.hide()
            return
        self.title.setText(
            f"The model wants to call the tool “{req.tool}” of the server "
            f"“{req.server}” with these arguments. Allow it?"
        )
        self.arguments.setPlainText(req.arguments_text())
        self.show()
        self.once_button.setFocus()

    def close_request(self, call_id: str) -> None:
        """That request's wait is over (answered, or the turn was stopped)."""
        self.waiting = [r for r in self.waiting if r.call_id != call_id]
        self._show_current()

    def _answer(self, decision: str) -> None:
        req = self.current
        if req is None:
            return
        self.waiting.pop(0)
        self.answered.emit(req.call_id, decision)
        self._show_current()


def install(window: Any, menu: Any) -> ToolPermissionBar:
    """Wire tools into ``window`` (a MainWindow with ``controller``, ``chat`` and
    ``attachments``): the permission bar over the message box, the calls in the transcript,
    and the "Tools (MCP servers)…" entry of ``menu``."""
    from PySide6.QtGui import QAction

    c = window.controller
    bar = ToolPermissionBar()
    lay = window.centralWidget().layout()
    lay.insertWidget(lay.indexOf(window.attachments), bar)
    c.toolPermission.connect(bar.ask)
    c.toolPermissionClosed.connect(bar.close_request)
    bar.answered.connect(c.answer_tool)
    c.toolStep.connect(lambda _kind, step: window.chat.show_tool_step(step))
    act = QAction("&Tools (MCP servers)…", window)
    act.setToolTip("Servers whose tools the model may call, each call asking you first")
    act.triggered.connect(lambda: show_tools_dialog(window))
    menu.addAction(act)
    window.tools_action = act
    window.tool_bar = bar
    return bar


def show_tools_dialog(window: Any) -> Any:
    from desklm.ui.dialogs.tools_dialog import ToolsDialog

    dlg = getattr(window, "tools_dialog", None)
    if dlg is None:
        dlg = window.tools_dialog = ToolsDialog(window.controller, window)
    dlg.show()
    dlg.raise_()
    dlg.refresh(start=True)
    return dlg
