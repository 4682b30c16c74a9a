"""The resource sampler on its own QThread (the model's thread is the engine's Runner)."""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from desklm.engine import ResourceSampler

log = logging.getLogger("desklm.ui")


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
