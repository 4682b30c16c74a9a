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

    def __init__(self, interval_ms: int = 500) -> None:
        super().__init__()
        self.interval_ms = interval_ms
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
