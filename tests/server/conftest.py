"""A real server on 127.0.0.1 over a real runner and the embedded model, shared per module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..conftest import small_settings


@dataclass
class Served:
    engine: Any
    runner: Any
    server: Any
    url: str

    @property
    def base(self) -> str:  # http://127.0.0.1:PORT
        return self.url.removesuffix("/v1")


@contextlib.contextmanager
def _serving(model_path: Path, **load: object) -> Iterator[Served]:
    """The real ApiServer on 127.0.0.1 over a loaded engine, stopped and freed afterwards."""
    from desklm.engine.backends.local.engine import ChatEngine
    from desklm.engine.runner import Runner
    from desklm.server import ApiServer

    eng = ChatEngine()
    runner = Runner(interrupt=eng.stop)
    runner.call(lambda: eng.load(model_path, small_settings(n_ctx=1024, **load)), "load")
    defaults = small_settings(max_tokens=8)
    srv = ApiServer(runner, lambda: eng, lambda: defaults)
    url = srv.start(port=0)
    yield Served(eng, runner, srv, url)
    srv.stop()
    assert runner.shutdown(5)
    eng.unload()


@pytest.fixture(scope="module")
def served(model_path: Path) -> Iterator[Served]:
    with _serving(model_path) as s:
        yield s


@pytest.fixture
def served_serial(model_path: Path) -> Iterator[Served]:
    """As ``served``, with parallel 1: requests answered one at a time, as before batching.
    Per test: its socket must not outlive the test (others count the listening sockets)."""
    with _serving(model_path, parallel=1) as s:
        yield s


@pytest.fixture
def client(served: Served) -> Any:
    import openai

    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=120)
