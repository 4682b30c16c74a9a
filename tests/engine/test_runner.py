"""The inference runner: one thread, jobs in order, cancellation queued and running."""

from __future__ import annotations

import threading
import time

import pytest

from desklm.engine.runner import JobCancelled, Runner, RunnerBusy, RunnerClosed

from ..conftest import small_settings


def test_jobs_run_in_order_on_one_long_lived_thread() -> None:
    r = Runner()
    seen: list[tuple[int, str]] = []
    jobs = [
        r.submit(lambda _j, i=i: seen.append((i, threading.current_thread().name)))
        for i in range(20)
    ]
    for j in jobs:
        j.result(5)
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"inference"}
    assert r.shutdown()


def test_a_job_error_reaches_the_caller_and_the_runner_goes_on() -> None:
    r = Runner()
    bad = r.submit(lambda _j: 1 / 0)
    good = r.submit(lambda _j: 42)
    with pytest.raises(ZeroDivisionError):
        bad.result(5)
    assert good.result(5) == 42
    r.shutdown()


def test_cancel_a_queued_job_and_a_running_one() -> None:
    stopped = threading.Event()
    r = Runner(interrupt=stopped.set)
    gate = threading.Event()

    def long(job):  # runs until interrupted, like a reply
        gate.set()
        while not stopped.is_set():
            time.sleep(0.005)
        return "partial" if job.cancelled else "full"

    running = r.submit(long, "turn")
    queued = r.submit(lambda _j: "never", "turn")
    assert gate.wait(5)
    assert r.queued == 1 and r.current is running
    queued.cancel()
    running.cancel()
    assert running.result(5) == "partial"
    with pytest.raises(JobCancelled):
        queued.result(5)
    assert not r.busy
    r.shutdown()


def test_bounded_queue_and_closed_runner() -> None:
    r = Runner(max_queued=1)
    gate = threading.Event()
    r.submit(lambda _j: gate.wait(5))
    time.sleep(0.05)  # the first job is running, not queued
    r.submit(lambda _j: None)
    with pytest.raises(RunnerBusy):
        r.submit(lambda _j: None)
    gate.set()
    assert r.shutdown()
    with pytest.raises(RunnerClosed):
        r.submit(lambda _j: None)


def test_call_from_the_runner_thread_does_not_deadlock() -> None:
    r = Runner()
    assert r.submit(lambda _j: r.call(lambda: "inner")).result(5) == "inner"
    r.shutdown()


def test_cancel_stops_a_real_reply_on_the_model(model_path) -> None:
    """Cancelling a running turn interrupts llama.cpp between tokens: a partial reply, marked."""
    from desklm.engine.chat.session import ChatSession

    s = ChatSession(model_path, small_settings(max_tokens=400, n_ctx=1024))
    r = Runner(interrupt=s.stop)
    r.submit(lambda _j: s.load()).result(60)
    first = threading.Event()
    job = r.submit(
        lambda _j: s.send("Tell me a very long story.", on_text=lambda _t: first.set()), "turn"
    )
    assert first.wait(60)
    job.cancel()
    result = job.result(30)
    assert result.stats.finish_reason == "cancelled"
    assert result.stats.completion_tokens < 400
    assert r.shutdown(5)
    s.engine.unload()
