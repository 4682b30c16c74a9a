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
