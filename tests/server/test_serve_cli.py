"""`desklm serve` end to end: a real process, a real client, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import openai
import psutil

from desklm.server import ApiServer


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "desklm",
            "serve",
            "--port",
            "0",
            "--ctx",
            "1024",
            "--max-tokens",
            "4",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_serve_answers_then_stops_cleanly_on_sigterm() -> None:
    p = _serve("--api-key-env", "DESKLM_TEST_KEY", env={"DESKLM_TEST_KEY": "secret-key-123"})
    try:
        line = p.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:(\d+)/v1)", line)
        assert m, line + p.stderr.read()
        url, port = m.group(1), int(m.group(2))
        listening = [
            c
            for c in psutil.Process(p.pid).net_connections("all")
            if c.status == psutil.CONN_LISTEN
        ]
        assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", port)]
        c = openai.OpenAI(base_url=url, api_key="secret-key-123", max_retries=0, timeout=120)
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
        assert r.choices[0].message.content and r.usage.completion_tokens <= 4
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(5) == 0
        assert time.monotonic() - t0 < 2.0
        err = p.stderr.read()
        line_re = r"127\.0\.0\.1:\d+ POST /v1/chat/completions 200 \d+\+\d+ tokens"
        assert re.search(line_re, err), err
        assert "secret-key-123" not in err + line  # the key is never logged
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_refuses_a_network_address_without_a_key() -> None:
    p = _serve("--host", "0.0.0.0")
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.strip().splitlines()[-1].startswith("desklm: error: listening on 0.0.0.0 makes")
    p = _serve("--api-key-env", "DESKLM_NO_SUCH_VAR")
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "DESKLM_NO_SUCH_VAR" in err


def test_nothing_listens_until_started() -> None:
    from desklm.engine.runner import Runner

    r = Runner()
    srv = ApiServer(r, lambda: None)
    assert srv.state.text == "off" and not srv.running
    assert [
        c for c in psutil.Process().net_connections("inet") if c.status == psutil.CONN_LISTEN
    ] == []
    r.shutdown()
