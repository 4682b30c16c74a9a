"""Every colour the window uses, by name. Widgets ask ``color(name)``; nothing else holds a
colour literal."""

from __future__ import annotations

LIGHT: dict[str, str] = {
    "accent": "#4c8bf5",
    "ok": "#3fb68b",
    "warn": "#e0a030",
    "error": "#e05050",
    "muted": "#8a93a3",
}


def color(name: str) -> str:
    return LIGHT[name]
