"""The API server's panel: state, start/stop, address, key, allowed origins and the request log.

Self-contained: give it an :class:`~desklm.server.ApiServer`. Starting and stopping run as a
:class:`~desklm.ui.workers.BackgroundOp`, off the UI thread (binding, the keyring); the
server's events arrive through a queued signal.

Signals:
    stateChanged(object): the :class:`~desklm.server.ServerState` after every change.
    requestLogged(object): a finished request's :class:`~desklm.server.RequestRecord`.
    settingsChanged(dict): ``{"enabled", "host", "port", "cors_origins"}`` to persist (no key:
        the key lives in the OS keyring only).
    failed(str): a one-line reason the server could not start.
    noted(str): what starting did to the model, when it did something (it reloaded to make
        the API slots).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desklm.server import DEFAULT_HOST, DEFAULT_PORT, ApiServer, RequestRecord, ServerState
from desklm.server import is_loopback as _is_loopback
from desklm.ui import theme
from desklm.ui.workers import BackgroundOp, reason

# three columns fit the ~260 px tab beside the gauges (seven were cut to "dpo"); the client,
# the token split and the seconds are in each row's tooltip
COLUMNS = ("Time", "Request", "Result")
MAX_ROWS = 500


class ServerPanel(QWidget):
    stateChanged = Signal(object)
    requestLogged = Signal(object)
    settingsChanged = Signal(dict)
    failed = Signal(str)
    noted = Signal(str)
    _event = Signal(str, object)  # from the server's thread (queued to the UI thread)

    def __init__(
        self,
        server: ApiServer,
        parent: QWidget | None = None,
        key_source: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.server = server
        # where a key comes from when one is needed (the OS keyring; tests pass their own)
        self.key_source = key_source or _keyring_key
        self.confirm_network: Callable[[str], bool] = self._ask_network
        self._busy = False
        self._key = ""
        self._op: BackgroundOp[Any] | None = None
        # while listening with parallel slots, the slots' live readings (busy, waiting,
        # tokens/s) once a second: a state event comes only when a request starts or ends
        self.live = QTimer(self)
        self.live.setInterval(1000)
        self.live.timeout.connect(self._refresh_live)

        self.state_label = QLabel("off")
        self.state_label.setObjectName("serverState")
        self.toggle = QPushButton("Start")
        self.toggle.setCheckable(True)
        self.host = QLineEdit(DEFAULT_HOST)
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.cors = QLineEdit()
        self.cors.setPlaceholderText("none (e.g. http://localhost:3000, comma-separated)")
        self.key_field = QLineEdit()
        self.key_field.setReadOnly(True)
        self.key_field.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_field.setPlaceholderText("only needed beyond this machine")
        self.copy_key = QPushButton("Copy key")
        self.copy_key.setEnabled(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)

        # laid out for a narrow column: each field under its name, the state over a full-width
        # Start/Stop, the log below taking the rest
        self.toggle.setMinimumWidth(80)
        self.state_label.setWordWrap(True)
        self.state_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head, fit = self.table.horizontalHeader(), QHeaderView.ResizeMode.ResizeToContents
        head.setSectionResizeMode(0, fit)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(2, fit)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        addr = QHBoxLayout()
        addr.addWidget(self.host, 1)
        addr.addWidget(QLabel(":"))
        addr.addWidget(self.port)
        form.addRow("Address and port", addr)
        form.addRow("Allowed web origins", self.cors)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_field, 1)
        key_row.addWidget(self.copy_key)
        form.addRow("API key", key_row)
        top = QHBoxLayout()
        top.addWidget(self.state_label, 1)
        top.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignTop)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 8, 8, 8)
        lay.addLayout(top)
        lay.addLayout(form)
        log_title = QLabel("Requests")
        log_title.setProperty("role", "muted")
        lay.addWidget(log_title)
        lay.addWidget(self.table, 1)

        self.toggle.clicked.connect(self._on_toggle)
        self.copy_key.clicked.connect(self._copy_key)
        self._event.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        for w in (self.host, self.cors):
            w.editingFinished.connect(self._emit_settings)
        self.port.valueChanged.connect(lambda _v: self._emit_settings())
        server.add_listener(self._listener)

    # -- settings ----------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {
            "enabled": self.server.running,
            "host": self.host.text().strip() or DEFAULT_HOST,
            "port": self.port.value(),
            "cors_origins": self._origins(),
        }

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the fields from saved settings (does not start the server)."""
        self.host.setText(str(values.get("host") or DEFAULT_HOST))
        port = values.get("port")
        if isinstance(port, int) and 0 <= port <= 65535:
            self.port.setValue(port)
        origins = values.get("cors_origins") or []
        if isinstance(origins, list):
            self.cors.setText(", ".join(str(o) for o in origins))

    def _origins(self) -> list[str]:
        return [o.strip() for o in self.cors.text().split(",") if o.strip()]

    def _emit_settings(self) -> None:
        self.settingsChanged.emit(self.values())

    # -- start / stop --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Starting or stopping (the button is disabled until it is done, and ignores clicks)."""
        return self._busy

    def start(self) -> None:
        """Start with the fields' values (asks first when the address is not this machine)."""
        if self._busy or self.server.running:
            return
        host = self.host.text().strip() or DEFAULT_HOST
        if not _is_loopback(host) and not self.confirm_network(host):
            self.toggle.setChecked(False)
            return
        self._busy = True
        self.toggle.setEnabled(False)
        self.state_label.setText("starting (the API slots may need a reload of the model)…")
        port, origins = self.port.value(), self._origins()

        def run() -> str:  # binding and the keyring stay off the UI thread
            key = None if _is_loopback(host) else self.key_source()
            self._key = key or ""
            return self.server.start(host, port, key, origins)

        self._op = (
            BackgroundOp(run, self, "api-server-start")
            .success(lambda url: self._on_started(url, ""))
            .failure(lambda e: self._on_started("", reason(e)))
            .run()
        )

    def stop(self) -> None:
        if self._busy or not self.server.running:
            return
        self._busy = True
        self.toggle.setEnabled(False)

        self._op = (
            BackgroundOp(self.server.stop, self, "api-server-stop")
            .success(lambda _r: self._on_started("", ""))
            .failure(lambda e: self._on_started("", reason(e)))
            .run()
        )

    @Slot()
    def _on_toggle(self) -> None:
        if self.toggle.isChecked():
            self.start()
        else:
            self.stop()

    def _on_started(self, url: str, error: str) -> None:
        self._busy = False
        self.toggle.setEnabled(True)
        running = self.server.running
        self.toggle.setChecked(running)
        self.toggle.setText("Stop" if running else "Start")
        for w in (self.host, self.port, self.cors):
            w.setEnabled(not running)
        self.key_field.setText(self._key if running else "")
        self.copy_key.setEnabled(bool(running and self._key))
        self._show_state(self.server.state)
        if error:
            self.state_label.setText(f"off: {error}")
            self.failed.emit(error)
        elif running and self.server.note:
            self.noted.emit(f"API on: {self.server.note}")
        self._emit_settings()

    def _ask_network(self, host: str) -> bool:
        answer = QMessageBox.question(
            self,
            "Serve to the network?",
            f"Listening on {host} makes the model reachable from other computers on the "
            "network. Requests will need the API key shown here. Continue?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _copy_key(self) -> None:
        if self._key:
            QGuiApplication.clipboard().setText(self._key)

    # -- events from the server ----------------------------------------------------------------
    def _listener(self, event: str, data: Any) -> None:  # the server's thread
        self._event.emit(event, data)

    @Slot(str, object)
    def _on_event(self, event: str, data: Any) -> None:
        if event == "state":
            self._show_state(data)
        elif event == "request":
            self._add_row(data)
            self.requestLogged.emit(data)

    def _show_state(self, state: ServerState) -> None:
        if not (self.state_label.text().startswith("off: ") and not state.listening):
            self.state_label.setText(state.text)
        if state.listening and state.slots and not self.live.isActive():
            self.live.start()
        elif not state.listening:
            self.live.stop()
        self.stateChanged.emit(state)

    def _refresh_live(self) -> None:
        """The slots' readings now (counters and a rate: cheap, safe from any thread), here
        and wherever the state is shown (the status bar): a state sent when a request
        arrived says "3 queued" until the next arrives, though the batch took them at once."""
        state = self.server.state
        if not state.listening:
            self.live.stop()
            return
        if state.text != self.state_label.text():
            self.state_label.setText(state.text)
            self.stateChanged.emit(state)

    def _add_row(self, rec: RequestRecord) -> None:
        if self.table.rowCount() >= MAX_ROWS:
            self.table.removeRow(0)
        row = self.table.rowCount()
        self.table.insertRow(row)
        result = str(rec.status)
        if rec.completion_tokens:
            result += f" · {rec.completion_tokens} tok"
        if rec.tokens_per_s:
            result += f" · {rec.tokens_per_s:.0f}/s"
        cells = (time.strftime("%H:%M:%S", time.localtime(rec.time)), rec.endpoint, result)
        tip = (
            f"{rec.endpoint} from {rec.client}: status {rec.status}, "
            f"{rec.prompt_tokens} prompt + {rec.completion_tokens} generated tokens, "
            + (f"{rec.tokens_per_s:.1f} tok/s, " if rec.tokens_per_s else "")
            + f"{rec.duration_s:.2f} s"
            + (f"\n{rec.error}" if rec.error else "")
        )
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(tip)
            if rec.status >= 400:
                item.setForeground(theme.current().color("error"))
            self.table.setItem(row, col, item)
        self.table.scrollToBottom()

    def shutdown(self) -> None:
        """Stop the server (blocking, at most a few seconds) and stop listening to it."""
        self.server.remove_listener(self._listener)
        if self._op is not None:
            self._op.done.wait(5.0)
        self.server.stop()


def _keyring_key() -> str:
    from desklm.server.keys import get_or_create_key

    return get_or_create_key()
