"""One schema for every setting: name, type, range, default, help, and whether it needs a reload.

The CLI flags, ``/set``, the GUI's settings panel and the saved settings file all go through
:data:`SCHEMA`, so a setting is declared exactly once. A value out of range is rejected with a
:class:`~desklm.errors.DeskLMError` that names the setting and its allowed range.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from desklm.errors import DeskLMError

KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
# auto, gguf, dialogue, then the built-in formats (desklm.engine.prompt.chat_format.FORMAT_NAMES;
# spelled out here so the schema stays free of imports)
CHAT_FORMATS = (
    "auto",
    "gguf",
    "dialogue",
    "chatml",
    "gemma",
    "llama3",
    "llama2",
    "llama2-sys",
    "llama2-sys-bos",
    "llama2-sys-strip",
    "mistral-v1",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
    "mistral-v7-tekken",
    "phi3",
    "phi4",
)


def logical_cores() -> int:
    return os.cpu_count() or 1


def default_threads() -> int:
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail in sandboxes; fall back to logical cores
        physical = None
    return max(1, physical or logical_cores())


@dataclass(frozen=True)
class Setting:
    """A declared setting.

    Attributes:
        name: key used everywhere (CLI ``--name``, ``/set name``, JSON files).
        kind: ``int``, ``float``, ``bool``, ``str`` or ``choice``.
        default: default value (a callable is evaluated lazily, for machine-dependent defaults).
        minimum / maximum: inclusive range for numbers; ``maximum`` may be lowered per model.
        choices: allowed values for ``choice``.
        help: one line shown in ``/help``, tooltips and the README.
        needs_reload: True when a change only takes effect after reloading the model.
        group: ``load`` or ``sampling``.
        label: short human label for the GUI.
        flag: the command-line flag (``--ctx``); every setting has one (:func:`add_arguments`).
        widget: how the settings panel edits it: ``pow2`` (a slider over powers of two),
            ``slider`` (a slider from minimum to maximum in ``step``), ``steps`` (a slider over
            ``steps``), ``spin``, ``check``, ``choice`` or ``text``.
        step: the slider step for ``slider``; ``steps``: the values for ``steps``.
    """

    name: str
    kind: str
    default: Any
    help: str
    group: str
    label: str
    needs_reload: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    special: Mapping[int, str] = field(default_factory=dict)
    flag: str = ""
    widget: str = ""
    step: float = 1
    steps: tuple[int, ...] = ()

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def editor(self) -> str:
        """The panel's editor kind (``widget``, or one implied by the type)."""
        if self.widget:
            return self.widget
        return {"bool": "check", "choice": "choice", "str": "text"}.get(self.kind, "spin")

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def range_text(self, maximum: float | None = None) -> str:
        hi = self.maximum if maximum is None else maximum
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "on or off"
        if self.kind == "str":
            return "any text"
        extra = "".join(f" ({k} = {v})" for k, v in self.special.items())
        return f"{_fmt(self.minimum)} to {_fmt(hi)}{extra}"

    def parse(self, raw: str | Any) -> Any:
        """Convert user text (or a JSON value) to this setting's type, without range checks."""
        if not isinstance(raw, str):
            return self._coerce(raw)
        text = raw.strip()
        try:
            if self.kind == "int":
                low = text.lower()
                for value, word in self.special.items():
                    if low == word:
                        return value
                return int(text, 10)
            if self.kind == "float":
                return float(text)
            if self.kind == "bool":
                low = text.lower()
                if low in ("1", "true", "on", "yes"):
                    return True
                if low in ("0", "false", "off", "no"):
                    return False
                raise ValueError(text)
        except ValueError:
            raise DeskLMError(
                f"{self.name}: '{text}' is not a valid {self.kind}; allowed: {self.range_text()}"
            ) from None
        return text

    def _coerce(self, value: Any) -> Any:
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
            "choice": isinstance(value, str),
        }[self.kind]
        if not ok:
            raise DeskLMError(
                f"{self.name}: {value!r} is not a valid {self.kind}; allowed: {self.range_text()}"
            )
        return float(value) if self.kind == "float" else value

    def validate(self, value: Any, maximum: float | None = None) -> Any:
        """Return ``value`` converted and checked, or raise with the allowed range."""
        value = self.parse(value)
        if self.kind in ("int", "float"):
            if value in self.special:
                return value
            hi = self.maximum if maximum is None else maximum
            if (
                value != value
                or (self.minimum is not None and value < self.minimum)
                or (hi is not None and value > hi)
            ):
                raise DeskLMError(
                    f"{self.name} = {_fmt(value)} is out of range; allowed: {self.range_text(hi)}"
                )
        if self.kind == "choice" and value not in self.choices:
            raise DeskLMError(f"{self.name} = '{value}' is not allowed; {self.range_text()}")
        if self.kind == "str" and "\x00" in value:
            raise DeskLMError(f"{self.name}: text may not contain NUL characters")
        return value


