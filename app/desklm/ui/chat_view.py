"""The transcript and the input box.

The transcript is one QTextBrowser. A streaming reply is buffered and flushed at most 20 times a
second. A flush never re-renders the transcript, nor even the whole reply: Markdown blocks that
are finished (a blank line outside an open code fence) are rendered once and committed, and only
the block still growing is re-rendered. So the cost per token stays flat however long the reply
and the chat. The finished reply is rendered once more, whole, for exact formatting.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any

from PySide6.QtCore import QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QKeyEvent,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
)
from PySide6.QtWidgets import QPlainTextEdit, QTextBrowser, QWidget

from desklm.engine.session import fmt_rate, fmt_secs

FLUSH_MS = 50  # at most ~20 repaints a second while streaming
CODE_RE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


def code_blocks(text: str) -> list[str]:
    return [m.group(1).rstrip("\n") for m in CODE_RE.finditer(text)]


class ChatView(QTextBrowser):
    """Signals:
    copied(str): text put on the clipboard by a Copy link.
    """

    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._on_anchor)
        self.document().setDefaultStyleSheet(
            "pre, code { font-family: monospace; background: #f0f2f5; }"
            " a { color: #4f8cff; text-decoration: none; }"
        )
        self.replies: list[str] = []  # finished assistant texts, for Copy links
        self.shown: list[tuple[str, str]] = []  # (role, text) of every message on screen
        self._stream_start: int | None = None
        self._stream_text = ""
        self._committed_pos = 0  # document position after the committed (finished) blocks
        self._committed_chars = 0  # how much of _stream_text those blocks cover
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self.flush)
        self.flush_count = 0
        self.flush_seconds = 0.0
        self.flush_log: list[tuple[int, float]] = []  # (reply length, seconds) per flush
        self.streamed_pieces = 0

    # -- building blocks --
    def _end_cursor(self) -> QTextCursor:
        c = QTextCursor(self.document())
        c.movePosition(QTextCursor.MoveOperation.End)
        return c

    def _new_block(self, c: QTextCursor) -> None:
        if self.document().isEmpty():
            return
        c.insertBlock(QTextBlockFormat(), QTextCharFormat())

    def _at_bottom(self) -> bool:
        sb = self.verticalScrollBar()
        return sb.value() >= sb.maximum() - 4

    def _scroll(self, was_at_bottom: bool) -> None:
        if was_at_bottom:
            sb = self.verticalScrollBar()
            sb.setValue(sb.maximum())

    def _header(self, who: str, color: str, extra: str = "") -> None:
        bottom = self._at_bottom()
        c = self._end_cursor()
        self._new_block(c)
        c.insertHtml(f'<span style="color:{color}; font-weight:600;">{html.escape(who)}</span>'
                     + (f' <span style="color:#8a93a3;">{html.escape(extra)}</span>'
                        if extra else ""))
        self._new_block(c)
        self._scroll(bottom)

    def add_user(self, text: str) -> None:
        self._header("You", "#3fb68b")
        c = self._end_cursor()
        fmt = QTextBlockFormat()
        fmt.setBackground(QColor("#eef6f1"))
        fmt.setLeftMargin(4)
        c.setBlockFormat(fmt)
        c.insertText(text)  # the user's words, verbatim (no Markdown surprises)
        self.shown.append(("user", text))

    def add_notice(self, text: str, color: str = "#e0a030") -> None:
        bottom = self._at_bottom()
        c = self._end_cursor()
        self._new_block(c)
        c.insertHtml(f'<span style="color:{color};">{html.escape(text)}</span>')
        self._scroll(bottom)

    def add_output(self, text: str) -> None:
        """Output of a slash command, monospaced."""
        bottom = self._at_bottom()
        c = self._end_cursor()
        self._new_block(c)
        c.insertHtml("<pre>" + html.escape(text) + "</pre>")
        self._scroll(bottom)

    # -- streaming --
    @property
    def streaming(self) -> bool:
        return self._stream_start is not None

    def begin_reply(self, model_name: str = "Model") -> None:
        self._header(model_name, "#4f8cff")
        self._stream_start = self._end_cursor().position()
        self._committed_pos = self._stream_start
        self._committed_chars = 0
        self._stream_text = ""
        self._dirty = False
        self._timer.start()

    def append_stream(self, piece: str) -> None:
        """Per-token work is only this: append to a buffer."""
        self._stream_text += piece
        self._dirty = True
        self.streamed_pieces += 1

    def flush(self) -> None:
        if not self._dirty or self._stream_start is None:
            return
        t0 = time.perf_counter()
        bottom = self._at_bottom()
        text = self._stream_text
        boundary = _last_block_boundary(text, self._committed_chars)
        if boundary > self._committed_chars:  # newly finished blocks: render them once
            self._replace_tail(text[self._committed_chars:boundary])
            self._committed_pos = self._end_cursor().position()
            self._committed_chars = boundary
        self._replace_tail(text[self._committed_chars:])  # only the growing block
        self._dirty = False
        self._scroll(bottom)
        dt = time.perf_counter() - t0
        self.flush_count += 1
        self.flush_seconds += dt
        self.flush_log.append((len(text), dt))

    def _replace_tail(self, markdown: str) -> None:
        c = QTextCursor(self.document())
        c.setPosition(self._committed_pos)
        c.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        c.removeSelectedText()
        if markdown:
            c.insertMarkdown(markdown)

    def finish_reply(self, reply: str, stats: dict[str, Any]) -> None:
        self._timer.stop()
        if self._stream_start is None:  # a saved reply being shown, not streamed
            self._stream_start = self._end_cursor().position()
        self._committed_pos, self._committed_chars = self._stream_start, 0
        bottom = self._at_bottom()
        self._replace_tail(reply)  # the whole reply, once, for exact formatting
        self._scroll(bottom)
        self._stream_start = None
        self.replies.append(reply)
        self.shown.append(("assistant", reply))
        idx = len(self.replies) - 1
        parts = [
            f"{stats.get('completion_tokens', 0)} tokens",
            f"{fmt_rate(stats.get('gen_tokens_per_s'))} tok/s",
            f"first token {fmt_secs(stats.get('ttft_s'))}",
            f"finish: {stats.get('finish_reason', '?')}",
        ]
        n_code = len(code_blocks(reply))
        links = [f'<a href="copy:{idx}">Copy</a>'] + [
            f'<a href="code:{idx}:{n}">Copy code {n + 1}</a>' for n in range(n_code)
        ]
        bottom = self._at_bottom()
        c = self._end_cursor()
        self._new_block(c)
        c.insertHtml('<span style="color:#8a93a3; font-size:small;">'
                     + html.escape(" · ".join(parts)) + " · " + " · ".join(links) + "</span>")
        self._scroll(bottom)

    def abandon_reply(self) -> None:
        self._timer.stop()
        self._stream_start = None

    def clear_all(self) -> None:
        self.abandon_reply()
        self.clear()
        self.replies.clear()
        self.shown.clear()

    def _on_anchor(self, url: QUrl) -> None:
        parts = url.toString().split(":")
        try:
            text = self.replies[int(parts[1])]
            if parts[0] == "code":
                text = code_blocks(text)[int(parts[2])]
        except (IndexError, ValueError):
            return
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)


def _last_block_boundary(text: str, start: int) -> int:
    """End of the last finished Markdown block after ``start``: a blank line that is not
    inside an open ``` fence. Returns ``start`` when there is none."""
    best = start
    i = text.find("\n\n", start)
    while i != -1:
        if text.count("```", start, i) % 2 == 0:  # start is outside any fence
            best = i + 2
        i = text.find("\n\n", i + 2)
    return best


class ChatInput(QPlainTextEdit):
    """Enter sends, Shift+Enter adds a newline.

    Signals:
        submitted(str): the text, when Enter is pressed on a non-empty box.
    """

    submitted = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("input")
        self.setPlaceholderText("Message the model — Enter to send, Shift+Enter for a new line, "
                                "/help for commands")
        self.setTabChangesFocus(True)
        self.setFixedHeight(80)

    def keyPressEvent(self, e: QKeyEvent) -> None:
        from PySide6.QtCore import Qt

        if e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            e.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.submit()
            return
        super().keyPressEvent(e)

    def submit(self) -> None:
        text = self.toPlainText()
        if text.strip():
            self.clear()
            self.submitted.emit(text)
