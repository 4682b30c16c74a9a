"""`desklm bench --concurrency`: clients at once against raw llama-cpp-python (and a
llama-server binary when one is given: DESKLM_LLAMA_SERVER, built by
tools/build_llama_server.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desklm.bench.concurrency import run_concurrency_bench, table_text
from desklm.errors import DeskLMError

from ..conftest import small_settings


def test_concurrency_bench_measures_every_level(model_path: Path) -> None:
    r = run_concurrency_bench(
        model_path, small_settings(n_ctx=512, parallel=2), [1, 2], gen_tokens=8
    )
    for system in ("desklm", "unbatched", "raw"):
        for c in (1, 2):
            row = r["results"][system][c]
            assert row["tokens"] == 8 * c  # exactly gen_tokens per request
            assert row["aggregate_tok_s"] > 0 and row["per_request_tok_s"] > 0
            assert 0 < row["ttft_median_ms"] <= row["ttft_p95_ms"]
    # raw answers one at a time: the second request's first token waits for the first reply
    assert r["results"]["raw"][2]["ttft_p95_ms"] > r["results"]["raw"][1]["ttft_p95_ms"]
    assert r["ratios"]["single_stream_vs_raw"] > 0
    assert r["ratios"]["single_stream_vs_unbatched"] > 0
    # unbatched (parallel 1) answers one at a time too, over the same HTTP
    assert r["results"]["unbatched"][2]["ttft_p95_ms"] > r["results"]["unbatched"][1]["ttft_p95_ms"]
    # a window turn asked while the streams ran, at each level
    assert set(r["window_ttft_ms"]) == {1, 2} and all(v > 0 for v in r["window_ttft_ms"].values())
    text = table_text(r)
    assert "DeskLM API" in text and "raw (1 stream)" in text and "single_stream_vs_raw" in text
    assert "DeskLM parallel 1" in text and "single_stream_vs_unbatched" in text
    assert "a window reply's first token with 2 API streams running" in text


def test_a_peer_that_is_not_a_binary_is_refused_in_one_line(
    model_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(DeskLMError, match="not an executable file"):
        run_concurrency_bench(
            model_path,
            small_settings(n_ctx=512, parallel=2),
            [1],
            gen_tokens=8,
            peer=tmp_path / "llama-server",
            raw=False,
            unbatched=False,
        )
    r = subprocess.run(
        [sys.executable, "-m", "desklm", "bench", "--concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip() == "desklm: error: --concurrency: each number of clients must be 1 to 64"
    )


@pytest.mark.skipif(
    not os.environ.get("DESKLM_LLAMA_SERVER"),
    reason="no llama-server binary given (DESKLM_LLAMA_SERVER)",
)
def test_against_a_llama_server_binary(model_path: Path) -> None:
    r = run_concurrency_bench(
        model_path,
        small_settings(n_ctx=512, parallel=2),
        [2],
        gen_tokens=8,
        peer=Path(os.environ["DESKLM_LLAMA_SERVER"]),
        raw=False,
        unbatched=False,
    )
    assert r["results"]["peer"][2]["tokens"] == 16
    assert r["results"]["peer"][2]["aggregate_tok_s"] > 0
