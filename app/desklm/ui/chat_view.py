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

from desklm.engine import fmt_rate, fmt_secs

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
        # A read-only transcript needs no undo history; left on, every streaming flush
        # (remove + insert) pushed undo commands, so flushes got slower and memory grew.
        self.document().setUndoRedoEnabled(False)
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
        self._carry = ""  # a code fence's opening line, re-opened for the growing tail
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
        self._carry = ""
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
        cut = _commit_point(text, self._committed_chars, self._carry)
        if cut is not None:  # finished text: render it once and never again
            end, closing, carry, joiner = cut
            self._replace_tail(self._carry + text[self._committed_chars:end] + closing, joiner)
            self._committed_pos = self._end_cursor().position()
            self._committed_chars, self._carry = end, carry
        self._replace_tail(self._carry + text[self._committed_chars:])  # the growing block
        self._dirty = False
        self._scroll(bottom)
        dt = time.perf_counter() - t0
        self.flush_count += 1
        self.flush_seconds += dt
        self.flush_log.append((len(text), dt))

    def _replace_tail(self, markdown: str, joiner: str = "") -> None:
        """Replace everything after the committed part with ``markdown``; ``joiner`` is what
        follows a committed chunk: "block" (a new paragraph) or "space" (same paragraph)."""
        c = QTextCursor(self.document())
        c.setPosition(self._committed_pos)
        c.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        c.removeSelectedText()
        if markdown:
            c.insertMarkdown(markdown)
        if joiner == "block":
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())
        elif joiner == "space":
            c.insertText(" ")

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


TAIL_LIMIT = 600  # characters: past this, the growing block is committed at a line break


def _commit_point(text: str, start: int, carry: str) -> tuple[int, str, str, str] | None:
    """Where to commit the streamed text: (end, closing, new carry, joiner), or None.

    Preferred: the last blank line outside a code fence (a finished Markdown block). When the
    growing block passes TAIL_LIMIT characters without one, the last line break: inside an open
    fence the committed part is closed with a fence and the tail re-opened with the same
    opening line. A single line longer than that (some models never break lines) is cut at a
    space where inline `code` and **bold** markers are balanced; while streaming it continues
    in a new block. A flush then costs ~TAIL_LIMIT characters of rendering, however long the
    reply.
    """
    tail = text[start:]
    fence_open = bool(carry)
    opener = carry.rstrip("\n")
    best_blank = best_line = -1
    line_state: tuple[bool, str] = (False, "")
    i = 0
    while True:
        j = tail.find("\n", i)
        if j == -1:
            break
        line = tail[i:j]
        if line.lstrip().startswith("```"):
            fence_open = not fence_open
            opener = line.strip() if fence_open else ""
        if not fence_open and tail.startswith("\n", j + 1):
            best_blank = j + 2
        best_line, line_state = j + 1, (fence_open, opener)
        i = j + 1
    if best_blank > 0:
        return start + best_blank, "", "", "block"
    if len(tail) <= TAIL_LIMIT:
        return None
    if best_line > 0 and len(tail) - best_line <= TAIL_LIMIT:
        still_open, open_line = line_state
        if still_open:
            return start + best_line, "```\n", open_line + "\n", "block"
        return start + best_line, "", "", "block"
    if fence_open:  # one enormous line inside a code block: leave it whole
        return None
    lo = max(best_line, 0)
    k = tail.rfind(" ", lo, len(tail) - 40)
    while k > lo:
        chunk = tail[lo:k]
        if chunk.count("`") % 2 == 0 and chunk.count("**") % 2 == 0 and chunk.strip():
            if best_line > 0:  # first the finished lines before this one, as a block
                return start + best_line, "", "", "block"
            # a new block, not the same paragraph: Qt lays out a whole paragraph on every
            # change, so one that keeps growing costs more each flush. The final render joins
            # the pieces again.
            return start + k + 1, "", "", "block"
        k = tail.rfind(" ", lo, k)
    return None


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
