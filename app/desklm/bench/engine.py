"""Benchmark and auto-tuner.

``desklm bench`` measures, in one process and interleaved, the same model and settings through
three paths: raw llama-cpp-python (a plain ``Llama.create_chat_completion`` stream), DeskLM's
engine (``ChatSession.send``), and the GUI (offscreen window, worker thread, gauges on; in
``desklm.bench.gui``). Generation is greedy and runs to exactly ``gen_tokens`` (EOS is
masked in the raw path and ignored in DeskLM's), so every path does the same work.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from desklm.engine.settings import Settings
from desklm.engine.tune import SYSTEM, TuneResult, bench_settings, tune, tuned_for  # noqa: F401  (the tuner is benchmarked too)

PROMPT = (
    "Here are some notes about rivers, mountains and the sea. " * 24
    + "\nSummarise the notes above in a long, detailed answer."
)
MB = 2**20


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


_sampler: Any = None


def vram() -> int | None:
    """This process's VRAM on the NVIDIA GPUs in bytes; None where NVML cannot say."""
    global _sampler
    from desklm.engine.monitor import ResourceSampler, is_na

    if _sampler is None:
        _sampler = ResourceSampler()
    per_gpu = [g.vram_process for g in _sampler.sample().gpus]
    known = [v for v in per_gpu if not is_na(v)]
    return sum(known) if known else None


def growth_mb(before: int | None, after: int | None) -> float | None:
    return None if before is None or after is None else (after - before) / MB


@dataclass
class PathRun:
    path: str  # raw | engine | gui
    load_s: float
    ttft_s: float
    prompt_tps: float | None
    gen_tps: float | None
    memory_mb: float  # process RSS growth from before the load to after the reply
    prompt_tokens: int = 0
    completion_tokens: int = 0
    vram_mb: float | None = None  # process VRAM growth, likewise; None without NVML
    extra: dict[str, Any] = field(default_factory=dict)


def _perf_rates(ctx: Any) -> tuple[float | None, float | None]:
    import llama_cpp

    p = llama_cpp.llama_perf_context(ctx)
    prompt = p.n_p_eval / (p.t_p_eval_ms / 1000) if p.n_p_eval and p.t_p_eval_ms else None
    gen = p.n_eval / (p.t_eval_ms / 1000) if p.n_eval and p.t_eval_ms else None
    return prompt, gen


def run_raw(model: Path, s: Settings, gen_tokens: int) -> PathRun:
    """Plain llama-cpp-python, the way its README shows: create_chat_completion, streamed."""
    import llama_cpp

    from desklm.engine.backends.local.engine import KV_TYPES

    before, vram_before = rss(), vram()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(model),
        n_ctx=s["n_ctx"],
        n_threads=s["n_threads"],
        n_threads_batch=s["n_threads_batch"],
        n_gpu_layers=s["n_gpu_layers"],
        n_batch=s["n_batch"],
        flash_attn=s["flash_attn"],
        use_mmap=s["use_mmap"],
        type_k=KV_TYPES[s["kv_cache_type"]],
        type_v=KV_TYPES[s["kv_cache_type"]],
        chat_format="gemma",
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    eog = [
        t
        for t in range(llm.n_vocab())
        if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm._model.model), t)
    ]
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    t1 = time.perf_counter()
    ttft = None
    chunks = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        stream=True,
        max_tokens=gen_tokens,
        temperature=0.0,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        repeat_penalty=1.0,
        seed=1,
        logit_bias={t: -1e9 for t in eog},
    ):
        choice: Any = chunk["choices"][0]  # type: ignore[index]
        delta = choice.get("delta", {})
        if delta.get("content"):
            if ttft is None:
                ttft = time.perf_counter() - t1
            chunks += 1
    prompt_tps, gen_tps = _perf_rates(llm._ctx.ctx)
    mem, vram_mb = (rss() - before) / MB, growth_mb(vram_before, vram())
    llm.close()
    del llm
    gc.collect()
    return PathRun(
        "raw",
        load_s,
        ttft or float("nan"),
        prompt_tps,
        gen_tps,
        mem,
        completion_tokens=chunks,
        vram_mb=vram_mb,
    )


