"""``desklm bench --server URL``: DeskLM's remote path against the bare ``openai`` client.

Both paths send the same request (same messages, sampling and seed, so the server produces the
same tokens) to the same server, interleaved run by run after one warm-up each. Generation speed
is measured the same way for both, from where a caller sees the text: tokens after the first one
over the time from the first to the last piece of text. For DeskLM that is its ``on_text``
callback (after its helper thread and queue); for the bare client, its stream iterator.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import openai

from desklm.engine.backends.remote import NO_KEY, RemoteBackend
from desklm.engine.prompt.chat_format import Msg
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError

PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a "
    "bottle. Keep going until you are told to stop."
)


def _rate(n: int, t_first: float | None, t_last: float | None) -> float | None:
    if n < 2 or t_first is None or t_last is None or t_last <= t_first:
        return None
    return (n - 1) / (t_last - t_first)


def run_desklm(backend: RemoteBackend, messages: list[Msg], sampling: Settings) -> dict[str, Any]:
    times: list[float] = []
    t0 = time.perf_counter()
    _, st = backend.chat(messages, sampling, lambda _p: times.append(time.perf_counter()))
    n = st.completion_tokens
    return {
        "tokens": n,
        "tps": _rate(n, times[0] if times else None, times[-1] if times else None),
        "ttft_s": (times[0] - t0) if times else None,
        "reported_tps": st.gen_tokens_per_s,
        "finish": st.finish_reason,
    }


def run_direct(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    t_first = t_last = None
    chunks = 0
    usage_n = None
    finish = None
    stream = client.chat.completions.create(**body)
    try:
        for chunk in stream:
            if chunk.usage is not None:
                usage_n = chunk.usage.completion_tokens
            for ch in chunk.choices or []:
                if ch.delta is not None and ch.delta.content:
                    now = time.perf_counter()
                    t_first = t_first or now
                    t_last = now
                    chunks += 1
                finish = ch.finish_reason or finish
    finally:
        stream.close()
    n = usage_n if usage_n is not None else chunks
    return {
        "tokens": n,
        "tps": _rate(n, t_first, t_last),
        "ttft_s": (t_first - t0) if t_first else None,
        "finish": finish,
    }


def bench_remote(
    backend: RemoteBackend,
    *,
    runs: int = 3,
    gen_tokens: int = 128,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Interleaved runs of both paths; medians and the ratio DeskLM / direct (target >= 0.97)."""
    if backend.url is None:
        raise DeskLMError("not connected to a server")
    sampling = Settings({"max_tokens": gen_tokens, "seed": 1234, "temperature": 0.8})
    messages: list[Msg] = [
        {"role": "system", "content": "You are a storyteller."},
        {"role": "user", "content": PROMPT},
    ]
    body = backend.request_body(messages, sampling, gen_tokens)
    client = openai.OpenAI(
        base_url=backend.url.base,
        api_key=backend._key or NO_KEY,
        max_retries=0,
        timeout=openai.Timeout(backend.read_timeout, connect=backend.connect_timeout),
    )
    rows: list[dict[str, Any]] = []
    try:
        if say:
            say(f"warming up ({backend.model} at {backend.where})")
        run_desklm(backend, messages, sampling)
        run_direct(client, backend.request_body(messages, sampling, gen_tokens))
        for i in range(runs):
            order = ("desklm", "direct") if i % 2 == 0 else ("direct", "desklm")
            for path in order:
                r = (
                    run_desklm(backend, messages, sampling)
                    if path == "desklm"
                    else run_direct(client, dict(body))
                )
                r.update(path=path, run=i + 1)
                rows.append(r)
                if say:
                    say(
                        f"run {i + 1} {path:6}: {r['tokens']} tokens, "
                        f"{r['tps'] or 0:.1f} tok/s, first token {r['ttft_s'] or 0:.3f} s"
                    )
    except openai.OpenAIError as e:
        from desklm.engine.backends.remote import explain

        raise explain(e, backend.where, model=backend.model) from None
    finally:
        client.close()

    def med(path: str, key: str) -> float | None:
        vals = [r[key] for r in rows if r["path"] == path and r[key] is not None]
        return statistics.median(vals) if vals else None

    d, o = med("desklm", "tps"), med("direct", "tps")
    # each run's two paths ran back to back: their ratio cancels slow drift in the machine's
    # load (other processes), which the ratio of the medians does not
    pairs = []
    for i in range(1, runs + 1):
        a = next((r["tps"] for r in rows if r["run"] == i and r["path"] == "desklm"), None)
        b = next((r["tps"] for r in rows if r["run"] == i and r["path"] == "direct"), None)
        if a and b:
            pairs.append(a / b)
    return {
        "server": backend.where,
        "model": backend.model,
        "runs": runs,
        "gen_tokens": gen_tokens,
        "desklm_tps": d,
        "direct_tps": o,
        "ratio": statistics.median(pairs) if pairs else None,
        "ratio_of_medians": (d / o) if d and o else None,
        "pair_ratios": pairs,
        "desklm_ttft_s": med("desklm", "ttft_s"),
        "direct_ttft_s": med("direct", "ttft_s"),
        "target": 0.97,
        "rows": rows,
    }


def table(out: dict[str, Any]) -> str:
    def f(v: float | None, spec: str = ".1f") -> str:
        return "n/a" if v is None else format(v, spec)

    lines = [
        f"server {out['server']}, model {out['model']}, {out['runs']} run(s) of "
        f"{out['gen_tokens']} tokens",
        f"{'path':<28}{'tok/s':>10}{'first token':>14}",
        f"{'DeskLM (RemoteBackend)':<28}{f(out['desklm_tps']):>10}"
        f"{f(out['desklm_ttft_s'], '.3f') + ' s':>14}",
        f"{'openai client, direct':<28}{f(out['direct_tps']):>10}"
        f"{f(out['direct_ttft_s'], '.3f') + ' s':>14}",
        f"ratio DeskLM / direct: {f(out['ratio'], '.3f')} (median of the back-to-back "
        f"pairs; ratio of the medians {f(out['ratio_of_medians'], '.3f')}; "
        f"target >= {out['target']})",
    ]
    return "\n".join(lines)
