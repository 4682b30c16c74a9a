"""The Chats sidebar: saved conversations, newest first; new, rename, delete, switch."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


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
        self.items: list[dict[str, Any]] = []
        self.list = QListWidget()
        self.list.setObjectName("conversations")
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

    def set_items(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.list.blockSignals(True)
        self.list.clear()
        for it in items:
            row = QListWidgetItem(f"{it['title']}\n{it['messages']} messages")
            row.setData(Qt.ItemDataRole.UserRole, it["id"])
            row.setToolTip(it["title"])
            self.list.addItem(row)
            if it["id"] == self.current_id:
                row.setSelected(True)
                self.list.setCurrentItem(row)
        self.list.blockSignals(False)

    def set_current(self, conv_id: str) -> None:
        self.current_id = conv_id
        self.set_items(self.items)

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _activated(self, item: QListWidgetItem) -> None:
        conv_id = item.data(Qt.ItemDataRole.UserRole)
        if conv_id != self.current_id:
            self.openRequested.emit(conv_id)

    def _title_of(self, conv_id: str) -> str:
        return next((i["title"] for i in self.items if i["id"] == conv_id), "this chat")

    def _rename(self) -> None:
        conv_id = self.selected_id() or self.current_id
        if not conv_id:
            return
        title, ok = QInputDialog.getText(self, "Rename chat", "Title:",
                                         text=self._title_of(conv_id))
        if ok and title.strip():
            self.renameRequested.emit(conv_id, title.strip())

    def _delete(self) -> None:
        conv_id = self.selected_id()
        if not conv_id:
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Delete chat",
                          f"Delete “{self._title_of(conv_id)}”? This cannot be undone.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                          self)
        box.setObjectName("confirm_delete")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def done(result: int) -> None:
            if result == QMessageBox.StandardButton.Yes:
                self.deleteRequested.emit(conv_id)

        box.finished.connect(done)
        box.open()  # non-blocking: the window keeps running
        self.confirm = box
