"""The status bar: what the window is doing, a progress bar, the model line, the API state."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLabel, QProgressBar, QSizePolicy, QStatusBar

from desklm.ui.controller import State

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
# a status line that says how the last thing ended stays while the window is at rest
KEPT_AT_REST = (
    "Ready",
    "Stopped",
    "Tuned",
    "Loaded",
    "Reloaded",
    "Reply cut",
    "Conversation",
    "Version",
    "preset",
    "attached",
    "using the threads",
    "Edit",
    "Editing",
)


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" when it does not fit (a plain QLabel in the status
    bar was cut off at its left edge: "emma 3 270m · gemma3 · …")."""

    def shown_text(self) -> str:
        return self.fontMetrics().elidedText(
            self.text(), Qt.TextElideMode.ElideRight, max(0, self.contentsRect().width())
        )

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(self.contentsRect(), int(self.alignment()), self.shown_text())


class StatusLine:
    """The status bar's widgets, built into ``bar``."""

    def __init__(self, bar: QStatusBar) -> None:
        self.bar = bar
        self.status = ElidedLabel("Starting…")
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
        self.status.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.server_state = QLabel("")
        self.server_state.setObjectName("server_state")
        bar.addWidget(self.status, 3)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label, 2)
        bar.addPermanentWidget(self.server_state)

    def set(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)
        self.status.update()

    def on_state(self, state: State) -> None:
        if state in (State.IDLE, State.NO_MODEL):
            self.progress.hide()
        if state is not State.IDLE or not self.status.text().startswith(KEPT_AT_REST):
            self.set(STATUS[state])

    def set_model(self, text: str, tip: str) -> None:
        self.model_label.setText(text)
        self.model_label.setToolTip(tip)
        self.model_label.update()
