"""Where DeskLM keeps things on disk, and writing files so a crash never corrupts them.

Directories come from platformdirs. ``DESKLM_DATA_DIR`` (or ``--data-dir``) moves the data,
config and log directories under one base folder, which is how tests and portable installs
isolate themselves. ``DESKLM_CACHE_DIR`` moves the cache (the assembled embedded model).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desklm.paths import APP_NAME, AppDirs, app_dirs  # noqa: F401  (re-exported)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the new file.

    A temp file in the same directory is written, flushed and fsynced, then ``os.replace``d over
    the target; the directory is fsynced too where the platform allows it. ``mode`` sets the
    new file's permissions (default: the temp file's, 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
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
SCHEMA_VERSION = 3  # 2: message versions and branches (engine.chat.branches); 3: tool calls
CONFIG_SCHEMA = 1  # settings.json


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
        self.root = Path(root) if root is not None else app_dirs().data / "conversations"
        self.problems: list[str] = []  # reasons collected by list_all(), for the user
        self.last_notes: list[str] = []  # what the last read dropped or repaired, and why

    def path(self, conv_id: str) -> Path:
        if not conv_id or any(c in conv_id for c in "/\\.") or len(conv_id) > 64:
            raise StoreError(f"invalid conversation id '{conv_id}'")
        return self.root / f"{conv_id}.json"

    def _read(self, p: Path) -> dict[str, Any]:
        """The record in ``p``, every field checked (:mod:`desklm.engine.store.records`); notes on
        what was dropped are in ``last_notes``. A file whose content is unusable is moved
        aside; one that cannot be read (permissions, a folder) is left alone."""
        from desklm.engine.store.records import Unusable, clean_conversation, parse_json

        self.last_notes = []
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no conversation '{p.stem}'") from None
        except OSError as e:
            raise StoreError(
                f"could not read conversation file {p.name}: {e.strerror or e}; left untouched"
            ) from None
        try:
            data = parse_json(raw.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
                raise Unusable("not a DeskLM conversation")
        except (Unusable, UnicodeDecodeError) as e:
            why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
            aside = p.with_name(p.name + ".corrupt")
            try:
                os.replace(p, aside)
                where = f"moved aside to {aside.name}"
            except OSError as oe:
                where = f"could not move it aside ({oe.strerror or oe})"
            raise StoreError(f"conversation file {p.name} is damaged ({why}); {where}") from None
        version = data.get("schema")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise StoreError(
                f"conversation {p.stem} was saved by a newer DeskLM (schema "
                f"{version}, this version reads {SCHEMA_VERSION}); left untouched"
            )
        if not isinstance(version, int) or isinstance(version, bool):
            raise StoreError(
                f"conversation {p.stem} has no valid schema version "
                f"({str(version)[:20]!r}); left untouched"
            )
        if version < SCHEMA_VERSION:  # an older file is read as the current schema
            from desklm.engine.chat.branches import migrate

            data = migrate(data)
        rec, self.last_notes = clean_conversation(data, p.stem)
        return rec

    def load(self, conv_id: str) -> dict[str, Any]:
        return self._read(self.path(conv_id))

    def save(self, record: dict[str, Any]) -> Path:
        p = self.path(record["id"])
        if p.exists():
            try:
                on_disk = json.loads(p.read_text("utf-8"))
                v = on_disk.get("schema") if isinstance(on_disk, dict) else None
                if isinstance(v, int) and v > SCHEMA_VERSION:
                    raise StoreError(
                        f"conversation {p.stem} was saved by a newer DeskLM; not overwriting it"
                    )
            except (OSError, ValueError, RecursionError):
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
        try:
            names = sorted(e.name for e in os.scandir(self.root) if e.name.endswith(".json"))
        except FileNotFoundError:
            return out
        except OSError as e:
            self.problems.append(
                f"could not read the conversations folder {self.root}: {e.strerror or e}"
            )
            return out
        for name in names:
            p = self.root / name
            try:
                d = self._read(p)
            except StoreError as e:
                self.problems.append(str(e))
                continue
            if self.last_notes:
                self.problems.append(f"conversation {p.stem}: " + "; ".join(self.last_notes))
            out.append(
                {
                    "id": d["id"],
                    "title": d["title"],
                    "created": d["created"],
                    "updated": d["updated"],
                    "model": d["model"],
                    "messages": len(d["messages"]),
                }
            )
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
        lines.append(
            f"*{dt.datetime.fromtimestamp(created).strftime('%Y-%m-%d %H:%M')}"
            f"{' · ' + str(record['model']) if record.get('model') else ''}*"
        )
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
            lines += [
                f"*{st.get('completion_tokens', 0)} tokens"
                + (f" · {rate:.1f} tok/s" if isinstance(rate, int | float) else "")
                + f" · {st.get('finish_reason', '')}*",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# --- app settings -------------------------------------------------------------------------------
class DamagedFile(Exception):
    """A stored JSON file that is not a JSON object: ``why``, and ``where`` it went
    (``moved`` says whether it was moved aside to ``<name>.corrupt``)."""

    def __init__(self, why: str, where: str, moved: bool) -> None:
        super().__init__(why)
        self.why, self.where, self.moved = why, where, moved


def json_object_or_aside(path: Path, raw: bytes) -> dict[str, Any]:
    """``raw`` (read from ``path``) as a JSON object; anything else is moved aside to
    ``<name>.corrupt`` (never overwritten later) and raised as :class:`DamagedFile`."""
    from desklm.engine.store.records import Unusable, parse_json

    try:
        data = parse_json(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise Unusable(f"a JSON {type(data).__name__}, not an object")
    except (Unusable, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError as oe:
            raise DamagedFile(
                why, f"could not move it aside ({oe.strerror or oe})", False
            ) from None
        raise DamagedFile(why, f"moved aside to {aside.name}", moved=True) from None
    return data


class AppConfig:
    """App settings (last model, setting values, window geometry) in the config dir, as JSON
    written atomically.

    :meth:`load` returns what is valid (checked in :mod:`desklm.engine.store.records`) and lists in
    ``problems`` what was skipped and why. A file whose content is unusable (not JSON, not an
    object) is moved aside to ``settings.json.corrupt``; one that cannot be read (permission
    denied, the config dir being a file) is left alone, and :meth:`save` will not overwrite it.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else app_dirs().config / "settings.json"
        self.problems: list[str] = []
        self._unreadable: str | None = None

    @property
    def problem(self) -> str | None:
        """All of ``problems`` as one line (None when there were none)."""
        return "settings file: " + "; ".join(self.problems) if self.problems else None

    def load(self) -> dict[str, Any]:
        from desklm.engine.store.records import clean_app_config

        self.problems = []
        self._unreadable = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            self._unreadable = f"{e.strerror or e}"
            self.problems.append(
                f"could not read {self.path} ({self._unreadable}); using "
                "defaults and leaving it as it is"
            )
            return {}
        try:
            data = json_object_or_aside(self.path, raw)
        except DamagedFile as d:
            self.problems.append(f"it was damaged ({d.why}); {d.where}; using defaults")
            return {}
        data, notes = clean_app_config(data)
        self.problems += notes
        return data

    def save(self, data: dict[str, Any]) -> None:
        if self._unreadable is not None and self.path.exists():
            raise OSError(f"not overwriting {self.path}: it could not be read ({self._unreadable})")
        atomic_write_json(self.path, {**data, "schema": CONFIG_SCHEMA})

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
    """Write a conversation to ``path`` (format from ``fmt``, else the suffix: .json or md)
    by the rules of :func:`write_user_file`; a write that fails is a DeskLMError."""
    path = Path(path).expanduser()
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "md")
    write_user_file(path, export_text(record, fmt).encode("utf-8"))
    return path


