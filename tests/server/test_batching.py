"""Several API clients at once: their requests are sequences of one batch (parallel slots).

Real server on 127.0.0.1, the official `openai` client, the embedded model; the ``served``
fixture loads it with the default parallel 4.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import openai
import psutil
import pytest

from ..batch_checks import assert_text_same_or_near_tie

PROMPTS = ["Name a fruit.", "Name a colour.", "Write a haiku about rain.", "Count to five."]


def _batch(served: Any) -> Any:
    from desklm.engine import batch_for

    return batch_for(served.engine)  # the server makes it at its first request; so may we


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=180)


def _chat(
    url: str,
    content: str,
    *,
    stream: bool,
    max_tokens: int = 16,
    log: list[Any] | None = None,
    **kw: Any,
) -> str:
    c = _client(url)
    messages = [{"role": "user", "content": content}]
    if not stream:
        r = c.chat.completions.create(
            model="m", messages=messages, temperature=0, seed=7, max_tokens=max_tokens, **kw
        )
        return r.choices[0].message.content or ""
    text = ""
    for ch in c.chat.completions.create(
        model="m",
        messages=messages,
        temperature=0,
        seed=7,
        max_tokens=max_tokens,
        stream=True,
        **kw,
    ):
        piece = ch.choices[0].delta.content if ch.choices else None
        if piece:
            if log is not None:
                log.append((content, time.monotonic()))
            text += piece
    return text


def _prompt_tokens(served: Any, content: str) -> list[int]:
    return served.runner.call(
        lambda: served.engine.prompt_tokens([{"role": "user", "content": content}])
    )


def _same(served: Any, content: str, a: str, b: str) -> None:
    assert_text_same_or_near_tie(
        served.engine, _prompt_tokens(served, content), a, b, call=lambda f: served.runner.call(f)
    )


def _idle(served: Any, within: float = 10.0) -> bool:
    t0 = time.monotonic()
    b = _batch(served)
    while (
        served.runner.busy or (b is not None and b.has_work())
    ) and time.monotonic() - t0 < within:
        time.sleep(0.01)
    return not served.runner.busy


def _forget_slots(served: Any) -> None:
    """No slot keeps a cached prompt (each run starts alike)."""
    import llama_cpp

    def forget() -> None:
        b = _batch(served)
        for s in b.slots:
            llama_cpp.llama_memory_seq_rm(b.mem, s.seq_id, -1, -1)
            s.kv = []

    served.runner.call(forget)


def _concurrently(fns: list[Any]) -> list[Any]:
    out: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = fns[i]()
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not errors, errors
    return out


@pytest.mark.parametrize("stream", [True, False])
def test_concurrent_requests_get_the_same_text_as_one_at_a_time(served: Any, stream: bool) -> None:
    solo = []
    for p in PROMPTS:
        _forget_slots(served)
        solo.append(_chat(served.url, p, stream=stream))
    _forget_slots(served)
    log: list[Any] = []
    steps = _batch(served).stats().steps_total
    together = _concurrently(
        [lambda p=p: _chat(served.url, p, stream=stream, log=log) for p in PROMPTS]
    )
    for p, a, b in zip(PROMPTS, solo, together, strict=True):
        _same(served, p, a, b)
    assert all(together)
    assert _batch(served).stats().steps_total > steps
    if stream:  # they streamed at once: one's first piece came before another's last
        first = {p: min(t for q, t in log if q == p) for p in PROMPTS}
        last = {p: max(t for q, t in log if q == p) for p in PROMPTS}
        assert (
            min(last.values()) > max(first.values()) - 0.001
            or sum(first[p] < max(last.values()) for p in PROMPTS) >= 2
        )
        assert max(first.values()) < max(last.values())
    assert _idle(served)
    assert _batch(served).busy == 0


def test_cancelling_one_stream_mid_batch_leaves_the_others_intact(served: Any) -> None:
    others = PROMPTS[1:]
    solo = []
    for p in others:
        _forget_slots(served)
        solo.append(_chat(served.url, p, stream=True, max_tokens=24))
    _forget_slots(served)
    n_records = len(served.server.log)
    cut = threading.Event()

    def victim() -> int:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 300,
            "stream": True,
            "temperature": 0,
        }
        pieces = 0
        with (
            httpx.Client(timeout=120) as h,
            h.stream("POST", served.url + "/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    pieces += 1
                    if pieces == 3:
                        cut.set()
                        break  # the client goes away mid-reply
        return pieces

    results = _concurrently(
        [victim, *[lambda p=p: _chat(served.url, p, stream=True, max_tokens=24) for p in others]]
    )
    assert results[0] == 3 and cut.is_set()
    for p, a, b in zip(others, solo, results[1:], strict=True):
        _same(served, p, a, b)
    assert _idle(served)
    recs = list(served.server.log)[n_records:]
    gone = [r for r in recs if r.status == 499]
    assert len(gone) == 1 and gone[0].completion_tokens < 300
    assert _batch(served).busy == 0


def test_a_grammar_constrained_request_batched_with_a_free_one(served: Any) -> None:
    _forget_slots(served)
    free_solo = _chat(served.url, PROMPTS[2], stream=False, max_tokens=24)
    _forget_slots(served)

    def constrained() -> Any:
        return _client(served.url).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Describe a cat as JSON."}],
            temperature=0,
            max_tokens=40,
            response_format={"type": "json_object"},
        )

    def schema() -> Any:
        return _client(served.url).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Give a number."}],
            temperature=0,
            max_tokens=12,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "n",
                    "schema": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}},
                        "required": ["n"],
                    },
                },
            },
        )

    r_json, r_schema, free = _concurrently(
        [constrained, schema, lambda: _chat(served.url, PROMPTS[2], stream=False, max_tokens=24)]
    )
    text = r_json.choices[0].message.content
    if r_json.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict | list | str | int | float | bool | None)
    else:
        assert text.lstrip()[:1] in '{["-0123456789tfn'
    s = r_schema.choices[0].message.content
    if r_schema.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(s)["n"], int)
    else:
        assert s.lstrip().startswith("{")
    _same(served, PROMPTS[2], free_solo, free)


KILLED_CLIENT = """
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0, timeout=120)
for ch in c.chat.completions.create(model="m", messages=[{"role": "user",
        "content": "Write a very long story about the sea."}], max_tokens=400, stream=True):
    if ch.choices and ch.choices[0].delta.content:
        print("piece", flush=True)
