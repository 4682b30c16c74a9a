"""Termination requests (SIGTERM from a logout or ``kill``, SIGHUP from a closed terminal)
handled like a quit instead of ending the process where it stands.

:func:`install_quit_handlers` calls ``on_quit(signum)`` in the main thread when one arrives.
Python runs signal handlers between bytecodes of the main thread, so a main thread that sits
in C code (a Qt event loop) must run some Python now and then, e.g. a 200 ms QTimer, for the
handler to run promptly; llama.cpp's abort and progress callbacks are Python, so a prompt
being read or a model being loaded on the main thread lets it run too.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import Any

QUIT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def install_quit_handlers(
    on_quit: Callable[[int], None], signals: tuple[int, ...] = QUIT_SIGNALS
) -> Callable[[], None]:
    """Call ``on_quit(signum)`` for each of ``signals``; returns a function that puts the
    previous handlers back. Off the main thread (where Python cannot set handlers) nothing is
    installed. A signal the process was told to ignore (``nohup`` ignores SIGHUP) stays
    ignored. Each signal calls ``on_quit`` again, so a handler decides what a second one
    means."""
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        on_quit(signum)

    for sig in signals:
        try:
            if sig != signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # nohup (or a background job) asked to ignore it: keep it ignored
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread, or not settable here
            continue

    def restore() -> None:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)

    return restore
