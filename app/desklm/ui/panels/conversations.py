"""The Chats sidebar: saved conversations, newest first; new, rename, delete, switch.

Order: by creation time, newest first (a stable key: renaming a chat or adding a message does
not move it; the store lists by last update, the widget re-sorts). Each row is two compact
lines, the title (elided) and "date · N messages", with a separator between rows, so about
eight chats show in a short dock. ``add_pending(record)`` shows a new chat at once, before its
first reply is saved.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from desklm.ui import theme

ROLE_ID = Qt.ItemDataRole.UserRole
ROLE_SUB = Qt.ItemDataRole.UserRole + 1
ROLE_PENDING = Qt.ItemDataRole.UserRole + 2


def when(t: float) -> str:
    if not t:
        return ""
    d = dt.datetime.fromtimestamp(t)
    today = dt.date.today()
    if d.date() == today:
        return d.strftime("today %H:%M")
    if d.date() == today - dt.timedelta(days=1):
        return d.strftime("yesterday %H:%M")
    if d.year == today.year:
        return d.strftime("%d %b %H:%M")
    return d.strftime("%d %b %Y")


def sort_key(item: dict[str, Any]) -> tuple[float, str]:
    """Newest created first; the id breaks ties, so the order never depends on updates."""
    return (-float(item.get("created") or 0), str(item.get("id", "")))


class ChatDelegate(QStyledItemDelegate):
    """Paints a row: the title (bold, elided), under it the date and size (muted, small), a
    separator line below."""

    PAD = 6

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        fm = option.fontMetrics
        return QSize(120, fm.height() * 2 + 2 * self.PAD + 2)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        p = theme.current()
        painter.save()
        r: QRect = option.rect
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(r, QColor(p.selection))
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.fillRect(r, QColor(p.model_bubble))
        fm = option.fontMetrics
        inner = r.adjusted(self.PAD + 4, self.PAD, -self.PAD, -self.PAD)
        view = self.parent()
        if isinstance(view, QListWidget):  # never under the scroll bar
            inner.setRight(min(inner.right(), view.viewport().width() - self.PAD))
        title = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        font = option.font
        bold = type(font)(font)
        bold.setWeight(bold.Weight.DemiBold)
        painter.setFont(bold)
        painter.setPen(QColor(p.text))
        painter.drawText(
            inner.adjusted(0, 0, 0, -fm.height()),
            int(Qt.AlignmentFlag.AlignLeft),
            painter.fontMetrics().elidedText(title, Qt.TextElideMode.ElideRight, inner.width()),
        )
        small = type(font)(font)
        small.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        painter.setFont(small)
        painter.setPen(QColor(p.accent if index.data(ROLE_PENDING) else p.muted))
        sub = str(index.data(ROLE_SUB) or "")
        painter.drawText(
            inner.adjusted(0, fm.height(), 0, 0),
            int(Qt.AlignmentFlag.AlignLeft),
            painter.fontMetrics().elidedText(sub, Qt.TextElideMode.ElideRight, inner.width()),
        )
        painter.setPen(QPen(QColor(p.border)))
        painter.drawLine(r.left() + 4, r.bottom(), r.right() - 4, r.bottom())
        painter.restore()


class ConversationList(QWidget):
    """Signals:
    newRequested(), openRequested(str id), deleteRequested(str id),
    renameRequested(str id, str title).
    """

    newRequested = Signal()
    openRequested = Signal(str)
    deleteRequested = Signal(str)
    renameRequested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current_id: str | None = None
        self.items: list[dict[str, Any]] = []  # in the order shown
        self.pending: dict[str, dict[str, Any]] = {}  # new chats not saved yet, by id
        self.list = QListWidget()
        self.list.setObjectName("conversations")
        self.list.setItemDelegate(ChatDelegate(self.list))
        self.list.setUniformItemSizes(True)
        self.list.setMouseTracking(True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        self.new_button = QPushButton("New chat")
        self.rename_button = QPushButton("Rename")
        self.delete_button = QPushButton("Delete")
        self.new_button.clicked.connect(self.newRequested.emit)
        self.rename_button.clicked.connect(self._rename)
        self.delete_button.clicked.connect(self._delete)
        buttons = QHBoxLayout()
        for b in (self.new_button, self.rename_button, self.delete_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(buttons)
        lay.addWidget(self.list, 1)
        self.confirm: QMessageBox | None = None
        theme.notifier().themeChanged.connect(self._on_theme)

    def _on_theme(self, _palette: object) -> None:
        self.list.viewport().update()

    def row_height(self) -> int:
        return self.list.fontMetrics().height() * 2 + 2 * ChatDelegate.PAD + 2

    def sizeHint(self) -> QSize:
        """Room for eight chats."""
        return QSize(260, self.new_button.sizeHint().height() + 8 * self.row_height() + 12)

    def set_items(self, items: list[dict[str, Any]]) -> None:
        """The saved chats (any order); pending new chats stay until they are saved."""
        saved = {it["id"] for it in items}
        for conv_id in list(self.pending):
            if conv_id in saved:
                del self.pending[conv_id]
        merged = list(items) + [p for p in self.pending.values() if p["id"] not in saved]
        self.items = sorted(merged, key=sort_key)
        self.list.blockSignals(True)
        self.list.clear()
        for it in self.items:
            pending = it["id"] in self.pending
            n = int(it.get("messages", 0) or 0)
            sub = " · ".join(
                x
                for x in (
                    when(float(it.get("created") or 0)),
                    "new" if pending else f"{n} message{'s' if n != 1 else ''}",
                )
                if x
            )
            row = QListWidgetItem(str(it.get("title") or "New chat"))
            row.setData(ROLE_ID, it["id"])
            row.setData(ROLE_SUB, sub)
            row.setData(ROLE_PENDING, pending)
            row.setToolTip(f"{it.get('title') or 'New chat'}\n{sub}")
            self.list.addItem(row)
            if it["id"] == self.current_id:
                row.setSelected(True)
                self.list.setCurrentItem(row)
        self.list.blockSignals(False)

    def add_pending(self, record: dict[str, Any]) -> None:
        """Show a new chat at once (``record``: id, and optionally title and created), before
        the store has it; it is replaced by the saved one when ``set_items`` lists it."""
        rec: dict[str, Any] = {
            "id": str(record["id"]),
            "title": record.get("title") or "New chat",
            "created": float(record.get("created") or time.time()),
            "messages": len(record.get("messages", []) or []),
        }
        saved = [it for it in self.items if it["id"] not in self.pending]
        self.pending = {rec["id"]: rec}  # an earlier new chat left empty was never saved
        self.current_id = rec["id"]
        self.set_items(saved)

    def set_current(self, conv_id: str) -> None:
        self.current_id = conv_id
        saved = [it for it in self.items if it["id"] not in self.pending]
        # a new chat left before its first message was never saved: it goes
        self.pending = {k: v for k, v in self.pending.items() if k == conv_id}
        self.set_items(saved)

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return item.data(ROLE_ID) if item else None

    def _activated(self, item: QListWidgetItem) -> None:
        conv_id = item.data(ROLE_ID)
        if conv_id != self.current_id:
            self.openRequested.emit(conv_id)

    def _title_of(self, conv_id: str) -> str:
        return next((i["title"] for i in self.items if i["id"] == conv_id), "this chat")

    def _rename(self) -> None:
        conv_id = self.selected_id() or self.current_id
        if not conv_id:
            return
        title, ok = QInputDialog.getText(
            self, "Rename chat", "Title:", text=self._title_of(conv_id)
        )
        if ok and title.strip():
            self.renameRequested.emit(conv_id, title.strip())

    def _delete(self) -> None:
        conv_id = self.selected_id()
        if not conv_id:
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Delete chat",
            f"Delete “{self._title_of(conv_id)}”? This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setObjectName("confirm_delete")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def done(result: int) -> None:
            if result == QMessageBox.StandardButton.Yes:
                self.deleteRequested.emit(conv_id)

        box.finished.connect(done)
        box.open()  # non-blocking: the window keeps running
        self.confirm = box
