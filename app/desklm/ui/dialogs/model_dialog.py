"""The Models dialog: models on this machine, and downloads from Hugging Face.

Network work and the local walk run as :class:`~desklm.ui.workers.BackgroundOp` (off the UI
thread); Cancel sets an Event directly.
Nothing touches the network until the user presses "List files" or "Download".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import (
    RemoteFile,
    check_hub_reachable,
    download_model,
    fmt_bytes,
    fmt_transfer,
    list_gguf_files,
    remote_header,
)
from desklm.errors import DeskLMError
from desklm.ui import theme
from desklm.ui.workers import BackgroundOp, reason

CONNECT_TIMEOUT_S = 5.0


class HubJobs:
    """The dialog's network work, run by :class:`~desklm.ui.workers.BackgroundOp` on a pool
    thread (it touches no widget); Cancel sets :attr:`cancel` directly."""

    def __init__(self, free: tuple[Any, Any] | None = None, gpu_offload: bool = False) -> None:
        self.cancel = threading.Event()
        self.free = free
        self.gpu_offload = gpu_offload
        self._last = 0.0

    def list_files(self, repo: str, report: Callable[[Any], None]) -> list[RemoteFile]:
        """The repo's GGUF files (reported first, as a list), then each one's fit from its
        header alone, reported as (path, verdict, summary)."""
        from desklm.engine import auto_fit

        self.cancel.clear()
        check_hub_reachable(CONNECT_TIMEOUT_S)  # seconds, not huggingface_hub's ~22 s
        if self.cancel.is_set():
            return []
        files = list_gguf_files(repo)
        if self.cancel.is_set():
            return []
        report(files)
        for f in files:
            if self.cancel.is_set():
                break
            try:
                info = remote_header(f)
                est = auto_fit(info, gpu_offload=self.gpu_offload, free=self.free, max_ctx=8192)
                summary = f"{est.verdict} at {est.n_ctx} tokens" + (
                    " on the GPU" if est.n_gpu_layers else ""
                )
                report((f.path, est.verdict, f"{summary} — {est.summary()}"))
            except DeskLMError as e:
                report((f.path, "unknown", str(e)))
        return files

    def download(self, f: RemoteFile, report: Callable[[Any], None]) -> str:
        self.cancel.clear()

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - self._last > 0.1 or done >= total:
                self._last = now
                report((done, total))

        return str(download_model(f, progress, self.cancel))


def local_models() -> list[dict[str, Any]]:
    """The models on this machine (walks the Hugging Face cache: never on the UI thread)."""
    from desklm.engine import catalog

    return list(catalog())


class ModelDialog(QDialog):
    """Signals:
    loadRequested(str): a model file to load.
    """

    loadRequested = Signal(str)
    localListed = Signal(int)  # the local list is filled (how many models)
    serverChosen = Signal(object)  # a saved Connection to chat through

    def __init__(
        self,
        parent: QWidget | None = None,
        free: tuple[Any, Any] | None = None,
        gpu_offload: bool = False,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setObjectName("models_dialog")
        self.resize(760, 560)
        self.files: list[RemoteFile] = []
        self.load_box: QMessageBox | None = None
        self.last_error = ""
        self.listing = False
        self._t0 = 0.0

        local = QGroupBox("On this machine")
        self.local_list = QListWidget()
        self.local_list.setObjectName("local_models")
        self.local_list.itemDoubleClicked.connect(lambda _i: self._load_local())
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self._load_local)
        ll = QVBoxLayout(local)
        ll.addWidget(self.local_list)
        ll.addWidget(self.load_button, 0, Qt.AlignmentFlag.AlignRight)

        servers = QGroupBox("On a server (saved connections)")
        self.server_list = QListWidget()
        self.server_list.setObjectName("servers")
        self.server_list.itemDoubleClicked.connect(lambda _i: self._use_server())
        self.server_list.addItem("…")
        self.server_button = QPushButton("Connect")
        self.server_button.setEnabled(False)
        self.server_button.clicked.connect(self._use_server)
        sl = QVBoxLayout(servers)
        sl.addWidget(self.server_list)
        note = QLabel("File > Connect to server adds one (its API key goes to the keyring).")
        note.setProperty("role", "muted")
        note.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(note, 1)
        row.addWidget(self.server_button)
        sl.addLayout(row)

        remote = QGroupBox("Download from Hugging Face")
        self.repo = QComboBox()
        self.repo.setEditable(True)
        self.repo.setObjectName("repo")
        from desklm.engine import CURATED_MODELS

        for m in CURATED_MODELS:
            self.repo.addItem(m.repo_id, m.repo_id)
            self.repo.setItemData(
                self.repo.count() - 1,
                f"{m.name} (~{m.size / 2**30:.1f} GB as Q4_K_M)",
                Qt.ItemDataRole.ToolTipRole,
            )
        self.repo.setCurrentText("")
        edit = self.repo.lineEdit()
        if edit is not None:  # an editable combo always has one
            edit.setPlaceholderText("owner/repo, or pick a suggestion")
        self.list_button = QPushButton("List files")
        self.list_button.clicked.connect(self.list_files)
        top = QHBoxLayout()
        top.addWidget(self.repo, 1)
        top.addWidget(self.list_button)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("remote_files")
        self.table.setHorizontalHeaderLabels(["File", "Size", "Fit on this machine"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download_selected)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress_label = QLabel("Nothing is sent anywhere until you list or download.")
        self.progress_label.setObjectName("download_status")
        self.progress_label.setWordWrap(True)
        bottom = QHBoxLayout()
        bottom.addWidget(self.progress, 1)
        bottom.addWidget(self.download_button)
        bottom.addWidget(self.cancel_button)
        rl = QVBoxLayout(remote)
        rl.addLayout(top)
        rl.addWidget(self.table, 1)
        rl.addLayout(bottom)
        rl.addWidget(self.progress_label)

        lay = QVBoxLayout(self)
        side = QHBoxLayout()  # where a model can come from: this machine, or a server
        side.addWidget(local, 3)
        side.addWidget(servers, 2)
        lay.addLayout(side, 1)
        lay.addWidget(remote, 2)

        self.worker = HubJobs(free, gpu_offload)
        self.ops: list[BackgroundOp[Any]] = []
        self.cancel_button.clicked.connect(self.cancel)
        self.refresh_local()

    # -- local --
    def refresh_local(self) -> BackgroundOp[Any]:
        """List the local models on a pool thread; the list fills when they are known."""
        op: BackgroundOp[Any] = BackgroundOp(local_models, self, "local models")
        self.ops.append(op.success(self._show_local).run())
        return op

    def _show_local(self, models: list[dict[str, Any]]) -> None:
        self.local_list.clear()
        self.localListed.emit(len(models))
        for m in models:
            item = QListWidgetItem(
                f"{m['name']}   ·   {fmt_bytes(float(str(m['size'])))}   ·   {m['source']}"
            )
            item.setData(Qt.ItemDataRole.UserRole, m["path"])
            item.setToolTip(str(m["path"]))
            self.local_list.addItem(item)

    def _load_local(self) -> None:
        item = self.local_list.currentItem()
        if item is not None:
            from desklm.engine import is_embedded

            path = item.data(Qt.ItemDataRole.UserRole)
            self.loadRequested.emit("" if is_embedded(path) else path)
            self.accept()  # the window shows the load's progress and result

    # -- servers --
    def set_servers(self, connections: list[Any]) -> None:
        """The saved connections (read off the UI thread by the window)."""
        self.server_list.clear()
        for c in connections:
            item = QListWidgetItem(f"{c.name}   ·   {c.model or 'the server’s model'}")
            item.setData(Qt.ItemDataRole.UserRole, c)
            item.setToolTip(c.url)
            self.server_list.addItem(item)
        if not connections:
            self.server_list.addItem("No saved servers yet")
        self.server_button.setEnabled(bool(connections))
        if connections:
            self.server_list.setCurrentRow(0)

    def _use_server(self) -> None:
        item = self.server_list.currentItem()
        conn = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if conn is not None:
            self.serverChosen.emit(conn)
            self.accept()  # the window shows the connection's progress and result

    # -- remote --
    def list_files(self) -> None:
        repo = (
            self.repo.currentData()
            if self.repo.currentText() == self.repo.itemText(self.repo.currentIndex())
            and self.repo.currentData()
            else self.repo.currentText()
        )
        repo = str(repo).strip()
        self.table.setRowCount(0)
        self.progress_label.setText(f"Listing {repo}…")
        self.list_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.listing = True
        self.last_error = ""

        def listed(value: Any) -> None:  # the file list first, then one fit per file
            if isinstance(value, list):
                self._on_files(value)
            else:
                self._on_fit(*value)

        self.ops.append(
            BackgroundOp(lambda report: self.worker.list_files(repo, report), self, "list files")
            .with_progress(listed)
            .failure(lambda e: self._on_failed(reason(e)))
            .run()
        )

    def _on_files(self, files: list[RemoteFile]) -> None:
        if not self.listing:
            return  # cancelled meanwhile
        self.listing = False
        self.files = files
        self.list_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.table.setRowCount(len(files))
        for r, f in enumerate(files):
            self.table.setItem(r, 0, QTableWidgetItem(f.path))
            size = QTableWidgetItem(fmt_bytes(f.size))
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(r, 1, size)
            self.table.setItem(r, 2, QTableWidgetItem("estimating…"))
        if files:
            self.table.selectRow(0)
        self.progress_label.setText(f"{len(files)} GGUF file(s). Pick one and press Download.")

    def _on_fit(self, path: str, verdict: str, summary: str) -> None:
        p = theme.current()
        colors = {"fits": p.ok, "tight": p.warn, "won't fit": p.error}
        for r, f in enumerate(self.files):
            if f.path == path:
                item = QTableWidgetItem(summary.split(" — ")[0])
                item.setToolTip(summary)
                if verdict in colors:
                    from PySide6.QtGui import QColor

                    item.setForeground(QColor(colors[verdict]))
                self.table.setItem(r, 2, item)

    def selected_file(self) -> RemoteFile | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.files[rows[0].row()] if rows else None

    def download_selected(self) -> None:
        f = self.selected_file()
        if f is None:
            return
        self._t0 = time.monotonic()
        self.last_error = ""
        self.progress.setValue(0)
        self.progress_label.setText(f"Downloading {f.path}…")
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.ops.append(
            BackgroundOp(lambda report: self.worker.download(f, report), self, "download")
            .with_progress(lambda v: self._on_progress(*v))
            .success(self._on_downloaded)
            .failure(lambda e: self._on_failed(reason(e)))
            .run()
        )

    def cancel(self) -> None:
        self.worker.cancel.set()  # direct: not queued behind the running download
        if self.listing:  # the listing's answer, if it still comes, is ignored
            self.listing = False
            self.list_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
            self.last_error = "listing cancelled"
            self.progress_label.setText("Listing cancelled.")
            return
        self.progress_label.setText("Cancelling…")

    def _on_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setValue(int(1000 * done / total))
        self.progress_label.setText(fmt_transfer(done, total, time.monotonic() - self._t0))

    def _on_downloaded(self, path: str) -> None:
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setValue(1000)
        self.progress_label.setText(f"Downloaded and verified (sha256): {path}")
        self.refresh_local()
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Download complete",
            f"{Path(path).name} is ready. Load it now?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.setObjectName("load_now")

        def done(result: int) -> None:
            if result == QMessageBox.StandardButton.Yes:
                self.loadRequested.emit(path)
                self.accept()

        box.finished.connect(done)
        box.open()
        self.load_box = box

    def _on_failed(self, reason: str) -> None:
        if self.listing:
            self.listing = False
        elif self.last_error == "listing cancelled":
            return  # the cancelled listing's late failure
        self.last_error = reason
        self.list_button.setEnabled(True)
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_label.setText(reason)

    def done(self, result: int) -> None:  # closing the dialog stops its work
        self.shutdown()
        super().done(result)

    def shutdown(self) -> None:
        self.worker.cancel.set()
        for op in self.ops:  # a closed dialog is never called back; its work ends here
            op.done.wait(5.0)
        self.ops.clear()
