"""The settings panel takes every range from the schema (and the loaded model's limits)."""

from __future__ import annotations

from desklm.engine import SCHEMA, Settings


def test_context_range_comes_from_the_schema_then_the_model(qtbot):
    from desklm.ui.panels.settings_panel import SettingsPanel

    panel = SettingsPanel(Settings())
    qtbot.addWidget(panel)
    ctx = panel.editors["n_ctx"]
    assert max(ctx.values) == SCHEMA["n_ctx"].maximum  # 131072, not a hard-coded 32768
    assert min(ctx.values) == SCHEMA["n_ctx"].minimum
    panel.set_model(n_ctx_train=32768, n_layers=18, gpu_offload=False)
    assert max(panel.editors["n_ctx"].values) == 32768  # the model's training context


def test_every_setting_has_an_editor(qtbot):
    from desklm.ui.panels.settings_panel import SettingsPanel

    panel = SettingsPanel(Settings())
    qtbot.addWidget(panel)
    assert set(panel.editors) == set(SCHEMA)
