"""Where DeskLM keeps things: data, config, cache and logs (platformdirs; DESKLM_DATA_DIR and
DESKLM_CACHE_DIR override). A base module: it imports nothing else of DeskLM's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
