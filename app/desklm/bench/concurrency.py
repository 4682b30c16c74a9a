"""``desklm bench --concurrency 1,2,4,8``: many clients at once, against llama.cpp's own server.

For each number of clients ``c``, ``c`` requests start together and each generates exactly
``gen_tokens`` tokens (end-of-generation ignored), on:

- DeskLM: ``desklm serve``'s API in this process (the model loaded with ``parallel`` slots),
  streaming ``POST /v1/chat/completions`` over HTTP on 127.0.0.1;
- unbatched: DeskLM's API again, from a second copy of the model loaded with ``parallel`` 1
  (the path before batching: each request a job of its own, ``Llama.generate`` alone), the
  same HTTP, server and clients - what batching changed, and nothing else;
- raw: llama-cpp-python's ``Llama`` alone, one stream, answering the ``c`` requests one after
  another (what a single-stream server does, without the HTTP): request ``i``'s first token
  waits for the ones before it;
- peer (``--peer PATH``): a ``llama-server`` binary, started here with ``-np parallel`` and a
  context of ``n_ctx x parallel`` (so each slot has ``n_ctx``, as DeskLM's), same threads,
  the same streaming requests (``ignore_eos``).

Every request to either server carries the same sampling parameters (temperature 0 and the
settings' top-k, top-p, min-p and repeat penalty; raw uses them too), so no server is measured
with cheaper defaults than the other.

The clients of both servers run in a child process of their own (as the apps that use a
server do), each a thread streaming with httpx.

And the window's chat while ``c`` DeskLM streams run (``c`` >= 1): once every stream has
its first token, a window turn (a runner job calling ``ChatEngine.generate``, as the window
does) asks for 16 tokens; its time to first token is measured from the moment it is asked.

Per system and ``c``: aggregate tokens/s (all tokens / wall time from the first request sent to
the last token), median and p95 time to first token (from sending), per-request tokens/s
(median of ``(tokens - 1) / (last - first token)``). Rounds are interleaved (DeskLM, peer, raw
for each ``c``). The ratios the issue asks for: at 4 clients DeskLM's aggregate over the
peer's (target >= 0.9) and its p95 first token over the peer's (target <= 2); with 1 client
DeskLM's rate over raw's (target >= 0.97), and over unbatched's (the same target: with the
HTTP on both sides, what batching costs one stream).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desklm.errors import DeskLMError

PROMPT = "Write a short story about a lighthouse keeper"


def _messages(i: int, round_: int) -> list[dict[str, str]]:
    # a different prompt per client and round: no request is answered from a cached prompt
    return [{"role": "user", "content": f"{PROMPT} (story {round_}.{i})."}]


def _p95(xs: list[float]) -> float:
    if len(xs) == 1:
        return xs[0]
    return float(statistics.quantiles(xs, n=20, method="inclusive")[-1])


def _summary(rows: list[dict[str, float]], wall: float) -> dict[str, float]:
    tokens = sum(r["tokens"] for r in rows)
    ttft = [r["ttft_s"] for r in rows]
    rates = [r["tok_s"] for r in rows if r["tok_s"] > 0]
    return {
        "aggregate_tok_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_median_ms": round(statistics.median(ttft) * 1000, 1),
        "ttft_p95_ms": round(_p95(ttft) * 1000, 1),
        "per_request_tok_s": round(statistics.median(rates), 2) if rates else 0.0,
        "tokens": tokens,
        "wall_s": round(wall, 3),
    }


# --- the HTTP clients (DeskLM and the peer: the same requests) ----------------------------------
def _stream_one(
    h: Any,
    url: str,
    messages: list[dict[str, str]],
    gen_tokens: int,
    extra: dict[str, Any],
    t_start: float,
    on_first: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One streaming request on the httpx client ``h`` (made before the clock starts)."""
    body = {
        "model": "m",
        "messages": messages,
        "max_tokens": gen_tokens,
        "stream": True,
        "temperature": 0,
        "stream_options": {"include_usage": True},
        **extra,
    }
    times: list[float] = []
    n = 0
    with h.stream("POST", url + "/chat/completions", json=body) as r:
        if r.status_code != 200:
            r.read()
            raise DeskLMError(f"{url} answered {r.status_code}: {r.text[:200]}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                times.append(time.perf_counter())
                if len(times) == 1 and on_first is not None:
                    on_first()
            if chunk.get("usage"):
                n = int(chunk["usage"]["completion_tokens"])
    if not times:
        raise DeskLMError(f"{url} streamed no text")
    n = n or len(times)
    span = times[-1] - times[0]
    return {
        "ttft_s": times[0] - t_start,
        "tokens": n,
        "end": times[-1],
        "tok_s": (n - 1) / span if n > 1 and span > 0 else 0.0,
    }


def _http_round(
    url: str,
    c: int,
    gen_tokens: int,
    round_: int,
    extra: dict[str, Any],
    on_first: Callable[[], None] | None = None,
) -> dict[str, float]:
    import httpx

    rows: list[dict[str, float] | None] = [None] * c
    errors: list[BaseException] = []
    t_start = [0.0]
    # the clock starts when every client is ready (the barrier's action, before any goes)
    go = threading.Barrier(c + 1, action=lambda: t_start.__setitem__(0, time.perf_counter()))

    def client(i: int) -> None:
        try:
            # httpx imported and the client made before the clock starts: here they took
            # 116 + 30-97 ms (its TLS context), once counted in every first token
            with httpx.Client(timeout=1800) as h:
                go.wait()
                rows[i] = _stream_one(
                    h, url, _messages(i, round_), gen_tokens, extra, t_start[0], on_first
                )
        except BaseException as e:
            errors.append(e)
            go.abort()  # nobody waits for a client that never got to the start

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(c)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: raised below
        go.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    done = [r for r in rows if r is not None]
    return _summary(done, max(r["end"] for r in done) - t_start[0])


def _window_round(
    url: str, runner: Any, eng: Any, settings: Any, c: int, gen_tokens: int, round_: int
) -> float:
    """Time to the first token of a window turn asked while ``c`` API streams are running
    (each has streamed a token); the streams are then awaited."""
    clients = _Clients(url, c, gen_tokens, -round_, {})
    clients.wait_first()
    s = settings.copy()
    s.set("max_tokens", 16)
    tokens = runner.call(lambda: eng.prompt_tokens(_messages(99, round_)))
    first: list[float] = []

    def on_text(_piece: str) -> None:
        if not first:
            first.append(time.perf_counter())

    t0 = time.perf_counter()
    runner.submit(lambda _j: eng.generate(tokens, s, on_text), "turn").result(1800)
    clients.result()
    if not first:
        raise DeskLMError("the window turn wrote nothing")
    return first[0] - t0


# --- the clients, in a process of their own ------------------------------------------------------
class _Clients:
    """``c`` streaming clients in a child process, as the apps that use a server are (in this
    process their Python would share the GIL with the server's; measured on two cores it
    made no difference to the aggregate at four clients). Where no child can be started (a
    frozen bundle) they run here, in threads."""

    def __init__(self, url: str, c: int, gen_tokens: int, round_: int, extra: dict[str, Any]):
        import sys

        self.c = c
        spec = json.dumps([url, c, gen_tokens, round_, extra])
        self._local: dict[str, Any] | None = None
        if getattr(sys, "frozen", False):
            self._firsts = threading.Semaphore(0)
            self._thread = threading.Thread(
                target=lambda: self._run_local(url, c, gen_tokens, round_, extra), daemon=True
            )
            self._proc = None
            self._thread.start()
            return
        code = (
            "import sys; from desklm.bench.concurrency import client_main; client_main(sys.argv[1])"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, spec], stdout=subprocess.PIPE, text=True
        )

    def _run_local(self, url: str, c: int, gen: int, round_: int, extra: dict[str, Any]) -> None:
        try:
            self._local = {"ok": _http_round(url, c, gen, round_, extra, self._firsts.release)}
        except BaseException as e:
            self._local = {"error": e}
            for _ in range(self.c):
                self._firsts.release()

    def _line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            raise DeskLMError(f"the benchmark's client process exited ({self._proc.returncode})")
        if line.startswith("error "):
            raise DeskLMError(line[6:].strip())
        return line

    def wait_first(self) -> None:
        """Until every client has its first token."""
        for _ in range(self.c):
            if self._proc is None:
                self._firsts.acquire()
            else:
                while self._line().strip() != "first":
                    pass

    def result(self) -> dict[str, float]:
        if self._proc is None:
            self._thread.join()
            assert self._local is not None
            if "error" in self._local:
                raise self._local["error"]
            return dict(self._local["ok"])
        while True:
            line = self._line()
            if line.startswith("result "):
                self._proc.wait()
                return dict(json.loads(line[7:]))


