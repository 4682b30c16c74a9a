"""The transcript and the input box.

The transcript is one QTextBrowser. Every item (a message, a notice, command output) is one
top-level QTextFrame: user and model messages are bubbles of their own colour with the name and
time on top; a model reply's code blocks are highlighted by Pygments in a frame of their own with
a "Copy code N" link, and its reasoning (``<think>...</think>``) is a collapsed line that expands
on a click, apart from the answer. All colours come from :mod:`desklm.ui.theme`; a theme change
re-renders what is on screen.

Streaming: a reply is buffered and flushed at most 20 times a second. A flush never re-renders
the transcript, nor even the whole reply: Markdown blocks that are finished (a blank line outside
an open code fence) are rendered once and committed, and only the block still growing is
re-rendered. So the cost per token stays flat however long the reply and the chat. The finished
reply is rendered once more, whole, with highlighting.

Long chats: :meth:`ChatView.show_conversation` renders the newest messages first, in slices of
at most ~15 ms, then older ones a slice at a time from a zero-delay timer until about a screenful
above is ready, and the rest as the user scrolls up. The UI thread is never blocked for long.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QPoint, QRect, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QCursor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QKeyEvent,
    QMouseEvent,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextFrame,
    QTextFrameFormat,
    QTextLength,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QPlainTextEdit,
    QTextBrowser,
    QToolButton,
    QWidget,
)

from desklm.engine import THINK_CLOSE, fmt_rate, fmt_secs, has_reasoning, typed_text
from desklm.engine import split_reasoning as engine_split_reasoning
from desklm.ui import theme

FLUSH_MS = 50  # at most ~20 repaints a second while streaming
SLICE_S = 0.010  # a slice of lazy rendering stops adding items after this long (the layout
# of what it added comes on top, once per slice)
EAGER_ABOVE = 2  # viewport heights rendered above what is visible before waiting for scrolls
CODE_RE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)
FENCE_RE = re.compile(r"^[ \t]*```([^\n`]*)\n(.*?)(?:^[ \t]*```[ \t]*$\n?|\Z)", re.S | re.M)
LEGACY_COLORS = {"#e05050": "error", "#e0a030": "warn", "#3fb68b": "ok"}


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a reply's answer (what the "Copy code N" links copy)."""
    return [code for kind, _lang, code in segments(split_reasoning(text)[1]) if kind == "code"]


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a reply for drawing: the engine's split (one definition), with
    None for a reply that has no reasoning markers at all."""
    if not has_reasoning(text):
        return None, text
    return engine_split_reasoning(text)


def segments(answer: str) -> list[tuple[str, str, str]]:
    """The answer as ("md", "", text) and ("code", language, code) pieces, in order."""
    out: list[tuple[str, str, str]] = []
    pos = 0
    for m in FENCE_RE.finditer(answer):
        if m.start() > pos and answer[pos : m.start()].strip():
            out.append(("md", "", answer[pos : m.start()]))
        out.append(("code", m.group(1).strip(), m.group(2).rstrip("\n")))
        pos = m.end()
    if answer[pos:].strip():
        out.append(("md", "", answer[pos:]))
    return out


@dataclass
class Item:
    """One thing in the transcript: a message ("user" / "assistant"), "notice" or "output"."""

    kind: str
    text: str
    created: float = field(default_factory=time.time)
    name: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    color: str = ""  # notices: a theme key
    reply: int = -1  # index into ChatView.replies (assistant messages)
    msg_id: str = ""  # the stored message's id: its actions need it (none while streaming)
    version: int = 1  # which of the message's versions this is (1-based), of ``versions``
    versions: int = 1
    frame: QTextFrame | None = None
    expanded: bool = False  # reasoning shown
    tools: list[dict[str, Any]] = field(default_factory=list)  # the reply's tool calls
    tools_open: bool = False  # the calls' arguments and results shown
    attachments: list[str] = field(default_factory=list)  # names of the files sent with it


_warmed = False


def warm_up() -> None:
    """Import Pygments' lexers and styles on a background thread, once: the first highlighted
    code block would otherwise pay ~150 ms of imports on the UI thread."""
    global _warmed
    if _warmed:
        return
    _warmed = True

    def load() -> None:
        try:
            from pygments.lexers import get_lexer_by_name
            from pygments.styles import get_style_by_name

            get_lexer_by_name("python")
            for p in theme.PALETTES.values():
                get_style_by_name(p.pygments_style)
        except Exception:  # only a warm-up: rendering imports what it needs anyway
            pass

    import threading

    threading.Thread(target=load, name="pygments-warm-up", daemon=True).start()


def _when(t: float) -> str:
    d = dt.datetime.fromtimestamp(t)
    if d.date() == dt.date.today():
        return d.strftime("%H:%M")
    return d.strftime("%d %b %Y, %H:%M")


def _mono_font() -> QFont:
    f = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    f.setFixedPitch(True)
    return f


class ActionBar(QFrame):
    """A message's actions (Copy, Edit, Regenerate, Delete) as small buttons over its top
    right corner, shown while the mouse is on the message. Signals: clicked(str name)."""

    clicked = Signal(str)
    NAMES = ("Copy", "Edit", "Regenerate", "Delete")

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("message_actions")
        self.buttons: dict[str, QToolButton] = {}
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        for name in self.NAMES:
            b = QToolButton(self)
            b.setObjectName(f"action:{name}")
            b.setText(name)
            b.setAutoRaise(True)
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.clicked.connect(lambda _c=False, n=name: self.clicked.emit(n))
            lay.addWidget(b)
            self.buttons[name] = b
        self.hide()

    def show_for(self, names: list[str]) -> None:
        for name, b in self.buttons.items():
            b.setVisible(name in names)
        self.adjustSize()
        self.show()

    def shown(self) -> list[str]:
        return [n for n, b in self.buttons.items() if self.isVisible() and not b.isHidden()]


class ChatView(QTextBrowser):
    """Signals:
    copied(str): text put on the clipboard by a Copy link.
    regenerateRequested(): "Regenerate" under the last reply.
    versionRequested(str, int): a message id and the version to show (0-based), from the
        "‹ 2/3 ›" switcher.
    editRequested(str, str): "Edit" under a message of the user's: its id and text.
    deleteRequested(str): "Delete" under a message: its id.
    """

    copied = Signal(str)
    regenerateRequested = Signal()
    versionRequested = Signal(str, int)
    editRequested = Signal(str, str)
    deleteRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        # A read-only transcript needs no undo history; left on, every streaming flush
        # (remove + insert) pushed undo commands, so flushes got slower and memory grew.
        self.document().setUndoRedoEnabled(False)
        self.document().setDocumentMargin(12)
        self.anchorClicked.connect(self._on_anchor)
        self.verticalScrollBar().setSingleStep(24)
        self.verticalScrollBar().valueChanged.connect(self._maybe_render_older)
        self.follow = True  # keep the newest message in view until the user scrolls up
        self._auto_scroll = False
        self.verticalScrollBar().valueChanged.connect(self._on_scroll_value)
        self.verticalScrollBar().rangeChanged.connect(self._on_scroll_range)
        self.jump_button = QToolButton(self.viewport())
        self.jump_button.setObjectName("jump_latest")
        self.jump_button.setText("Latest ↓")
        self.jump_button.setToolTip("Scroll to the newest message and follow the reply")
        self.jump_button.clicked.connect(self.jump_to_latest)
        self.jump_button.hide()
        self.action_bar = ActionBar(self.viewport())
        self.action_bar.clicked.connect(self._on_action_clicked)
        self._hovered: Item | None = None
        self.viewport().setMouseTracking(True)
        self.replies: list[str] = []  # finished assistant texts, for Copy links
        self.shown: list[tuple[str, str]] = []  # (role, text) of every message in the chat
        self.items: list[Item] = []  # everything in the transcript, rendered or not yet
        self.first_rendered = 0  # items[first_rendered:] are in the document
        self._stream_item: Item | None = None
        self.revealed = ""  # the message last brought into view by reveal()
        self._stream_start: int | None = None
        self._stream_text = ""
        self._stream_answer = False  # a </think> was seen: only the answer streams now
        self._committed_pos = 0  # document position after the committed (finished) blocks
        self._committed_chars = 0  # how much of the visible text those blocks cover
        self._carry = ""  # a code fence's opening line, re-opened for the growing tail
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self.flush)
        self._lazy = QTimer(self)
        self._lazy.setSingleShot(True)
        self._lazy.setInterval(0)
        self._lazy.timeout.connect(self._render_older_slice)
        self._fmt_cache: dict[Any, QTextCharFormat] = {}
        self._theme_dirty = False
        self.flush_count = 0
        self.flush_seconds = 0.0
        self.flush_log: list[tuple[int, float]] = []  # (reply length, seconds) per flush
        self.streamed_pieces = 0
        self.slice_log: list[tuple[int, float]] = []  # (items rendered, seconds) per lazy slice
        self._apply_theme()
        theme.notifier().themeChanged.connect(self._on_theme)
        warm_up()

    # -- theme --
    def _apply_theme(self) -> None:
        p = theme.current()
        self._fmt_cache.clear()
        self.document().setDefaultStyleSheet(
            f"a {{ color: {p.accent}; text-decoration: none; }} code {{ background: {p.code_bg}; }}"
        )

    def _on_theme(self, _p: object) -> None:
        self._apply_theme()
        if self.streaming:
            self._theme_dirty = True  # re-render once the reply is finished
        else:
            self.rerender()

    def rerender(self) -> None:
        """Render the rendered part again (after a theme change)."""
        self._theme_dirty = False
        bottom = self._at_bottom()
        self.document().clear()
        for it in self.items[self.first_rendered :]:
            self._insert_item(it, at_start=False)
        self._scroll(bottom)
        self._rehover()

    # -- building blocks --
    def _at_bottom(self) -> bool:
        """Whether the view follows the conversation (the user has not scrolled up)."""
        return self.follow

    def _scroll(self, was_at_bottom: bool) -> None:
        if was_at_bottom:
            self._to_bottom()

    def _to_bottom(self) -> None:
        sb = self.verticalScrollBar()
        self._auto_scroll = True
        try:
            sb.setValue(sb.maximum())
        finally:
            self._auto_scroll = False
        self._place_jump()

    def _on_scroll_value(self, value: int) -> None:
        """A scroll the user made: scrolled up, the view stays; back at the bottom, it
        follows again."""
        if self._auto_scroll:
            return
        sb = self.verticalScrollBar()
        self.follow = value >= sb.maximum() - 4
        self._place_jump()

    def _on_scroll_range(self, _lo: int, _hi: int) -> None:
        # the document grew (a reply streaming, a finished reply laid out again, older
        # messages rendered): a following view goes with it, however late the layout comes
        if self.follow:
            self._to_bottom()
        else:
            self._place_jump()

    def jump_to_latest(self) -> None:
        """The "Latest ↓" button: follow the conversation again."""
        self.follow = True
        self._to_bottom()

    def _place_jump(self) -> None:
        sb = self.verticalScrollBar()
        show = not self.follow and sb.maximum() > 0 and sb.value() < sb.maximum() - 4
        b = self.jump_button
        if show:
            b.adjustSize()
            vp = self.viewport()
            b.move(
                vp.width() - b.width() - theme.SPACE[4], vp.height() - b.height() - theme.SPACE[3]
            )
            b.raise_()
        b.setVisible(show)

    def resizeEvent(self, e: Any) -> None:
        super().resizeEvent(e)
        if self.follow:
            self._to_bottom()
        self._place_jump()
        self.action_bar.hide()  # where the bubbles were; shown again where they are now
        QTimer.singleShot(0, self, self._rehover)

    def _rehover(self) -> None:
        """The hover bar on the message under the mouse, after the layout changed under it
        (a resize, a theme's re-render): it used to come back only at the next mouse move."""
        pos = self.viewport().mapFromGlobal(QCursor.pos())
        inside = self.isVisible() and self.viewport().rect().contains(pos)
        self.hover(self.item_at(pos) if inside else None)

    # -- the hover bar: a message's actions where the mouse is --
    def item_at(self, pos: QPoint) -> Item | None:
        """The message under a viewport position."""
        at = self.cursorForPosition(pos).position()
        for it in reversed(self.items[self.first_rendered :]):
            f = it.frame
            if f is not None and f.firstPosition() <= at <= f.lastPosition():
                return it if it.kind in ("user", "assistant") else None
        return None

    def item_rect(self, it: Item) -> QRect:
        """``it``'s bubble in viewport coordinates."""
        if it.frame is None:
            return QRect()
        r = self.document().documentLayout().frameBoundingRect(it.frame)
        return r.translated(
            -self.horizontalScrollBar().value(), -self.verticalScrollBar().value()
        ).toRect()

    def hover(self, it: Item | None) -> list[str]:
        """Show the hover bar on ``it`` (None hides it); returns the actions it offers."""
        names = self.actions_for(it) if it is not None else []
        if it is None or not names:
            self.action_bar.hide()
            self._hovered = None
            return []
        self._hovered = it
        self.action_bar.show_for(names)
        r = self.item_rect(it)
        bar = self.action_bar
        ff = it.frame.frameFormat() if it.frame is not None else QTextFrameFormat()
        # inside the bubble's top right corner (the frame's rect includes its margins)
        right = int(r.right() - ff.rightMargin() - ff.border() - theme.SPACE[1])
        x = max(0, min(right - bar.width(), self.viewport().width() - bar.width() - 2))
        y = max(0, int(r.top() + ff.topMargin() + ff.border() + theme.SPACE[1]))
        bar.move(x, y)
        bar.raise_()
        return names

    def _on_action_clicked(self, name: str) -> None:
        if self._hovered is not None:
            self.trigger(self._hovered, name)

    def mouseMoveEvent(self, e: QMouseEvent) -> None:
        super().mouseMoveEvent(e)
        if e.buttons() == Qt.MouseButton.NoButton:
            it = self.item_at(e.position().toPoint())
            if it is not self._hovered:
                self.hover(it)

    def leaveEvent(self, e: Any) -> None:
        super().leaveEvent(e)
        if not self.action_bar.geometry().contains(self.viewport().mapFromGlobal(QCursor.pos())):
            self.hover(None)

    def _frame_format(self, it: Item) -> QTextFrameFormat:
        p = theme.current()
        f = QTextFrameFormat()
        f.setPadding(10 if it.kind in ("user", "assistant") else 4)
        f.setTopMargin(6)
        f.setBottomMargin(6)
        f.setWidth(QTextLength(QTextLength.Type.PercentageLength, 100))
        f.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
        if it.kind == "user":
            f.setBackground(QColor(p.user_bubble))
            f.setLeftMargin(48)
            f.setBorder(1)
            f.setBorderBrush(QColor(p.user_bubble).darker(108))
        elif it.kind == "assistant":
            f.setBackground(QColor(p.model_bubble))
            f.setRightMargin(24)
            f.setBorder(1)
            f.setBorderBrush(QColor(p.border))
        else:
            f.setBorder(0)
        return f

    def _insert_item(self, it: Item, at_start: bool) -> None:
        """Insert ``it`` as a new top-level frame at the start or the end of the document."""
        c = QTextCursor(self.document())
        if at_start:
            c.movePosition(QTextCursor.MoveOperation.Start)
        else:
            c.movePosition(QTextCursor.MoveOperation.End)
        it.frame = c.insertFrame(self._frame_format(it))
        self._fill(it)

    def _char(
        self,
        color: str = "",
        bold: bool = False,
        size: float = 0,
        italic: bool = False,
        mono: bool = False,
        anchor: str = "",
    ) -> QTextCharFormat:
        key = (color, bold, size, italic, mono, anchor)
        f = self._fmt_cache.get(key)
        if f is None:
            f = QTextCharFormat()
            if mono:
                f.setFont(_mono_font())
                f.setFontFixedPitch(True)
            if color:
                f.setForeground(QColor(color))
            if bold:
                f.setFontWeight(QFont.Weight.DemiBold)
            if italic:
                f.setFontItalic(True)
            if size:
                f.setFontPointSize(size)
            if anchor:
                f.setAnchor(True)
                f.setAnchorHref(anchor)
                f.setForeground(QColor(theme.current().accent))
            if not anchor and not mono and len(self._fmt_cache) < 256:
                self._fmt_cache[key] = f
        return f

    def _small(self) -> float:
        return max(7.0, self.font().pointSizeF() * 0.88)

    def _fill(self, it: Item) -> None:
        """(Re)write the content of ``it``'s frame."""
        assert it.frame is not None
        p = theme.current()
        c = QTextCursor(self.document())
        c.setPosition(it.frame.firstPosition())
        c.setPosition(it.frame.lastPosition(), QTextCursor.MoveMode.KeepAnchor)
        c.removeSelectedText()
        c.setBlockFormat(QTextBlockFormat())
        if it.kind == "help":
            self._help_table(c, it)
            return
        if it.kind in ("notice", "output"):
            if it.kind == "output":
                c.setCharFormat(self._char(p.text, mono=True))
                self._plain_lines(c, it.text, self._char(p.text, mono=True))
            else:
                c.insertText(it.text, self._char(getattr(p, it.color or "notice"), italic=True))
            return
        who = "You" if it.kind == "user" else (it.name or "Model")
        color = p.user_name if it.kind == "user" else p.accent
        c.insertText(who, self._char(color, bold=True))
        c.insertText("   " + _when(it.created), self._char(p.muted, size=self._small()))
        c.insertBlock(QTextBlockFormat(), QTextCharFormat())
        if it.tools:
            self._tool_calls(c, it)
        if it.kind == "user":
            if it.versions > 1:
                self._versions(c, it)
            if it.attachments:  # what was sent with it, as the chips showed it
                c.insertText(
                    "📎 " + " · ".join(it.attachments), self._char(p.muted, size=self._small())
                )
                c.insertBlock(QTextBlockFormat(), QTextCharFormat())
            shown = typed_text(it.text) if it.attachments else it.text
            self._plain_lines(c, shown or it.text, self._char(p.text))  # verbatim, no Markdown
            return
        if it is self._stream_item:
            return  # the streamed text follows here
        self._render_reply(c, it)

    def _tool_calls(self, c: QTextCursor, it: Item) -> None:
        """The reply's tool calls: one collapsed line each; clicked, the arguments and the
        result (as plain text: a tool's output is data, never markup)."""
        p, small = theme.current(), self._small()
        arrow = "▾" if it.tools_open else "▸"
        anchor = f"tools:{self.items.index(it)}" if it is not self._stream_item else ""
        for step in it.tools:
            c.insertText(
                f"{arrow} Tool {tool_line(step)}",
                self._char(anchor=anchor, size=small, italic=True, color="" if anchor else p.muted),
            )
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())
            if not it.tools_open:
                continue
            mono = self._char(p.text, mono=True, size=small)
            args = json.dumps(step.get("arguments") or {}, ensure_ascii=False, indent=2)
            self._plain_lines(c, "arguments: " + args, mono)
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())
            result = str(step.get("result") or "")
            shown = result[:TOOL_SHOWN] + (
                f"\n… ({len(result) - TOOL_SHOWN:,} more characters)"
                if len(result) > TOOL_SHOWN
                else ""
            )
            self._plain_lines(c, "result: " + (shown or "(none)"), mono)
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())
            if step.get("note"):
                c.insertText(str(step["note"]), self._char(p.muted, size=small, italic=True))
                c.insertBlock(QTextBlockFormat(), QTextCharFormat())

    def show_tool_step(self, step: dict[str, Any]) -> None:
        """A tool call of the reply being streamed, new or with its outcome (``step`` is a
        ToolStep's dict). Calls come before the answer's text, so the streamed part is empty
        and starts again after the calls."""
        it = self._stream_item
        if it is None or it.frame is None:
            return
        at = next((k for k, s in enumerate(it.tools) if s.get("id") == step.get("id")), None)
        if at is None:
            it.tools.append(dict(step))
        else:
            it.tools[at] = dict(step)
        bottom = self._at_bottom()
        self._fill(it)
        self._stream_start = self._committed_pos = self._frame_end()
        self._committed_chars, self._carry, self._stream_text = 0, "", ""
        self._scroll(bottom)

    def _help_table(self, c: QTextCursor, it: Item) -> None:
        from PySide6.QtGui import QTextTableFormat

        p = theme.current()
        rows = [line.split("\t", 1) for line in it.text.split("\n") if "\t" in line]
        c.insertText("Slash commands", self._char(p.text, bold=True))
        tf = QTextTableFormat()
        tf.setBorder(0)
        tf.setCellPadding(3)
        tf.setCellSpacing(0)
        tf.setWidth(QTextLength(QTextLength.Type.PercentageLength, 100))
        tf.setColumnWidthConstraints(
            [
                QTextLength(QTextLength.Type.PercentageLength, 30),
                QTextLength(QTextLength.Type.PercentageLength, 70),
            ]
        )
        table = c.insertTable(max(1, len(rows)), 2, tf)
        for r, (usage, desc) in enumerate(rows):
            table.cellAt(r, 0).firstCursorPosition().insertText(
                usage, self._char(p.accent, mono=True)
            )
            table.cellAt(r, 1).firstCursorPosition().insertText(desc, self._char(p.text))

    def _plain_lines(self, c: QTextCursor, text: str, fmt: QTextCharFormat) -> None:
        for i, line in enumerate(text.split("\n")):
            if i:
                c.insertBlock(QTextBlockFormat(), fmt)
            c.insertText(line, fmt)

    def _render_reply(self, c: QTextCursor, it: Item) -> None:
        p = theme.current()
        reasoning, answer = split_reasoning(it.text)
        if reasoning is not None:
            words = len(reasoning.split())
            arrow = "▾" if it.expanded else "▸"
            verb = "hide" if it.expanded else "show"
            c.insertText(
                f"{arrow} Reasoning ({words} words, click to {verb})",
                self._char(anchor=f"think:{it.reply}", italic=True),
            )
            if it.expanded:
                ff = QTextFrameFormat()
                ff.setBackground(QColor(p.reasoning_bg))
                ff.setPadding(8)
                ff.setTopMargin(4)
                ff.setBottomMargin(4)
                sub = c.insertFrame(ff)
                self._plain_lines(c, reasoning, self._char(p.reasoning, italic=True))
                c.setPosition(sub.lastPosition() + 1)
            else:
                c.insertBlock(QTextBlockFormat(), QTextCharFormat())
        n_code = 0
        for kind, lang, body in segments(answer):
            if kind == "md":
                c.insertMarkdown(body.strip("\n"))
                c.insertBlock(QTextBlockFormat(), QTextCharFormat())
                continue
            c.insertText((lang or "code") + "   ", self._char(p.muted, size=self._small()))
            c.insertText(
                f"Copy code {n_code + 1}",
                self._char(anchor=f"code:{it.reply}:{n_code}", size=self._small()),
            )
            n_code += 1
            ff = QTextFrameFormat()
            ff.setBackground(QColor(p.code_bg))
            ff.setBorder(1)
            ff.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
            ff.setBorderBrush(QColor(p.code_border))
            ff.setPadding(8)
            ff.setTopMargin(2)
            ff.setBottomMargin(6)
            sub = c.insertFrame(ff)
            self._highlight(c, lang, body)
            c.setPosition(sub.lastPosition() + 1)
        self._footer(c, it)

    def _highlight(self, c: QTextCursor, lang: str, code: str) -> None:
        from pygments.lexers import get_lexer_by_name
        from pygments.lexers.special import TextLexer
        from pygments.styles import get_style_by_name
        from pygments.util import ClassNotFound

        p = theme.current()
        try:
            lexer = (
                get_lexer_by_name(lang, stripnl=False, ensurenl=False)
                if lang
                else TextLexer(ensurenl=False)
            )
        except ClassNotFound:
            lexer = TextLexer(ensurenl=False)
        style = get_style_by_name(p.pygments_style)
        base = self._char(p.text, mono=True)
        c.setBlockCharFormat(base)
        c.setCharFormat(base)
        for ttype, value in lexer.get_tokens(code):
            key = ("pyg", p.pygments_style, ttype)
            fmt = self._fmt_cache.get(key)
            if fmt is None:
                st = style.style_for_token(ttype)
                fmt = QTextCharFormat(base)
                if st.get("color"):
                    fmt.setForeground(QColor("#" + st["color"]))
                if st.get("bold"):
                    fmt.setFontWeight(QFont.Weight.Bold)
                if st.get("italic"):
                    fmt.setFontItalic(True)
                self._fmt_cache[key] = fmt
            parts = value.split("\n")
            for i, part in enumerate(parts):
                if i:
                    c.insertBlock(QTextBlockFormat(), base)
                if part:
                    c.insertText(part, fmt)

    def _footer(self, c: QTextCursor, it: Item) -> None:
        p = theme.current()
        s = it.stats
        parts = []
        if s:
            parts = [
                f"{s.get('completion_tokens', 0)} tokens",
                f"{fmt_rate(s.get('gen_tokens_per_s'))} tok/s",
                f"first token {fmt_secs(s.get('ttft_s'))}",
                f"finish: {s.get('finish_reason', '?')}",
            ]
            if s.get("reasoning_tokens"):
                parts.insert(1, f"{s['reasoning_tokens']} reasoning")
        small = self._small()
        c.setBlockFormat(QTextBlockFormat())
        if it.reply < 0:  # an abandoned reply
            c.insertText("not finished", self._char(p.muted, size=small))
            return
        c.insertText(" · ".join(parts), self._char(p.muted, size=small))
        if it.versions > 1:
            c.insertText("   ", self._char(p.muted, size=small))
            self._versions(c, it)

    def _last_reply(self) -> Item | None:
        return next((i for i in reversed(self.items) if i.kind == "assistant"), None)

    def actions_for(self, it: Item) -> list[str]:
        """The actions the hover bar offers on ``it`` (a stored message; none while it
        streams): Copy always, Edit on the user's, Regenerate on the last reply, Delete."""
        if it.kind not in ("user", "assistant") or it is self._stream_item:
            return []
        if it.kind == "user":
            return ["Copy", "Edit", "Delete"] if it.msg_id else ["Copy"]
        if it.reply < 0:
            return []
        names = ["Copy"]
        if it.msg_id:
            names += (["Regenerate"] if it is self._last_reply() else []) + ["Delete"]
        return names

    def trigger(self, it: Item, name: str) -> None:
        """Run one of :meth:`actions_for` on ``it`` (the hover bar's buttons call this)."""
        anchors = {
            "Edit": f"edit:{it.msg_id}",
            "Delete": f"delete:{it.msg_id}",
            "Regenerate": "regen:",
            "Copy": f"copymsg:{it.msg_id}" if it.msg_id else f"copy:{it.reply}",
        }
        if it.kind == "user" and not it.msg_id:
            QGuiApplication.clipboard().setText(it.text)
            self.copied.emit(it.text)
            return
        self._on_anchor(QUrl(anchors[name]))

    def _versions(self, c: QTextCursor, it: Item) -> None:
        """The "‹ 2/3 ›" switcher of a message with versions."""
        p, small = theme.current(), self._small()
        sep = self._char(p.muted, size=small)
        if it.version > 1:
            c.insertText(
                "‹",
                self._char(anchor=f"version:{it.msg_id}:{it.version - 2}", size=small, bold=True),
            )
        else:
            c.insertText("‹", sep)
        c.insertText(f" {it.version}/{it.versions} ", self._char(p.text, size=small))
        if it.version < it.versions:
            c.insertText(
                "›", self._char(anchor=f"version:{it.msg_id}:{it.version}", size=small, bold=True)
            )
        else:
            c.insertText("›", sep)
        if it.kind == "user":
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())

    def reveal(self, message_id: str) -> bool:
        """Scroll to a message and select it (a search result opened). Older parts of a long
        chat are rendered down to it first."""
        k = next((i for i, it in enumerate(self.items) if it.msg_id == message_id), None)
        if k is None:
            return False
        self._lazy.stop()
        self._prepend_older(k)
        frame = self.items[k].frame
        if frame is None:
            return False
        c = QTextCursor(self.document())
        c.setPosition(frame.lastPosition())
        c.setPosition(frame.firstPosition(), QTextCursor.MoveMode.KeepAnchor)
        self.setTextCursor(c)  # selected: it stands out; the view shows its start
        self.ensureCursorVisible()
        self.revealed = message_id
        return True

    def sync_tail(self, messages: list[dict[str, Any]]) -> None:
        """Give the newest items their stored ids and versions (``messages``: the last stored
        messages, oldest first) once a turn is saved, and redraw their footers (and the
        footer of the reply before, which no longer offers Regenerate)."""
        todo = list(messages)
        touched: list[Item] = []
        for it in reversed(self.items):
            if not todo:
                break
            if it.kind not in ("user", "assistant"):
                continue
            m = todo.pop()
            if str(m.get("role")) != it.kind:
                break
            _take_ids(it, m)
            if it.kind == "user" and it.attachments:
                it.text = str(m.get("content") or it.text)  # what was sent, files included
            touched.append(it)
        # by identity: items are dataclasses, and == would compare their fields
        before = next(
            (
                i
                for i in reversed(self.items)
                if i.kind == "assistant" and all(i is not t for t in touched)
            ),
            None,
        )
        for it in [*touched, *([before] if before is not None else [])]:
            if it.frame is not None and it is not self._stream_item:
                self._fill(it)

    # -- public API --
    def add_user(
        self, text: str, created: float | None = None, attachments: list[str] | None = None
    ) -> None:
        self._append(
            Item("user", text, created or time.time(), attachments=list(attachments or []))
        )
        self.shown.append(("user", text))

    def add_notice(self, text: str, color: str = "notice") -> None:
        """A one-line notice; ``color`` is a theme key (notice, error, warn, ok) or a colour
        of either palette (``theme.color("error")``), kept by name so a theme switch
        re-colours it."""
        key = (
            LEGACY_COLORS.get(color.lower())
            or (color if color in theme.KEYS else theme.key_of(color))
            or "notice"
        )
        self._append(Item("notice", text, color=key))

    def add_output(self, text: str) -> None:
        """Output of a slash command, monospaced."""
        self._append(Item("output", text))

    def _append(self, it: Item) -> None:
        bottom = self._at_bottom()
        self.items.append(it)
        self._insert_item(it, at_start=False)
        self._scroll(bottom)

    def show_conversation(self, messages: list[dict[str, Any]], model_name: str = "Model") -> None:
        """Show a saved chat (dicts with role, content, and optionally created / stats).

        Renders the newest messages first and the older ones in slices; returns at once."""
        import gc

        self.clear_all()
        # thousands of small objects would trigger full collections of the whole (large) heap
        # right here, on the UI thread: defer them
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            self._build(messages, model_name)
        finally:
            if gc_was_on:
                gc.enable()
        self.first_rendered = len(self.items)
        self._render_older_slice()

    def _build(self, messages: list[dict[str, Any]], model_name: str) -> None:
        for m in messages:
            role = str(m.get("role", ""))
            text = str(m.get("content", ""))
            created = float(m.get("created") or time.time())
            if role == "user":
                it = Item("user", text, created)
            elif role == "assistant":
                it = Item(
                    "assistant",
                    text,
                    created,
                    name=model_name,
                    stats=dict(m.get("stats") or {}),
                    reply=len(self.replies),
                )
                self.replies.append(text)
            else:
                continue
            _take_ids(it, m)
            self.items.append(it)
            self.shown.append((role, text))

    @property
    def pending_older(self) -> int:
        """Items of the chat not rendered yet (older than what is shown)."""
        return self.first_rendered

    def _render_older_slice(self) -> None:
        """Prepend older items for at most SLICE_S seconds, keeping the view where it was."""
        if self.first_rendered == 0:
            return
        t0 = time.perf_counter()
        sb = self.verticalScrollBar()
        was_bottom = self._at_bottom()
        from_bottom = sb.maximum() - sb.value()
        n = self._prepend_older(0, SLICE_S)
        if was_bottom:
            sb.setValue(sb.maximum())
        else:
            sb.setValue(sb.maximum() - from_bottom)
        self.slice_log.append((n, time.perf_counter() - t0))
        if self.first_rendered > 0 and sb.value() < EAGER_ABOVE * max(1, self.viewport().height()):
            self._lazy.start()

    def _prepend_older(self, down_to: int, budget_s: float | None = None) -> int:
        """Render the items from ``down_to`` up to what is drawn at the document's start, or
        until ``budget_s`` has passed; returns how many. One edit block, so the document is
        laid out once at the end: item by item it was laid out again after each (scrolling
        to the top of 2,000 messages took 24 s, revealing the oldest one 22 s)."""
        t0, n = time.perf_counter(), 0
        c = QTextCursor(self.document())
        c.beginEditBlock()
        try:
            while self.first_rendered > down_to:
                self.first_rendered -= 1
                self._insert_item(self.items[self.first_rendered], at_start=True)
                n += 1
                if budget_s is not None and time.perf_counter() - t0 > budget_s:
                    break
        finally:
            c.endEditBlock()
        return n

    def _maybe_render_older(self, value: int) -> None:
        if (
            self.first_rendered > 0
            and not self._lazy.isActive()
            and value < EAGER_ABOVE * max(1, self.viewport().height())
        ):
            self._lazy.start()

    # -- streaming --
    @property
    def streaming(self) -> bool:
        return self._stream_start is not None

    def begin_reply(self, model_name: str = "Model") -> None:
        it = Item("assistant", "", name=model_name)
        self._stream_item = it
        bottom = self._at_bottom()
        self.items.append(it)
        self._insert_item(it, at_start=False)
        self._scroll(bottom)
        self._stream_start = self._frame_end()
        self._committed_pos = self._stream_start
        self._committed_chars = 0
        self._carry = ""
        self._stream_text = ""
        self._stream_answer = False
        self._dirty = False
        self._timer.start()

    def _frame_end(self) -> int:
        assert self._stream_item is not None and self._stream_item.frame is not None
        return self._stream_item.frame.lastPosition()

    def append_stream(self, piece: str) -> None:
        """Per-token work is only this: append to a buffer."""
        self._stream_text += piece
        self._dirty = True
        self.streamed_pieces += 1

    def _visible_stream(self) -> str:
        reasoning, answer = split_reasoning(self._stream_text)
        if reasoning is None:
            return self._stream_text
        if not self._stream_answer and THINK_CLOSE in self._stream_text:
            # reasoning ended: start the answer afresh (drop what was committed so far)
            self._stream_answer = True
            self._committed_pos, self._committed_chars, self._carry = self._stream_start or 0, 0, ""
        if self._stream_answer:
            return f"*▸ Reasoning ({len(reasoning.split())} words)*\n\n" + answer
        return f"*Thinking… ({len(reasoning.split())} words)*"

    def flush(self) -> None:
        if not self._dirty or self._stream_start is None:
            return
        t0 = time.perf_counter()
        bottom = self._at_bottom()
        text = self._visible_stream()
        cut = _commit_point(text, self._committed_chars, self._carry)
        if cut is not None:  # finished text: render it once and never again
            end, closing, carry, joiner = cut
            self._replace_tail(self._carry + text[self._committed_chars : end] + closing, joiner)
            self._committed_pos = self._frame_end()
            self._committed_chars, self._carry = end, carry
        self._replace_tail(self._carry + text[self._committed_chars :])  # the growing block
        self._dirty = False
        self._scroll(bottom)
        dt_s = time.perf_counter() - t0
        self.flush_count += 1
        self.flush_seconds += dt_s
        self.flush_log.append((len(self._stream_text), dt_s))

    def _replace_tail(self, markdown: str, joiner: str = "") -> None:
        """Replace everything after the committed part with ``markdown``; ``joiner`` is what
        follows a committed chunk: "block" (a new paragraph) or "space" (same paragraph)."""
        c = QTextCursor(self.document())
        c.setPosition(self._committed_pos)
        c.setPosition(self._frame_end(), QTextCursor.MoveMode.KeepAnchor)
        c.removeSelectedText()
        if markdown:
            c.insertMarkdown(markdown)
        if joiner == "block":
            c.insertBlock(QTextBlockFormat(), QTextCharFormat())
        elif joiner == "space":
            c.insertText(" ")

    def finish_reply(self, reply: str, stats: dict[str, Any]) -> None:
        """The reply is complete: render it whole (highlighted, reasoning collapsed)."""
        self._timer.stop()
        it = self._stream_item
        bottom = self._at_bottom()
        if it is None:  # a saved reply being shown, not streamed
            it = Item("assistant", reply, name="Model")
            self.items.append(it)
        it.text, it.stats, it.reply = reply, dict(stats or {}), len(self.replies)
        self.replies.append(reply)
        self.shown.append(("assistant", reply))
        self._stream_item = None
        self._stream_start = None
        if it.frame is None:
            self._insert_item(it, at_start=False)
        else:
            self._fill(it)
        if self._theme_dirty:
            self.rerender()
        self._scroll(bottom)

    def abandon_reply(self) -> None:
        """Stop streaming; what arrived stays on screen (and is not a reply: no Copy)."""
        self._timer.stop()
        if self._stream_item is not None:
            self._stream_item.text = self._stream_text
        self._stream_item = None
        self._stream_start = None

    def clear_all(self) -> None:
        self.abandon_reply()
        self._lazy.stop()
        self.clear()
        self.replies.clear()
        self.shown.clear()
        self.items.clear()
        self.first_rendered = 0
        self.follow = True
        self.hover(None)

    def drop_from(self, index: int) -> None:
        """Take items ``index:`` off the transcript (a turn that was not sent, the reply a
        regenerate replaces, the messages an edit replaces)."""
        if self.streaming:
            self.abandon_reply()
        gone = self.items[index:]
        if not gone:
            return
        del self.items[index:]
        for it in gone:
            if it.kind in ("user", "assistant") and self.shown:
                self.shown.pop()
            if it.kind == "assistant" and it.reply >= 0 and it.reply == len(self.replies) - 1:
                self.replies.pop()
        self.first_rendered = min(self.first_rendered, len(self.items))
        self.hover(None)
        self.rerender()

    def drop_unsent(self, text: str) -> bool:
        """The last user message (``text``) was not sent: it and its empty reply go."""
        k = next(
            (i for i in range(len(self.items) - 1, -1, -1) if self.items[i].kind == "user"), None
        )
        if k is None or self.items[k].msg_id or self.items[k].text != text:
            return False
        self.drop_from(k)
        return True

    def replace_from_message(self, message_id: str) -> None:
        """A new version starts at ``message_id`` ("" = the last reply): what it replaces
        leaves the view while the new one streams."""
        if not message_id:
            k = next(
                (
                    i
                    for i in range(len(self.items) - 1, -1, -1)
                    if self.items[i].kind == "assistant"
                ),
                None,
            )
        else:
            k = next((i for i, it in enumerate(self.items) if it.msg_id == message_id), None)
        if k is not None:
            self.drop_from(k)

    def add_help(self, rows: list[tuple[str, str]]) -> None:
        """The slash commands as a two-column table (usage, what it does)."""
        self._append(Item("help", "\n".join(f"{u}\t{h}" for u, h in rows)))

    def _message_action(self, parts: list[str]) -> bool:
        """Regenerate / version / edit / delete / copy links of a stored message."""
        kind = parts[0]
        if kind == "regen":
            self.regenerateRequested.emit()
            return True
        if kind not in ("version", "edit", "delete", "copymsg") or len(parts) < 2:
            return False
        it = next((i for i in self.items if i.msg_id and i.msg_id == parts[1]), None)
        if it is None:
            return True
        if kind == "version":
            try:
                j = int(parts[2])
            except (IndexError, ValueError):
                return True
            self.versionRequested.emit(it.msg_id, j)
        elif kind == "edit":
            self.editRequested.emit(it.msg_id, it.text)
        elif kind == "delete":
            self.deleteRequested.emit(it.msg_id)
        else:
            QGuiApplication.clipboard().setText(it.text)
            self.copied.emit(it.text)
        return True

    def _on_anchor(self, url: QUrl) -> None:
        parts = url.toString().split(":")
        if self._message_action(parts):
            return
        try:
            idx = int(parts[1])
            if parts[0] == "tools":
                it = self.items[idx]
                it.tools_open = not it.tools_open
                if it.frame is not None and it is not self._stream_item:
                    self._fill(it)
                return
            if parts[0] == "think":
                it = next(i for i in self.items if i.kind == "assistant" and i.reply == idx)
                it.expanded = not it.expanded
                if it.frame is not None:
                    self._fill(it)
                return
            text = self.replies[idx]
            if parts[0] == "code":
                text = code_blocks(text)[int(parts[2])]
        except (IndexError, ValueError, StopIteration):
            return
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)


