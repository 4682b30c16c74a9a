"""The palettes are complete and readable; the mode follows the system unless overridden."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication

from desklm.ui import theme


def luminance(c: str) -> float:
    q = QColor(c)

    def ch(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    return 0.2126 * ch(q.redF()) + 0.7152 * ch(q.greenF()) + 0.0722 * ch(q.blueF())


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("pal", [theme.LIGHT, theme.DARK], ids=["light", "dark"])
def test_palette_is_complete_and_readable(pal):
    for key in theme.KEYS:
        assert QColor(getattr(pal, key)).isValid(), key
    assert contrast(pal.text, pal.base) >= 7  # body text
    for bg in ("user_bubble", "model_bubble"):
        assert contrast(pal.text, getattr(pal, bg)) >= 7, bg
        assert contrast(pal.muted, getattr(pal, bg)) >= 3, bg
    for fg in ("accent", "error", "warn", "ok", "notice", "user_name"):
        assert contrast(getattr(pal, fg), pal.base) >= 3, fg
    assert contrast(pal.accent_text, pal.accent) >= 3


def test_override_and_system_following(qtbot):
    seen: list[str] = []
    theme.notifier().themeChanged.connect(lambda p: seen.append(p.name))
    theme.watch_system()
    try:
        theme.set_mode("dark")
        assert theme.current() is theme.DARK and seen[-1] == "dark"
        assert QGuiApplication.palette().window().color().name() == theme.DARK.window
        theme.set_mode("light")
        assert theme.current() is theme.LIGHT and seen[-1] == "light"
        with pytest.raises(ValueError):
            theme.set_mode("purple")
        theme.set_mode("system")
        hints = QGuiApplication.styleHints()
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # the desktop went dark
        assert theme.current() is theme.DARK and seen[-1] == "dark"
        theme.set_mode("light")  # an override wins over the system
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
        assert theme.current() is theme.LIGHT
    finally:
        theme.set_mode("system")
        QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Light)


@pytest.mark.parametrize("mode", ["light", "dark"])
def test_check_boxes_are_visible_checked_or_not(qtbot, mode):
    from PySide6.QtWidgets import QCheckBox

    theme.set_mode(mode)
    try:
        pal = theme.current()
        boxes = [QCheckBox("Flash attention"), QCheckBox("Lock in RAM")]
        boxes[1].setChecked(True)
        for cb in boxes:
            qtbot.addWidget(cb)
            cb.show()
            qtbot.waitExposed(cb)
        unchecked, checked = (cb.grab().toImage() for cb in boxes)
        h = unchecked.height()
        # the empty box: its outline must stand out from the background (3:1 or better)
        left = {unchecked.pixelColor(x, y).name() for x in range(18) for y in range(h)}
        assert max(contrast(c, pal.window) for c in left) >= 3, (mode, sorted(left))
        # the ticked box is filled with the accent colour
        tick = {checked.pixelColor(x, y).name() for x in range(18) for y in range(h)}
        assert pal.accent in tick, (mode, sorted(tick))
    finally:
        theme.set_mode("system")
