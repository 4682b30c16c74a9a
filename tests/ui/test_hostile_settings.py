"""The window starts whatever shape settings.json has: what is valid is used, the rest named."""

from __future__ import annotations

import argparse
import json

import pytest

DEEP = 100_000


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"settings": [1, 2], "geometry": "ÄÖÜ", "window_state": 5, "last_model": 7}),
        json.dumps(
            {
                "settings": {"temperature": "hot", "n_ctx": {"a": [1]}, "seed": 3},
                "geometry": "not base64!!",
                "recent_models": {"x": 1},
                "tuned": [1],
            }
        ),
        "[" * DEEP + "]" * DEEP,
        json.dumps([1, 2, 3]),
    ],
)
def test_the_window_starts_with_a_settings_file_of_any_shape(qtbot, data_dir, model_path, content):
    from desklm.ui.app import build_window

    cfg = data_dir / "config" / "settings.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(content, "utf-8")
    args = argparse.Namespace(
        model=str(model_path),
        self_test=False,
        screenshot=None,
        ctx=None,
        threads=None,
        gpu_layers=None,
        max_tokens=None,
        temperature=None,
        seed=None,
        system=None,
    )
    w = build_window(args)
    qtbot.addWidget(w)
    try:
        assert "settings file" in w.notices.text()  # what was skipped is shown
        assert w.settings_panel.value("temperature") == 0.7
        if '"seed": 3' in content:
            assert w.settings_panel.value("seed") == 3  # the valid value is kept
    finally:
        w.shutdown()
