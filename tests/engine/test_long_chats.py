"""`desklm bench --long-chats`, scaled down: the measurements exist and mean what they say."""

from __future__ import annotations

from desklm.bench import engine as bench
from desklm.bench import run as benchrun
from tests.conftest import small_settings


def test_long_chats_bench_measures_trimmed_turns_and_switching_back(model_path):
    lc = bench.long_chats(
        model_path,
        bench.bench_settings(small_settings()),
        sizes=(4, 60),
        switch_tokens=300,
        n_ctx=512,
    )
    small, big = lc["histories"]
    assert small["messages"] == 4 and small["dropped"] == 0
    assert big["messages"] == 60 and big["dropped"] > 40
    assert big["prompt_tokens"] + 8 <= 512
    assert big["next_evaluated"] < 40  # the next turn reuses what the first one read
    for key in ("snapshot_ram", "snapshot_disk"):
        assert lc[key]["restored"] >= 300 and lc[key]["evaluated"] < 40
    assert lc["reevaluate"]["restored"] == 0 and lc["reevaluate"]["evaluated"] >= 300
    assert lc["snapshot_bytes_per_1000_tokens"] > 100_000
    assert lc["switch_ratio"] is not None and lc["ttft_ratio"] is not None
    text = "\n".join(benchrun.long_chats_lines(lc))
    assert "60 messages: first token" in text and "re-evaluating it" in text
    assert "MB per 1,000 tokens" in text
