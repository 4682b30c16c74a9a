"""Locating packaged resources (icons) in a source tree, an installed package, or a bundle."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _candidates() -> list[Path]:
    out = [_HERE / "resources"]
    base = getattr(sys, "_MEIPASS", None)  # a PyInstaller bundle
    if base:
        out.insert(0, Path(base) / "desklm" / "resources")
    return out


def icon_path(name: str = "desklm.svg") -> Path | None:
    for d in _candidates():
        p = d / name
        if p.exists():
            return p
    return None
