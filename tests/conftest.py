"""Shared fixtures. Tests run the real llama.cpp on the embedded model, on real files.

Every test gets its own data dir (DESKLM_DATA_DIR); the assembled embedded model lives in one
cache dir per test session (DESKLM_CACHE_DIR), so it is assembled and verified once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the network

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("DESKLM_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["DESKLM_CACHE_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def model_path(cache_dir: Path) -> Path:
    from desklm.engine.models import embedded_model_path

    return embedded_model_path()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "desklm-data"
    monkeypatch.setenv("DESKLM_DATA_DIR", str(d))
    return d


def small_settings(**over: object):
    from desklm.engine.settings import Settings

    values = {"n_ctx": 2048, "max_tokens": 24, "seed": 7, "temperature": 0.7}
    values.update(over)
    return Settings(values)


@pytest.fixture(scope="module")
def engine(model_path: Path):
    """One loaded engine per test module (loading costs ~0.5 s)."""
    from desklm.engine.llm import ChatEngine

    eng = ChatEngine()
    eng.load(model_path, small_settings())
    yield eng
    eng.unload()


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 300):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "desklm", *args], input=stdin, capture_output=True, text=True,
        timeout=timeout, env=e,
    )
