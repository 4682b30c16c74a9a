"""The curated first-download list and the recommendation for a machine (no network)."""

from __future__ import annotations

from desklm.engine.models.curated import GB, MODELS, find, recommend
from desklm.engine.monitor import NA


def test_the_list_is_sane():
    assert len(MODELS) >= 9
    for m in MODELS:
        assert m.repo_id.count("/") == 1 and m.filename.lower().endswith("q4_k_m.gguf")
        assert 300 * 2**20 < m.size < 6 * GB and m.kv_bytes_per_token > 0
    names = {m.name for m in MODELS}
    for want in (
        "Qwen2.5 0.5B Instruct",
        "Qwen2.5 1.5B Instruct",
        "Qwen2.5 3B Instruct",
        "Qwen2.5 7B Instruct",
        "Llama 3.2 1B Instruct",
        "Llama 3.2 3B Instruct",
        "Gemma 3 1B it",
        "Gemma 3 4B it",
        "Phi-4-mini Instruct",
    ):
        assert want in names
    assert find("Qwen/Qwen2.5-1.5B-Instruct-GGUF").params_b == 1.5


def test_recommendation_follows_the_machine():
    big_gpu = recommend(64 * GB, 24 * GB, gpu_offload=True, cores=16)
    assert big_gpu.model.name == "Qwen2.5 7B Instruct" and big_gpu.on_gpu
    cpu_8 = recommend(16 * GB, NA, cores=8)
    assert cpu_8.model.params_b <= 4.0 and cpu_8.verdict == "fits" and not cpu_8.on_gpu
    cpu_2 = recommend(16 * GB, NA, cores=2)
    assert cpu_2.model.params_b <= 1.6  # two cores: a small model that answers quickly
    tight = recommend(int(1.2 * GB), NA, cores=8)
    assert tight.model.need() <= 0.85 * 1.2 * GB
    none = recommend(200 * 2**20, NA, cores=8)
    assert none.model is MODELS[-1] and none.verdict == "won't fit"
    unknown = recommend(NA, NA, cores=8)
    assert unknown.verdict == "unknown" and "GB" in unknown.summary()
    # a GPU without VRAM readings does not count as a GPU
    assert not recommend(8 * GB, NA, gpu_offload=True, cores=8).on_gpu
