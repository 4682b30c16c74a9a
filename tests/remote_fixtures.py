"""Real OpenAI-compatible servers for the remote-backend tests.

``llama_server`` / ``llama_server_keyed``: llama-cpp-python's own server (``llama_cpp.server``)
on 127.0.0.1 with the embedded model, started once per test session. ``status_server``: a tiny
real HTTP server on 127.0.0.1 that answers with a chosen status (429, 5xx) or never answers (a
stuck server), for the failures llama_cpp.server cannot be made to produce.
``metrics_server``: a /metrics endpoint serving exposition text (llama_cpp.server has none).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

KEY = "s3cret-test-key-7f1c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def metrics_server(body: bytes) -> Iterator[tuple[str, list[str | None]]]:
    """A real /metrics endpoint on 127.0.0.1 serving ``body`` (Prometheus exposition text, as
    vLLM or llama-server publish it): yields the server's ``/v1`` URL and the Authorization
    headers it received."""
    seen: list[str | None] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            ok = self.path == "/metrics"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1", seen
    finally:
        srv.shutdown()
        srv.server_close()


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    key: str | None = None


def start_llama_server(model: Path, log: Path, *extra: str, n_ctx: int = 2048) -> Served:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
        "--verbose",
        "False",
        *extra,
    ]
    out = log.open("wb")
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
    )
    url = f"http://127.0.0.1:{port}"
    key = extra[extra.index("--api_key") + 1] if "--api_key" in extra else None
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(
                url + "/v1/models",
                timeout=2,
                headers={"Authorization": f"Bearer {key}"} if key else {},
            )
            if r.status_code == 200:
                return Served(url, proc, key)
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not answer /v1/models within 120 s")


def stop_server(s: Served) -> None:
    if s.proc.poll() is None:
        s.proc.terminate()
        try:
            s.proc.wait(10)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(10)


@pytest.fixture(scope="session")
def llama_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start_llama_server(model_path, tmp_path_factory.mktemp("srv") / "server.log")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def llama_server_keyed(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    s = start_llama_server(
        model_path, tmp_path_factory.mktemp("srvk") / "server.log", "--api_key", KEY
    )
    yield s
    stop_server(s)


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 500
    hang_s = 0.0

    def _answer(self) -> None:
        if self.path == "/v1/models":
            body = {"object": "list", "data": [{"id": "m", "object": "model"}]}
            code = 200
        elif self.hang_s and self.path.endswith("/chat/completions"):
            time.sleep(self.hang_s)
            return
        else:
            body = {
                "error": {"message": f"status {self.status} from the test server", "type": "test"}
            }
            code = self.status
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *a: object) -> None:
        pass


@contextlib.contextmanager
def status_server(status: int = 500, hang_s: float = 0.0) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1: /v1/models answers one model "m"; everything else
    answers ``status`` (or, with ``hang_s``, nothing for that long)."""
    handler = type("H", (_Handler,), {"status": status, "hang_s": hang_s})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