def _fmt(x: float | None) -> str:
    if x is None:
        return "any"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


_SETTINGS: list[Setting] = [
    # --- load settings -------------------------------------------------------------------
    Setting(
        "n_ctx",
        "int",
        4096,
        "Context length in tokens: how much conversation the model "
        "sees at once. More costs memory (the KV cache grows linearly).",
        "load",
        "Context length",
        needs_reload=True,
        minimum=512,
        maximum=131072,
        flag="--ctx",
        widget="pow2",
    ),
    Setting(
        "n_threads",
        "int",
        default_threads,
        "CPU threads used while generating. Applied live, no reload.",
        "load",
        "CPU threads",
        minimum=1,
        maximum=logical_cores(),
        flag="--threads",
        widget="slider",
    ),
    Setting(
        "n_threads_batch",
        "int",
        default_threads,
        "CPU threads used while reading the prompt (prompt evaluation). Applied live, no reload.",
        "load",
        "Prompt threads",
        minimum=1,
        maximum=logical_cores(),
        flag="--prompt-threads",
        widget="slider",
    ),
    Setting(
        "n_gpu_layers",
        "int",
        0,
        "Model layers offloaded to the GPU (-1 = all). More is "
        "faster and uses VRAM instead of RAM.",
        "load",
        "GPU layers",
        needs_reload=True,
        minimum=0,
        maximum=1000,
        special={-1: "all"},
        flag="--gpu-layers",
        widget="slider",
    ),
    Setting(
        "n_batch",
        "int",
        512,
        "Tokens evaluated per step while reading the prompt.",
        "load",
        "Batch size",
        needs_reload=True,
        minimum=8,
        maximum=8192,
        flag="--batch",
        widget="pow2",
    ),
    Setting(
        "parallel",
        "int",
        4,
        "Requests answered at once (slots): API clients are "
        "decoded together in one batch instead of queueing (1 = one at a time). The context "
        "is split, not unified: each slot, and your own chat, has its own context of "
        "n_ctx tokens, so the KV cache costs n_ctx x (slots + 1). Made only while the API "
        "is on (turning it on reloads the model once, the chat kept); lowered at load when "
        "memory does not allow it.",
        "load",
        "Parallel requests",
        needs_reload=True,
        minimum=1,
        maximum=16,
        flag="--parallel",
        widget="slider",
    ),
    Setting(
        "flash_attn",
        "bool",
        False,
        "Use flash attention (needed for a quantized V cache).",
        "load",
        "Flash attention",
        needs_reload=True,
    ),
    Setting(
        "use_mmap",
        "bool",
        True,
        "Memory-map the model file instead of reading it into "
        "RAM: faster loads, pages shared with the OS cache.",
        "load",
        "Memory-map model",
        needs_reload=True,
        flag="--mmap",
    ),
    Setting(
        "use_mlock",
        "bool",
        False,
        "Lock the model in RAM so the OS never swaps it out.",
        "load",
        "Lock in RAM",
        needs_reload=True,
        flag="--mlock",
    ),
    Setting(
        "kv_cache_type",
        "choice",
        "f16",
        "Precision of the KV cache. q8_0 halves its memory, "
        "q4_0 quarters it; a quantized cache needs flash attention.",
        "load",
        "KV cache type",
        needs_reload=True,
        choices=KV_CACHE_TYPES,
    ),
    Setting(
        "kv_snapshot_ram_mb",
        "int",
        512,
        "RAM kept for the KV caches of chats you left, "
        "so switching back is instant (0 = none). Older ones go to disk.",
        "load",
        "Chat cache in RAM (MB)",
        minimum=0,
        maximum=65536,
    ),
    Setting(
        "kv_snapshot_disk_mb",
        "int",
        2048,
        "Disk space for KV caches of chats you left "
        "(in the cache folder; also used to resume after a restart; 0 = none).",
        "load",
        "Chat cache on disk (MB)",
        minimum=0,
        maximum=1048576,
    ),
    # --- sampling settings ---------------------------------------------------------------
    Setting(
        "temperature",
        "float",
        0.7,
        "Randomness of the reply; 0 always picks the most likely token.",
        "sampling",
        "Temperature",
        minimum=0.0,
        maximum=2.0,
        widget="slider",
        step=0.05,
    ),
    Setting(
        "top_p",
        "float",
        0.95,
        "Sample only from the most likely tokens whose probabilities add up to this.",
        "sampling",
        "Top-p",
        minimum=0.0,
        maximum=1.0,
        widget="slider",
        step=0.01,
    ),
    Setting(
        "top_k",
        "int",
        40,
        "Sample only from this many most likely tokens (0 = no limit).",
        "sampling",
        "Top-k",
        minimum=0,
        maximum=1000,
        widget="steps",
        steps=(0, 1, 5, 10, 20, 40, 60, 80, 100, 200, 500, 1000),
    ),
    Setting(
        "min_p",
        "float",
        0.05,
        "Drop tokens less likely than this fraction of the best one.",
        "sampling",
        "Min-p",
        minimum=0.0,
        maximum=1.0,
        widget="slider",
        step=0.01,
    ),
    Setting(
        "repeat_penalty",
        "float",
        1.1,
        "Penalty for repeating recent tokens (1 = none).",
        "sampling",
        "Repeat penalty",
        minimum=0.5,
        maximum=2.0,
        widget="slider",
        step=0.05,
    ),
    Setting(
        "max_tokens",
        "int",
        512,
        "Longest reply, in tokens.",
        "sampling",
        "Max tokens",
        minimum=1,
        maximum=32768,
        widget="pow2",
    ),
    Setting(
        "tool_calls_per_turn",
        "int",
        4,
        "Most tool calls the model may make in one turn "
        "(MCP tools); then it answers with what it has.",
        "sampling",
        "Tool calls per turn",
        minimum=1,
        maximum=32,
        widget="spin",
    ),
    Setting(
        "seed",
        "int",
        -1,
        "Random seed for sampling (-1 = random each reply).",
        "sampling",
        "Seed",
        minimum=0,
        maximum=2**31 - 1,
        special={-1: "random"},
    ),
    Setting(
        "system_prompt",
        "str",
        "You are a helpful assistant.",
        "Instructions the model sees before the conversation.",
        "sampling",
        "System prompt",
        flag="--system",
    ),
    Setting(
        "chat_format",
        "choice",
        "auto",
        "How the conversation is written for the model: "
        "auto (a plain dialogue for base models, else the model's own template), gguf (the "
        "model's own template), dialogue, or a built-in format. Applies from the next turn.",
        "sampling",
        "Chat format",
        choices=CHAT_FORMATS,
    ),
]