def _take_ids(it: Item, m: dict[str, Any]) -> None:
    """A stored message's id, versions and attachments onto its transcript item."""
    it.msg_id = str(m.get("id") or "")
    calls = m.get("tool_calls")
    if isinstance(calls, list) and it.kind == "assistant":
        it.tools = [dict(c) for c in calls if isinstance(c, dict)]
    atts = m.get("attachments")
    if isinstance(atts, list):
        it.attachments = [str(a.get("name", "?")) for a in atts if isinstance(a, dict)]
    alts = m.get("alternatives")
    it.versions = len(alts) + 1 if isinstance(alts, list) else 1
    try:
        it.version = min(it.versions, max(1, int(m.get("alt_index") or 0) + 1))
    except (TypeError, ValueError):
        it.version = 1


TOOL_SHOWN = 4000  # characters of a tool's result shown in the transcript


def tool_line(step: dict[str, Any]) -> str:
    """One line for a tool call: the tool, its server, its arguments, how it went."""
    args = json.dumps(step.get("arguments") or {}, ensure_ascii=False)
    args = args if len(args) <= 80 else args[:79] + "…"
    status = str(step.get("status") or "")
    how = {
        "ok": f"done in {float(step.get('seconds') or 0):.1f} s",
        "error": f"failed: {step.get('note', '')}",
        "denied": "denied by you",
        "stopped": "stopped",
        "limit": str(step.get("note") or "limit reached"),
        "asking": "waiting for your permission",
    }.get(status, status)
    return f"{step.get('tool', '?')} ({step.get('server', '?')}) {args}: {how}"


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
        self.setPlaceholderText(
            "Message the model — Enter to send, Shift+Enter for a new line, /help for commands"
        )
        self.setTabChangesFocus(True)
        self.setFixedHeight(80)

    def keyPressEvent(self, e: QKeyEvent) -> None:
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
