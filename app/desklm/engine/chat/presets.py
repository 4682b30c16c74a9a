"""Named presets: the sampling and load settings and the system prompt, saved under a name.

Stored in ``<config>/presets.json`` (written atomically, changed under a file lock so two DeskLM
processes never lose each other's presets)::

    {"schema": 1,
     "presets": {"Precise": {"settings": {"temperature": 0.2, "n_ctx": 8192, ...},
                             "created": 1795236000.0, "updated": 1795236000.0}},
     "last_by_model": {"/home/me/models/qwen.gguf": "Precise"}}

A preset holds every setting except the CPU threads (those belong to the machine, found by
``desklm bench --tune``). ``last_by_model`` remembers the preset last loaded or saved for each
model file, so a window or chat can offer it again for that model.

Reading never stops the app: a file that is not JSON is moved aside to ``presets.json.corrupt``
and an empty list is used; a preset with a bad value loses that value, a preset with a bad name
or shape is skipped; each problem is listed in ``problems``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desklm.engine.settings import SCHEMA, Settings
from desklm.engine.store.files import app_dirs, atomic_write_json
from desklm.errors import DeskLMError

PRESETS_SCHEMA = 1
MACHINE_SETTINGS = ("n_threads", "n_threads_batch")  # not part of a preset
PRESET_SETTINGS = tuple(n for n in SCHEMA if n not in MACHINE_SETTINGS)
MAX_NAME = 64


@dataclass
class Preset:
    name: str
    values: dict[str, Any]
    created: float = 0.0
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": dict(self.values),
            "created": self.created,
            "updated": self.updated,
        }


def check_name(name: str) -> str:
    """A preset name, tidied; DeskLMError when it is empty, too long or has control chars."""
    clean = " ".join(str(name).split())
    if not clean:
        raise DeskLMError("a preset needs a name")
    if len(clean) > MAX_NAME:
        raise DeskLMError(f"preset name too long ({len(clean)} characters; at most {MAX_NAME})")
    if any(ord(c) < 32 or ord(c) == 127 for c in clean):
        raise DeskLMError("a preset name cannot contain control characters")
    return clean


def model_key(model: Path | str) -> str:
    try:
        return str(Path(model).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return str(model)


def values_of(settings: Settings) -> dict[str, Any]:
    """The values a preset keeps from ``settings``."""
    return {n: settings[n] for n in PRESET_SETTINGS}


def _time(v: Any) -> float:
    return (
        float(v)
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0 <= v < 2.6e11
        else 0.0
    )


class PresetStore:
    """Presets in ``presets.json`` in the config dir (or ``path``)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else app_dirs().config / "presets.json"
        self.problems: list[str] = []  # what the last read skipped or repaired, and why

    # -- reading --
    def _load(self) -> dict[str, Any]:
        """The file's content, checked: {"presets": {name: Preset}, "last_by_model": {...}}."""
        self.problems = []
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"presets": {}, "last_by_model": {}}
        except OSError as e:
            self.problems.append(f"could not read {self.path.name}: {e.strerror or e}")
            return {"presets": {}, "last_by_model": {}}
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            aside = self.path.with_name(self.path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.problems.append(
                f"presets file was damaged ({type(e).__name__}); moved aside "
                f"to {aside.name}, starting with no presets"
            )
            return {"presets": {}, "last_by_model": {}}
        version = data.get("schema")
        if isinstance(version, int) and not isinstance(version, bool) and version > PRESETS_SCHEMA:
            raise DeskLMError(
                f"presets file was written by a newer DeskLM (schema {version}); left untouched"
            )
        presets: dict[str, Preset] = {}
        items = data.get("presets")
        if not isinstance(items, dict):
            if items is not None:
                self.problems.append("'presets' is not an object: ignored")
            items = {}
        for name, body in items.items():
            try:
                clean = check_name(name)
            except DeskLMError as e:
                self.problems.append(f"preset {str(name)[:40]!r} skipped: {e}")
                continue
            if not isinstance(body, dict) or not isinstance(body.get("settings"), dict):
                self.problems.append(f"preset {clean!r} skipped: no settings in it")
                continue
            values: dict[str, Any] = {}
            for k, v in body["settings"].items():
                if k not in PRESET_SETTINGS:
                    if k not in MACHINE_SETTINGS:
                        self.problems.append(
                            f"preset {clean!r}: unknown setting {str(k)[:40]!r} ignored"
                        )
                    continue
                try:
                    values[k] = SCHEMA[k].validate(v)
                except DeskLMError as e:
                    self.problems.append(f"preset {clean!r}: {k} ignored ({e})")
            presets[clean] = Preset(
                clean, values, _time(body.get("created")), _time(body.get("updated"))
            )
        last = data.get("last_by_model")
        last_by_model = (
            {
                k: v
                for k, v in last.items()
                if isinstance(k, str) and isinstance(v, str) and v in presets
            }
            if isinstance(last, dict)
            else {}
        )
        return {"presets": presets, "last_by_model": last_by_model}

    def list_all(self) -> list[Preset]:
        """Presets by name (case-insensitive order)."""
        return sorted(self._load()["presets"].values(), key=lambda p: p.name.casefold())

    def get(self, name: str) -> Preset:
        presets: dict[str, Preset] = self._load()["presets"]
        clean = " ".join(str(name).split())
        found = presets.get(clean) or next(
            (p for n, p in presets.items() if n.casefold() == clean.casefold()), None
        )
        if found is None:
            known = ", ".join(sorted(presets)) or "none saved yet"
            raise DeskLMError(f"no preset '{clean}'; presets: {known}")
        return found

    def last_for(self, model: Path | str) -> str | None:
        """The preset last used with this model file, if it still exists."""
        name = self._load()["last_by_model"].get(model_key(model))
        return name if isinstance(name, str) else None

    # -- writing --
    def _change(self, change: Callable[[dict[str, Any]], None]) -> None:
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.path) + ".lock", timeout=10):
                data = self._load()
                change(data)
                out = {
                    "schema": PRESETS_SCHEMA,
                    "presets": {
                        n: {"settings": p.values, "created": p.created, "updated": p.updated}
                        for n, p in data["presets"].items()
                    },
                    "last_by_model": data["last_by_model"],
                }
                atomic_write_json(self.path, out)
        except Timeout:
            raise DeskLMError(f"{self.path} is locked by another DeskLM process") from None
        except OSError as e:
            raise DeskLMError(f"could not write {self.path}: {e.strerror or e}") from None

    def save(
        self, name: str, settings: Settings | dict[str, Any], model: Path | str | None = None
    ) -> Preset:
        """Save (or replace) a preset from the current settings; remembers it for ``model``."""
        clean = check_name(name)
        values = (
            values_of(settings)
            if isinstance(settings, Settings)
            else {k: SCHEMA[k].validate(v) for k, v in settings.items() if k in PRESET_SETTINGS}
        )
        now = time.time()
        made: list[Preset] = []

        def change(data: dict[str, Any]) -> None:
            old = data["presets"].get(clean)
            p = Preset(clean, values, old.created if old else now, now)
            data["presets"][clean] = p
            if model is not None:
                data["last_by_model"][model_key(model)] = clean
            made.append(p)

        self._change(change)
        return made[0]

    def delete(self, name: str) -> None:
        clean = self.get(name).name

        def change(data: dict[str, Any]) -> None:
            data["presets"].pop(clean, None)
            data["last_by_model"] = {k: v for k, v in data["last_by_model"].items() if v != clean}

        self._change(change)

    def remember(self, model: Path | str, name: str) -> None:
        """Note ``name`` as the last preset used with ``model``."""
        clean = self.get(name).name

        def change(data: dict[str, Any]) -> None:
            data["last_by_model"][model_key(model)] = clean

        self._change(change)


def apply_preset(session: Any, name: str, store: PresetStore | None = None) -> Any:
    """Load preset ``name`` into a ChatSession (validated again; a load setting reloads the
    model, keeping the conversation) and remember it for the session's model. Returns the
    session's CommandResult."""
    store = store or PresetStore()
    preset = store.get(name)
    res = session.apply_settings(preset.values)
    with contextlib.suppress(DeskLMError):  # remembering is a convenience, never a failure
        store.remember(session.model_path, preset.name)
    res.command = "preset"
    res.message = f"preset '{preset.name}' loaded: {res.message}"
    res.data["preset"] = preset.name
    return res
