"""Every colour of the window, in one place: a light and a dark palette.

``current()`` is the palette in effect. It follows the system colour scheme (Qt 6
``styleHints().colorScheme()``, re-read on ``colorSchemeChanged``) unless the user picked
"light" or "dark" (``set_mode``, the View menu). ``apply(app)`` sets the QApplication's
QPalette and stylesheet; widgets that draw their own colours read ``current()`` when they paint
or render, and re-render on :data:`notifier`'s ``themeChanged``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette

MODES = ("system", "light", "dark")

# The spacing scale (px): every margin and gap in the window is one of these.
SPACE = (0, 4, 8, 12, 16, 24, 32)
# The type scale: point sizes as multiples of the application font (body = 1.0).
TYPE = {"caption": 0.85, "body": 1.0, "label": 0.92, "title": 1.15, "value": 1.3, "heading": 1.45}
RADIUS = {"small": 4, "card": 8, "bubble": 10}


def pt(role: str, base: float = 10.0) -> float:
    """The point size of type role ``role`` for a ``base`` application font size."""
    return round(base * TYPE[role], 1)


@dataclass(frozen=True)
class Palette:
    name: str
    window: str
    base: str  # the transcript and text fields
    text: str
    muted: str  # secondary text: times, stats, hints
    border: str
    accent: str  # links, the model's name, focus, the default gauge colour
    accent_text: str  # text on an accent background
    user_name: str
    user_bubble: str  # background of the user's messages
    model_bubble: str  # background of the model's replies
    notice: str  # a notice line in the transcript (trimmed turns, tuning)
    reasoning: str  # text of a <think> block
    reasoning_bg: str
    code_bg: str
    code_border: str
    ok: str
    warn: str
    error: str
    gpu: str  # gauge colour for the GPU cards
    cpu: str  # gauge colour for RAM / CPU cards
    track: str  # empty part of a gauge bar
    selection: str
    pygments_style: str

    def color(self, key: str) -> QColor:
        return QColor(getattr(self, key))


LIGHT = Palette(
    name="light",
    window="#f4f5f7",
    base="#ffffff",
    text="#1d2330",
    muted="#6b7385",
    border="#d5d9e0",
    accent="#2f6fe4",
    accent_text="#ffffff",
    user_name="#1e8a62",
    user_bubble="#e9f4ee",
    model_bubble="#f5f7fb",
    notice="#a86a00",
    reasoning="#5d6575",
    reasoning_bg="#eef0f4",
    code_bg="#f6f8fa",
    code_border="#d8dde5",
    ok="#1e8a62",
    warn="#b87400",
    error="#c93c3c",
    gpu="#7b4fe0",
    cpu="#1e8a62",
    track="#e3e6eb",
    selection="#cfe0ff",
    pygments_style="friendly",
)

DARK = Palette(
    name="dark",
    window="#1b1e24",
    base="#22262e",
    text="#e3e6ec",
    muted="#9098a8",
    border="#3a404c",
    accent="#6ea2ff",
    accent_text="#0d1117",
    user_name="#4fd1a0",
    user_bubble="#23352e",
    model_bubble="#282d37",
    notice="#e8b04a",
    reasoning="#aab1bf",
    reasoning_bg="#2c313b",
    code_bg="#16191f",
    code_border="#3a404c",
    ok="#4fd1a0",
    warn="#e8b04a",
    error="#ff6b6b",
    gpu="#a98bff",
    cpu="#4fd1a0",
    track="#353a45",
    selection="#2f4a7a",
    pygments_style="monokai",
)

PALETTES = {"light": LIGHT, "dark": DARK}
KEYS = tuple(f.name for f in fields(Palette) if f.name not in ("name", "pygments_style"))


class _Notifier(QObject):
    """Signals:
    themeChanged(object): the new :class:`Palette`.
    """

    themeChanged = Signal(object)


_mode = "system"
_notifier: _Notifier | None = None
_watching = False
_signalled: str | None = None  # the scheme the last colorSchemeChanged carried


def notifier() -> _Notifier:
    """The QObject whose ``themeChanged`` fires when the palette in effect changes."""
    global _notifier
    if _notifier is None:
        _notifier = _Notifier()
    return _notifier


def mode() -> str:
    return _mode


def system_scheme() -> str:
    """'dark' or 'light' as the desktop says (light when it does not say)."""
    app = QGuiApplication.instance()
    if app is None:
        return "light"
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Unknown and _signalled is not None:
        return _signalled
    return "dark" if scheme == Qt.ColorScheme.Dark else "light"


def current() -> Palette:
    return PALETTES[system_scheme() if _mode == "system" else _mode]


def color(name: str) -> str:
    """The current palette's colour ``name`` (e.g. "error", "muted") as "#rrggbb"."""
    if name not in KEYS:
        raise KeyError(f"no colour {name!r} in the theme; known: {', '.join(KEYS)}")
    return str(getattr(current(), name))


