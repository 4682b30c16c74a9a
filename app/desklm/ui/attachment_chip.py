"""A chip for a file attached to the message being written: name, size, tokens, fit.

``AttachmentChip(attachment, n_ctx)`` shows "notes.md · 12 KB · 310 tokens" with a × button;
an attachment whose ``note`` says older messages will be dropped is shown in amber with the
note as its tooltip. A file that cannot fit never becomes a chip: ``read_attachment`` refuses
it with the numbers, and the window shows that reason instead.

``AttachmentBar`` holds the chips of the next message (``attachments()`` gives them to
``ChatSession.send(text, attachments=...)``; ``clear()`` after sending).

Signals:
    AttachmentChip.removeRequested(): its × was pressed.
    AttachmentBar.changed(int count): a chip was added or removed.
    AttachmentBar.removed(str name): the user pressed a chip's ×.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

from desklm.engine import fmt_bytes
from desklm.ui import theme


def chip_text(att: Any) -> str:
    size = fmt_bytes(att.size) if att.size else f"{att.chars:,} chars"
    tokens = f" · {att.tokens:,} tokens" if att.tokens is not None else ""
    return f"{att.name} · {size}{tokens}"


class AttachmentChip(QFrame):
    removeRequested = Signal()

    def __init__(
        self, attachment: Any, n_ctx: int | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.attachment = attachment
        self.setObjectName("attachmentChip")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.tight = bool(attachment.note)
        self.setProperty("fit", "tight" if self.tight else "fits")
        color = theme.color("warn" if self.tight else "ok")
        self.setStyleSheet(f"#attachmentChip {{ border: 1px solid {color}; border-radius: 8px; }}")
        self.label = QLabel(chip_text(attachment))
        fit = attachment.note or "fits the context"
        if n_ctx and attachment.tokens is not None:
            fit += f" ({attachment.tokens:,} of {n_ctx:,} tokens)"
        self.label.setToolTip(f"{attachment.name}: {attachment.chars:,} characters; {fit}")
        self.fit_label = QLabel("⚠" if self.tight else "✓")
        self.fit_label.setStyleSheet(f"color: {color};")
        self.fit_label.setToolTip(fit)
        self.remove = QToolButton()
        self.remove.setText("×")
        self.remove.setToolTip(f"Remove {attachment.name}")
        self.remove.setAutoRaise(True)
        self.remove.clicked.connect(self.removeRequested.emit)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(6, 1, 2, 1)
        lay.setSpacing(4)
        lay.addWidget(self.fit_label)
        lay.addWidget(self.label)
        lay.addWidget(self.remove)


class AttachmentBar(QWidget):
    changed = Signal(int)
    removed = Signal(str)  # a chip's × was pressed: the attachment's name

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.chips: list[AttachmentChip] = []
        self._lay = QHBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self._lay.addStretch(1)
        self.hide()

    def add(self, attachment: Any, n_ctx: int | None = None) -> AttachmentChip:
        chip = AttachmentChip(attachment, n_ctx, self)
        chip.removeRequested.connect(lambda: self._removed_by_user(chip))
        self._lay.insertWidget(len(self.chips), chip)
        self.chips.append(chip)
        self.show()
        self.changed.emit(len(self.chips))
        return chip

    def remove(self, chip: AttachmentChip) -> None:
        if chip in self.chips:
            self.chips.remove(chip)
            self._lay.removeWidget(chip)
            chip.deleteLater()
            self.setVisible(bool(self.chips))
            self.changed.emit(len(self.chips))

    def _removed_by_user(self, chip: AttachmentChip) -> None:
        self.remove(chip)
        self.removed.emit(chip.attachment.name)

    def attachments(self) -> list[Any]:
        return [c.attachment for c in self.chips]

    def clear(self) -> None:
        for chip in list(self.chips):
            self.remove(chip)