def run_engine(model: Path, s: Settings, gen_tokens: int) -> PathRun:
    from desklm.engine.chat.session import ChatSession

    before, vram_before = rss(), vram()
    from desklm.engine.backends.local.engine import ChatEngine

    eng = ChatEngine()
    eng.api_slots = False  # the window's engine with its API off, the default (no slots)
    sess = ChatSession(model, bench_settings(s, max_tokens=gen_tokens), engine=eng)
    eng.probe = False  # measured separately: probing is a first-load cost only
    t0 = time.perf_counter()
    sess.load()
    load_s = time.perf_counter() - t0
    eng.ignore_eos = True
    r = sess.send(PROMPT)
    mem, vram_mb = (rss() - before) / MB, growth_mb(vram_before, vram())
    eng.unload()
    del sess
    gc.collect()
    st = r.stats
    return PathRun(
        "engine",
        load_s,
        st.ttft_s or float("nan"),
        st.prompt_tokens_per_s,
        st.gen_tokens_per_s,
        mem,
        st.prompt_tokens,
        st.completion_tokens,
        vram_mb=vram_mb,
    )


def multi_turn(model: Path, s: Settings, turns: int = 20) -> list[dict[str, Any]]:
    """A conversation of ``turns`` turns: time to first token and prompt tokens evaluated."""
    from desklm.engine.backends.local.engine import ChatEngine
    from desklm.engine.chat.session import ChatSession

    eng = ChatEngine()
    eng.api_slots = False  # as the window with its API off
    sess = ChatSession(
        model, bench_settings(s, max_tokens=32, n_ctx=max(4096, s["n_ctx"])), engine=eng
    )
    eng.probe = False
    sess.load()
    eng.ignore_eos = True
    out = []
    for i in range(turns):
        st = sess.send(f"Question {i + 1}: tell me one more thing about rivers.").stats
        out.append(
            {
                "turn": i + 1,
                "ttft_s": st.ttft_s,
                "prompt_tokens": st.prompt_tokens,
                "evaluated": st.prompt_tokens_evaluated,
                "reused": st.prompt_tokens_reused,
            }
        )
    eng.unload()
    return out


# --- long chats --------------------------------------------------------------------------------
_WORDS = (
    "river mountain sea valley cloud rain forest stone bridge harbour lantern meadow "
    "orchard winter summer north south quiet bright ancient narrow wide"
).split()


def synthetic_history(n: int, seed: int = 1) -> list[Any]:
    """``n`` alternating user / assistant messages of 40-70 words (about 60-100 tokens)."""
    import random

    from desklm.engine.chat.conversation import Message

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choices(_WORDS, k=rng.randint(40, 70)))
        if i % 2 == 0:
            out.append(Message("user", f"Question {i // 2 + 1}: {words}?"))
        else:
            out.append(Message("assistant", f"Answer {i // 2 + 1}: {words}."))
    return out


