"""Background work for the UI: one helper for everything that is not the model's.

The model's thread is the engine's Runner (owned by the controller). Everything else that must
stay off the UI thread (a file walk, an HTTP request, the keyring, binding a port, a search)
runs through :class:`BackgroundOp`, Anki's ``QueryOp`` idea::

    BackgroundOp(lambda: hub.list_gguf_files(repo), parent=self) \\
        .success(self._on_files).failure(self._on_failed).run()

``op`` runs on a pool thread; ``success(result)`` and ``failure(exc)`` run on the UI thread,
and only while ``parent`` is alive (a dialog closed meanwhile is never called back). Without a
``failure`` callback an error is *shown* (:func:`set_error_reporter`, which the window points at
its error dialog; a :class:`DeskLMError` is its one-line reason, anything else "internal error"
and the traceback in the log), never silently dropped. ``with_progress(fn)`` passes ``op`` a
``report(value)`` function whose values reach ``fn`` on the UI thread. ``latest_only(key)``
drops the result of an op that a newer op with the same key has overtaken (search as you type).

The resource sampler keeps its own QThread (:class:`SamplerWorker`): it ticks on a timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, QRunnable, Qt, QThread, QThreadPool, QTimer, Signal, Slot

from desklm.engine import DeskLMError, ResourceSampler

log = logging.getLogger("desklm.ui")

T = TypeVar("T")

_pool: QThreadPool | None = None
_reporter: Callable[[str], None] | None = None
_latest: dict[str, int] = {}
_serial = 0
_live: set[BackgroundOp[Any]] = set()  # ops in flight, kept alive until they report


def pool() -> QThreadPool:
    """The UI's one pool of background threads (4: a walk, a probe, a search, a download)."""
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setObjectName("desklm-ui")
        _pool.setMaxThreadCount(4)
    return _pool


def set_error_reporter(fn: Callable[[str], None] | None) -> None:
    """Where an op's error goes when the op has no ``failure`` callback (the window's dialog)."""
    global _reporter
    _reporter = fn


def reason(exc: BaseException) -> str:
    """A one-line reason for the user: a DeskLMError's text, else "internal error: ..."."""
    if isinstance(exc, DeskLMError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc} (details in the log file)"


def wait_idle(timeout_s: float = 5.0) -> bool:
    """Wait until no op runs (shutdown, tests). True if the pool went idle in time."""
    return pool().waitForDone(int(timeout_s * 1000))


class _Relay(QObject):
    """Lives on the UI thread; the pool thread emits, its slots (queued) run on the UI
    thread and hand the outcome to the op."""

    finished = Signal(bool, object)  # (ok, result or exception)
    progressed = Signal(object)

    def __init__(self, op: BackgroundOp[Any]) -> None:
        super().__init__()
        self.op = op
        self.finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self.progressed.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)

    @Slot(bool, object)
    def _on_finished(self, ok: bool, value: Any) -> None:
        self.op._finished(ok, value)

    @Slot(object)
    def _on_progress(self, value: Any) -> None:
        self.op._progressed(value)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], None]) -> None:
        super().__init__()
        self.fn = fn
        self.setAutoDelete(True)

    def run(self) -> None:
        self.fn()


