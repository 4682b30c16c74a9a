"""Chat > Tools: the MCP servers whose tools the model may call.

Servers are added here (a command to run, or a Streamable HTTP URL with its key, which goes to
the OS keyring) or imported from an ``mcp.json`` in Claude Desktop's format (the file is only
read). Each server has a status line (running, failed and why, not running); each of its
tools a check box. No tool is on until it is checked here (or with ``/tools on``), and even
then every call asks first. "Ask again" takes back "Always allow". "Next reply" forces a call
for models that do not call tools by themselves (the embedded base model among them).

Starting a server, listing its tools and writing ``mcp.json`` run on a pool thread, never on
the UI thread; the dialog redraws when the controller's ``toolsChanged`` arrives.
"""

from __future__ import annotations

import functools
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import DeskLMError, ServerConfig, ServerState
from desklm.ui.workers import BackgroundOp

log = logging.getLogger("desklm.ui")


class AddServerDialog(QDialog):
    """Name, and either a command line (stdio) or a URL and key (Streamable HTTP)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a tool server")
        self.setObjectName("addToolServer")
        self.name = QLineEdit()
        self.name.setObjectName("serverName")
        self.name.setPlaceholderText("e.g. files")
        self.kind = QComboBox()
        self.kind.setObjectName("serverKind")
        self.kind.addItems(["A program on this computer (stdio)", "A URL (Streamable HTTP)"])
        self.command = QLineEdit()
        self.command.setObjectName("serverCommand")
        self.command.setPlaceholderText("npx -y @modelcontextprotocol/server-filesystem ~/Docs")
        self.env = QPlainTextEdit()
        self.env.setObjectName("serverEnv")
        self.env.setPlaceholderText("environment, one KEY=VALUE a line (optional)")
        self.env.setMaximumHeight(70)
        self.url = QLineEdit()
        self.url.setObjectName("serverUrl")
        self.url.setPlaceholderText("http://127.0.0.1:8000/mcp")
        self.key = QLineEdit()
        self.key.setObjectName("serverKey")
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("optional; kept in the OS keyring")
        stdio, http = QWidget(), QWidget()
        f1 = QFormLayout(stdio)
        f1.addRow("Command:", self.command)
        f1.addRow("Environment:", self.env)
        f2 = QFormLayout(http)
        f2.addRow("URL:", self.url)
        f2.addRow("Key:", self.key)
        self.pages = QStackedWidget()
        self.pages.addWidget(stdio)
        self.pages.addWidget(http)
        self.kind.currentIndexChanged.connect(self.pages.setCurrentIndex)
        self.error = QLabel("")
        self.error.setObjectName("addError")
        self.error.setWordWrap(True)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._check)
        buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Name:", self.name)
        form.addRow("Kind:", self.kind)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.pages)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def server(self) -> tuple[ServerConfig, str | None]:
        """What was typed, as a server and its key; DeskLMError says what is missing."""
        name = self.name.text().strip()
        if not name:
            raise DeskLMError("give the server a name")
        if self.kind.currentIndex() == 1:
            if not self.url.text().strip():
                raise DeskLMError("give the server's URL")
            return ServerConfig(name, url=self.url.text().strip()), self.key.text() or None
        try:
            words = shlex.split(self.command.text())
        except ValueError as e:
            raise DeskLMError(f"the command line cannot be read: {e}") from None
        if not words:
            raise DeskLMError("give the command that runs the server")
        env: dict[str, str] = {}
        for line in self.env.toPlainText().splitlines():
            if line.strip():
                k, sep, v = line.strip().partition("=")
                if not sep or not k:
                    raise DeskLMError(f"environment line {line.strip()!r}: write KEY=VALUE")
                env[k.strip()] = v
        return ServerConfig(name, command=words[0], args=words[1:], env=env), None

    def _check(self) -> None:
        try:
            self.server()
        except DeskLMError as e:
            self.error.setText(str(e))
            return
        self.accept()


class ToolsDialog(QDialog):
    """The tool servers, their status and their tools. Non-modal."""

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Tools (MCP servers)")
        self.setObjectName("toolsDialog")
        self.resize(720, 460)
        self.controller = controller
        self.hub = controller.tools
        self._drawing = False
        self._ops: list[BackgroundOp[Any]] = []  # running: the dialog is busy until they end
        self.notices: list[str] = []
        self.servers = QListWidget()
        self.servers.setObjectName("servers")
        self.servers.currentRowChanged.connect(lambda _r: self._show_tools())
        self.status = QLabel("")
        self.status.setObjectName("serverStatus")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.tools = QListWidget()
        self.tools.setObjectName("tools")
        self.tools.itemChanged.connect(self._tool_toggled)
        self.forget_button = QPushButton("Ask again")
        self.forget_button.setToolTip('Take back "Always allow" for the selected tool')
        self.forget_button.clicked.connect(self.forget_always)
        self.force = QComboBox()
        self.force.setObjectName("forceTool")
        self.force.setToolTip(
            "For models that do not call tools by themselves: the next "
            "reply is a call (you are still asked)"
        )
        self.force.activated.connect(self._force_chosen)
        self.add_button = QPushButton("Add…")
        self.import_button = QPushButton("Import mcp.json…")
        self.remove_button = QPushButton("Remove")
        self.restart_button = QPushButton("Start / restart")
        self.add_button.clicked.connect(self.add_dialog)
        self.import_button.clicked.connect(self.import_dialog)
        self.remove_button.clicked.connect(self.remove_selected)
        self.restart_button.clicked.connect(self.restart_selected)
        self.notice = QLabel("")
        self.notice.setObjectName("toolsNotice")
        self.notice.setWordWrap(True)
        self.notice.setTextFormat(Qt.TextFormat.PlainText)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.hide)

        left = QVBoxLayout()
        left.addWidget(QLabel("Servers"))
        left.addWidget(self.servers, 1)
        row = QHBoxLayout()
        for b in (self.add_button, self.import_button, self.remove_button):
            row.addWidget(b)
        left.addLayout(row)
        right = QVBoxLayout()
        right.addWidget(self.status)
        right.addWidget(QLabel("Tools (checked: the model may ask to call it)"))
        right.addWidget(self.tools, 1)
        r2 = QHBoxLayout()
        r2.addWidget(self.restart_button)
        r2.addWidget(self.forget_button)
        r2.addStretch(1)
        right.addLayout(r2)
        r3 = QHBoxLayout()
        r3.addWidget(QLabel("Next reply:"))
        r3.addWidget(self.force, 1)
        right.addLayout(r3)
        body = QHBoxLayout()
        body.addLayout(left, 2)
        body.addLayout(right, 3)
        lay = QVBoxLayout(self)
        lay.addLayout(body, 1)
        lay.addWidget(self.notice)
        lay.addWidget(close)
        controller.toolsChanged.connect(self._on_changed)
        self.refresh()

    # -- background work --
    def _background(
        self, fn: Callable[[], Any], done: Callable[[Any], None] | None = None
    ) -> BackgroundOp[Any]:
        """``fn`` off the UI thread (the window's one background helper); then ``done`` and a
        redraw, or the one-line reason under the lists."""
        op: BackgroundOp[Any] = BackgroundOp(fn, self, "tools")

        def finished(result: Any) -> None:
            self._ops.remove(op)
            if done is not None:
                done(result)
            self.refresh()

        def failed(e: BaseException) -> None:
            self._ops.remove(op)
            self._say(
                str(e) if isinstance(e, DeskLMError) else f"internal error: {type(e).__name__}: {e}"
            )
            self.refresh()

        self._ops.append(op)
        return op.success(finished).failure(failed).run()

    def _say(self, text: str) -> None:
        """One line under the lists: what the last action did (``notices`` keeps them all)."""
        self.notices.append(text)
        self.notice.setText(text)

    @property
    def busy(self) -> bool:
        return bool(self._ops)

    # -- drawing --
    def selected(self) -> str:
        item = self.servers.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else ""

    @Slot(str)
    def _on_changed(self, _name: str) -> None:
        self.refresh()

    def refresh(self, start: bool = False) -> None:
        """Redraw from the hub's state (memory only); ``start``: start the servers that have
        not run yet, on a pool thread."""
        current = self.selected()
        self.servers.blockSignals(True)
        self.servers.clear()
        for st in self.hub.statuses():
            item = QListWidgetItem(f"{st.name} — {st.line()}")
            item.setData(Qt.ItemDataRole.UserRole, st.name)
            item.setToolTip(st.where)
            self.servers.addItem(item)
            if st.name == current:
                self.servers.setCurrentItem(item)
            if start and st.state == ServerState.OFF:
                self._background(functools.partial(self.hub.start, st.name))
        if self.servers.currentItem() is None and self.servers.count():
            self.servers.setCurrentRow(0)
        self.servers.blockSignals(False)
        problems = self.hub.problems
        if problems and not self.notice.text():
            self._say("mcp.json: " + "; ".join(problems))
        self._show_tools()
        self._fill_force()

    def _show_tools(self) -> None:
        name = self.selected()
        self._drawing = True
        self.tools.clear()
        if not name:
            self.status.setText(
                "No tool servers yet: Add… one, or import an mcp.json "
                "(Claude Desktop's claude_desktop_config.json works)."
            )
            self._drawing = False
            return
        st = self.hub.status(name)
        self.status.setText(f"{name} ({st.kind}: {st.where})\n{st.line()}")
        for t in st.tools:
            item = QListWidgetItem(t.name + ("   (always allowed)" if t.always else ""))
            item.setData(Qt.ItemDataRole.UserRole, t.name)
            item.setToolTip(t.description)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if t.on else Qt.CheckState.Unchecked)
            self.tools.addItem(item)
        self._drawing = False

    def _fill_force(self) -> None:
        self.force.blockSignals(True)
        self.force.clear()
        self.force.addItem("The model chooses", None)
        names = sorted({t.name for st in self.hub.statuses() for t in st.tools if t.on})
        for n in names:
            self.force.addItem(f"Call {n}", n)
        forced = getattr(self.controller.session, "force_tool", None)
        at = self.force.findData(forced) if forced else 0
        self.force.setCurrentIndex(max(0, at))
        self.force.blockSignals(False)

    # -- actions --
    def _tool_toggled(self, item: QListWidgetItem) -> None:
        if self._drawing:
            return
        self.set_tool_on(
            str(item.data(Qt.ItemDataRole.UserRole)), item.checkState() == Qt.CheckState.Checked
        )

    def set_tool_on(self, tool: str, on: bool) -> None:
        server = self.selected()
        self._background(lambda: self.hub.set_tool(server, tool, on))

    def forget_always(self) -> None:
        item, server = self.tools.currentItem(), self.selected()
        if item is not None and server:
            tool = str(item.data(Qt.ItemDataRole.UserRole))
            self._background(lambda: self.hub.allow_always(server, tool, False))

    def _force_chosen(self, index: int) -> None:
        self.controller.force_tool(self.force.itemData(index))

    def add_server(self, cfg: ServerConfig, key: str | None = None) -> None:
        def done(notes: Any) -> None:
            self._say(
                "; ".join(notes)
                if notes
                else f"added {cfg.name}: check the tools the model may ask for"
            )
            self._background(lambda: self.hub.start(cfg.name))

        self._background(lambda: self.hub.add(cfg, key), done)

    def add_dialog(self) -> None:
        dlg = AddServerDialog(self)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            cfg, key = dlg.server()
            self.add_server(cfg, key)

    def import_file(self, path: str) -> None:
        def done(result: Any) -> None:
            added, notes = result
            self._say(
                f"imported {len(added)} server(s)"
                + (f": {', '.join(added)}" if added else "")
                + ("; " + "; ".join(notes) if notes else "")
            )
            for n in added:
                self._background(functools.partial(self.hub.start, n))

        self._background(lambda: self.hub.import_file(path), done)

    def import_dialog(self) -> None:
        start = Path.home() / ".config" / "Claude"
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Import mcp.json",
            str(start if start.is_dir() else Path.home()),
            "MCP configuration (*.json)",
        )
        if path:
            self.import_file(path)

    def remove_selected(self) -> None:
        name = self.selected()
        if name:
            self._background(lambda: self.hub.remove(name), lambda _r: self._say(f"removed {name}"))

    def restart_selected(self) -> None:
        name = self.selected()
        if name:

            def restart() -> Any:
                self.hub.stop(name)
                return self.hub.start(name)

            self._background(restart)
