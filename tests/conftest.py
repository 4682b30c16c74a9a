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

pytest_plugins = ["tests.remote_fixtures"]  # real OpenAI-compatible servers (remote backend)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(os.environ.get("DESKLM_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["DESKLM_CACHE_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def model_path(cache_dir: Path) -> Path:
    from desklm.engine.models.catalog import embedded_model_path

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
    from desklm.engine.backends.local.engine import ChatEngine

    eng = ChatEngine()
    eng.load(model_path, small_settings())
    yield eng
    eng.unload()


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 300):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "desklm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
    )


# --- a local stand-in for the Hugging Face endpoints (see tests/hubserver.py) ---------------
REPO = "someone/Tiny-GGUF"


def big_gguf(path: Path, mb: int = 6) -> Path:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(2048)
    w.add_block_count(1)
    w.add_tensor("blk.0.ffn_up.weight", np.ones((mb * 1024, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Network allowed (the test session is offline by default), cache in a temp dir."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path


@pytest.fixture
def server(online, monkeypatch, tmp_path, model_path):
    from tests.hubserver import HubFiles, HubServer

    files = HubFiles(
        files={REPO: {"tiny.gguf": big_gguf(tmp_path / "tiny.gguf"), "gemma.gguf": model_path}}
    )
    with HubServer(files) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        yield srv
