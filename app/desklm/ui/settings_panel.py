"""The settings panel, built from the one settings schema.

Sampling settings and threads apply as soon as they change (sampling on the next reply, threads
live). Settings that need a reload (context length, GPU layers, ...) are marked "reload needed"
until Apply reloads the model in the worker; the conversation is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import SCHEMA, Settings, logical_cores

RELOAD_STYLE = "color: #e0a030; font-weight: 600;"


def powers_of_two(lo: int, hi: int, extra: Any = None) -> list[int]:
    vals, v = [], lo
    while v <= hi:
        vals.append(v)
        v *= 2
    if extra is not None and lo <= extra <= hi and extra not in vals:
        vals.append(extra)
    return sorted(vals)


def float_steps(lo: float, hi: float, step: float) -> list[float]:
    n = round((hi - lo) / step)
    return [round(lo + i * step, 4) for i in range(n + 1)]


class SliderRow(QWidget):
    """A slider over an explicit list of values, with the value shown beside it."""

    valueChanged = Signal(object)

    def __init__(self, name: str, values: list[Any], fmt: Callable[[Any], str] = str) -> None:
        super().__init__()
        self.name = name
        self.fmt = fmt
        self.values: list[Any] = []
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName(f"slider:{name}")
        self.label = QLabel()
        self.label.setMinimumWidth(56)
        self.label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.label)
        self.slider.valueChanged.connect(self._moved)
        self.set_values(values, values[0])

    def set_values(self, values: list[Any], current: Any) -> None:
        self.values = list(values)
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(self.values) - 1)
        self.slider.setValue(self._index(current))
        self.slider.blockSignals(False)
        self.label.setText(self.fmt(self.value()))

    def _index(self, v: Any) -> int:
        if v in self.values:
            return self.values.index(v)
        nums = [x for x in self.values if isinstance(x, int | float) and x >= 0]
        if not nums or not isinstance(v, int | float):
            return 0
        best = min(nums, key=lambda x: abs(x - v))
        return self.values.index(best)

    def value(self) -> Any:
        return self.values[self.slider.value()]

    def set_value(self, v: Any) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(self._index(v))
        self.slider.blockSignals(False)
        self.label.setText(self.fmt(self.value()))

    def _moved(self, _i: int) -> None:
        self.label.setText(self.fmt(self.value()))
        self.valueChanged.emit(self.value())


class SettingsPanel(QWidget):
    """Signals:
    changed(object): {name: value} for settings that apply without reload.
    applyRequested(object): {name: value} of the pending reload settings (Apply pressed).
    tuneRequested(): the Tune button was pressed.
    """

    changed = Signal(object)
    applyRequested = Signal(object)
    tuneRequested = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings.copy()
        self.pending: dict[str, Any] = {}
        self.labels: dict[str, QLabel] = {}
        self.editors: dict[str, Any] = {}
        self.gpu_available = False
        self.n_layers = 0
        self.model_info: Any = None  # GGUFInfo of the loaded model
        self.free: tuple[Any, Any] | None = None  # (free RAM, free VRAM) from the sampler
        self.fit: Any = None  # the last FitEstimate shown
        cores = logical_cores()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)

        model = QGroupBox("Model (reload needed)")
        mform = QFormLayout(model)
        self._slider(mform, "n_ctx", powers_of_two(int(SCHEMA["n_ctx"].minimum or 512),
                                                  int(SCHEMA["n_ctx"].maximum or 131072),
                                                  settings["n_ctx"]), _tokens)
        self._slider(mform, "n_gpu_layers", [0, -1], _layers)
        self.gpu_warning = QLabel("")
        self.gpu_warning.setObjectName("gpu_warning")
        self.gpu_warning.setWordWrap(True)
        self.gpu_warning.setStyleSheet("color: #e05050;")
        self.gpu_warning.hide()
        mform.addRow(self.gpu_warning)
        self._slider(mform, "n_batch", powers_of_two(8, 8192, settings["n_batch"]))
        kv = QComboBox()
        kv.addItems(list(SCHEMA["kv_cache_type"].choices))
        kv.setCurrentText(settings["kv_cache_type"])
        kv.currentTextChanged.connect(lambda v: self._edited("kv_cache_type", v))
        self._row(mform, "kv_cache_type", kv)
        for name in ("flash_attn", "use_mmap", "use_mlock"):
            cb = QCheckBox()
            cb.setChecked(bool(settings[name]))
            cb.toggled.connect(lambda v, n=name: self._edited(n, v))
            self._row(mform, name, cb)
        self.fit_label = QLabel("Memory: load a model to estimate")
        self.fit_label.setObjectName("fit")
        self.fit_label.setWordWrap(True)
        self.fit_label.setToolTip("Estimated from the model file before loading: weights, KV "
                                  "cache and working memory, against free RAM and VRAM.")
        mform.addRow(self.fit_label)
        self.auto_button = QPushButton("Auto")
        self.auto_button.setObjectName("auto")
        self.auto_button.setToolTip("Pick the most GPU layers, then the longest context, that "
                                    "fit with a safety margin")
        self.auto_button.setEnabled(False)
        self.auto_button.clicked.connect(self.auto)
        self.apply_button = QPushButton("Apply && reload")
        self.apply_button.setObjectName("apply")
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        brow = QHBoxLayout()
        brow.addWidget(self.auto_button)
        brow.addWidget(self.apply_button, 1)
        mform.addRow(brow)
        outer.addWidget(model)

        live = QGroupBox("Threads (live)")
        lform = QFormLayout(live)
        self._slider(lform, "n_threads", list(range(1, cores + 1)))
        self._slider(lform, "n_threads_batch", list(range(1, cores + 1)))
        self.tune_button = QPushButton("Tune for this machine")
        self.tune_button.setObjectName("tune")
        self.tune_button.setToolTip("Measure speed at several thread counts (and GPU layers, "
                                    "with a GPU), apply the fastest and remember it for this "
                                    "model. Stop cancels.")
        self.tune_button.setEnabled(False)
        self.tune_button.clicked.connect(self.tuneRequested.emit)
        lform.addRow(self.tune_button)
        outer.addWidget(live)

        samp = QGroupBox("Sampling (next reply)")
        sform = QFormLayout(samp)
        self._slider(sform, "temperature", float_steps(0, 2, 0.05), lambda v: f"{v:.2f}")
        self._slider(sform, "top_p", float_steps(0, 1, 0.01), lambda v: f"{v:.2f}")
        self._slider(sform, "top_k", [0, 1, 5, 10, 20, 40, 60, 80, 100, 200, 500, 1000])
        self._slider(sform, "min_p", float_steps(0, 1, 0.01), lambda v: f"{v:.2f}")
        self._slider(sform, "repeat_penalty", float_steps(0.5, 2, 0.05), lambda v: f"{v:.2f}")
        self._slider(sform, "max_tokens", powers_of_two(16, 32768, settings["max_tokens"]))
        seed = QSpinBox()
        seed.setRange(-1, 2**31 - 1)
        seed.setSpecialValueText("random")
        seed.setValue(settings["seed"])
        seed.valueChanged.connect(lambda v: self._edited("seed", v))
        self._row(sform, "seed", seed)
        sysp = QPlainTextEdit(settings["system_prompt"])
        sysp.setObjectName("system_prompt")
        sysp.setFixedHeight(64)
        self._sys_timer = QTimer(self)
        self._sys_timer.setSingleShot(True)
        self._sys_timer.setInterval(600)
        self._sys_timer.timeout.connect(
            lambda: self._edited("system_prompt", sysp.toPlainText()))
        sysp.textChanged.connect(self._sys_timer.start)
        self._row(sform, "system_prompt", sysp)
        outer.addWidget(samp)
        outer.addStretch(1)

    # -- construction helpers --
    def _row(self, form: QFormLayout, name: str, editor: QWidget) -> None:
        s = SCHEMA[name]
        label = QLabel(s.label)
        label.setToolTip(s.help)
        editor.setToolTip(s.help)
        self.labels[name] = label
        self.editors[name] = editor
        form.addRow(label, editor)

    def _slider(self, form: QFormLayout, name: str, values: list[Any],
                fmt: Callable[[Any], str] = str) -> SliderRow:
        row = SliderRow(name, values, fmt)
        row.set_value(self.settings[name])
        row.valueChanged.connect(lambda v, n=name: self._edited(n, v))
        self._row(form, name, row)
        return row

    # -- behaviour --
    def _edited(self, name: str, value: Any) -> None:
        if SCHEMA[name].needs_reload:
            if value == self.settings[name]:
                self.pending.pop(name, None)
            else:
                self.pending[name] = value
            self._mark()
        else:
            self.settings.set(name, value)
            self.changed.emit({name: value})
        self._update_gpu_warning()

    def pending_or_current(self, name: str) -> Any:
        return self.pending.get(name, self.settings[name])

    def set_model_info(self, info: Any) -> None:
        self.model_info = info
        self.auto_button.setEnabled(True)
        self.tune_button.setEnabled(True)
        self.update_fit()

    def set_free(self, free_ram: Any, free_vram: Any) -> None:
        self.free = (free_ram, free_vram)
        if self.fit is None and self.model_info is not None:
            self.update_fit()

    def update_fit(self) -> None:
        from desklm.engine import FITS, TIGHT, estimate

        if self.model_info is None:
            return
        v = self.pending_or_current
        self.fit = estimate(self.model_info, v("n_ctx"), v("n_gpu_layers"), v("kv_cache_type"),
                            n_ubatch=min(512, v("n_batch")), flash_attn=v("flash_attn"),
                            gpu_offload=self.gpu_available, free=self.free)
        color = {FITS: "#3fb68b", TIGHT: "#e0a030"}.get(self.fit.verdict, "#e05050")
        self.fit_label.setText(f"Memory: {self.fit.summary()}")
        self.fit_label.setStyleSheet(f"color: {color};")

    def auto(self) -> None:
        from desklm.engine import auto_fit

        if self.model_info is None:
            return
        v = self.pending_or_current
        best = auto_fit(self.model_info, v("kv_cache_type"), v("flash_attn"),
                        gpu_offload=self.gpu_available, free=self.free)
        self.editors["n_ctx"].set_values(
            sorted({*self.editors["n_ctx"].values, best.n_ctx}), best.n_ctx)
        self.editors["n_gpu_layers"].set_value(best.n_gpu_layers)
        self._edited("n_ctx", best.n_ctx)
        self._edited("n_gpu_layers", best.n_gpu_layers)

    def _mark(self) -> None:
        for name, label in self.labels.items():
            if SCHEMA[name].needs_reload:
                pend = name in self.pending
                label.setText(SCHEMA[name].label + (" • reload needed" if pend else ""))
                label.setStyleSheet(RELOAD_STYLE if pend else "")
        self.apply_button.setEnabled(bool(self.pending))
        self.update_fit()

    def apply(self) -> None:
        if self.pending:
            self.applyRequested.emit(dict(self.pending))

    def value(self, name: str) -> Any:
        ed = self.editors[name]
        if isinstance(ed, SliderRow):
            return ed.value()
        if isinstance(ed, QCheckBox):
            return ed.isChecked()
        if isinstance(ed, QComboBox):
            return ed.currentText()
        if isinstance(ed, QSpinBox):
            return ed.value()
        return ed.toPlainText()

    def set_model(self, n_ctx_train: int, n_layers: int, gpu_offload: bool) -> None:
        """Ranges from the loaded model's metadata."""
        self.n_layers = n_layers
        self.settings.limits["n_ctx"] = n_ctx_train
        self.editors["n_ctx"].set_values(
            powers_of_two(512, max(512, n_ctx_train), self.settings["n_ctx"]),
            self.settings["n_ctx"])
        self.editors["n_gpu_layers"].set_values([*range(n_layers + 1), -1],
                                                self.settings["n_gpu_layers"])
        self.gpu_available = gpu_offload
        self._update_gpu_warning()

    def sync(self, settings: Settings) -> None:
        """Show the values in effect (after a load or an applied change); clears 'pending'."""
        self.settings = settings.copy()
        self.pending.clear()
        for name, ed in self.editors.items():
            v = settings[name]
            ed.blockSignals(True)
            if isinstance(ed, SliderRow):
                ed.set_value(v)
            elif isinstance(ed, QCheckBox):
                ed.setChecked(bool(v))
            elif isinstance(ed, QComboBox):
                ed.setCurrentText(v)
            elif isinstance(ed, QSpinBox):
                ed.setValue(v)
            elif ed.toPlainText() != v:
                ed.setPlainText(v)
            ed.blockSignals(False)
        self._mark()
        self._update_gpu_warning()

    def set_setting(self, name: str, value: Any) -> None:
        """One setting now in effect (from the session, which owns the values)."""
        if name not in self.editors:
            return
        self.settings.set(name, value)
        self.pending.pop(name, None)
        ed = self.editors[name]
        ed.blockSignals(True)
        if isinstance(ed, SliderRow):
            ed.set_value(value)
        elif isinstance(ed, QCheckBox):
            ed.setChecked(bool(value))
        elif isinstance(ed, QComboBox):
            ed.setCurrentText(value)
        elif isinstance(ed, QSpinBox):
            ed.setValue(value)
        elif ed.toPlainText() != value:
            ed.setPlainText(value)
        ed.blockSignals(False)
        self._mark()

    def set_gpu_available(self, available: bool) -> None:
        if available != self.gpu_available:
            self.gpu_available = available
            self._update_gpu_warning()

    def _update_gpu_warning(self) -> None:
        layers = self.pending.get("n_gpu_layers", self.settings["n_gpu_layers"])
        show = layers != 0 and not self.gpu_available
        self.gpu_warning.setText("No usable GPU: GPU layers will run on the CPU "
                                 "(no NVIDIA GPU, or llama.cpp built without GPU support).")
        self.gpu_warning.setVisible(show)


def _tokens(v: int) -> str:
    return f"{v // 1024}k" if v >= 1024 and v % 1024 == 0 else str(v)


def _layers(v: int) -> str:
    return "all" if v == -1 else str(v)