def key_of(value: str) -> str | None:
    """The name of a colour given as its value in either palette (None if it is not one)."""
    v = value.lower()
    for pal in PALETTES.values():
        for key in KEYS:
            if str(getattr(pal, key)).lower() == v:
                return key
    return None


def set_mode(new_mode: str) -> Palette:
    """ "system", "light" or "dark"; applies it to the running QApplication."""
    global _mode
    if new_mode not in MODES:
        raise ValueError(f"theme must be one of {', '.join(MODES)}")
    before = current()
    _mode = new_mode
    _apply_and_notify(before)
    return current()


def _apply_and_notify(before: Palette | None) -> None:
    app = QGuiApplication.instance()
    if app is not None:
        apply(app)  # type: ignore[arg-type]
    if before is None or current() is not before:
        notifier().themeChanged.emit(current())


def _on_system_change(scheme: object) -> None:
    global _signalled
    before = current()
    _signalled = "dark" if scheme == Qt.ColorScheme.Dark else "light"
    if _mode == "system":
        _apply_and_notify(before)


def watch_system() -> None:
    """Follow the desktop's colour scheme from now on (call once the QApplication exists)."""
    global _watching
    if _watching or QGuiApplication.instance() is None:
        return
    QGuiApplication.styleHints().colorSchemeChanged.connect(_on_system_change)
    _watching = True


def qpalette(p: Palette) -> QPalette:
    pal = QPalette()
    R = QPalette.ColorRole
    for role, key in (
        (R.Window, "window"),
        (R.WindowText, "text"),
        (R.Base, "base"),
        (R.AlternateBase, "model_bubble"),
        (R.Text, "text"),
        (R.Button, "window"),
        (R.ButtonText, "text"),
        (R.ToolTipBase, "base"),
        (R.ToolTipText, "text"),
        (R.Highlight, "accent"),
        (R.HighlightedText, "accent_text"),
        (R.Link, "accent"),
        (R.PlaceholderText, "muted"),
        (R.Mid, "border"),
        (R.Midlight, "track"),
        (R.Dark, "border"),
        (R.Light, "base"),
    ):
        pal.setColor(role, p.color(key))
    for role in (R.Text, R.WindowText, R.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, p.color("muted"))
    return pal