"""


def test_a_killed_client_frees_its_slot(served: Any) -> None:
    n_records = len(served.server.log)
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, served.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        for _ in range(3):
            assert p.stdout.readline().strip() == "piece"
        assert _batch(served).busy == 1
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    t0 = time.monotonic()
    while _batch(served).busy and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    freed = time.monotonic() - t0
    assert _batch(served).busy == 0, "the slot was not freed"
    assert freed < 5
    slot_kv = served.runner.call(lambda: [_batch(served).kv_tokens(i) for i in range(4)])
    assert slot_kv == [0, 0, 0, 0] or sum(slot_kv) < 400  # the cancelled one's KV is gone
    assert _idle(served)
    recs = list(served.server.log)[n_records:]
    assert [r.status for r in recs] == [499]
    assert 3 <= recs[0].completion_tokens < 400
    # and the slot answers the next request
    assert _chat(served.url, PROMPTS[0], stream=False, max_tokens=4)


def test_memory_is_returned_after_a_burst(served: Any) -> None:
    """Twice as many clients as slots, twice: the second burst leaves RSS where the first
    left it; afterwards no slot is busy, nothing waits, and each slot's KV is bounded."""
    proc = psutil.Process()

    def burst() -> list[str]:
        return _concurrently(
            [
                lambda i=i: _chat(
                    served.url, PROMPTS[i % 4] + f" ({i})", stream=i % 2 == 0, max_tokens=12
                )
                for i in range(8)
            ]
        )

    assert all(burst())
    assert _idle(served)
    before = proc.memory_info().rss
    assert all(burst())
    assert _idle(served)
    after = proc.memory_info().rss
    stats = _batch(served).stats()
    assert stats.busy == 0 and stats.waiting == 0
    assert (after - before) < 40 * 2**20, f"RSS grew {(after - before) / 2**20:.0f} MB"
    kv = served.runner.call(lambda: [_batch(served).kv_tokens(i) for i in range(4)])
    assert all(0 <= n < served.engine.n_ctx for n in kv)