def client_main(spec: str) -> None:
    """The client process: run one round, print ``first`` per first token and the result."""
    url, c, gen_tokens, round_, extra = json.loads(spec)
    lock = threading.Lock()

    def first() -> None:
        with lock:
            print("first", flush=True)

    try:
        r = _http_round(url, c, gen_tokens, round_, extra, first)
    except Exception as e:
        print("error " + str(e).replace("\n", " "), flush=True)
        raise SystemExit(1) from None
    print("result " + json.dumps(r), flush=True)


def _client_round(
    url: str, c: int, gen_tokens: int, round_: int, extra: dict[str, Any]
) -> dict[str, float]:
    return _Clients(url, c, gen_tokens, round_, extra).result()


# --- raw llama-cpp-python, one stream ----------------------------------------------------------
def _raw_round(
    llm: Any,
    prompts: Callable[[int, int], list[int]],
    c: int,
    gen_tokens: int,
    round_: int,
    sampling: dict[str, Any],
) -> dict[str, float]:
    """``c`` requests that arrived together, answered one after another by ``Llama.generate``
    (which never stops by itself: exactly ``gen_tokens`` tokens, each turned into text)."""
    t_start = time.perf_counter()
    rows = []
    for i in range(c):
        times: list[float] = []
        for tok in llm.generate(prompts(i, round_), temp=0.0, reset=True, **sampling):
            llm.detokenize([tok])
            times.append(time.perf_counter())
            if len(times) >= gen_tokens:
                break
        n = len(times)
        span = times[-1] - times[0]
        rows.append(
            {
                "ttft_s": times[0] - t_start,
                "tokens": n,
                "end": times[-1],
                "tok_s": (n - 1) / span if n > 1 and span > 0 else 0.0,
            }
        )
    return _summary(rows, max(r["end"] for r in rows) - t_start)


