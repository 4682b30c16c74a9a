"""File > Connect to server: a model served by vLLM, llama-server, Ollama or any OpenAI-compatible
server.

The user types the server's URL, an optional API key and a name, presses **Test** (the served
models are listed into the picker), picks a model and presses **Connect** (with "Remember" on, the
connection is saved: name, URL and model in the settings, the key in the OS keyring). Network and
keyring work run as :class:`~desklm.ui.workers.BackgroundOp`, never on the UI thread; the dialog
only reacts to their outcomes.

Signals:
    connectionChosen(object): a :class:`ChosenConnection` once Connect succeeded (saved first when
        asked). The window connects a ``RemoteBackend`` with it on its inference thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import (
    AppConfig,
    Connection,
    list_connections,
    probe_server,
    save_connection,
)
from desklm.ui.workers import BackgroundOp, reason

log = logging.getLogger("desklm.ui")


@dataclass
class ChosenConnection:
    """What the window needs to connect: the connection, the key (None: none), the models the
    test listed, and notes to show (plain http on a private network, where the key went)."""

    connection: Connection
    api_key: str | None
    models: list[str]
    notes: list[str]

    def __repr__(self) -> str:  # never show the key
        return f"ChosenConnection({self.connection!r}, key={'yes' if self.api_key else 'no'})"


class ConnectDialog(QDialog):
    connectionChosen = Signal(object)

    def __init__(
        self,
        parent: QWidget | None = None,
        initial: Connection | None = None,
        config: AppConfig | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to server")
        self.setObjectName("connectDialog")
        self.config = config
        self._listed_for: tuple[str, str] | None = None
        self._notice: str | None = None

        self.saved = QComboBox()
        self.saved.setObjectName("savedConnections")
        self.url = QLineEdit()
        self.url.setObjectName("url")
        self.url.setPlaceholderText(
            "http://127.0.0.1:8000/v1  (vLLM, llama-server, Ollama: http://localhost:11434/v1)"
        )
        self.key = QLineEdit()
        self.key.setObjectName("apiKey")
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("optional")
        self.name = QLineEdit()
        self.name.setObjectName("name")
        self.name.setPlaceholderText("e.g. GPU box")
        self.test_button = QPushButton("Test")
        self.test_button.setObjectName("testButton")
        self.model = QComboBox()
        self.model.setObjectName("model")
        self.model.setEnabled(False)
        self.remember = QCheckBox("Remember this connection (the key goes to the OS keyring)")
        self.remember.setChecked(True)
        self.status = QLabel("Press Test to list the server's models.")
        self.status.setObjectName("status")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Saved", self.saved)
        row = QHBoxLayout()
        row.addWidget(self.url, 1)
        row.addWidget(self.test_button)
        form.addRow("Server URL", row)
        form.addRow("API key", self.key)
        form.addRow("Name", self.name)
        form.addRow("Model", self.model)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.connect_button = self.buttons.addButton(
            "Connect", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.connect_button.setObjectName("connectButton")
        self.connect_button.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.remember)
        lay.addWidget(self.status)
        lay.addWidget(self.buttons)

        self.test_button.clicked.connect(self.test)
        self.buttons.rejected.connect(self.reject)
        self.connect_button.clicked.connect(self.accept_connection)
        self.url.textChanged.connect(self._inputs_changed)
        self.key.textChanged.connect(self._inputs_changed)
        self.saved.activated.connect(self._pick_saved)
        self._connections: list[Connection] = []
        config = self.config
        self._run(lambda: list_connections(config), self._saved_listed, self._failed)
        if initial is not None:
            self._fill(initial)

    # -- helpers --
    def _run(
        self, fn: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[str], None]
    ) -> None:
        BackgroundOp(fn, self, "connect dialog").success(done).failure(
            lambda e: failed(reason(e))
        ).run()

    def _busy(self, on: bool) -> None:
        self.test_button.setEnabled(not on)
        self.connect_button.setEnabled(not on and self.model.count() > 0)

    def _fill(self, c: Connection) -> None:
        self.url.setText(c.url)
        self.name.setText(c.name)
        self.model.clear()
        if c.model:
            self.model.addItem(c.model)
        self.status.setText("Press Test to check the server and list its models.")

    # -- slots --
    @Slot(object)
    def _saved_listed(self, conns: list[Connection]) -> None:
        self._connections = conns
        self.saved.clear()
        self.saved.addItem("(new connection)")
        for c in conns:
            self.saved.addItem(f"{c.name} — {c.url}")
        self.saved.setEnabled(bool(conns))

    @Slot(int)
    def _pick_saved(self, index: int) -> None:
        if 1 <= index <= len(self._connections):
            self._fill(self._connections[index - 1])

    @Slot()
    def _inputs_changed(self) -> None:
        if self._listed_for != (self.url.text().strip(), self.key.text()):
            self.connect_button.setEnabled(False)

    @Slot()
    def test(self) -> None:
        url, key = self.url.text().strip(), self.key.text()
        self._busy(True)
        self.status.setText(f"Asking {url or '…'} for its models…")

        def probe() -> tuple[str, str, list[str], str | None]:
            return (url, key, *probe_server(url, key or None))

        self._run(probe, self._listed, self._failed)

    @Slot(object)
    def _listed(self, res: tuple[str, str, list[str], str | None]) -> None:
        url, key, ids, notice = res
        want = self.model.currentText()
        self.model.clear()
        self.model.addItems(ids)
        if want in ids:
            self.model.setCurrentText(want)
        self.model.setEnabled(True)
        self._listed_for = (url, key)
        self._notice = notice
        text = f"{len(ids)} model(s) served." + (f" Note: {notice}." if notice else "")
        self.status.setText(text)
        if not self.name.text().strip():
            from desklm.engine import check_url

            self.name.setText(check_url(url, resolve=False).host)
        self._busy(False)

    @Slot(str)
    def _failed(self, reason: str) -> None:
        self.status.setText(f"Error: {reason}")
        self._busy(False)

    @Slot()
    def accept_connection(self) -> None:
        if self._listed_for is None or self.model.count() == 0:
            self._failed("press Test first: the model list comes from the server")
            return
        url, key = self._listed_for
        conn = Connection(self.name.text().strip() or url, url, self.model.currentText())
        notes = [self._notice] if self._notice else []
        if not self.remember.isChecked():
            self._chosen(ChosenConnection(conn, key or None, self._models(), notes))
            return
        self._busy(True)
        self.status.setText("Saving the connection…")
        models, config = self._models(), self.config

        def save() -> ChosenConnection:  # on a pool thread: touches no widget
            saved = save_connection(conn, key or None, config)
            return ChosenConnection(conn, key or None, models, [*notes, *saved])

        self._run(save, self._chosen, self._failed)

    def _models(self) -> list[str]:
        return [self.model.itemText(i) for i in range(self.model.count())]

    @Slot(object)
    def _chosen(self, chosen: ChosenConnection) -> None:
        self._busy(False)
        self.connectionChosen.emit(chosen)
        self.accept()