def _timed_turn(sess: Any, text: str) -> dict[str, Any]:
    """One turn; time to first token measured from the call (planning included)."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    r = sess.send(
        text, on_start=lambda plan, reused: marks.setdefault("planned", time.perf_counter())
    )
    st = r.stats
    plan_s = marks.get("planned", t0) - t0
    return {
        "ttft_s": plan_s + (st.ttft_s or 0.0),
        "plan_s": plan_s,
        "prompt_tokens": st.prompt_tokens,
        "evaluated": st.prompt_tokens_evaluated,
        "reused": st.prompt_tokens_reused,
        "restored": st.restored_tokens,
        "dropped": len(st.trimmed),
    }


def long_chats(
    model: Path,
    s: Settings,
    sizes: tuple[int, ...] = (50, 500, 5000),
    switch_tokens: int = 2000,
    n_ctx: int = 2048,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Chats of any length: time to first token of a new turn on histories of ``sizes``
    messages (opened cold: the history has to be trimmed to the context and read), the next
    turn after it, and switching back to a ``switch_tokens``-token chat with its KV snapshot
    (from RAM, from disk) against re-evaluating it."""
    import tempfile

    from desklm.engine.backends.local import kvcache
    from desklm.engine.backends.local.engine import ChatEngine
    from desklm.engine.chat.session import ChatSession
    from desklm.engine.store.files import ConversationStore

    say = say or (lambda _m: None)
    out: dict[str, Any] = {"n_ctx": n_ctx, "histories": []}
    sess = ChatSession(model, bench_settings(s, max_tokens=8, n_ctx=n_ctx), engine=ChatEngine())
    assert isinstance(sess.engine, ChatEngine)
    sess.engine.probe = False
    sess.load()
    sess.engine.ignore_eos = True
    for n in sizes:
        say(f"long chats: a turn on a history of {n:,} messages…")
        sess.reset()
        sess.conversation.messages = synthetic_history(n)
        first = _timed_turn(sess, "One more question about rivers?")
        nxt = _timed_turn(sess, "And about mountains?")
        out["histories"].append(
            {
                "messages": n,
                **first,
                "next_ttft_s": nxt["ttft_s"],
                "next_evaluated": nxt["evaluated"],
            }
        )
    sess.engine.unload()
    with tempfile.TemporaryDirectory(prefix="desklm-bench-") as tmp:
        kv = kvcache.SnapshotCache(Path(tmp) / "kv", ram_bytes=1024 * MB, disk_bytes=1024 * MB)
        sess = ChatSession(
            model,
            bench_settings(s, max_tokens=8, n_ctx=max(2048, 2 * switch_tokens)),
            store=ConversationStore(Path(tmp) / "convs"),
            kv=kv,
            engine=ChatEngine(),
        )
        assert isinstance(sess.engine, ChatEngine)
        sess.engine.probe = False
        sess.load()
        sess.engine.ignore_eos = True
        eng = sess.engine
        history = []
        for m in synthetic_history(200, seed=2):  # grow A to about switch_tokens tokens
            history.append(m)
            if len(history) % 2 == 0:
                assert eng.template is not None
                parts = eng.template.render_parts(sess.conversation.as_msgs(history))
                if len(eng.tokenize(parts)) >= switch_tokens:
                    break
        say(f"long chats: switching back to a {switch_tokens:,}-token chat…")
        sess.conversation.messages = history
        _timed_turn(sess, "Tell me about the harbour.")
        a_id = sess.conv_id
        runs: dict[str, list[dict[str, Any]]] = {
            "snapshot_ram": [],
            "snapshot_disk": [],
            "reevaluate": [],
        }
        for i in range(2):
            for how in ("snapshot_ram", "snapshot_disk", "reevaluate"):
                kv.set_budgets(0 if how == "snapshot_disk" else 1024 * MB, 1024 * MB)
                sess.new_conversation()  # leave A (its snapshot is taken)
                sess.send("A short question in another chat.")
                if how == "reevaluate":
                    kv.drop(a_id)
                sess.open_conversation(a_id)
                runs[how].append(_timed_turn(sess, f"Question {i} on coming back?"))
        sess.new_conversation()  # leave A once more: its snapshot, to weigh
        snap = kv.get(a_id, kvcache.fingerprint(eng))
        if snap is not None:
            out["snapshot_bytes_per_1000_tokens"] = snap.nbytes * 1000 / len(snap.tokens)
        for how, rs in runs.items():
            out[how] = {
                "ttft_s": median([r["ttft_s"] for r in rs]),
                "prepare_s": median([r["plan_s"] for r in rs]),  # plan (+ restore)
                "restored": max(r["restored"] for r in rs),
                "evaluated": median([r["evaluated"] for r in rs]),
                "prompt_tokens": rs[-1]["prompt_tokens"],
            }
        eng.unload()
    ttft = [h["ttft_s"] for h in out["histories"]]
    out["ttft_ratio"] = ratio(ttft[-1], ttft[0])
    out["switch_ratio"] = ratio(out["snapshot_ram"]["ttft_s"], out["reevaluate"]["ttft_s"])
    out["switch_disk_ratio"] = ratio(out["snapshot_disk"]["ttft_s"], out["reevaluate"]["ttft_s"])
    return out


def median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and x == x]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b