# --- files the user points at -------------------------------------------------------------------
_FD_DIRS = ("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/")


def _is_fd_path(p: str) -> bool:
    """``/dev/stdout``, ``/dev/fd/1``, ``/proc/<pid>/fd/1``: a name for an open descriptor."""
    if p in ("/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty"):
        return True
    if p.startswith(_FD_DIRS):
        return True
    parts = p.split("/")
    return len(parts) == 5 and parts[1] == "proc" and parts[3] == "fd"


def _own_fd(chain: list[str]) -> int | None:
    """The descriptor number when ``chain`` names one of this process's open descriptors."""
    names = {"/dev/stdout": 1, "/dev/stderr": 2}
    for c in chain:
        if c in names:
            return names[c]
        for d in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
            if c.startswith(d) and c[len(d) :].isdigit():
                return int(c[len(d) :])
    return None


def _link_chain(path: str) -> list[str]:
    """``path`` and every name its symbolic links lead to, one hop at a time (at most 40)."""
    chain = [path]
    cur = path
    for _ in range(40):
        try:
            target = os.readlink(cur)
        except OSError:  # not a link (or gone): the chain ends here
            return chain
        cur = os.path.normpath(os.path.join(os.path.dirname(cur), target))
        chain.append(cur)
    return chain


def _write_fd(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def write_user_file(path: Path | str, data: bytes) -> Path:
    """Write ``data`` where the user pointed, never replacing something that is not a file.

    * a regular file or a new name: atomically (temp file, fsync, rename), keeping the old
      file's permissions; a file with other hard links is written in place instead, so the
      other names keep seeing it;
    * a symbolic link: written through to its target by the same rules (the link stays);
    * ``/dev/stdout`` and other names of open descriptors, a character device (``/dev/null``,
      a terminal) or a named pipe: opened and written, never renamed over (a pipe with no
      reader is refused rather than waited on);
    * a directory, a block device or a socket: refused.

    Every refusal and failure is a :class:`~desklm.errors.DeskLMError` with a one-line reason.
    """
    import errno
    import stat

    from desklm.errors import DeskLMError

    shown = str(path)
    if "\x00" in shown:
        raise DeskLMError(f"cannot write to {shown!r}: a file name may not contain a NUL character")
    p = os.path.expanduser(shown)
    try:
        chain = _link_chain(os.path.abspath(p))
        own = _own_fd(chain)
        if own is not None:  # /dev/stdout: write to the descriptor itself, whatever it is
            if own in (1, 2):
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
            _write_fd(os.dup(own), data)
            return Path(p)
        through = any(_is_fd_path(c) for c in chain)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if os.path.islink(p):  # a dangling link: create its target, keep the link
                target = Path(os.path.realpath(p))
                if not target.parent.is_dir():
                    raise DeskLMError(
                        f"cannot write to {shown}: it is a link to {target}, "
                        "whose folder does not exist"
                    ) from None
                atomic_write_bytes(target, data)
                return Path(p)
            parent = Path(p).parent
            if not parent.is_dir():
                raise DeskLMError(
                    f"cannot write to {shown}: folder {parent} does not exist"
                ) from None
            atomic_write_bytes(Path(p), data)
            return Path(p)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            raise DeskLMError(f"cannot write to {shown}: it is a folder; give a file name")
        if stat.S_ISBLK(mode):
            raise DeskLMError(f"refusing to write to {shown}: it is a block device (a disk)")
        if stat.S_ISSOCK(mode):
            raise DeskLMError(f"cannot write to {shown}: it is a socket")
        if stat.S_ISFIFO(mode):
            try:
                fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    raise DeskLMError(
                        f"cannot write to {shown}: it is a named pipe and no "
                        "program is reading from it"
                    ) from None
                raise
            os.set_blocking(fd, True)
            _write_fd(fd, data)
            return Path(p)
        if stat.S_ISCHR(mode) or not stat.S_ISREG(mode):
            _write_fd(os.open(p, os.O_WRONLY), data)
            return Path(p)
        if through:  # e.g. -o /dev/stdout with stdout redirected to a file: append, like >>
            _write_fd(os.open(p, os.O_WRONLY | os.O_APPEND), data)
            return Path(p)
        target = Path(os.path.realpath(p))
        if st.st_nlink > 1:
            _write_fd(os.open(target, os.O_WRONLY | os.O_TRUNC), data)
            return Path(p)
        atomic_write_bytes(target, data, mode=stat.S_IMODE(mode))
        return Path(p)
    except DeskLMError:
        raise
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if isinstance(e, OSError) and e.errno == errno.ELOOP:
            why = "symbolic link loop"
        raise DeskLMError(f"could not write {shown}: {why}") from None
