"""``desklm bench --api``: what serving through the API costs against direct generation.

Both paths run on the same loaded engine, the same inference thread, settings and prompt, with
the KV cache cleared before every run and end-of-generation ignored, so each run generates
exactly ``gen_tokens`` tokens. Runs are interleaved (direct, API, direct, API, ...).

- direct: a job on the runner calling ``ChatEngine.generate``, as the window's turns do;
  time to first token from the submit to the first text piece.
- API: ``POST /v1/chat/completions`` with ``stream: true`` over a kept-alive HTTP connection
  on 127.0.0.1; time to first token from sending the request to receiving the first content
  chunk.

Generation speed on both is pieces of text per second between the first and the last piece
(what a reader sees), in tokens: ``(tokens - 1) / (t_last - t_first)``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def _direct_run(runner: Any, eng: Any, settings: Any, gen_tokens: int) -> dict[str, float]:
    runner.call(eng.reset, "bench")
    times: list[float] = []

    def job(_job: Any) -> Any:
        tokens = eng.prompt_tokens(PROMPT)
        return eng.generate(tokens, settings, lambda _t: times.append(time.perf_counter()))

    t0 = time.perf_counter()
    _reply, stats = runner.submit(job, "bench").result(600)
    n = stats.completion_tokens
    return {
        "ttft_ms": (times[0] - t0) * 1000,
        "tok_s": (n - 1) / (times[-1] - times[0]),
        "engine_tok_s": stats.gen_tokens_per_s or 0.0,
        "tokens": n,
    }


def _api_run(
    client: Any, url: str, runner: Any, eng: Any, gen_tokens: int, sampling: dict[str, Any]
) -> dict[str, float]:
    runner.call(eng.reset, "bench")
    body = {
        "model": "m",
        "messages": PROMPT,
        "max_tokens": gen_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling,
    }
    times: list[float] = []
    n = 0
    t0 = time.perf_counter()
    with client.stream("POST", url + "/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"API answered {r.status_code}: {r.text[:200]}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                times.append(time.perf_counter())
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
    return {
        "ttft_ms": (times[0] - t0) * 1000,
        "tok_s": (n - 1) / (times[-1] - times[0]),
        "tokens": n,
    }


def _thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds the thread ``native_id`` of this process has used (0 where unknown)."""
    import psutil

    for t in psutil.Process().threads():
        if t.id == native_id:
            return float(t.user_time + t.system_time)
    return 0.0


def run_api_bench(
    model: Path,
    settings: Any,
    *,
    runs: int = 3,
    gen_tokens: int = 128,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure both paths; returns medians, the ratio and the added time to first token."""
    import httpx

    from desklm.engine import ChatEngine, Runner
    from desklm.server.server import ApiServer

    say = say or (lambda _m: None)
    s = settings.copy()
    s.set("max_tokens", gen_tokens)
    eng = ChatEngine()
    runner = Runner(interrupt=eng.stop)
    server = ApiServer(runner, lambda: eng, lambda: s)
    try:
        info = runner.call(lambda: eng.load(model, s), "load")
        eng.ignore_eos = True  # exactly gen_tokens tokens on both paths
        url = server.start(port=0)
        sampling = {k: s[k] for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")}
        direct: list[dict[str, float]] = []
        api: list[dict[str, float]] = []
        with httpx.Client(timeout=600) as client:
            _api_run(client, url, runner, eng, 8, sampling)  # warm up both paths
            _direct_run(runner, eng, s, 8)
            thread = server._thread
            tid = thread.native_id if thread is not None else None
            for i in range(runs):
                direct.append(_direct_run(runner, eng, s, gen_tokens))
                cpu0 = _thread_cpu_s(tid)
                api.append(_api_run(client, url, runner, eng, gen_tokens, sampling))
                api[-1]["server_cpu_ms"] = (_thread_cpu_s(tid) - cpu0) * 1000
                say(
                    f"run {i + 1}/{runs}: direct {direct[-1]['tok_s']:.1f} tok/s, first token "
                    f"{direct[-1]['ttft_ms']:.1f} ms; API {api[-1]['tok_s']:.1f} tok/s, first "
                    f"token {api[-1]['ttft_ms']:.1f} ms"
                )
    finally:
        server.stop()
        runner.shutdown(5)
        eng.unload()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    d_tps, a_tps = med(direct, "tok_s"), med(api, "tok_s")
    d_ttft, a_ttft = med(direct, "ttft_ms"), med(api, "ttft_ms")
    return {
        "model": info.path.name,
        "gen_tokens": gen_tokens,
        "runs": runs,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "n_threads": s["n_threads"],
        "n_ctx": s["n_ctx"],
        "direct_tok_s": round(d_tps, 2),
        "api_tok_s": round(a_tps, 2),
        "ratio": round(a_tps / d_tps, 4) if d_tps else None,
        "direct_ttft_ms": round(d_ttft, 2),
        "api_ttft_ms": round(a_ttft, 2),
        "added_ttft_ms": round(a_ttft - d_ttft, 2),
        # CPU the server's own thread spent per request and per token (load-independent)
        "server_cpu_ms_per_request": round(med(api, "server_cpu_ms"), 2),
        "server_cpu_ms_per_token": round(med(api, "server_cpu_ms") / gen_tokens, 3),
        "direct_runs": direct,
        "api_runs": api,
    }


def table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"model {r['model']}, {r['gen_tokens']} tokens x {r['runs']} runs (median), "
            f"{r['n_threads']} threads; {r['cpus']} CPUs, load average {r['load_avg_1m']} "
            "(numbers from a busy machine are noise)",
            f"{'':<24}{'direct':>12}{'API':>12}",
            f"{'generation tok/s':<24}{r['direct_tok_s']:>12.2f}{r['api_tok_s']:>12.2f}"
            f"   ratio {r['ratio']:.3f} (target >= 0.97)",
            f"{'first token ms':<24}{r['direct_ttft_ms']:>12.1f}{r['api_ttft_ms']:>12.1f}"
            f"   added {r['added_ttft_ms']:.1f} ms (target <= 20)",
            f"server thread CPU: {r['server_cpu_ms_per_request']:.1f} ms per request, "
            f"{r['server_cpu_ms_per_token']:.3f} ms per token",
        ]
    )
