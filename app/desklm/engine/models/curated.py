"""A curated list of small instruct models for a first download, and which one suits this
machine.

Offline there are no GGUF headers to read, so the fit is estimated from what is listed here:
the file size (the weights, which llama.cpp maps whole), the KV cache per token (layers x KV
heads x head size x 2 x f16) at a 4096-token context, and a fixed allowance for compute buffers
and the runtime. Sizes are the Q4_K_M files' sizes, rounded; the exact size and the sha256 come
from the hub when the file is listed for download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from desklm.engine.monitor import NA, is_na

MB = 2**20
GB = 2**30
MARGIN = 0.85  # as in desklm.engine.models.fit: "fits" under 85% of what is free
RECOMMEND_CTX = 4096
OVERHEAD = 320 * MB  # compute buffers, vocabulary tables, runtime


@dataclass(frozen=True)
class CatalogModel:
    """One downloadable model: where it is and what it costs."""

    name: str
    repo_id: str
    filename: str
    size: int  # bytes of the GGUF file (approximate until listed)
    params_b: float  # parameters, billions
    kv_bytes_per_token: int  # f16 KV cache per token of context
    licence: str
    note: str = ""

    def need(self, n_ctx: int = RECOMMEND_CTX) -> int:
        """Bytes of memory to run it at ``n_ctx`` (weights + KV cache + overhead)."""
        return self.size + self.kv_bytes_per_token * n_ctx + OVERHEAD

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "size": self.size,
            "params_b": self.params_b,
            "licence": self.licence,
        }


def _kv(layers: int, kv_heads: int, head_dim: int) -> int:
    return layers * kv_heads * head_dim * 2 * 2


# Best first: the first one that fits this machine (and its CPU/GPU budget) is recommended.
CURATED_MODELS: tuple[CatalogModel, ...] = (
    CatalogModel(
        "Qwen2.5 7B Instruct",
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        4_680 * MB,
        7.6,
        _kv(28, 4, 128),
        "Apache-2.0",
        "strong all-rounder; wants a GPU",
    ),
    CatalogModel(
        "Gemma 3 4B it",
        "bartowski/google_gemma-3-4b-it-GGUF",
        "google_gemma-3-4b-it-Q4_K_M.gguf",
        2_490 * MB,
        3.9,
        _kv(34, 4, 256),
        "Gemma Terms of Use",
        "good writing, 140 languages",
    ),
    CatalogModel(
        "Phi-4-mini Instruct",
        "bartowski/microsoft_Phi-4-mini-instruct-GGUF",
        "microsoft_Phi-4-mini-instruct-Q4_K_M.gguf",
        2_490 * MB,
        3.8,
        _kv(32, 8, 128),
        "MIT",
        "reasoning and maths",
    ),
    CatalogModel(
        "Qwen2.5 3B Instruct",
        "Qwen/Qwen2.5-3B-Instruct-GGUF",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        2_100 * MB,
        3.1,
        _kv(36, 2, 128),
        "Qwen Research Licence",
        "capable and compact",
    ),
    CatalogModel(
        "Llama 3.2 3B Instruct",
        "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        2_020 * MB,
        3.2,
        _kv(28, 8, 128),
        "Llama 3.2 Community Licence",
    ),
    CatalogModel(
        "Qwen2.5 1.5B Instruct",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        1_120 * MB,
        1.5,
        _kv(28, 2, 128),
        "Apache-2.0",
        "fast on any recent CPU",
    ),
    CatalogModel(
        "Gemma 3 1B it",
        "bartowski/google_gemma-3-1b-it-GGUF",
        "google_gemma-3-1b-it-Q4_K_M.gguf",
        806 * MB,
        1.0,
        _kv(26, 1, 256),
        "Gemma Terms of Use",
    ),
    CatalogModel(
        "Llama 3.2 1B Instruct",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        808 * MB,
        1.2,
        _kv(16, 8, 64),
        "Llama 3.2 Community Licence",
    ),
    CatalogModel(
        "Qwen2.5 0.5B Instruct",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        491 * MB,
        0.5,
        _kv(24, 2, 64),
        "Apache-2.0",
        "tiny and quick; simple questions",
    ),
)


@dataclass(frozen=True)
class Recommendation:
    model: CatalogModel
    verdict: str  # "fits", "tight", "won't fit" (as desklm.engine.models.fit), or "unknown"
    need: int  # bytes
    free: Any  # bytes of the memory it was compared with, or NA
    on_gpu: bool
    reason: str

    def summary(self) -> str:
        s = f"needs about {self.need / GB:.1f} GB"
        if not is_na(self.free):
            s += f" of {self.free / GB:.1f} GB free {'VRAM' if self.on_gpu else 'RAM'}"
        return s


def max_params_for(cores: int, gpu: bool) -> float:
    """The largest model (billions of parameters) that answers at a comfortable speed: on a
    GPU whatever fits; on a CPU about 1.5B on 4 cores or fewer, about 4B above."""
    if gpu:
        return 100.0
    return 1.6 if cores <= 4 else 4.0


def recommend(
    free_ram: Any = NA, free_vram: Any = NA, gpu_offload: bool = False, cores: int | None = None
) -> Recommendation:
    """The first model of :data:`CURATED_MODELS` that fits this machine with margin and suits its
    speed; the smallest, marked, when none fits."""
    import os

    cores = cores or os.cpu_count() or 1
    gpu = gpu_offload and not is_na(free_vram) and free_vram > 0
    cap = max_params_for(cores, gpu)
    for m in CURATED_MODELS:
        if m.params_b > cap:
            continue
        need = m.need()
        if gpu and need <= MARGIN * free_vram:
            return Recommendation(m, "fits", need, free_vram, True, "sized for this GPU")
        if is_na(free_ram):
            continue
        if need <= MARGIN * free_ram:
            return Recommendation(m, "fits", need, free_ram, False, f"sized for {cores} CPU cores")
    smallest = CURATED_MODELS[-1]
    need = smallest.need()
    if is_na(free_ram):
        return Recommendation(
            smallest,
            "unknown",
            need,
            NA,
            False,
            "free memory could not be read: the smallest model",
        )
    verdict = "tight" if need <= free_ram else "won't fit"
    return Recommendation(
        smallest, verdict, need, free_ram, False, "little free memory: the smallest model"
    )


MODELS = CURATED_MODELS


def find(name_or_repo: str) -> CatalogModel | None:
    for m in CURATED_MODELS:
        if name_or_repo in (m.name, m.repo_id, m.filename):
            return m
    return None
