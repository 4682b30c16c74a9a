"""The window's part of `desklm bench --long-chats`: opening long saved chats."""

from __future__ import annotations

from desklm.bench import engine as bench
from tests.conftest import small_settings


def test_opening_long_chats_is_measured_and_renders_them_whole(qtbot, model_path):
    from desklm.bench.gui import GuiBench

    gb = GuiBench()
    try:
        gb.run(model_path, bench.bench_settings(small_settings(max_tokens=8)), 8)
        rows = gb.open_stalls((50, 2000))
    finally:
        gb.close()
    assert [r["messages"] for r in rows] == [50, 2000]
    for r in rows:
        assert r["left_unrendered"] == 0  # scrolled to the top: every message rendered
        assert r["max_stall_ms"] is not None and r["opening_stall_ms"] is not None
        assert r["shown_s"] > 0 and r["to_top_s"] > 0