# --- the peer: a llama-server binary -----------------------------------------------------------
def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _llama_server(
    binary: Path,
    model: Path,
    n_ctx: int,
    parallel: int,
    threads: int,
    threads_batch: int,
    n_batch: int,
    log_path: Path | None,
) -> Any:
    import httpx

    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise DeskLMError(
            f"--peer {binary}: not an executable file (build one with tools/build_llama_server.sh)"
        )
    port = _free_port()
    cmd = [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        str(n_ctx * parallel),
        "-np",
        str(parallel),
        "-t",
        str(threads),
        "-tb",
        str(threads_batch),
        "-b",
        str(n_batch),
        "-ub",
        str(min(512, n_batch)),
        "--no-webui",
        "--swa-full",
    ]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise DeskLMError(
                    f"llama-server exited ({p.returncode}) while starting; command: {' '.join(cmd)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        else:
            raise DeskLMError("llama-server did not become ready in 300 s")
        yield url + "/v1"
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        if log_path:
            out.close()  # type: ignore[union-attr]


# --- the whole run -------------------------------------------------------------------------------
def run_concurrency_bench(
    model: Path,
    settings: Any,
    levels: list[int],
    *,
    gen_tokens: int = 64,
    runs: int = 1,
    peer: Path | None = None,
    raw: bool = True,
    unbatched: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every system at every level (``runs`` rounds each, interleaved); returns
    per-level medians and the ratios."""
    import llama_cpp

    from desklm.engine import ChatEngine, Runner
    from desklm.server.server import ApiServer

    say = say or (lambda _m: None)
    if not levels or any(c < 1 for c in levels):
        raise DeskLMError("--concurrency needs numbers of clients, at least 1 each")
    s = settings.copy()
    s.set("max_tokens", gen_tokens)
    parallel = int(s["parallel"])
    sampling = {k: s[k] for k in ("top_p", "top_k", "min_p", "repeat_penalty")}
    eng = ChatEngine()
    runner = Runner(interrupt=eng.stop)
    server = ApiServer(runner, lambda: eng, lambda: s, max_waiting=max(levels) + 8)
    results: dict[str, dict[int, list[dict[str, float]]]] = {
        "desklm": {},
        "unbatched": {},
        "raw": {},
        "peer": {},
    }
    window: dict[int, list[float]] = {}
    raw_llm = None
    peer_cm = None
    # the unbatched reference: its own engine, runner and server, parallel 1
    eng1 = ChatEngine() if unbatched else None
    runner1 = Runner(interrupt=eng1.stop) if eng1 is not None else None
    s1 = s.copy()
    s1.set("parallel", 1)
    server1 = (
        ApiServer(runner1, lambda: eng1, lambda: s1, max_waiting=max(levels) + 8)
        if runner1 is not None
        else None
    )
    url1 = None
    sampling_raw: dict[str, Any] = {}
    try:
        runner.call(lambda: eng.load(model, s), "load")
        parallel = int(eng.settings["parallel"]) if eng.settings else parallel
        eng.ignore_eos = True
        url = server.start(port=0)
        if eng1 is not None and runner1 is not None and server1 is not None and parallel > 1:
            runner1.call(lambda: eng1.load(model, s1), "load")
            eng1.ignore_eos = True
            url1 = server1.start(port=0)

        def prompt_tokens(i: int, round_: int) -> list[int]:  # the same prompt as the API's
            return list(runner.call(lambda: eng.prompt_tokens(_messages(i, round_))))

        peer_url = None
        if peer is not None:
            peer_cm = _llama_server(
                peer,
                model,
                int(s["n_ctx"]),
                parallel,
                int(s["n_threads"]),
                int(s["n_threads_batch"]),
                int(s["n_batch"]),
                None,
            )
            peer_url = peer_cm.__enter__()
        if raw:
            raw_llm = llama_cpp.Llama(
                model_path=str(model),
                n_ctx=int(s["n_ctx"]),
                n_threads=int(s["n_threads"]),
                n_threads_batch=int(s["n_threads_batch"]),
                n_batch=int(s["n_batch"]),
                swa_full=True,
                verbose=False,
            )
            sampling_raw = {
                "top_k": sampling["top_k"],
                "top_p": sampling["top_p"],
                "min_p": sampling["min_p"],
                "repeat_penalty": sampling["repeat_penalty"],
            }
        # Both servers get the same sampling in every request (a server's defaults differ:
        # llama-server's repeat penalty is 1.0, DeskLM's the setting's 1.1, and over a
        # 262k-token vocabulary the penalty alone is ~7% of a decode step).
        asked = dict(sampling)
        peer_extra = {"ignore_eos": True, **asked}
        # warm up every path once
        _client_round(url, 1, 8, -1, asked)
        if url1:
            _client_round(url1, 1, 8, -1, asked)
        if peer_url:
            _client_round(peer_url, 1, 8, -1, peer_extra)
        if raw_llm is not None:
            _raw_round(raw_llm, prompt_tokens, 1, 8, -1, sampling_raw)
        round_ = 0
        for _ in range(runs):
            for c in levels:
                round_ += 1
                r = _client_round(url, c, gen_tokens, round_, asked)
                results["desklm"].setdefault(c, []).append(r)
                line = f"{c} clients: DeskLM {r['aggregate_tok_s']:.1f} tok/s"
                w = _window_round(url, runner, eng, s, c, gen_tokens, round_)
                window.setdefault(c, []).append(w)
                line += f" (a window reply's first token {w * 1000:.0f} ms)"
                if url1:
                    r = _client_round(url1, c, gen_tokens, round_, asked)
                    results["unbatched"].setdefault(c, []).append(r)
                    line += f", unbatched {r['aggregate_tok_s']:.1f}"
                if peer_url:
                    r = _client_round(peer_url, c, gen_tokens, round_, peer_extra)
                    results["peer"].setdefault(c, []).append(r)
                    line += f", llama-server {r['aggregate_tok_s']:.1f}"
                if raw_llm is not None:
                    r = _raw_round(raw_llm, prompt_tokens, c, gen_tokens, round_, sampling_raw)
                    results["raw"].setdefault(c, []).append(r)
                    line += f", raw {r['aggregate_tok_s']:.1f}"
                say(line)
    finally:
        if peer_cm is not None:
            peer_cm.__exit__(None, None, None)
        server.stop()
        runner.shutdown(5)
        eng.unload()
        if server1 is not None and runner1 is not None and eng1 is not None:
            server1.stop()
            runner1.shutdown(5)
            eng1.unload()
        if raw_llm is not None:
            raw_llm.close()

    def med(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: round(float(statistics.median(r[k] for r in rows)), 2) for k in rows[0]}

    table = {
        name: {c: med(rows) for c, rows in per.items()} for name, per in results.items() if per
    }
    ratios: dict[str, float | None] = {}
    d = table.get("desklm", {})
    if "peer" in table and 4 in d:
        p4 = table["peer"][4]
        ratios["aggregate_4_vs_peer"] = (
            round(d[4]["aggregate_tok_s"] / p4["aggregate_tok_s"], 3)
            if p4["aggregate_tok_s"]
            else None
        )
        ratios["p95_ttft_4_vs_peer"] = (
            round(d[4]["ttft_p95_ms"] / p4["ttft_p95_ms"], 3) if p4["ttft_p95_ms"] else None
        )
    if "raw" in table and 1 in d:
        r1 = table["raw"][1]
        ratios["single_stream_vs_raw"] = (
            round(d[1]["per_request_tok_s"] / r1["per_request_tok_s"], 3)
            if r1["per_request_tok_s"]
            else None
        )
    if "unbatched" in table and 1 in d:
        u1 = table["unbatched"][1]
        ratios["single_stream_vs_unbatched"] = (
            round(d[1]["per_request_tok_s"] / u1["per_request_tok_s"], 3)
            if u1["per_request_tok_s"]
            else None
        )
    return {
        "model": Path(model).name,
        "gen_tokens": gen_tokens,
        "runs": runs,
        "parallel": parallel,
        "n_ctx": int(s["n_ctx"]),
        "n_threads": int(s["n_threads"]),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "levels": levels,
        "results": table,
        "window_ttft_ms": {
            c: round(float(statistics.median(ws)) * 1000, 1) for c, ws in window.items()
        },
        "ratios": ratios,
    }


def table_text(r: dict[str, Any]) -> str:
    names = {
        "desklm": "DeskLM API",
        "unbatched": "DeskLM parallel 1",
        "peer": "llama-server",
        "raw": "raw (1 stream)",
    }
    lines = [
        f"model {r['model']}, {r['gen_tokens']} tokens per request, {r['parallel']} "
        f"slots, {r['n_threads']} threads; {r['cpus']} CPUs, load average "
        f"{r['load_avg_1m']} (numbers from a busy machine are noise)",
        f"{'clients':>7}  {'system':<18}{'aggregate tok/s':>16}{'TTFT median ms':>16}"
        f"{'TTFT p95 ms':>13}{'per-request tok/s':>19}",
    ]
    for c in r["levels"]:
        for key, label in names.items():
            row = r["results"].get(key, {}).get(c)
            if row is None:
                continue
            lines.append(
                f"{c:>7}  {label:<18}{row['aggregate_tok_s']:>16.1f}"
                f"{row['ttft_median_ms']:>16.1f}{row['ttft_p95_ms']:>13.1f}"
                f"{row['per_request_tok_s']:>19.1f}"
            )
    for c, ms in r.get("window_ttft_ms", {}).items():
        lines.append(f"a window reply's first token with {c} API streams running: {ms:.0f} ms")
    ratios = r["ratios"]
    targets = {
        "aggregate_4_vs_peer": ">= 0.9",
        "p95_ttft_4_vs_peer": "<= 2",
        "single_stream_vs_raw": ">= 0.97",
        "single_stream_vs_unbatched": ">= 0.97",
    }
    for k, v in ratios.items():
        lines.append(f"{k}: {v} (target {targets[k]})")
    return "\n".join(lines)