SCHEMA: dict[str, Setting] = {s.name: s for s in _SETTINGS}
LOAD_SETTINGS = tuple(s.name for s in _SETTINGS if s.group == "load")
SAMPLING_SETTINGS = tuple(s.name for s in _SETTINGS if s.group == "sampling")


def get_setting(name: str) -> Setting:
    try:
        return SCHEMA[name]
    except KeyError:
        raise DeskLMError(
            f"unknown setting '{name}'; known settings: {', '.join(SCHEMA)}"
        ) from None


class Settings:
    """A validated set of values for every setting in :data:`SCHEMA`.

    ``limits`` lowers a setting's maximum for the loaded model (``n_ctx`` to its training
    context, ``n_gpu_layers`` to its layer count).
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {n: s.default_value() for n, s in SCHEMA.items()}
        self.limits: dict[str, float] = {}
        for name, value in (values or {}).items():
            self.set(name, value)

    def __getitem__(self, name: str) -> Any:
        return self._values[get_setting(name).name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def get(self, name: str) -> Any:
        return self[name]

    def maximum(self, name: str) -> float | None:
        s = get_setting(name)
        lim = self.limits.get(name)
        if lim is None:
            return s.maximum
        return lim if s.maximum is None else min(lim, s.maximum)

    def check(self, name: str, value: Any) -> Any:
        """Validate without storing."""
        return get_setting(name).validate(value, self.maximum(name))

    def set(self, name: str, value: Any) -> Any:
        """Validate and store; returns the stored value."""
        v = self.check(name, value)
        self._values[name] = v
        return v

    def update(self, values: Mapping[str, Any]) -> list[str]:
        """Validate all first, then store all; returns the names whose value changed."""
        checked = {n: self.check(n, v) for n, v in values.items()}
        changed = [n for n, v in checked.items() if self._values[n] != v]
        self._values.update(checked)
        return changed

    def load_dict(self, values: Mapping[str, Any]) -> list[str]:
        """Lenient load (from a saved file): returns a reason for every value that was ignored."""
        problems = []
        for name, value in values.items():
            try:
                self.set(name, value)
            except DeskLMError as e:
                problems.append(str(e))
        return problems

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def load_values(self) -> dict[str, Any]:
        return {n: self._values[n] for n in LOAD_SETTINGS}

    def copy(self) -> Settings:
        other = Settings()
        other._values = dict(self._values)
        other.limits = dict(self.limits)
        return other

    def clamp_to_limits(self) -> list[str]:
        """Lower values that exceed a model limit; returns a reason for each change."""
        notes = []
        for name, lim in self.limits.items():
            v = self._values[name]
            if v not in get_setting(name).special and v > lim:
                self._values[name] = type(v)(lim)
                notes.append(f"{name} lowered from {v} to {_fmt(lim)} (the model's maximum)")
        return notes


# --- the command line, generated from the schema ------------------------------------------------
def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: Any = None
) -> None:
    """A flag for every setting (``--ctx N``, ``--flash-attn on``, ...), its help from the schema.

    Values stay text here and are validated by :func:`settings_from_args`, so a bad value gets
    the same one-line reason as ``/set``. A subcommand passes ``default=argparse.SUPPRESS`` so
    that a flag given before the command is not reset by the subcommand's own default.
    """
    for s in _SETTINGS:
        metavar = {"bool": "on|off", "choice": "|".join(s.choices), "str": "TEXT"}.get(s.kind, "N")
        parser.add_argument(
            s.cli_flag,
            dest=f"setting_{s.name}",
            metavar=metavar,
            default=default,
            help=f"{s.help} ({s.range_text()}; default {_fmt_default(s)})".replace("%", "%%"),
        )


def _fmt_default(s: Setting) -> str:
    if callable(s.default):
        return "this machine's physical cores"
    v = s.default
    if isinstance(v, int) and not isinstance(v, bool) and v in s.special:
        return s.special[v]
    return "on" if v is True else "off" if v is False else repr(v) if s.kind == "str" else str(v)


def values_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The settings given on the command line, as raw text by name. ``--threads`` alone sets
    the prompt threads too (one number for both, as before ``--prompt-threads`` existed)."""
    given = {
        s.name: v for s in _SETTINGS if (v := getattr(args, f"setting_{s.name}", None)) is not None
    }
    if "n_threads" in given and "n_threads_batch" not in given:
        given["n_threads_batch"] = given["n_threads"]
    return given


def settings_from_args(args: argparse.Namespace, base: Settings | None = None) -> Settings:
    """``base`` (or defaults) with the command line's settings applied; raises with the range."""
    s = base.copy() if base is not None else Settings()
    s.update(values_from_args(args))
    return s