def test_metrics_show_the_slots(served: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def read() -> dict[str, float]:
        text = httpx.get(served.base + "/metrics", timeout=30).text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if not s.labels:
                    out[s.name] = s.value
        return out

    idle_ = read()
    assert idle_["desklm_slots"] == 4 and idle_["desklm_slots_busy"] == 0
    assert idle_["desklm_requests_waiting"] == 0
    seen: list[dict[str, float]] = []
    lines: list[str] = []  # what the window's API panel shows, read the way it reads it
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            seen.append(read())
            lines.append(served.server.state.text)
            time.sleep(0.05)

    t = threading.Thread(target=scrape)
    t.start()
    try:
        _concurrently(
            [lambda p=p: _chat(served.url, p, stream=True, max_tokens=24) for p in PROMPTS]
        )
    finally:
        stop.set()
        t.join(30)
    assert max(m["desklm_slots_busy"] for m in seen) >= 2
    assert max(m.get("desklm_tokens_per_second", 0) for m in seen) > 0
    assert any(" of 4 at once, " in t and "tok/s together" in t for t in lines), lines[-3:]
    after = read()
    assert after["desklm_tokens_generated_total"] > idle_["desklm_tokens_generated_total"]
    assert after["desklm_batch_requests_total"] >= idle_["desklm_batch_requests_total"] + 4
    state = served.server.state
    assert state.slots == 4 and "listening on" in state.text


def test_the_window_reply_runs_while_four_streams_do(served: Any) -> None:
    """The window's chat is one of the sequences: with four API streams running, a window
    turn starts at once and writes while they go on (their pieces arrive between its first
    and its last), its text the same as alone; the streams end whole."""
    from ..conftest import small_settings

    eng = served.engine
    settings = small_settings(max_tokens=40, temperature=0)

    def window(on_text: Any) -> Any:
        tokens = eng.prompt_tokens([{"role": "user", "content": "Name three colours."}])
        return served.runner.submit(lambda _j: eng.generate(tokens, settings, on_text), "turn")

    alone = window(None).result(120)
    pieces: dict[int, list[float]] = {i: [] for i in range(4)}

    def stream(i: int) -> int:
        body = {"model": "m", "prompt": f"{i + 1}, {i + 2}, {i + 3},", "max_tokens": 120}
        c = _client(served.url)
        n = 0
        for ch in c.completions.create(**body, temperature=0, stream=True):
            if ch.choices and ch.choices[0].text:
                pieces[i].append(time.monotonic())
                n += 1
        return n

    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.extend(_concurrently([lambda i=i: stream(i) for i in range(4)]))
    )
    t.start()
    deadline = time.monotonic() + 120
    while min(len(p) for p in pieces.values()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _batch(served).busy == 4
    times: list[float] = []
    asked = time.monotonic()
    reply, stats = window(lambda _p: times.append(time.monotonic())).result(120)
    t.join(300)
    assert (reply, stats.completion_tokens) == (alone[0], alone[1].completion_tokens)
    assert len(times) >= 2
    # its speed was a share of the model's: the stats say with how many (the gauge shows it)
    assert alone[1].shared_with == 0 and 1 <= stats.shared_with <= 4
    during = [x for p in pieces.values() for x in p if times[0] < x < times[-1]]
    assert len(during) >= 4, "the streams paused while the window's reply was written"
    assert all(n >= 3 for n in out) and len(out) == 4
    # the streams were still going when the window's reply began (it did not wait for them)
    assert times[0] < min(p[-1] for p in pieces.values())
    print(f"window first piece {times[0] - asked:.3f} s after asking, 4 streams running")
    assert _idle(served)
