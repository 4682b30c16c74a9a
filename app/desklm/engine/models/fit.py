"""Will it fit? RAM and VRAM for (model, n_ctx, GPU layers, KV cache type), before loading.

The estimate, from the GGUF header alone:

* weights: the tensor bytes of each block, split between RAM and VRAM by the GPU layer count
  (llama.cpp offloads the last blocks first; "all" also moves the output head);
* KV cache: ``n_ctx x (key + value length) x KV heads x bytes per element`` for every layer
  (DeskLM keeps a full-size cache for sliding-window layers too, so it can reuse prefixes),
  times the sequences the context holds: with ``parallel`` slots above 1, each slot and the
  window's own chat have a context of ``n_ctx`` tokens of their own (split, not unified);
* compute: what llama.cpp's compute buffer really touches while reading a batch of ``n_ubatch``
  tokens against a full context (the attention scores, unless flash attention, and the
  feed-forward activations); llama.cpp *reserves* more, but untouched pages cost nothing;
* runtime: the vocabulary tables (~240 bytes a token) and a fixed 16 MB;
* GPU runtime: where llama.cpp was built with GPU offload and a GPU is there, it uses it even
  at 0 GPU layers (it sends each prompt batch's matrix work to the GPU): the CUDA context and
  libraries (``GPU_RUNTIME``) and a compute buffer on the GPU as well as in RAM.

The verdict compares the total with free RAM (psutil, or less under a cgroup memory limit or
RLIMIT_AS: see :mod:`desklm.engine.memlimit`) and free VRAM (NVML): "fits" under 85%
of what is free, "tight" up to 100%, "won't fit" above.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from desklm.engine.models.gguf_info import GGUFInfo
from desklm.engine.monitor import NA, ResourceSampler, is_na

KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
MB = 2**20
# Measured 2026-11-22 on an H100 (driver 580, CUDA 13, llama.cpp in llama-cpp-python 0.3.36):
# this process's VRAM (NVML) minus weights, KV cache and compute buffer, at 0, 11 and 22 of
# 22 layers of a 1.1B f16 model: 640-740 MB. Smaller GPUs take less; over-counting here
# only makes a verdict cautious.
GPU_RUNTIME = 740 * MB


class FitVerdict(enum.StrEnum):
    """Whether a model fits: compared as plain strings too ("fits", "tight", "won't fit")."""

    FITS = "fits"
    TIGHT = "tight"
    NO_FIT = "won't fit"


FITS, TIGHT, NO_FIT = FitVerdict.FITS, FitVerdict.TIGHT, FitVerdict.NO_FIT
MARGIN = 0.85


@dataclass
class FitEstimate:
    n_ctx: int
    n_gpu_layers: int
    kv_cache_type: str
    weights_ram: int
    weights_vram: int
    kv_ram: int
    kv_vram: int
    compute_ram: int
    compute_vram: int
    runtime_ram: int
    free_ram: Any = NA
    free_vram: Any = NA
    # address space reserved but not touched (the batch's logits in llama.cpp's compute buffer
    # and llama-cpp-python's score array): costs nothing in RAM, counts under RLIMIT_AS
    reserved_ram: int = 0
    runtime_vram: int = 0  # the GPU runtime (CUDA context and libraries), see GPU_RUNTIME
    verdict: FitVerdict = FITS
    reasons: list[str] = field(default_factory=list)
    parallel: int = 1  # API slots decoded together (the KV cache holds n_sequences of them)

    @property
    def kv_per_sequence(self) -> int:
        return (self.kv_ram + self.kv_vram) // n_sequences(self.parallel)

    @property
    def ram(self) -> int:
        return self.weights_ram + self.kv_ram + self.compute_ram + self.runtime_ram

    @property
    def vram(self) -> int:
        return self.weights_vram + self.kv_vram + self.compute_vram + self.runtime_vram

    def summary(self) -> str:
        s = f"{self.verdict}: needs {self.ram / MB:,.0f} MB RAM"
        if self.vram:
            s += f" + {self.vram / MB:,.0f} MB VRAM"
        if not is_na(self.free_ram):
            s += f" ({self.free_ram / MB:,.0f} MB RAM free"
            s += (
                f", {self.free_vram / MB:,.0f} MB VRAM free)"
                if not is_na(self.free_vram) and self.vram
                else ")"
            )
        return s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ram=self.ram, vram=self.vram, summary=self.summary())
        for k in ("free_ram", "free_vram"):
            d[k] = None if is_na(d[k]) else d[k]
        return d


def _int(info: GGUFInfo, key: str, default: int) -> int:
    v = info.arch_value(key, default)
    if isinstance(v, list):  # some models give per-layer values
        v = max(v) if v else default
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def n_sequences(parallel: int) -> int:
    """Sequences a context holds for ``parallel`` API slots: the slots and the window's own
    chat; without batching (1) just the one."""
    return parallel + 1 if parallel > 1 else 1


def gpu_layer_split(n_layers: int, n_gpu_layers: int) -> tuple[int, bool]:
    """(blocks on the GPU, output head on the GPU). -1 or more than the blocks means all."""
    if n_gpu_layers < 0 or n_gpu_layers > n_layers:
        return n_layers, True
    return n_gpu_layers, False


def free_memory(sampler: ResourceSampler | None = None) -> tuple[Any, Any]:
    """(free RAM, free VRAM summed over NVIDIA GPUs); NA where unknown."""
    return (sampler or ResourceSampler()).sample().free()


def estimate(
    info: GGUFInfo,
    n_ctx: int,
    n_gpu_layers: int = 0,
    kv_cache_type: str = "f16",
    n_ubatch: int = 512,
    flash_attn: bool = False,
    gpu_offload: bool = True,
    free: tuple[Any, Any] | None = None,
    parallel: int = 1,
) -> FitEstimate:
    n_layers = info.block_count or max(info.layer_bytes, default=-1) + 1 or 1
    n_embd = _int(info, "embedding_length", 4096)
    n_head = _int(info, "attention.head_count", 32)
    n_head_kv = _int(info, "attention.head_count_kv", n_head)
    k_len = _int(info, "attention.key_length", n_embd // max(1, n_head))
    v_len = _int(info, "attention.value_length", n_embd // max(1, n_head))
    n_ff = _int(info, "feed_forward_length", 4 * n_embd)
    n_vocab = info.arrays.get("tokenizer.ggml.tokens", 32000)
    on_gpu, head_on_gpu = gpu_layer_split(n_layers, n_gpu_layers if gpu_offload else 0)

    layer_w = [info.layer_bytes.get(i, 0) for i in range(n_layers)]
    gpu_blocks = set(range(n_layers - on_gpu, n_layers))
    w_vram = sum(b for i, b in enumerate(layer_w) if i in gpu_blocks)
    w_ram = sum(layer_w) - w_vram + info.other_bytes
    if head_on_gpu:  # the output head goes to the GPU with "all" (token embeddings stay)
        head = max(0, info.other_bytes // 2)
        w_vram += head
        w_ram -= head

    bpe = KV_BYTES_PER_ELEMENT.get(kv_cache_type, 2.0)
    kv_layer = int(n_ctx * n_sequences(parallel) * n_head_kv * (k_len + v_len) * bpe)
    kv_vram = kv_layer * on_gpu
    kv_ram = kv_layer * (n_layers - on_gpu)

    ub = min(n_ubatch, n_ctx)
    attn = 0 if flash_attn else ub * n_ctx * n_head * 4  # f32 attention scores, one layer
    ffn = ub * (n_embd * 4 * 8 + n_ff * 4 * 3)
    compute = attn + ffn + n_vocab * 4  # + one row of logits
    runtime = n_vocab * 240 + 16 * MB
    free_ram, free_vram = free if free is not None else free_memory()
    # a GPU build uses a GPU it finds even at 0 layers (see the module's docstring)
    uses_gpu = gpu_offload and (on_gpu > 0 or not is_na(free_vram))
    est = FitEstimate(
        n_ctx,
        n_gpu_layers,
        kv_cache_type,
        w_ram,
        w_vram,
        kv_ram,
        kv_vram,
        compute if not on_gpu else ffn,
        compute if uses_gpu else 0,
        runtime,
        free_ram,
        free_vram,
        reserved_ram=2 * ub * n_vocab * 4,
        runtime_vram=GPU_RUNTIME if uses_gpu else 0,
        parallel=parallel,
    )
    _verdict(est)
    return est


def fit_parallel(
    info: GGUFInfo,
    n_ctx: int,
    parallel: int,
    n_gpu_layers: int = 0,
    kv_cache_type: str = "f16",
    **kw: Any,
) -> tuple[int, FitEstimate, str]:
    """The most API slots, ``parallel`` or fewer, whose estimate is not "won't fit"; returns
    (slots, their estimate, a one-line reason when fewer than asked). A model that does not
    fit even with one slot returns 1 and that estimate (the load refuses it with its reasons).
    """
    first = estimate(info, n_ctx, n_gpu_layers, kv_cache_type, parallel=parallel, **kw)
    if first.verdict != NO_FIT or parallel <= 1:
        return parallel, first, ""
    kw.setdefault("free", (first.free_ram, first.free_vram))
    for p in range(parallel - 1, 0, -1):
        est = estimate(info, n_ctx, n_gpu_layers, kv_cache_type, parallel=p, **kw)
        if est.verdict != NO_FIT:
            why = "; ".join(first.reasons)
            return (
                p,
                est,
                (
                    f"parallel lowered from {parallel} to {p}: {parallel} slots need "
                    f"{(first.kv_ram + first.kv_vram) / MB:,.0f} MB of KV cache "
                    f"({n_sequences(parallel)} contexts of {n_ctx} tokens, "
                    f"{first.kv_per_sequence / MB:,.0f} MB each) and {why}"
                ),
            )
    return 1, estimate(info, n_ctx, n_gpu_layers, kv_cache_type, parallel=1, **kw), ""


def _verdict(est: FitEstimate) -> None:
    worst = FITS
    order = {FITS: 0, TIGHT: 1, NO_FIT: 2}
    for need, have, what in ((est.ram, est.free_ram, "RAM"), (est.vram, est.free_vram, "VRAM")):
        if not need:
            continue
        if what == "RAM" and str(getattr(have, "source", "")).startswith("RLIMIT_AS"):
            need += est.reserved_ram  # the address space counts, touched or not
        if is_na(have):
            if what == "VRAM":
                est.reasons.append("no NVIDIA GPU readings: VRAM use cannot be checked")
            continue
        v = FITS if need <= MARGIN * have else TIGHT if need <= have else NO_FIT
        if v != FITS:
            under = getattr(have, "source", "")  # a cgroup or RLIMIT_AS, not the machine
            est.reasons.append(
                f"{what}: needs {need / MB:,.0f} MB, {have / MB:,.0f} MB free"
                + (f" under this process's {under}" if under else "")
            )
        if order[v] > order[worst]:
            worst = v
    est.verdict = worst


def auto_fit(
    info: GGUFInfo,
    kv_cache_type: str = "f16",
    flash_attn: bool = False,
    gpu_offload: bool = True,
    free: tuple[Any, Any] | None = None,
    max_ctx: int | None = None,
    parallel: int = 1,
) -> FitEstimate:
    """The most GPU layers, then the longest context (powers of two), that fit with margin,
    counting the KV cache of ``parallel`` API slots beside the chat's."""
    free = free if free is not None else free_memory()
    train = info.context_length or 4096
    top = min(train, max_ctx or train, 131072)
    ctxs = []
    c = 512
    while c <= top:
        ctxs.append(c)
        c *= 2
    if top not in ctxs:
        ctxs.append(top)
    n_layers = info.block_count or 1
    base_ctx = min(4096, top)

    def ok(e: FitEstimate) -> bool:
        return e.verdict == FITS

    def longest(slots: int) -> FitEstimate:
        best_ngl = 0
        if gpu_offload and not is_na(free[1]):
            for ngl in [-1, *range(n_layers, 0, -1)]:
                e = estimate(
                    info,
                    base_ctx,
                    ngl,
                    kv_cache_type,
                    flash_attn=flash_attn,
                    free=free,
                    parallel=slots,
                )
                if ok(e):
                    best_ngl = ngl
                    break
        best = estimate(
            info, 512, best_ngl, kv_cache_type, flash_attn=flash_attn, free=free, parallel=slots
        )
        for c in ctxs:
            e = estimate(
                info, c, best_ngl, kv_cache_type, flash_attn=flash_attn, free=free, parallel=slots
            )
            if ok(e):
                best = e
        return best

    # the slots stay while the chat still gets a useful context; then fewer slots
    enough = min(2048, top)
    for slots in range(max(1, parallel), 0, -1):
        best = longest(slots)
        if ok(best) and best.n_ctx >= enough:
            return best
    return best
