"""The memory-fit estimate against real measurements, and the verdicts it gives."""

import json
import subprocess
import sys

import pytest

import desklm.engine.models.fit as fit
from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.models.fit import FITS, MB, NO_FIT, TIGHT, auto_fit, estimate
from desklm.engine.models.gguf_info import read_gguf
from desklm.errors import DeskLMError
from tests.conftest import small_settings

MEASURE = """
import json, sys, psutil
from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.settings import Settings
n_ctx, parallel = int(sys.argv[2]), int(sys.argv[3])
p = psutil.Process(); before = p.memory_info().rss
e = ChatEngine(); e.load(sys.argv[1], Settings({"n_ctx": n_ctx, "parallel": parallel}))
tokens = e.tokenize("word " * n_ctx)[: int(n_ctx * 0.9)]  # fill 90% of the context
e.generate(tokens, Settings({"max_tokens": 2}))
print(json.dumps({"growth": p.memory_info().rss - before}))
"""


@pytest.mark.parametrize(("n_ctx", "parallel"), [(2048, 4), (4096, 1)])
def test_estimate_matches_measured_memory_growth_within_25_percent(model_path, n_ctx, parallel):
    """With parallel slots the KV cache holds slots + 1 contexts of n_ctx (counted)."""
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(model_path), str(n_ctx), str(parallel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    growth = json.loads(r.stdout.strip().splitlines()[-1])["growth"]
    est = estimate(read_gguf(model_path), n_ctx, free=(10**12, fit.NA), parallel=parallel).ram
    assert abs(est - growth) / growth < 0.25, (est / MB, growth / MB)


def test_parallel_slots_count_kv_per_slot_and_are_lowered_with_a_reason(model_path):
    info = read_gguf(model_path)
    one = estimate(info, 4096, free=(64 * 1024 * MB, fit.NA))
    four = estimate(info, 4096, free=(64 * 1024 * MB, fit.NA), parallel=4)
    assert four.kv_ram == 5 * one.kv_ram  # four slots and the window's own chat
    assert four.kv_per_sequence == one.kv_ram
    assert estimate(info, 4096, free=(64 * 1024 * MB, fit.NA), parallel=1).kv_ram == one.kv_ram
    # free RAM for the model and two more contexts, not five: lowered to what fits
    free = (int((one.ram + 2 * one.kv_ram) / fit.MARGIN) + MB, fit.NA)
    slots, est, why = fit.fit_parallel(info, 4096, 4, free=free)
    assert 1 <= slots < 4 and est.verdict != NO_FIT and est.parallel == slots
    assert estimate(info, 4096, free=free, parallel=slots + 1).verdict == NO_FIT
    assert why.startswith(f"parallel lowered from 4 to {slots}: 4 slots need ")
    assert "MB of KV cache" in why and "RAM: needs" in why
    assert fit.fit_parallel(info, 4096, 4, free=(10**12, fit.NA))[0] == 4


def test_the_parts_scale_as_they_should(model_path):
    info = read_gguf(model_path)
    free = (64 * 1024 * MB, 16 * 1024 * MB)
    a = estimate(info, 4096, free=free)
    b = estimate(info, 8192, free=free)
    assert b.kv_ram == 2 * a.kv_ram and b.weights_ram == a.weights_ram
    # Gemma 3 270M: 18 layers x 1 KV head x (256 + 256) x 2 bytes per token
    assert a.kv_ram == 4096 * 18 * 512 * 2
    q8 = estimate(info, 4096, kv_cache_type="q8_0", free=free)
    assert q8.kv_ram < 0.55 * a.kv_ram
    fa = estimate(info, 4096, flash_attn=True, free=free)
    assert fa.compute_ram < a.compute_ram
    gpu = estimate(info, 4096, n_gpu_layers=-1, free=free)
    assert gpu.kv_ram == 0 and gpu.kv_vram == a.kv_ram
    assert gpu.weights_vram >= sum(info.layer_bytes.values())
    half = estimate(info, 4096, n_gpu_layers=9, free=free)
    assert 0 < half.weights_vram < gpu.weights_vram and half.kv_vram == a.kv_ram // 2
    assert estimate(info, 4096, n_gpu_layers=5, gpu_offload=False, free=free).vram == 0


def test_a_gpu_build_with_a_gpu_counts_the_gpu_runtime_even_at_zero_layers(model_path):
    # measured on an H100: 1,218 MB of this process's VRAM at 0 of 22 layers (the CUDA
    # context and a compute buffer for the prompt batches llama.cpp sends to the GPU)
    info = read_gguf(model_path)
    free = (64 * 1024 * MB, 16 * 1024 * MB)
    zero = estimate(info, 4096, n_gpu_layers=0, free=free)
    assert zero.weights_vram == zero.kv_vram == 0
    assert zero.runtime_vram == fit.GPU_RUNTIME and zero.compute_vram > 0
    assert zero.vram == fit.GPU_RUNTIME + zero.compute_vram
    assert "VRAM" in zero.summary()
    all_ = estimate(info, 4096, n_gpu_layers=-1, free=free)
    assert all_.vram - all_.weights_vram - all_.kv_vram == zero.vram  # the same overhead
    # no GPU found, or a CPU-only build: nothing on a GPU
    assert estimate(info, 4096, n_gpu_layers=0, free=(free[0], fit.NA)).vram == 0
    assert estimate(info, 4096, n_gpu_layers=0, gpu_offload=False, free=free).vram == 0
    # a GPU NVML cannot see (Metal, Vulkan) still gets the runtime once layers go there
    assert estimate(info, 4096, n_gpu_layers=-1, free=(free[0], fit.NA)).runtime_vram > 0


def test_verdicts(model_path):
    info = read_gguf(model_path)
    need = estimate(info, 4096, free=(10**12, fit.NA)).ram
    assert estimate(info, 4096, free=(int(need * 2), fit.NA)).verdict == FITS
    assert estimate(info, 4096, free=(int(need * 1.05), fit.NA)).verdict == TIGHT
    small = estimate(info, 4096, free=(int(need * 0.5), fit.NA))
    assert small.verdict == NO_FIT and "RAM: needs" in small.reasons[0]
    gpu = estimate(info, 4096, n_gpu_layers=-1, free=(10**12, 10 * MB))
    assert gpu.verdict == NO_FIT and "VRAM" in gpu.reasons[0]


def test_auto_picks_the_longest_context_that_fits(model_path):
    info = read_gguf(model_path)
    free = (700 * MB, fit.NA)
    best = auto_fit(info, free=free)
    assert best.verdict == FITS and best.n_gpu_layers == 0
    assert estimate(info, best.n_ctx * 2, free=free).verdict != FITS
    roomy = auto_fit(info, free=(10**12, fit.NA))
    assert roomy.n_ctx == info.context_length
    # with a GPU that has room for everything at 4096, all layers go to it
    gpu = auto_fit(info, free=(10**12, 8 * 1024 * MB))
    assert gpu.n_gpu_layers == -1


def test_auto_keeps_the_slots_while_the_chat_gets_a_useful_context_then_lowers_them(model_path):
    info = read_gguf(model_path)
    roomy = auto_fit(info, free=(10**12, fit.NA), parallel=4)
    assert roomy.parallel == 4 and roomy.verdict == FITS
    tight = auto_fit(info, free=(450 * MB, fit.NA), parallel=4)  # little memory left
    assert tight.verdict == FITS and 1 <= tight.parallel < 4
    assert estimate(info, tight.n_ctx, free=(450 * MB, fit.NA), parallel=4).verdict != FITS


def test_a_load_that_cannot_fit_is_refused_with_the_numbers(model_path, monkeypatch):
    # this machine has 24 GB: pretend only 200 MB are free (the one thing we cannot do for real)
    monkeypatch.setattr(fit, "free_memory", lambda sampler=None: (200 * MB, fit.NA))
    eng = ChatEngine()
    with pytest.raises(DeskLMError) as e:
        eng.load(model_path, small_settings())
    msg = str(e.value)
    assert "will not fit" in msg and "200 MB free" in msg and "needs" in msg
    assert not eng.loaded


def test_a_load_lowers_parallel_to_what_fits_and_says_why(model_path, monkeypatch):
    info = read_gguf(model_path)
    one = estimate(info, 2048, free=(10**12, fit.NA))
    # room for the model with one context (and a little), not for five
    monkeypatch.setattr(
        fit, "free_memory", lambda sampler=None: (int(one.ram / fit.MARGIN) + 8 * MB, fit.NA)
    )
    eng = ChatEngine()
    li = eng.load(model_path, small_settings(parallel=4))
    try:
        assert eng.settings["parallel"] < 4
        assert (eng.n_slots == 0) == (eng.settings["parallel"] == 1)
        assert any(
            n.startswith("parallel lowered from 4 to ") and "KV cache" in n for n in li.notes
        ), li.notes
    finally:
        eng.unload()
