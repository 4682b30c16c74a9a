"""Notices: one dismissible line each, over the message box.

A notice is a fact the user should see once (the model is a base model, a chat file is damaged,
a message was not sent, earlier turns were dropped to fit). Each is one line (the whole text in
its tooltip) with a × that dismisses it. A notice with the same ``key`` as one shown replaces
it instead of stacking a copy (a reload or a preset used to add the base-model notice again each
time); at most :data:`MAX_SHOWN` are shown, the oldest going first.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desklm.ui import theme
from desklm.ui.status import ElidedLabel

MAX_SHOWN = 4
LEVELS = ("notice", "error", "warn", "ok")


class Notice(QFrame):
    dismissed = Signal(object)

    def __init__(self, key: str, text: str, level: str) -> None:
        super().__init__()
        self.key, self.level = key, level
        self.setObjectName("notice")
        self.setProperty("level", level)
        self.dot = QLabel("●")
        self.dot.setObjectName("notice_dot")
        self.label = ElidedLabel(text)
        self.label.setObjectName("notice_text")
        self.label.setToolTip(text)
        self.label.setMinimumWidth(40)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.close_button = QToolButton()
        self.close_button.setObjectName("notice_close")
        self.close_button.setText("×")
        self.close_button.setToolTip("Dismiss")
        self.close_button.setAutoRaise(True)
        self.close_button.clicked.connect(lambda: self.dismissed.emit(self))
        lay = QHBoxLayout(self)
        lay.setContentsMargins(theme.SPACE[2], 1, theme.SPACE[1], 1)
        lay.setSpacing(theme.SPACE[2])
        lay.addWidget(self.dot)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.close_button)
        self.restyle()

    def text(self) -> str:
        return self.label.text()

    def set_text(self, text: str, level: str) -> None:
        self.level = level
        self.label.setText(text)
        self.label.setToolTip(text)
        self.label.update()
        self.restyle()

    def restyle(self) -> None:
        p = theme.current()
        color = getattr(p, self.level if self.level in LEVELS else "notice")
        self.dot.setStyleSheet(f"color: {color};")


class NoticeArea(QWidget):
    """Signals: changed(): a notice was added, replaced or dismissed."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("notices")
        self.rows: list[Notice] = []
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.lay.setSpacing(2)
        self.hide()
        theme.notifier().themeChanged.connect(self._restyle)

    def _restyle(self, _palette: object) -> None:
        for r in self.rows:
            r.restyle()

    def add(self, text: str, level: str = "notice", key: str = "") -> Notice:
        """Show ``text`` (one line); ``key`` (default: the text) names the fact, so the same
        fact again replaces its line instead of adding one."""
        text = " ".join(text.split())
        key = key or text
        for row in self.rows:
            if row.key == key:
                row.set_text(text, level)
                self.changed.emit()
                return row
        row = Notice(key, text, level)
        row.dismissed.connect(self.dismiss)
        self.rows.append(row)
        self.lay.addWidget(row)
        while len(self.rows) > MAX_SHOWN:
            self.dismiss(self.rows[0])
        self.show()
        self.changed.emit()
        return row

    def dismiss(self, row: Notice | str) -> None:
        """Take a notice away (its × or its key)."""
        found = next((r for r in self.rows if r is row or r.key == row), None)
        if found is None:
            return
        self.rows.remove(found)
        self.lay.removeWidget(found)
        found.hide()
        found.deleteLater()
        self.setVisible(bool(self.rows))
        self.changed.emit()

    def clear(self) -> None:
        for row in list(self.rows):
            self.dismiss(row)

    def texts(self) -> list[str]:
        return [r.text() for r in self.rows]

    def text(self) -> str:
        """Every notice shown, one a line (for tests and the self-test)."""
        return "\n".join(self.texts())

    def notice_keys(self) -> list[str]:
        return [r.key for r in self.rows]
