"""The search box over saved chats: results as you type, off the UI thread.

``SearchPanel`` owns a line edit and a result list. Typing restarts a short timer (60 ms); when
it fires, the query runs as a :class:`~desklm.ui.workers.BackgroundOp`, one at a time
(``SearchIndex`` does file and SQLite work, never on the UI thread). Only the newest query's
results are shown: a result for a query the user has typed past is dropped. Enter (or a click)
on a result emits ``openRequested``.

Signals:
    openRequested(str conversation_id, str message_id): open the chat at that message
        (message_id is "" for a match in the title). The window opens the chat and calls
        ``ChatSession.reveal_message(message_id)`` to switch to the branch that holds it.
    searched(str query, int hits, float elapsed_s): a result list was shown.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from desklm.engine import SearchIndex
from desklm.ui.workers import BackgroundOp, reason

ROLE_DATA = Qt.ItemDataRole.UserRole


def rich_snippet(hit: Any) -> str:
    """The snippet as Qt rich text, matches bold and underlined, everything else escaped."""
    out, pos = [], 0
    for a, b in hit.spans:
        out += [
            html.escape(hit.snippet[pos:a]),
            "<b><u>",
            html.escape(hit.snippet[a:b]),
            "</u></b>",
        ]
        pos = b
    out.append(html.escape(hit.snippet[pos:]))
    return "".join(out)


class SearchPanel(QWidget):
    openRequested = Signal(str, str)
    searched = Signal(str, int, float)

    def __init__(
        self, index: Any = None, parent: QWidget | None = None, delay_ms: int = 60
    ) -> None:
        super().__init__(parent)
        self.index = index if index is not None else SearchIndex()
        self.box = QLineEdit()
        self.box.setPlaceholderText("Search chats")
        self.box.setClearButtonEnabled(True)
        self.box.setObjectName("chatSearch")
        self.results = QListWidget()
        self.results.setObjectName("searchResults")
        self.results.setWordWrap(True)
        self.status = QLabel("")
        self.status.setObjectName("searchStatus")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.box)
        lay.addWidget(self.status)
        lay.addWidget(self.results, 1)
        self.results.hide()
        self.status.hide()
        self._serial = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self._fire)
        self.box.textChanged.connect(lambda _t: self._timer.start())
        self.box.returnPressed.connect(self._enter)
        self.results.itemActivated.connect(self._open)
        self.results.itemClicked.connect(self._open)
        self._running: BackgroundOp[Any] | None = None  # one search at a time
        self._waiting: tuple[int, str] | None = None  # the newest query typed meanwhile
        if hasattr(self.index, "start_background_sync"):
            self.index.start_background_sync()

    def shutdown(self) -> None:
        self._waiting = None
        if self._running is not None:
            self._running.done.wait(5.0)

    def _fire(self) -> None:
        self._serial += 1
        text = self.box.text()
        if not text.strip():
            self.results.clear()
            self.results.hide()
            self.status.hide()
            return
        self._search(self._serial, text)

    def _search(self, serial: int, text: str) -> None:
        """Searches run one at a time; a query typed meanwhile waits, and only the newest."""
        if self._running is not None:
            self._waiting = (serial, text)
            return
        index = self.index

        def ended(result: Any) -> None:
            self._running = None
            self._show(serial, result)
            if self._waiting is not None:
                waiting, self._waiting = self._waiting, None
                self._search(*waiting)

        self._running = (
            BackgroundOp(lambda: index.search(text), self, "search")
            .success(ended)
            .failure(lambda e: ended(reason(e)))
            .run()
        )

    def _show(self, serial: int, result: Any) -> None:
        if serial != self._serial:
            return  # the user typed on: a newer result is coming
        self.results.clear()
        if isinstance(result, str):
            self.status.setText(f"Search failed: {result}")
            self.status.show()
            self.results.hide()
            return
        for hit in result.hits:
            where = (
                "title" if hit.message_id is None else ("you" if hit.role == "user" else "model")
            )
            if not hit.active:
                where += ", older version"
            item = QListWidgetItem()
            label = QLabel(
                f"<b>{html.escape(hit.title)}</b> <small>({where})</small><br>" + rich_snippet(hit)
            )
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.RichText)
            item.setData(ROLE_DATA, (hit.conversation_id, hit.message_id or ""))
            item.setToolTip(hit.snippet)
            item.setSizeHint(label.sizeHint())
            self.results.addItem(item)
            self.results.setItemWidget(item, label)
        n = len(result.hits)
        self.status.setText(
            ("No matches" if not n else f"{n} match{'es' if n != 1 else ''}")
            + (" (still indexing…)" if result.partial else "")
        )
        self.status.show()
        self.results.setVisible(bool(n))
        if n:
            self.results.setCurrentRow(0)
        self.searched.emit(result.query, n, result.elapsed_s)

    def _enter(self) -> None:
        """Enter opens the selected result, or the best one when none is selected."""
        item = self.results.currentItem() or self.results.item(0)
        if item is not None:
            self._open(item)

    def _open(self, item: QListWidgetItem) -> None:
        conv_id, msg_id = item.data(ROLE_DATA)
        self.openRequested.emit(conv_id, msg_id)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Down, Qt.Key.Key_Up) and self.results.count():
            row = self.results.currentRow() + (1 if event.key() == Qt.Key.Key_Down else -1)
            self.results.setCurrentRow(max(0, min(row, self.results.count() - 1)))
            return
        super().keyPressEvent(event)
