"""The settings panel, generated from the one settings schema.

Every row comes from :data:`desklm.engine.settings.SCHEMA`: the editor kind (``pow2``,
``slider``, ``steps``, ``spin``, ``check``, ``choice``, ``text``), its range (the maximum from
:meth:`Settings.maximum`, so the context slider goes up to the loaded model's limit), label and
tooltip. Rows are grouped: "Model" (settings that need a reload), "Threads (live)" (load
settings applied live) and "Sampling (next reply)".

Sampling settings and threads apply as soon as they change (sampling on the next reply, threads
live). A changed reload setting gets a dot in a fixed-width column beside its label and the
group title says "reload needed" until Apply reloads the model (or "no reload" where applying
reloads nothing: ``parallel`` alone while no API slots are made); nothing else moves: labels keep
their text, sliders their size and value. A click on a slider's track moves it by a page step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QStyle,
    QStyleOptionSlider,
    QVBoxLayout,
    QWidget,
)

from desklm.engine import SCHEMA, Setting, Settings
from desklm.ui import theme

GROUPS = (("reload", "Model"), ("live", "Threads (live)"), ("sampling", "Sampling (next reply)"))
MARK = "●"
SLOTS_LATER = "press Apply: no reload now, the API's slots are made when the API is turned on"


def powers_of_two(lo: int, hi: int, extra: Any = None) -> list[int]:
    vals, v = [], max(1, lo)
    while v <= hi:
        vals.append(v)
        v *= 2
    if hi not in vals and hi >= lo:
        vals.append(hi)  # the model's limit, when it is not a power of two
    if extra is not None and lo <= extra <= hi and extra not in vals:
        vals.append(extra)
    return sorted(vals)


def float_steps(lo: float, hi: float, step: float) -> list[float]:
    n = round((hi - lo) / step)
    return [round(lo + i * step, 4) for i in range(n + 1)]


def group_of(s: Setting) -> str:
    """ "reload" (the Model group) for anything that needs a reload, "live" for other load
    settings, "sampling" for the rest."""
    if s.needs_reload:
        return "reload"
    return "live" if s.group == "load" else "sampling"


def slider_values(s: Setting, maximum: float | None, current: Any) -> list[Any]:
    """The values a slider row offers for ``s``, its maximum being ``maximum``."""
    lo = s.minimum if s.minimum is not None else 0
    hi = maximum if maximum is not None else s.maximum
    specials = sorted(s.special)
    if s.editor == "pow2":
        return powers_of_two(int(lo), int(hi or lo), current)
    if s.editor == "steps":
        vals = [v for v in s.steps if hi is None or v <= hi]
        if current in s.special or (current not in vals and lo <= current <= (hi or current)):
            vals = sorted({*vals, current})
        return vals
    if s.kind == "float":
        return float_steps(float(lo), float(hi if hi is not None else lo + 1), s.step)
    top = int(hi if hi is not None else lo)
    if specials and top - int(lo) > 512:
        # a model limit is not known yet (GPU layers before a load): the ends only
        return [int(lo), *specials]
    return [*range(int(lo), top + 1, max(1, int(s.step))), *specials]


def formatter(s: Setting) -> Callable[[Any], str]:
    if s.name == "n_ctx" or (s.editor == "pow2" and s.name != "n_batch"):
        return _tokens
    if s.kind == "float":
        return lambda v: f"{v:.2f}"
    if s.special:
        return lambda v: s.special.get(v, str(v)) if isinstance(v, int) else str(v)
    return str


def no_wheel(widget: QWidget, e: Any, handle: Callable[[Any], None]) -> None:
    """The mouse wheel scrolls the panel, never a value under the pointer by accident ("Chat
    cache in RAM" went 512 -> 511 while scrolling past it): a setting takes the wheel only
    once it has the keyboard focus (clicked or tabbed to)."""
    if widget.hasFocus():
        handle(e)
    else:
        e.ignore()  # passed on to the scroll area


class WheelSafeSpinBox(QSpinBox):
    def __init__(self) -> None:
        super().__init__()
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, e: Any) -> None:
        no_wheel(self, e, super().wheelEvent)


class WheelSafeComboBox(QComboBox):
    def __init__(self) -> None:
        super().__init__()
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def wheelEvent(self, e: Any) -> None:
        no_wheel(self, e, super().wheelEvent)


class PagingSlider(QSlider):
    """A click on the track moves one page step towards the click; only a drag of the handle
    moves freely. (Some styles and desktops make the left button set the value absolutely,
    which moved a slider to an end on one click.)"""

    def mousePressEvent(self, e: QMouseEvent) -> None:
        if e.button() == Qt.MouseButton.LeftButton:
            opt = QStyleOptionSlider()
            self.initStyleOption(opt)
            handle = self.style().subControlRect(
                QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderHandle, self
            )
            at = e.position().toPoint()
            if not handle.contains(at):
                after = at.x() > handle.center().x()
                if self.invertedAppearance() != self.isRightToLeft():
                    after = not after
                self.triggerAction(
                    QSlider.SliderAction.SliderPageStepAdd
                    if after
                    else QSlider.SliderAction.SliderPageStepSub
                )
                self._paged = True
                e.accept()
                return
        super().mousePressEvent(e)

    _paged = False

    def wheelEvent(self, e: Any) -> None:
        no_wheel(self, e, super().wheelEvent)

    def mouseReleaseEvent(self, e: QMouseEvent) -> None:
        if self._paged:
            self._paged = False
            e.accept()
            return
        super().mouseReleaseEvent(e)


class SliderRow(QWidget):
    """A slider over an explicit list of values, with the value shown beside it in a label of
    fixed width (so the slider never changes size as the value changes)."""

    valueChanged = Signal(object)

    def __init__(self, name: str, values: list[Any], fmt: Callable[[Any], str] = str) -> None:
        super().__init__()
        self.name = name
        self.fmt = fmt
        self.values: list[Any] = []
        self.slider = PagingSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName(f"slider:{name}")
        self.slider.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.slider.setMinimumWidth(100)
        self.slider.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.label = QLabel()
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
        self.slider.setSingleStep(1)
        self.slider.setPageStep(max(1, len(self.values) // 10))
        self.slider.setValue(self._index(current))
        self.slider.blockSignals(False)
        fm = self.label.fontMetrics()
        widest = max((fm.horizontalAdvance(self.fmt(v)) for v in self.values), default=20)
        self.label.setFixedWidth(max(36, widest + 6))
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
    presetChosen(str): a preset picked in the Presets row (to apply).
    presetSaveRequested(str): "Save as…" with the name typed.
    presetDeleteRequested(str): "Delete" with the preset shown.
    """

    changed = Signal(object)
    applyRequested = Signal(object)
    tuneRequested = Signal()
    presetChosen = Signal(str)
    presetSaveRequested = Signal(str)
    presetDeleteRequested = Signal(str)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("settings_panel")
        self.settings = settings.copy()
        self.pending: dict[str, Any] = {}
        self.labels: dict[str, QLabel] = {}
        self.marks: dict[str, QLabel] = {}  # the fixed-width "reload needed" dot of each row
        self.editors: dict[str, Any] = {}
        self.groups: dict[str, QGroupBox] = {}
        self.gpu_available = False
        # the API slots' KV cache is counted while the API is on (made then, not before)
        self.api_on = False
        # whether applying these values reloads the model (the window's session answers; the
        # parallel setting alone reloads nothing while no API slots are made); None: always
        self.reloads: Callable[[dict[str, Any]], bool] | None = None
        self.n_layers = 0
        self.model_info: Any = None  # GGUFInfo of the loaded model
        self.free: tuple[Any, Any] | None = None  # (free RAM, free VRAM) from the sampler
        self.fit: Any = None  # the last FitEstimate shown
        self._sys_timers: dict[str, QTimer] = {}
        self.confirm_delete: Callable[[str], bool] = self._ask_delete  # tests answer it
        self.remote = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 6, 4, 4)
        outer.addWidget(self._preset_row())
        forms: dict[str, QFormLayout] = {}
        for key, title in GROUPS:
            box = QGroupBox(title)
            box.setObjectName(f"group:{key}")
            form = QFormLayout(box)
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            self.groups[key] = box
            forms[key] = form
        for s in SCHEMA.values():
            self._add(forms[group_of(s)], s)
            if s.name == "n_gpu_layers":
                self.gpu_warning = QLabel("")
                self.gpu_warning.setObjectName("gpu_warning")
                self.gpu_warning.setWordWrap(True)
                self.gpu_warning.setProperty("role", "error")
                self.gpu_warning.hide()
                forms["reload"].addRow(self.gpu_warning)
        if not hasattr(self, "gpu_warning"):  # a schema without GPU layers
            self.gpu_warning = QLabel("")
            self.gpu_warning.hide()

        mform = forms["reload"]
        self.fit_label = QLabel("Memory: load a model to estimate")
        self.fit_label.setObjectName("fit")
        self.fit_label.setWordWrap(True)
        # room for two lines from the start: a longer estimate never pushes the rows below
        self.fit_label.setMinimumHeight(self.fit_label.fontMetrics().lineSpacing() * 2 + 2)
        self.fit_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.fit_label.setToolTip(
            "Estimated from the model file before loading: weights, KV "
            "cache and working memory, against free RAM and VRAM."
        )
        mform.addRow(self.fit_label)
        self.auto_button = QPushButton("Auto")
        self.auto_button.setObjectName("auto")
        self.auto_button.setToolTip(
            "Pick the most GPU layers, then the longest context, that fit with a safety margin"
        )
        self.auto_button.setEnabled(False)
        self.auto_button.clicked.connect(self.auto)
        self.apply_button = QPushButton("Apply && reload")
        self.apply_button.setObjectName("apply")
        # the button is disabled while the model reloads: with the focus, Qt would pass it to
        # the next row, and the scroll area would scroll there by itself
        self.apply_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.apply_button.setEnabled(False)
        self.apply_button.clicked.connect(self.apply)
        brow = QHBoxLayout()
        brow.addWidget(self.auto_button)
        brow.addWidget(self.apply_button, 1)
        mform.addRow(brow)

        self.kv_label = QLabel("")
        self.kv_label.setObjectName("kv_usage")
        self.kv_label.setProperty("role", "muted")
        self.kv_label.setToolTip(
            "Chats you left keep their KV cache here, so coming back to "
            "one evaluates only what is new. Oldest go first."
        )
        self.kv_label.hide()
        forms["live"].addRow(self.kv_label)

        self.tune_button = QPushButton("Tune for this machine")
        self.tune_button.setObjectName("tune")
        self.tune_button.setToolTip(
            "Measure speed at several thread counts (and GPU layers, "
            "with a GPU), apply the fastest and remember it for this "
            "model. Stop cancels."
        )
        self.tune_button.setEnabled(False)
        self.tune_button.clicked.connect(self.tuneRequested.emit)
        forms["live"].addRow(self.tune_button)
        for key, _title in GROUPS:
            if forms[key].rowCount():
                outer.addWidget(self.groups[key])
        outer.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        theme.notifier().themeChanged.connect(self._on_theme)
        self._mark()
        self._restyle()

    def _on_theme(self, _palette: object) -> None:
        self._restyle()

    # -- construction --
    def _add(self, form: QFormLayout, s: Setting) -> None:
        name, kind = s.name, s.editor
        value = self.settings[name]
        editor: QWidget
        if kind in ("pow2", "slider", "steps"):
            row = SliderRow(
                name, slider_values(s, self.settings.maximum(name), value), formatter(s)
            )
            row.set_value(value)
            row.valueChanged.connect(lambda v, n=name: self._edited(n, v))
            editor = row
        elif kind == "check":
            cb = QCheckBox()
            cb.setChecked(bool(value))
            cb.toggled.connect(lambda v, n=name: self._edited(n, v))
            editor = cb
        elif kind == "choice":
            combo = WheelSafeComboBox()
            combo.addItems(list(s.choices))
            combo.setCurrentText(str(value))
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(6)
            combo.currentTextChanged.connect(lambda v, n=name: self._edited(n, v))
            editor = combo
        elif kind == "spin":
            spin = WheelSafeSpinBox()
            lo = min([int(s.minimum or 0), *s.special])
            hi = self.settings.maximum(name)
            spin.setRange(lo, int(hi) if hi is not None else 2**31 - 1)
            if s.special.get(lo):
                spin.setSpecialValueText(s.special[lo])
            spin.setValue(int(value))
            spin.valueChanged.connect(lambda v, n=name: self._edited(n, v))
            editor = spin
        else:  # text
            text = QPlainTextEdit(str(value))
            text.setObjectName(name)
            text.setFixedHeight(64)
            timer = QTimer(self)
            timer.setSingleShot(True)
            timer.setInterval(600)
            timer.timeout.connect(lambda n=name, t=text: self._edited(n, t.toPlainText()))
            text.textChanged.connect(timer.start)
            self._sys_timers[name] = timer
            editor = text
        label = QLabel(s.label)
        label.setToolTip(s.help)
        editor.setToolTip(f"{s.help}\n{s.cli_flag} · {s.range_text(self.settings.maximum(name))}")
        mark = QLabel("")
        mark.setObjectName(f"mark:{name}")
        mark.setFixedWidth(12)
        mark.setToolTip("reload needed: press Apply")
        head = QWidget()
        hl = QHBoxLayout(head)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.setSpacing(2)
        hl.addWidget(mark)
        hl.addWidget(label, 1)
        self.labels[name] = label
        self.marks[name] = mark
        self.editors[name] = editor
        if isinstance(editor, SliderRow):
            # the name and value on one line, the slider under them at the panel's full
            # width: a narrow dock never squeezes a slider, and nothing beside it changes size
            hl.addWidget(editor.label)
            form.addRow(head)
            form.addRow(editor)
        elif kind in ("text", "spin"):
            # a number box beside its name left the name no room in a narrow dock (the
            # "Chat cache in RAM (MB)" label vanished at 260 px): the box goes under it
            form.addRow(head)
            form.addRow(editor)
        else:
            form.addRow(head, editor)

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

    # -- presets --
    def _preset_row(self) -> QWidget:
        """Presets: named sets of these settings (the system prompt among them)."""
        box = QGroupBox("Presets")
        box.setObjectName("group:presets")
        lay = QVBoxLayout(box)  # the list over its buttons: a narrow dock cuts neither
        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("presets")
        self.preset_combo.setToolTip(
            "Apply a saved preset (a load setting in it reloads the model)"
        )
        self.preset_combo.setMinimumContentsLength(6)
        self.preset_combo.activated.connect(self._preset_activated)
        self.preset_save = QPushButton("Save as…")
        self.preset_save.setToolTip("Save the current settings as a named preset")
        self.preset_save.clicked.connect(self._preset_save_clicked)
        self.preset_delete = QPushButton("Delete")
        self.preset_delete.clicked.connect(self._preset_delete_clicked)
        lay.addWidget(self.preset_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preset_save)
        buttons.addWidget(self.preset_delete)
        buttons.addStretch(1)
        lay.addLayout(buttons)
        self.set_presets([], "")
        return box

    def set_presets(self, names: list[str], current: str) -> None:
        """The saved presets; ``current``: the one last used with this model ("" if none)."""
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        self.preset_combo.addItem("(no preset)" if names else "(none saved yet)", "")
        for n in names:
            self.preset_combo.addItem(n, n)
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(current)))
        self.preset_combo.blockSignals(False)
        self.preset_delete.setEnabled(bool(current))

    def _preset_activated(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        self.preset_delete.setEnabled(bool(name))
        if name:
            self.presetChosen.emit(name)

    def _preset_save_clicked(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        current = self.preset_combo.currentData() or ""
        name, ok = QInputDialog.getText(
            self, "Save preset", "Name for the current settings:", text=current
        )
        if ok and name.strip():
            self.presetSaveRequested.emit(name.strip())

    def _preset_delete_clicked(self) -> None:
        name = self.preset_combo.currentData()
        if name and self.confirm_delete(name):
            self.presetDeleteRequested.emit(name)

    def _ask_delete(self, name: str) -> bool:
        from PySide6.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self, "Delete preset", f"Delete the preset “{name}”? This cannot be undone."
        )
        return answer == QMessageBox.StandardButton.Yes

    def reload_marked(self, name: str) -> bool:
        """Whether ``name`` shows the "reload needed" mark."""
        return self.marks[name].text() == MARK

    def pending_or_current(self, name: str) -> Any:
        return self.pending.get(name, self.settings[name])

    def set_model_info(self, info: Any) -> None:
        self.model_info = info
        self.auto_button.setEnabled(not self.remote)
        self.update_fit()  # the tune button follows the window's state, see MainWindow._on_state

    def set_kv_usage(self, u: dict[str, int]) -> None:
        """Show the chat cache's use: how many chats, bytes against the budget, per tier."""
        from desklm.engine import fmt_bytes

        n = u.get("ram_snapshots", 0) + u.get("disk_snapshots", 0)
        # short lines, no word wrap: the form reserves their height in a narrow dock
        self.kv_label.setText(
            f"Chat cache: {n} chat{'s' if n != 1 else ''}\n"
            f"RAM: {fmt_bytes(u.get('ram_bytes', 0))} of {fmt_bytes(u.get('ram_budget', 0))}\n"
            f"disk: {fmt_bytes(u.get('disk_bytes', 0))} of {fmt_bytes(u.get('disk_budget', 0))}"
        )
        self.kv_label.show()

    def set_free(self, free_ram: Any, free_vram: Any) -> None:
        self.free = (free_ram, free_vram)
        if self.fit is None and self.model_info is not None:
            self.update_fit()

    def slots(self) -> int:
        """The API slots a load would make now: the setting while the API is on, else 1."""
        return int(self.pending_or_current("parallel")) if self.api_on else 1

    def set_api_on(self, on: bool) -> None:
        """The API started or stopped: the memory estimate counts its slots, or not."""
        if on != self.api_on:
            self.api_on = on
            self._mark()  # a pending parallel reloads with the API's slots, not without

    def update_fit(self) -> None:
        from desklm.engine import estimate

        if self.model_info is None or getattr(self, "remote", False):
            return
        v = self.pending_or_current
        self.fit = estimate(
            self.model_info,
            v("n_ctx"),
            v("n_gpu_layers"),
            v("kv_cache_type"),
            n_ubatch=min(512, v("n_batch")),
            flash_attn=v("flash_attn"),
            gpu_offload=self.gpu_available,
            free=self.free,
            parallel=self.slots(),
        )  # KV per slot (engine.models.fit)
        self.fit_label.setText(f"Memory: {self.fit.summary()}")
        self._restyle()

    def _restyle(self) -> None:
        from desklm.engine import FITS, TIGHT

        p = theme.current()
        for mark in self.marks.values():
            mark.setStyleSheet(f"color: {p.warn};")
        self.gpu_warning.setStyleSheet(f"color: {p.error};")
        if self.fit is not None:
            color = {FITS: p.ok, TIGHT: p.warn}.get(self.fit.verdict, p.error)
            self.fit_label.setStyleSheet(f"color: {color};")

    def auto(self) -> None:
        from desklm.engine import auto_fit

        if self.model_info is None:
            return
        v = self.pending_or_current
        best = auto_fit(
            self.model_info,
            v("kv_cache_type"),
            v("flash_attn"),
            gpu_offload=self.gpu_available,
            free=self.free,
            max_ctx=int(self.settings.maximum("n_ctx") or 131072),
            parallel=self.slots(),
        )
        self.editors["n_ctx"].set_values(
            sorted({*self.editors["n_ctx"].values, best.n_ctx}), best.n_ctx
        )
        self.editors["n_gpu_layers"].set_value(best.n_gpu_layers)
        self._edited("n_ctx", best.n_ctx)
        self._edited("n_gpu_layers", best.n_gpu_layers)
        if self.api_on and best.parallel != int(v("parallel")):  # their KV cache is the cost
            self.editors["parallel"].set_value(best.parallel)
            self._edited("parallel", best.parallel)

    def _mark(self) -> None:
        reload = bool(self.pending) and (self.reloads is None or self.reloads(dict(self.pending)))
        tip = "reload needed: press Apply" if reload or not self.pending else SLOTS_LATER
        for name, mark in self.marks.items():
            mark.setText(MARK if name in self.pending else "")
            mark.setToolTip(tip)
        box = self.groups["reload"]
        box.setTitle(
            "Model — set on the server"
            if getattr(self, "remote", False)
            else "Model — reload needed"
            if reload
            else "Model — press Apply (no reload)"
            if self.pending
            else "Model"
        )
        self.apply_button.setEnabled(bool(self.pending))
        self.apply_button.setText("Apply && reload" if reload or not self.pending else "Apply")
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

    def _refresh_range(self, name: str) -> None:
        ed = self.editors.get(name)
        s = SCHEMA[name]
        cur = self.pending_or_current(name)
        if isinstance(ed, SliderRow):
            ed.set_values(slider_values(s, self.settings.maximum(name), cur), cur)
        elif isinstance(ed, QSpinBox):
            hi = self.settings.maximum(name)
            if hi is not None:
                ed.blockSignals(True)
                ed.setMaximum(int(hi))
                ed.blockSignals(False)

    def set_model(self, n_ctx_train: int, n_layers: int, gpu_offload: bool) -> None:
        """Ranges from the loaded model's metadata: the context up to its training context
        (and the schema's maximum), GPU layers up to its layer count."""
        self.n_layers = n_layers
        self.settings.limits["n_ctx"] = n_ctx_train
        self.settings.limits["n_gpu_layers"] = n_layers
        for name in ("n_ctx", "n_gpu_layers"):
            if name in self.editors:
                self._refresh_range(name)
        self.gpu_available = gpu_offload
        self._update_gpu_warning()

    def sync(self, settings: Settings) -> None:
        """Show the values in effect (after a load or an applied change). A reload change
        still pending (not what is in effect now) stays pending, marked, with its editor at
        the pending value: a live change made meanwhile (CPU threads) never discards it."""
        limits = dict(self.settings.limits)
        self.settings = settings.copy()
        for k, v in limits.items():
            self.settings.limits.setdefault(k, v)
        self.pending = {n: v for n, v in self.pending.items() if settings[n] != v}
        for name, ed in self.editors.items():
            v = self.pending.get(name, settings[name])
            ed.blockSignals(True)
            if isinstance(ed, SliderRow):
                if v not in ed.values:
                    self._refresh_range(name)
                ed.set_value(v)
            elif isinstance(ed, QCheckBox):
                ed.setChecked(bool(v))
            elif isinstance(ed, QComboBox):
                ed.setCurrentText(str(v))
            elif isinstance(ed, QSpinBox):
                ed.setValue(int(v))
            elif ed.toPlainText() != v:
                ed.setPlainText(v)
            ed.blockSignals(False)
        self._mark()
        self._update_gpu_warning()

    def set_setting(self, name: str, value: Any) -> None:
        """One setting now in effect (from the session, which owns the values)."""
        ed = self.editors.get(name)
        if ed is None:
            return
        self.settings.set(name, value)
        self.pending.pop(name, None)
        ed.blockSignals(True)
        if isinstance(ed, SliderRow):
            if value not in ed.values:
                self._refresh_range(name)
            ed.set_value(value)
        elif isinstance(ed, QCheckBox):
            ed.setChecked(bool(value))
        elif isinstance(ed, QComboBox):
            ed.setCurrentText(str(value))
        elif isinstance(ed, QSpinBox):
            ed.setValue(int(value))
        elif ed.toPlainText() != value:
            ed.setPlainText(value)
        ed.blockSignals(False)
        self._mark()
        self._update_gpu_warning()

    def set_remote(self, remote: bool) -> None:
        """On a server's model the load settings (context, GPU layers, batch, KV type,
        threads) are the server's: shown, not editable, and no memory estimate; sampling
        settings still go with each request."""
        self.remote = remote
        for key in ("reload", "live"):
            box = self.groups.get(key)
            if box is not None:
                box.setEnabled(not remote)
        title = dict(GROUPS)
        self.groups["live"].setTitle(title["live"] + (" — set on the server" if remote else ""))
        self._mark()
        if remote:
            self.fit = None
            self.fit_label.setText("Memory: the model runs on the server")
            self.fit_label.setStyleSheet("")
        self.auto_button.setEnabled(not remote and self.model_info is not None)

    def set_gpu_available(self, available: bool) -> None:
        if available != self.gpu_available:
            self.gpu_available = available
            self._update_gpu_warning()

    def _update_gpu_warning(self) -> None:
        if "n_gpu_layers" not in self.settings.to_dict():
            return
        layers = self.pending.get("n_gpu_layers", self.settings["n_gpu_layers"])
        show = layers != 0 and not self.gpu_available
        self.gpu_warning.setText(
            "No usable GPU: GPU layers will run on the CPU "
            "(no NVIDIA GPU, or llama.cpp built without GPU support)."
        )
        self.gpu_warning.setVisible(show)


def scrollable(panel: QWidget) -> QScrollArea:
    """``panel`` in a scroll area that scrolls vertically only (the panel follows its width)."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setWidget(panel)
    return area


def _tokens(v: int) -> str:
    return f"{v // 1024}k" if v >= 1024 and v % 1024 == 0 else str(v)
