"""The one inference thread and its job queue.

llama.cpp is not thread safe, and its OpenMP worker pool is measurably slower when the calling
thread changes (fresh threads after the first run: ~13% slower generation). So one thread owns
the model for the life of the process, and everything that wants tokens (``desklm chat``, the
window, the API server) submits a :class:`Job` here. Jobs run one at a time, in order.

A job can be cancelled:

- while queued: it never runs, and its future raises :class:`JobCancelled`;
- while running: :meth:`Job.cancel` sets the job's flag and calls the runner's ``interrupt``
  callable (``ChatEngine.stop``), which stops a reply between tokens and a prompt evaluation
  through llama.cpp's abort callback. The job's function decides what a stopped job returns
  (a turn keeps its partial reply, marked cancelled).

No Qt here: the window's adapter turns job callbacks into signals.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")

T = TypeVar("T")


class JobCancelled(DeskLMError):
    """The job was cancelled before it started."""


class RunnerClosed(DeskLMError):
    """The runner has shut down and takes no more jobs."""


class Job(Generic[T]):
    """A unit of work for the inference thread.

    Attributes:
        id: increasing number, for logs.
        kind: what it is ("turn", "load", "api", ...), for logs and :meth:`Runner.cancel`.
        future: resolves to ``fn(job)``'s result, or its exception.
    """

    def __init__(
        self, runner: Runner, fn: Callable[[Job[T]], T], kind: str, job_id: int, interrupt: bool
    ) -> None:
        self._runner = runner
        self.fn = fn
        self.kind = kind
        self.id = job_id
        self.future: Future[T] = Future()
        self._cancel = threading.Event()
        self._interrupt = interrupt  # cancelling a running job stops the engine

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (checked by the job's own function)."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Cancel: a queued job never runs; a running one is interrupted. Any thread."""
        self._cancel.set()
        if self._runner.current is self and self._interrupt:
            self._runner.interrupt()

    def result(self, timeout: float | None = None) -> T:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind}>"


class Runner:
    """One long-lived thread running submitted jobs in order.

    ``interrupt`` is called (from the cancelling thread) when a running job is cancelled;
    pass the engine's ``stop``. ``max_queued`` bounds the jobs waiting (not counting the
    running one); :meth:`submit` raises :class:`RunnerBusy` past it.
    """

    def __init__(
        self,
        interrupt: Callable[[], None] | None = None,
        *,
        name: str = "inference",
        max_queued: int = 0,
    ) -> None:
        self._interrupt = interrupt
        self._queue: queue.Queue[Job[Any] | None] = queue.Queue()
        self._pending: list[Job[Any]] = []  # queued, not started (mirrors _queue, for counts)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self.max_queued = max_queued
        self.current: Job[Any] | None = None
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    # -- submitting --
    def submit(
        self, fn: Callable[[Job[T]], T], kind: str = "job", *, interrupt: bool = True
    ) -> Job[T]:
        """Queue ``fn(job)`` to run on the inference thread; returns the job at once."""
        with self._lock:
            if self._closed:
                raise RunnerClosed("the model is shutting down")
            if self.max_queued and len(self._pending) >= self.max_queued:
                raise RunnerBusy(f"{len(self._pending)} requests are already waiting")
            job: Job[T] = Job(self, fn, kind, next(self._ids), interrupt)
            self._pending.append(job)
        self._queue.put(job)
        return job

    def call(self, fn: Callable[[], T], kind: str = "call", timeout: float | None = None) -> T:
        """Run ``fn()`` on the inference thread and wait for its result (re-raising its error).
        From the inference thread itself it runs directly (no deadlock)."""
        if threading.current_thread() is self.thread:
            return fn()
        return self.submit(lambda _job: fn(), kind).result(timeout)

    def interrupt(self) -> None:
        if self._interrupt is not None:
            try:
                self._interrupt()
            except Exception:  # an interrupt must never fail the caller (often the UI thread)
                log.exception("interrupt failed")

    # -- state --
    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending(self) -> list[Job[Any]]:
        with self._lock:
            return list(self._pending)

    @property
    def busy(self) -> bool:
        return self.current is not None or self.queued > 0

    def cancel(self, kinds: tuple[str, ...] | None = None) -> int:
        """Cancel the running job and every queued one (of ``kinds``, or all); returns how many."""
        with self._lock:
            jobs = [
                j
                for j in ([self.current] if self.current else []) + self._pending
                if kinds is None or j.kind in kinds
            ]
        for j in jobs:
            j.cancel()
        return len(jobs)

    # -- the thread --
    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job in self._pending:
                    self._pending.remove(job)
                if job.cancelled:
                    job.future.set_exception(JobCancelled("cancelled before it started"))
                    continue
                self.current = job
            if not job.future.set_running_or_notify_cancel():  # pragma: no cover
                self.current = None
                continue
            try:
                result = job.fn(job)
            except BaseException as e:  # delivered to whoever waits on the future
                if not isinstance(e, DeskLMError):
                    log.error("job %r failed", job, exc_info=e)
                job.future.set_exception(e)
            else:
                job.future.set_result(result)
            finally:
                with self._lock:
                    self.current = None

    def shutdown(self, timeout: float = 2.0, *, cancel: bool = True) -> bool:
        """Stop taking jobs, cancel everything (unless ``cancel`` is False: then the jobs
        already queued still run), and join the thread. True if it ended in time."""
        with self._lock:
            self._closed = True
        if cancel:
            self.cancel()
        self._queue.put(None)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)
        alive = self.thread.is_alive() and threading.current_thread() is not self.thread
        if alive:
            log.error("the inference thread did not stop within %.1f s", timeout)
        return not alive


class RunnerBusy(DeskLMError):
    """Too many jobs are already waiting."""


class OnRunner:
    """A session whose model work runs as jobs on a :class:`Runner`, for callers that drive it
    from their own thread (``desklm chat``): the terminal submits its turns to the one
    inference thread exactly as the window and the API server do. Other attributes, and
    ``stop()`` (which only sets an Event), pass straight through."""

    ON_RUNNER = frozenset(
        {
            "load",
            "send",
            "run_command",
            "apply_settings",
            "open_conversation",
            "new_conversation",
            "close",
            "regenerate",
            "edit_and_resend",
        }
    )

    def __init__(self, target: Any, runner: Runner) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in self.ON_RUNNER and callable(value):
            return lambda *a, **k: self._runner.call(lambda: value(*a, **k), name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)