class BackgroundOp(Generic[T]):
    """``op`` off the UI thread, its outcome on it. See the module docstring."""

    def __init__(self, op: Callable[..., T], parent: QObject | None = None, name: str = "") -> None:
        self.op = op
        self.parent = parent
        self.name = name or getattr(op, "__name__", "op")
        self._success: Callable[[T], None] | None = None
        self._failure: Callable[[BaseException], None] | None = None
        self._progress: Callable[[Any], None] | None = None
        self._key = ""
        self._serial = 0
        self.relay = _Relay(self)
        self.done = threading.Event()  # set when op has returned or raised

    def success(self, fn: Callable[[T], None]) -> BackgroundOp[T]:
        self._success = fn
        return self

    def failure(self, fn: Callable[[BaseException], None]) -> BackgroundOp[T]:
        self._failure = fn
        return self

    def with_progress(self, fn: Callable[[Any], None]) -> BackgroundOp[T]:
        """``op`` is called as ``op(report)``; each ``report(value)`` reaches ``fn``."""
        self._progress = fn
        return self

    def latest_only(self, key: str) -> BackgroundOp[T]:
        self._key = key
        return self

    def run(self) -> BackgroundOp[T]:
        global _serial
        _serial += 1
        self._serial = _serial
        if self._key:
            _latest[self._key] = self._serial
        _live.add(self)
        pool().start(_Task(self._body))
        return self

    def _body(self) -> None:  # on a pool thread: touches no widget
        t0 = time.perf_counter()
        try:
            if self._progress is not None:
                result = self.op(self.relay.progressed.emit)
            else:
                result = self.op()
        except BaseException as e:
            self.done.set()
            self.relay.finished.emit(False, e)
        else:
            self.done.set()
            self.relay.finished.emit(True, result)
        log.debug("background %s took %.3f s", self.name, time.perf_counter() - t0)

    def _alive(self) -> bool:
        if self.parent is None:
            return True
        import shiboken6

        return bool(shiboken6.isValid(self.parent))

    def _progressed(self, value: Any) -> None:
        if self._progress is not None and self._alive():
            self._progress(value)

    def _finished(self, ok: bool, value: Any) -> None:
        _live.discard(self)
        if not self._alive():
            return
        if self._key and _latest.get(self._key) != self._serial:
            return  # overtaken by a newer op with the same key
        if ok:
            if self._success is not None:
                self._success(value)
            return
        if not isinstance(value, DeskLMError):
            log.error("background %s failed", self.name, exc_info=value)
        if self._failure is not None:
            self._failure(value)
        elif _reporter is not None:
            _reporter(reason(value))
        else:
            log.warning("%s: %s", self.name, reason(value))


def run_in_background(
    op: Callable[[], T],
    success: Callable[[T], None] | None = None,
    failure: Callable[[BaseException], None] | None = None,
    parent: QObject | None = None,
) -> BackgroundOp[T]:
    """Shorthand for ``BackgroundOp(op, parent).success(..).failure(..).run()``."""
    bop: BackgroundOp[T] = BackgroundOp(op, parent)
    if success is not None:
        bop.success(success)
    if failure is not None:
        bop.failure(failure)
    return bop.run()


class SamplerWorker(QObject):
    """Samples resources about twice a second on its own thread.

    Signals:
        sampled(object): a monitor.Snapshot.
    """

    sampled = Signal(object)
    serverSampled = Signal(object)  # a server's /metrics readings, every SERVER_EVERY ticks

    SERVER_EVERY = 4  # with the default 500 ms: the server's /metrics about every 2 s

    def __init__(self, interval_ms: int = 500) -> None:
        super().__init__()
        self.interval_ms = interval_ms
        self.server: tuple[str, str] = ("", "")  # (URL, API key) of a server to watch
        self._server_ticks = 0
        self.sampler: ResourceSampler | None = None
        self.timer: QTimer | None = None
        self.cpu_seconds = 0.0  # CPU time spent sampling, for the benchmark
        self.samples = 0

    @Slot()
    def start(self) -> None:
        self.sampler = ResourceSampler()
        self.timer = QTimer(self)
        self.timer.setInterval(self.interval_ms)
        self.timer.timeout.connect(self.tick)
        self.timer.start()
        self.tick()

    @Slot()
    def tick(self) -> None:
        assert self.sampler is not None
        t0 = time.thread_time()
        snap = self.sampler.sample()
        self.cpu_seconds += time.thread_time() - t0
        self.samples += 1
        self.sampled.emit(snap)
        url, key = self.server
        self._server_ticks += 1
        if url and self._server_ticks % self.SERVER_EVERY == 1:
            from desklm.engine import server_metrics

            # one GET with a short timeout, on this thread: never the UI's or the model's
            self.serverSampled.emit(server_metrics(url, key or None, timeout=1.0))

    @Slot(str, str)
    def watch_server(self, url: str, key: str) -> None:
        """Read this server's /metrics from now on ("" stops)."""
        self.server = (url, key)
        self._server_ticks = 0  # the first reading comes with the next tick

    @Slot()
    def stop(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        if self.sampler is not None:
            self.sampler.close()


def start_thread(worker: QObject, name: str) -> QThread:
    thread = QThread()
    thread.setObjectName(name)
    worker.moveToThread(thread)
    thread.start()
    return thread