def stylesheet(p: Palette) -> str:
    s1, s2, s3 = SPACE[1], SPACE[2], SPACE[3]
    r_small, r_card = RADIUS["small"], RADIUS["card"]
    return f"""
QMainWindow::separator {{ background: {p.border}; width: 1px; height: 1px; }}
QDockWidget {{ font-weight: 600; }}
QDockWidget::title {{ padding: {s2}px {s3}px; background: {p.window};
            border-bottom: 1px solid {p.border}; }}
QToolBar#toolbar {{ spacing: {s1}px; padding: {s1}px {s2}px; border: none;
            border-bottom: 1px solid {p.border}; }}
QToolBar#toolbar QToolButton {{ padding: {s1}px {s2}px; border-radius: {r_small}px; }}
QToolBar#toolbar QToolButton:hover {{ background: {p.track}; }}
QToolBar#toolbar QToolButton:checked {{ background: {p.selection}; }}
QPlainTextEdit#input {{ background: {p.base}; border: 1px solid {p.border};
            border-radius: {r_card}px; padding: {s2}px; }}
QPlainTextEdit#input:focus {{ border-color: {p.accent}; }}
QPushButton#send {{ background: {p.accent}; color: {p.accent_text}; border: none;
            border-radius: {r_card}px; padding: {s2}px {s3}px; font-weight: 600; }}
QPushButton#send:disabled {{ background: {p.border}; color: {p.muted}; }}
QFrame#notice {{ background: {p.model_bubble}; border: 1px solid {p.border};
            border-radius: {r_small}px; }}
QToolButton#notice_close {{ border: none; color: {p.muted}; padding: 0 {s1}px; }}
QToolButton#notice_close:hover {{ color: {p.text}; }}
QFrame#message_actions {{ background: {p.base}; border: 1px solid {p.border};
            border-radius: {r_small}px; }}
QFrame#message_actions QToolButton {{ color: {p.accent}; padding: 1px {s2}px; border: none; }}
QFrame#message_actions QToolButton:hover {{ background: {p.track}; }}
QToolButton#jump_latest {{ background: {p.accent}; color: {p.accent_text}; border: none;
            border-radius: 12px; padding: {s1}px {s3}px; font-weight: 600; }}
QSlider::groove:horizontal {{ height: 4px; background: {p.track}; border-radius: 2px;
            border: 1px solid {p.border}; }}
QSlider::sub-page:horizontal {{ background: {p.accent}; border-radius: 2px; }}
QSlider::handle:horizontal {{ background: {p.base}; border: 2px solid {p.accent};
            width: 12px; height: 12px; margin: -6px 0; border-radius: 8px; }}
QSlider::handle:horizontal:disabled {{ border-color: {p.border}; }}
QSlider::sub-page:horizontal:disabled {{ background: {p.border}; }}
QTableWidget {{ background: {p.base}; alternate-background-color: {p.model_bubble};
            border: 1px solid {p.border}; border-radius: {r_small}px; }}
QHeaderView::section {{ background: {p.window}; color: {p.muted}; border: none;
            border-bottom: 1px solid {p.border}; padding: {s1}px {s2}px; }}
QTabBar::tab {{ padding: {s1}px {s3}px; border: 1px solid {p.border}; border-bottom: none;
            background: {p.window}; color: {p.muted}; }}
QTabBar::tab:selected {{ background: {p.base}; color: {p.text}; }}
QLabel#queued {{ color: {p.muted}; }}
QGroupBox {{ font-weight: 600; border: 1px solid {p.border}; border-radius: 6px;
            margin-top: 14px; padding: 10px 6px 6px 6px; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 4px; }}
QListWidget#conversations {{ background: {p.base}; border: 1px solid {p.border};
            border-radius: 6px; }}
QListWidget#conversations::item {{ border-bottom: 1px solid {p.border}; padding: 6px 8px; }}
QListWidget#conversations::item:selected {{ background: {p.selection}; color: {p.text}; }}
QTextBrowser#transcript {{ background: {p.base}; border: 1px solid {p.border};
            border-radius: 6px; }}
QLabel[role="muted"] {{ color: {p.muted}; }}
QLabel[role="error"] {{ color: {p.error}; }}
QLabel[role="warn"] {{ color: {p.warn}; }}
QLabel[role="ok"] {{ color: {p.ok}; }}
QFrame#welcome_card {{ background: {p.model_bubble}; border: 1px solid {p.border};
            border-radius: 10px; }}
QPushButton#primary {{ background: {p.accent}; color: {p.accent_text}; border: none;
            border-radius: 5px; padding: 6px 14px; font-weight: 600; }}
QPushButton#primary:disabled {{ background: {p.border}; color: {p.muted}; }}
{_checkbox_rules(p)}"""


def _checkbox_rules(p: Palette) -> str:
    """Check boxes drawn from the theme: Fusion outlines them with a darker window colour,
    which on the dark theme is all but invisible."""
    from desklm.resources import icon_path

    tick = icon_path("check.svg")
    if tick is None:  # a broken install: keep Qt's own drawing rather than an empty box
        return ""
    return f"""
QCheckBox::indicator {{ width: 14px; height: 14px; border: 1px solid {p.muted};
            border-radius: 3px; background: {p.base}; }}
QCheckBox::indicator:checked {{ background: {p.accent}; border-color: {p.accent};
            image: url("{tick.as_posix()}"); }}
QCheckBox::indicator:disabled {{ border-color: {p.border}; background: {p.window}; }}
"""


def apply(app: QGuiApplication) -> None:
    """Set the palette and the stylesheet of the whole application."""
    p = current()
    app.setPalette(qpalette(p))
    set_sheet = getattr(app, "setStyleSheet", None)
    if set_sheet is not None:
        set_sheet(stylesheet(p))
