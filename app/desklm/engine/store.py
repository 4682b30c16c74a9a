"""Where DeskLM keeps things on disk, and writing files so a crash never corrupts them.

Directories come from platformdirs. ``DESKLM_DATA_DIR`` (or ``--data-dir``) moves the data,
config and log directories under one base folder, which is how tests and portable installs
isolate themselves. ``DESKLM_CACHE_DIR`` moves the cache (the assembled embedded model).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP_NAME = "DeskLM"


@dataclass(frozen=True)
class AppDirs:
    data: Path
    config: Path
    cache: Path
    log: Path


def app_dirs() -> AppDirs:
    import platformdirs

    base = os.environ.get("DESKLM_DATA_DIR")
    cache_env = os.environ.get("DESKLM_CACHE_DIR")
    cache = Path(cache_env) if cache_env else Path(platformdirs.user_cache_dir(APP_NAME, False))
    if base:
        b = Path(base).expanduser()
        return AppDirs(b / "data", b / "config", cache, b / "logs")
    return AppDirs(
        data=Path(platformdirs.user_data_dir(APP_NAME, False)),
        config=Path(platformdirs.user_config_dir(APP_NAME, False)),
        cache=cache,
        log=Path(platformdirs.user_log_dir(APP_NAME, False)),
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new file.

    A temp file in the same directory is written, flushed and fsynced, then ``os.replace``d over
    the target; the directory is fsynced too where the platform allows it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        try:
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8"))


# --- conversations ------------------------------------------------------------------------------
SCHEMA_VERSION = 1


class StoreError(Exception):
    """A conversation file that cannot be used; ``reason`` is one line for the user."""


def _now() -> float:
    import time

    return time.time()


def title_from(text: str, n: int = 48) -> str:
    one = " ".join(text.split())
    return (one[: n - 1] + "…") if len(one) > n else (one or "New chat")


class ConversationStore:
    """One versioned JSON file per conversation under ``<data>/conversations``.

    * Written atomically (temp file, fsync, ``os.replace``): a crash leaves the old or new file.
    * A file that fails to parse is renamed ``<id>.json.corrupt`` and reported; others still load.
    * A file from a newer schema is refused with a reason and never overwritten.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else app_dirs().data / "conversations"
        self.problems: list[str] = []  # reasons collected by list_all(), for the user

    def path(self, conv_id: str) -> Path:
        if not conv_id or any(c in conv_id for c in "/\\.") or len(conv_id) > 64:
            raise StoreError(f"invalid conversation id '{conv_id}'")
        return self.root / f"{conv_id}.json"

    def _read(self, p: Path) -> dict[str, Any]:
        try:
            data = json.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            raise StoreError(f"no conversation '{p.stem}'") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            aside = p.with_name(p.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(p, aside)
            raise StoreError(f"conversation file {p.name} is damaged ({type(e).__name__}); "
                             f"moved aside to {aside.name}") from None
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            aside = p.with_name(p.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(p, aside)
            raise StoreError(f"conversation file {p.name} is not a DeskLM conversation; "
                             f"moved aside to {aside.name}")
        version = data.get("schema")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise StoreError(f"conversation {p.stem} was saved by a newer DeskLM (schema "
                             f"{version}, this version reads {SCHEMA_VERSION}); left untouched")
        return data

    def load(self, conv_id: str) -> dict[str, Any]:
        return self._read(self.path(conv_id))

    def save(self, record: dict[str, Any]) -> Path:
        p = self.path(record["id"])
        if p.exists():
            try:
                on_disk = json.loads(p.read_text("utf-8"))
                v = on_disk.get("schema") if isinstance(on_disk, dict) else None
                if isinstance(v, int) and v > SCHEMA_VERSION:
                    raise StoreError(f"conversation {p.stem} was saved by a newer DeskLM; "
                                     "not overwriting it")
            except (OSError, ValueError):
                pass  # a damaged file may be replaced by a good one
        rec = dict(record)
        rec["schema"] = SCHEMA_VERSION
        rec["updated"] = _now()
        atomic_write_json(p, rec)
        return p

    def list_all(self) -> list[dict[str, Any]]:
        """Summaries, newest first. Damaged files are moved aside and noted in ``problems``."""
        self.problems = []
        out: list[dict[str, Any]] = []
        if not self.root.exists():
            return out
        for p in sorted(self.root.glob("*.json")):
            try:
                d = self._read(p)
            except StoreError as e:
                self.problems.append(str(e))
                continue
            out.append({"id": d.get("id", p.stem), "title": d.get("title") or "New chat",
                        "created": d.get("created", 0), "updated": d.get("updated", 0),
                        "model": d.get("model"), "messages": len(d["messages"])})
        out.sort(key=lambda d: d["updated"], reverse=True)
        return out

    def delete(self, conv_id: str) -> None:
        p = self.path(conv_id)
        try:
            p.unlink()
        except FileNotFoundError:
            raise StoreError(f"no conversation '{conv_id}'") from None

    def rename(self, conv_id: str, title: str) -> None:
        d = self.load(conv_id)
        d["title"] = " ".join(title.split())[:200] or d.get("title", "New chat")
        self.save(d)


def to_markdown(record: dict[str, Any]) -> str:
    """A conversation as Markdown, stats under each reply."""
    import datetime as dt

    lines = [f"# {record.get('title') or 'Conversation'}", ""]
    created = record.get("created")
    if created:
        lines.append(f"*{dt.datetime.fromtimestamp(created).strftime('%Y-%m-%d %H:%M')}"
                     f"{' · ' + str(record['model']) if record.get('model') else ''}*")
        lines.append("")
    system = (record.get("settings") or {}).get("system_prompt")
    if system:
        lines += ["> **System:** " + system.replace("\n", "\n> "), ""]
    for m in record.get("messages", []):
        who = "You" if m.get("role") == "user" else "Model"
        lines += [f"## {who}", "", str(m.get("content", "")), ""]
        st = m.get("stats")
        if st:
            rate = st.get("gen_tokens_per_s")
            lines += [f"*{st.get('completion_tokens', 0)} tokens"
                      + (f" · {rate:.1f} tok/s" if isinstance(rate, int | float) else "")
                      + f" · {st.get('finish_reason', '')}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- app settings -------------------------------------------------------------------------------
class AppConfig:
    """App settings (last model, setting values, window geometry) in the config dir, as JSON
    written atomically. A damaged file is moved aside and defaults are used."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else app_dirs().config / "settings.json"
        self.problem: str | None = None

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            aside = self.path.with_name(self.path.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            self.problem = f"settings file was damaged ({type(e).__name__}); using defaults"
            return {}
        if not isinstance(data, dict):
            self.problem = "settings file was not a JSON object; using defaults"
            return {}
        return data

    def save(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.path, {"schema": SCHEMA_VERSION, **data})

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """The one way to change the app settings: read, ``change(data)`` in place, write, all
        under a file lock, so two DeskLM processes (or two threads) never lose each other's
        entries. Raises OSError when the file cannot be written."""
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.path) + ".lock", timeout=10):
                data = self.load()
                data.pop("schema", None)
                change(data)
                self.save(data)
        except Timeout:
            raise OSError(f"{self.path} is locked by another DeskLM process") from None
        return data


def export_text(record: dict[str, Any], fmt: str) -> str:
    """A conversation as ``md`` (Markdown) or ``json`` text."""
    if fmt == "json":
        return json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    return to_markdown(record)


def export_record(record: dict[str, Any], path: Path, fmt: str | None = None) -> Path:
    """Write a conversation to ``path`` (format from ``fmt``, else the suffix: .json or md),
    atomically; a write that fails is a DeskLMError with the reason."""
    from desklm.errors import DeskLMError

    path = Path(path).expanduser()
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "md")
    try:
        atomic_write_bytes(path, export_text(record, fmt).encode("utf-8"))
    except OSError as e:
        raise DeskLMError(f"could not write {path}: {e.strerror or e}") from None
    return path
