"""The auto-tuner: sweep CPU threads (and GPU layers where a GPU is used) on the loaded model,
apply the fastest, and remember it per machine and model (``desklm bench --tune``, the window's
Tune button)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from desklm.engine.settings import Settings
from desklm.errors import DeskLMError

SYSTEM = "You are a helpful assistant."


def bench_settings(base: Settings | None = None, **over: Any) -> Settings:
    """Greedy, seeded settings, so every measured run does the same work."""
    s = base.copy() if base is not None else Settings()
    s.update(
        {
            "temperature": 0.0,
            "top_k": 40,
            "top_p": 0.95,
            "min_p": 0.05,
            "repeat_penalty": 1.0,
            "seed": 1,
            "system_prompt": SYSTEM,
            **over,
        }
    )
    return s


@dataclass
class TuneResult:
    n_threads: int
    n_threads_batch: int
    n_gpu_layers: int
    gen_tps: float
    prompt_tps: float
    trials: list[dict[str, Any]]


def machine_key() -> str:
    return f"{platform.node()}|{platform.machine()}|{psutil.cpu_count()}"


def model_key(path: Path) -> str:
    p = Path(path).resolve()
    return f"{p.name}|{p.stat().st_size}"


def gpu_layer_choices(engine: Any) -> list[int] | None:
    """No, half and all the layers: the GPU-layer counts the tuner tries where llama.cpp was
    built with GPU offload and NVML sees an NVIDIA GPU; None (threads only) elsewhere."""
    from desklm.engine.monitor import ResourceSampler

    li = engine.load_info
    if li is None or not li.gpu_offload_supported:
        return None
    sampler = ResourceSampler()
    try:
        if not sampler.sample().gpus:
            return None
    finally:
        sampler.close()
    return [0, max(1, li.n_layers // 2), -1]


def tune(
    session: Any,
    progress: Callable[[int, int, str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    gpu_layer_options: list[int] | None = None,
) -> TuneResult:
    """Sweep threads (live, no reload) and GPU layers (reload; by default
    :func:`gpu_layer_choices`) on the loaded model; apply and return the fastest.
    Generation speed decides ``n_threads``, prompt speed ``n_threads_batch``.
    """
    from desklm.engine.settings import logical_cores

    eng = session.engine
    if not eng.loaded:
        raise DeskLMError("load a model before tuning")
    cores = logical_cores()
    threads = sorted({1, max(1, cores // 2), max(1, cores - 1), cores})
    layers = gpu_layer_options or gpu_layer_choices(eng) or [session.settings["n_gpu_layers"]]
    steps = len(layers) * len(threads)
    trials: list[dict[str, Any]] = []
    prompt = eng.tokenize("<start_of_turn>user\n" + "tune " * 200 + "<end_of_turn>\n", special=True)
    s = bench_settings(session.settings, max_tokens=32)
    old_ignore, eng.ignore_eos = eng.ignore_eos, True
    before = (session.settings["n_threads"], session.settings["n_threads_batch"])
    done = False
    try:
        step = 0
        for ngl in layers:
            if ngl != session.settings["n_gpu_layers"]:
                session.apply_settings({"n_gpu_layers": ngl})
            for t in threads:
                if cancelled is not None and cancelled():
                    raise DeskLMError("tuning cancelled")
                step += 1
                if progress is not None:
                    progress(step, steps, f"GPU layers {ngl}, {t} threads")
                eng.set_threads(t, t)
                eng.reset()  # evaluate the whole prompt every time
                _, st = eng.generate(prompt, s)
                trials.append(
                    {
                        "n_gpu_layers": ngl,
                        "threads": t,
                        "gen_tps": st.gen_tokens_per_s or 0.0,
                        "prompt_tps": st.prompt_tokens_per_s or 0.0,
                    }
                )
        done = True
    finally:
        eng.ignore_eos = old_ignore
        eng.reset()
        if not done:  # cancelled or failed: the threads the user had
            eng.set_threads(*before)
    best_ngl = max(
        layers, key=lambda g: max(x["gen_tps"] for x in trials if x["n_gpu_layers"] == g)
    )
    mine = [x for x in trials if x["n_gpu_layers"] == best_ngl]
    gen_best = max(mine, key=lambda x: x["gen_tps"])
    prompt_best = max(mine, key=lambda x: x["prompt_tps"])
    result = TuneResult(
        gen_best["threads"],
        prompt_best["threads"],
        best_ngl,
        gen_best["gen_tps"],
        prompt_best["prompt_tps"],
        trials,
    )
    # the sweep moved the engine's threads behind the session's back: set the winners on the
    # engine itself (apply_settings only acts on values that differ from the session's)
    eng.set_threads(result.n_threads, result.n_threads_batch)
    values = {"n_threads": result.n_threads, "n_threads_batch": result.n_threads_batch}
    if best_ngl != session.settings["n_gpu_layers"]:
        values["n_gpu_layers"] = best_ngl
    session.apply_settings(values)
    remember_tuned(session.model_path, result)
    return result


def remember_tuned(model: Path, r: TuneResult) -> None:
    from desklm.engine.store.files import AppConfig

    def add(data: dict[str, Any]) -> None:
        old = data.get("tuned")
        tuned: dict[str, Any] = old if isinstance(old, dict) else {}
        tuned[f"{machine_key()}::{model_key(model)}"] = {
            "n_threads": r.n_threads,
            "n_threads_batch": r.n_threads_batch,
            "n_gpu_layers": r.n_gpu_layers,
            "gen_tps": round(r.gen_tps, 2),
            "prompt_tps": round(r.prompt_tps, 2),
            "when": time.time(),
        }
        data["tuned"] = tuned

    try:
        AppConfig().update(add)
    except OSError as e:  # e.g. a settings file that could not be read is never overwritten
        from desklm.errors import DeskLMError

        raise DeskLMError(f"could not remember the tuned settings: {e}") from None


def tuned_for(model: Path) -> dict[str, Any] | None:
    from desklm.engine.store.files import AppConfig

    try:
        tuned = AppConfig().load().get("tuned") or {}
        return tuned.get(f"{machine_key()}::{model_key(model)}")
    except OSError:
        return None
