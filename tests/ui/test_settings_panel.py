"""The settings panel on its own (offscreen): generated from the schema, stable under a
pending reload, paging sliders, ranges from the schema and the model."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QPlainTextEdit, QSpinBox

from desklm.engine.settings import SCHEMA, Settings
from desklm.ui.panels.settings_panel import SettingsPanel, SliderRow, scrollable
from tests.ui.conftest import synced_with

EDITOR_TYPES = {
    "pow2": SliderRow,
    "slider": SliderRow,
    "steps": SliderRow,
    "spin": QSpinBox,
    "check": QCheckBox,
    "choice": QComboBox,
    "text": QPlainTextEdit,
}


def make(qtbot, width=300, height=560):
    panel = SettingsPanel(Settings())
    area = scrollable(panel)
    qtbot.addWidget(area)
    area.resize(width, height)
    area.show()
    qtbot.waitExposed(area)
    return panel, area


def geometries(panel):
    out = {}
    for name, ed in panel.editors.items():
        if isinstance(ed, SliderRow):
            out[name] = (
                ed.slider.geometry(),
                ed.slider.value(),
                ed.value(),
                ed.slider.mapTo(panel, QPoint(0, 0)),
            )
    return out


def test_every_schema_setting_has_its_editor(qtbot):
    panel, _ = make(qtbot)
    assert set(panel.editors) == set(SCHEMA)
    for name, s in SCHEMA.items():
        assert isinstance(panel.editors[name], EDITOR_TYPES[s.editor]), name
        assert panel.value(name) == Settings()[name] or isinstance(panel.editors[name], SliderRow)


def test_a_pending_reload_moves_nothing_and_titles_only_when_pending(qtbot, model_path):
    from desklm.engine.models.gguf_info import read_gguf
    from desklm.engine.monitor import NA

    panel, area = make(qtbot, width=270)
    panel.set_model(32768, 18, False)
    panel.set_free(8 * 2**30, NA)
    panel.set_model_info(read_gguf(model_path))  # the fit estimate changes with the slider
    box = panel.groups["reload"]
    assert box.title() == "Model"  # nothing pending, no "reload needed"
    qtbot.wait(20)
    before = geometries(panel)
    label_text = panel.labels["n_ctx"].text()
    row = panel.editors["n_ctx"]
    fit_before = panel.fit_label.text()
    row.slider.setValue(row.values.index(32768))
    qtbot.wait(20)
    assert panel.pending == {"n_ctx": 32768} and panel.reload_marked("n_ctx")
    assert panel.fit_label.text() != fit_before
    assert "reload needed" in box.title()
    after = geometries(panel)
    for name in before:
        g0, v0, val0, at0 = before[name]
        g1, v1, val1, at1 = after[name]
        assert g0 == g1 and at0 == at1, f"{name} moved or resized"
        if name != "n_ctx":
            assert (v0, val0) == (v1, val1), f"{name} changed value"
    assert panel.labels["n_ctx"].text() == label_text
    assert area.horizontalScrollBar().maximum() == 0  # never sideways
    row.slider.setValue(row.values.index(Settings()["n_ctx"]))  # back to the value in effect
    assert not panel.pending and box.title() == "Model" and not panel.reload_marked("n_ctx")


def test_a_click_on_the_track_pages_not_jumps(qtbot):
    panel, _ = make(qtbot)
    row = panel.editors["n_batch"]
    s = row.slider
    start = s.value()
    # click near the right end of the track
    qtbot.mouseClick(s, Qt.MouseButton.LeftButton, pos=QPoint(s.width() - 3, s.height() // 2))
    assert s.value() == start + s.pageStep(), (start, s.value())
    assert row.value() != 8192 and s.value() < s.maximum()
    qtbot.mouseClick(s, Qt.MouseButton.LeftButton, pos=QPoint(2, s.height() // 2))
    assert s.value() == start
    assert panel.pending == {}  # back where it was: nothing to reload


def test_the_context_range_comes_from_the_schema_and_the_model(qtbot):
    panel, _ = make(qtbot)
    ctx = panel.editors["n_ctx"]
    assert max(ctx.values) == SCHEMA["n_ctx"].maximum == 131072
    assert min(ctx.values) == SCHEMA["n_ctx"].minimum
    panel.set_model(32768, 18, False)
    assert max(ctx.values) == 32768
    assert panel.editors["n_gpu_layers"].values == [*range(19), -1]
    panel.set_model(40960, 28, False)  # not a power of two: the limit itself is offered
    assert max(ctx.values) == 40960
    temp = panel.editors["temperature"]
    assert temp.values[0] == SCHEMA["temperature"].minimum and temp.values[-1] == 2.0


def test_fits_at_1024x640_sizes(qtbot):
    """The dock at a 1024x640 window is ~270 px wide: everything is reachable by scrolling
    vertically, nothing is wider than the panel."""
    panel, area = make(qtbot, width=270, height=480)
    qtbot.wait(20)
    assert area.horizontalScrollBar().maximum() == 0
    assert panel.width() <= area.viewport().width()
    for name, ed in panel.editors.items():
        r = ed.geometry()
        assert ed.mapTo(panel, QPoint(r.width() - 1, 0)).x() <= panel.width(), name
        if isinstance(ed, SliderRow):
            assert ed.slider.width() >= 60, name  # never squashed to its handle
    sp = panel.editors["system_prompt"]
    area.ensureWidgetVisible(sp)
    assert area.verticalScrollBar().value() > 0


def test_any_choice_setting_gets_a_combo(qtbot, monkeypatch):
    """A setting added to the schema later (e.g. chat_format) appears with no panel change."""
    import desklm.engine.settings as settings_mod

    s = settings_mod.Setting(
        "chat_format",
        "choice",
        "auto",
        "How turns are written.",
        "sampling",
        "Chat format",
        needs_reload=True,
        choices=("auto", "gguf", "chatml", "plain dialogue"),
    )
    monkeypatch.setitem(settings_mod.SCHEMA, "chat_format", s)
    panel, _ = make(qtbot)
    combo = panel.editors["chat_format"]
    assert isinstance(combo, QComboBox) and combo.count() == 4
    combo.setCurrentText("chatml")
    assert panel.pending == {"chat_format": "chatml"} and panel.reload_marked("chat_format")
    assert "reload needed" in panel.groups["reload"].title()
    assert combo.parent() is not None and panel.groups["reload"].isAncestorOf(combo)


def test_presets_save_apply_and_delete_from_the_panel(make_window, qtbot, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    from desklm.engine import PresetStore

    w = make_window(max_tokens=8)
    sp = w.settings_panel
    qtbot.waitUntil(lambda: sp.preset_combo.count() >= 1, timeout=10000)
    with qtbot.waitSignal(
        w.settingsSynced, timeout=10000, check_params_cb=synced_with(temperature=0.15)
    ):
        sp.editors["temperature"].slider.setValue(3)  # 0.15
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Precise", True))
    with qtbot.waitSignal(w.controller.presetsListed, timeout=10000):
        sp.preset_save.click()
    qtbot.waitUntil(lambda: sp.preset_combo.findData("Precise") > 0, timeout=5000)
    assert PresetStore().get("Precise").values["temperature"] == 0.15
    # change the setting, then choose the preset: its value comes back
    with qtbot.waitSignal(
        w.settingsSynced, timeout=10000, check_params_cb=synced_with(temperature=0.7)
    ):
        sp.editors["temperature"].slider.setValue(14)  # 0.70
    with qtbot.waitSignal(w.controller.presetsListed, timeout=10000):
        sp.preset_combo.activated.emit(sp.preset_combo.findData("Precise"))
    qtbot.waitUntil(lambda: sp.value("temperature") == 0.15, timeout=10000)
    assert w.controller.session.settings["temperature"] == 0.15
    assert sp.preset_combo.currentData() == "Precise"  # remembered for this model
    assert "Precise" in w.statusBar().currentMessage()
    sp.confirm_delete = lambda name: name == "Precise"  # "Delete the preset?" answered Yes
    with qtbot.waitSignal(w.controller.presetsListed, timeout=10000):
        sp.preset_delete.click()
    assert sp.preset_combo.findData("Precise") == -1
    assert [p.name for p in PresetStore().list_all()] == []
