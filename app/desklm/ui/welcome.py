"""The first-run welcome, shown in the chat area: what DeskLM is, and one button to a real
assistant sized to this machine.

The recommendation comes from :func:`desklm.engine.models.curated.recommend` (free RAM / VRAM, CPU
cores). "Download and use" lists the model's repo, downloads the file into the Hugging Face
cache with progress and Cancel, checks its sha256 and emits ``useModel(path)``. Network work runs
as a :class:`~desklm.ui.workers.BackgroundOp`, off the UI thread; nothing is sent until the
button is pressed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QSize, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import (
    GB,
    CatalogModel,
    DownloadCancelled,
    Recommendation,
    check_hub_reachable,
    fmt_bytes,
    fmt_transfer,
    hub_offline,
    list_gguf_files,
    recommend,
)
from desklm.errors import DeskLMError
from desklm.ui import theme
from desklm.ui.dialogs.model_dialog import HubJobs
from desklm.ui.workers import BackgroundOp, reason

OFFLINE_NOTE = (
    "Downloading needs an internet connection. Meanwhile the chat works on the embedded model."
)


class StarterJobs(HubJobs):
    """:class:`HubJobs` that also fetch one catalog model: reachability (fails in seconds),
    the repo listing (exact size and sha256, reported as an int), then the download (reported
    as (done, total))."""

    def fetch(self, model: CatalogModel, report: Callable[[Any], None]) -> str:
        self.cancel.clear()
        check_hub_reachable()
        files = list_gguf_files(model.repo_id)
        f = next((x for x in files if x.path.lower() == model.filename.lower()), None)
        if f is None:
            raise DeskLMError(
                f"{model.repo_id}: {model.filename} is not in the repo any "
                "more; pick another model in File > Models"
            )
        report(f.size)
        if self.cancel.is_set():
            raise DownloadCancelled("download cancelled")
        return self.download(f, report)


class WelcomeWidget(QWidget):
    """Signals:
    useModel(str): a downloaded, verified model file to load now.
    dismissed(): the user closed the welcome (the window remembers it).
    browseRequested(): "Other models…" (open File > Models).
    """

    useModel = Signal(str)
    dismissed = Signal()
    browseRequested = Signal()

    def __init__(
        self,
        free: tuple[Any, Any] | None = None,
        gpu_offload: bool = False,
        cores: int | None = None,
        model: CatalogModel | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``free``: (free RAM, free VRAM) if known (read now if not); ``model`` overrides
        the recommendation (tests)."""
        super().__init__(parent)
        self.setObjectName("welcome")
        if free is None:
            from desklm.engine import free_memory

            free = free_memory()
        self.rec: Recommendation = recommend(free[0], free[1], gpu_offload, cores)
        self.model: CatalogModel = model or self.rec.model
        self.path: str | None = None
        self.last_error = ""
        self._t0 = 0.0
        self._size = self.model.size

        card = QFrame()
        card.setObjectName("welcome_card")
        card.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        card.setMaximumWidth(720)
        title = QLabel("Welcome to DeskLM")
        f = title.font()
        f.setPointSizeF(f.pointSizeF() * 1.6)
        f.setBold(True)
        title.setFont(f)
        intro = QLabel(
            "DeskLM chats with language models that run <b>on this computer</b>. Your "
            "messages, files and chats stay here: nothing is sent anywhere unless you "
            "download a model or turn on the API server."
        )
        embedded = QLabel(
            "The model it starts with is <b>Gemma 3 270M</b>, a tiny <i>base</i> model built "
            "in so you can try the app at once. It continues text rather than following "
            "instructions, so its answers are short and often off. For a real assistant, "
            "get an instruct model:"
        )
        for lab in (intro, embedded):
            lab.setWordWrap(True)
        self.model_label = QLabel()
        self.model_label.setObjectName("recommended")
        self.model_label.setWordWrap(True)
        self.fit_label = QLabel()
        self.fit_label.setObjectName("fit")
        self.fit_label.setWordWrap(True)
        self.fit_label.setProperty("role", "muted")
        self.download_button = QPushButton("Download and use")
        self.download_button.setObjectName("primary")
        self.download_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        self.other_button = QPushButton("Other models…")
        self.other_button.clicked.connect(self.browseRequested.emit)
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.setObjectName("dismiss")
        self.dismiss_button.clicked.connect(self.dismiss)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.hide()
        self.status = QLabel("")
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.other_button)
        buttons.addStretch(1)
        buttons.addWidget(self.dismiss_button)
        lay = QVBoxLayout(card)
        lay.setContentsMargins(20, 16, 20, 16)
        lay.setSpacing(10)
        lay.addWidget(title)
        lay.addWidget(intro)
        lay.addWidget(embedded)
        lay.addWidget(self.model_label)
        lay.addWidget(self.fit_label)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        # the card scrolls when the window is short (1024x640): squeezed, its wrapped lines
        # were drawn over each other
        self.inner = QWidget()
        self.inner.setObjectName("welcome_inner")
        outer = QVBoxLayout(self.inner)
        outer.setContentsMargins(4, 8, 4, 8)
        outer.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 10)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidget(self.inner)
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.viewport().setAutoFillBackground(False)
        self.inner.setAutoFillBackground(False)
        own = QVBoxLayout(self)
        own.setContentsMargins(0, 0, 0, 0)
        own.addWidget(self.scroll_area)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self.worker = StarterJobs(free, gpu_offload)
        self.op: BackgroundOp[Any] | None = None
        theme.notifier().themeChanged.connect(self._on_theme)
        self._describe()
        if hub_offline():
            self.download_button.setEnabled(False)
            self.status.setText(OFFLINE_NOTE + " (HF_HUB_OFFLINE is set.)")

    def sizeHint(self) -> QSize:
        """As tall as the card wants: the window gives it that where it can, and the
        transcript below keeps the rest."""
        return self.inner.sizeHint()

    def _on_theme(self, _palette: object) -> None:
        self._describe()

    def _describe(self) -> None:
        m, r = self.model, self.rec
        p = theme.current()
        self.model_label.setText(
            f"Recommended for this computer: <b>{m.name}</b> "
            f"<span style='color:{p.muted}'>({m.repo_id}, {m.filename})</span><br>"
            f"Download: about {self._size / GB:.1f} GB · {m.params_b:g}B parameters, "
            f"4-bit (Q4_K_M) · licence: {m.licence}" + (f" · {m.note}" if m.note else "")
        )
        if m is r.model:
            color = {"fits": p.ok, "tight": p.warn, "won't fit": p.error}.get(r.verdict, p.muted)
            self.fit_label.setText(
                f"<span style='color:{color}'><b>{r.verdict.capitalize()}"
                f"</b></span> · {r.reason}; {r.summary()}"
            )
        else:
            self.fit_label.setText("")

    # -- actions --
    def start(self) -> None:
        self.last_error = ""
        self._t0 = time.monotonic()
        self.download_button.setEnabled(False)
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText(f"Contacting Hugging Face for {self.model.filename}…")
        model = self.model

        def reported(v: Any) -> None:
            if isinstance(v, int):
                self._on_listed(v)
            else:
                self._on_progress(*v)

        self.op = (
            BackgroundOp(lambda report: self.worker.fetch(model, report), self, "fetch model")
            .with_progress(reported)
            .success(self._on_downloaded)
            .failure(lambda e: self._on_failed(reason(e)))
            .run()
        )

    def cancel(self) -> None:
        self.worker.cancel.set()  # direct: not queued behind the running download
        self.status.setText("Cancelling…")

    def dismiss(self) -> None:
        self.worker.cancel.set()
        self.hide()
        self.dismissed.emit()

    # -- worker results --
    def _on_listed(self, size: int) -> None:
        self._size = size
        self._describe()
        self.status.setText(f"Downloading {self.model.filename} ({fmt_bytes(size)})…")

    def _on_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setValue(int(1000 * done / total))
        self.status.setText(fmt_transfer(done, total, time.monotonic() - self._t0))

    def _on_downloaded(self, path: str) -> None:
        self.path = path
        self.progress.setValue(1000)
        self.cancel_button.hide()
        self.status.setText(f"Downloaded and verified (sha256). Loading {self.model.name}…")
        self.useModel.emit(path)

    def _on_failed(self, reason: str) -> None:
        self.last_error = reason
        self.cancel_button.hide()
        self.progress.hide()
        self.download_button.setEnabled(not hub_offline())
        if reason == "download cancelled":
            self.status.setText("Download cancelled. The chat works on the embedded model.")
        elif "cannot reach" in reason or "offline" in reason.lower():
            self.status.setText(f"{reason}. {OFFLINE_NOTE}")
        else:
            self.status.setText(f"{reason}. The chat works on the embedded model meanwhile.")

    def shutdown(self) -> None:
        self.worker.cancel.set()
        if self.op is not None:
            self.op.done.wait(5.0)

    def closeEvent(self, e: Any) -> None:
        self.shutdown()
        super().closeEvent(e)
