"""How DeskLM writes numbers for people: bytes, seconds, rates. One place, used everywhere.

A reading that could not be had (``NA`` or ``None``) is written ``n/a``.
"""

from __future__ import annotations

from typing import Any


def _missing(v: Any) -> bool:
    from desklm.engine.monitor import is_na

    return v is None or is_na(v)


def fmt_bytes(v: Any) -> str:
    """``512 B``, ``12 KB``, ``250.3 MB``, ``7.41 GB`` (binary units, as the OS tools show)."""
    if _missing(v):
        return "n/a"
    n = float(v)
    if abs(n) < 1024:
        return f"{n:.0f} B"
    if abs(n) < 2**20:
        return f"{n / 1024:.0f} KB"
    if abs(n) < 2**30:
        return f"{n / 2**20:,.1f} MB"
    return f"{n / 2**30:,.2f} GB"


def fmt_secs(v: float | None) -> str:
    """``850 ms`` below a second, ``2.41 s`` above, ``3 min 5 s`` past a minute."""
    if _missing(v):
        return "n/a"
    assert v is not None
    if v < 1:
        return f"{v * 1000:.0f} ms"
    if v < 60:
        return f"{v:.2f} s"
    return f"{int(v // 60)} min {v % 60:.0f} s"


def fmt_rate(v: float | None) -> str:
    """A rate to one decimal (tokens/s), or ``n/a``."""
    return "n/a" if _missing(v) else f"{v:.1f}"


def fmt_transfer(done: int, total: int, seconds: float) -> str:
    """A download's progress: ``120.0 MB / 250.3 MB · 8.0 MB/s · ETA 16 s``."""
    speed = done / max(1e-6, seconds)
    eta = (total - done) / speed if speed > 0 and total else 0
    return f"{fmt_bytes(done)} / {fmt_bytes(total)} · {fmt_bytes(speed)}/s · ETA {eta:,.0f} s"
