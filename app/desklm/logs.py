"""Logging set-up: one named logger per area, a rotating log file under the platformdirs log dir.

Loggers: ``desklm.engine``, ``desklm.ui``, ``desklm.store``, ``desklm.monitor``, ``desklm.llama``
(llama.cpp's own log, captured). Nothing here writes to ``sys.stderr`` unless it exists: in a
windowed build it can be ``None``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

_configured = False


def log_dir() -> Path:
    from desklm.paths import app_dirs

    return app_dirs().log


class QuietFileHandler(logging.handlers.RotatingFileHandler):
    """The log file handler, which never spills "--- Logging error ---" tracebacks.

    When a record cannot be written (disk full, a read-only or vanished folder), it says so
    once, in one line on stderr (if there is one), and stops logging to the file: the app goes
    on, and the user is not shown a traceback per log line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed: str | None = None
        self._told_bad_record = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError):  # the file cannot take it: stop writing to it
            if self.failed is not None:
                return
            self.failed = err.strerror or str(err)
            stream, self.stream = self.stream, None
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
            self._note(
                f"cannot write the log file {self.baseFilename} ({self.failed}); "
                "logging to it is off for this run"
            )
        elif not self._told_bad_record:  # a bad record (format arguments): drop it, go on
            self._told_bad_record = True
            self._note(
                f"a log message could not be formatted and was dropped "
                f"({type(err).__name__}); see {self.baseFilename}"
            )

    @staticmethod
    def _note(text: str) -> None:
        if sys.stderr is not None:
            with contextlib.suppress(Exception):
                print(f"desklm: note: {text}", file=sys.stderr, flush=True)


def setup_logging(level: int = logging.INFO, *, console: bool = False) -> Path | None:
    """Configure the ``desklm`` logger once. Returns the log file path, or None if unwritable."""
    global _configured
    root = logging.getLogger("desklm")
    if _configured:
        return getattr(root, "_desklm_log_file", None)
    _configured = True
    # the logger's own level, not only the handlers': a debug record below every handler's
    # level would still be built (the caller's frame looked up, the message kept) and then
    # dropped, and the batch logs one per decoding step (3% of the inference thread's time)
    debug_console = console and bool(os.environ.get("DESKLM_DEBUG"))
    root.setLevel(logging.DEBUG if debug_console else level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    path: Path | None = None
    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / "desklm.log"
        fh = QuietFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
        fh.setFormatter(fmt)
        fh.setLevel(level)
        root.addHandler(fh)
    except OSError:
        path = None
    if console and sys.stderr is not None:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("desklm: %(levelname)s: %(message)s"))
        sh.setLevel(logging.WARNING if not os.environ.get("DESKLM_DEBUG") else logging.DEBUG)
        root.addHandler(sh)
    root._desklm_log_file = path  # type: ignore[attr-defined]
    return path


def install_excepthooks(on_error: object | None = None) -> None:
    """Log uncaught exceptions from any thread; optionally forward them to ``on_error``.

    ``on_error(exc_type, exc, tb)`` is how the GUI shows a dialog and keeps going.
    """
    log = logging.getLogger("desklm")

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.error("unhandled exception", exc_info=(exc_type, exc, tb))
        if callable(on_error):
            try:
                on_error(exc_type, exc, tb)
            except Exception:  # the error reporter itself must never kill the app
                log.exception("error handler failed")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
