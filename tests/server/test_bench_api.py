"""`desklm bench --api` runs both paths for exactly the tokens asked and reports the numbers."""

from __future__ import annotations

from desklm.bench.api import run_api_bench, table

from ..conftest import small_settings


def test_api_bench_measures_both_paths(model_path) -> None:
    r = run_api_bench(model_path, small_settings(n_ctx=512), runs=1, gen_tokens=8)
    assert [x["tokens"] for x in r["direct_runs"] + r["api_runs"]] == [8, 8]
    assert r["direct_tok_s"] > 0 and r["api_tok_s"] > 0 and r["ratio"] > 0
    assert r["api_ttft_ms"] > 0 and r["server_cpu_ms_per_token"] >= 0
    assert "added" in table(r) and "ratio" in table(r)
