"""`desklm chat --server` and `desklm bench --server` against llama_cpp.server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.remote_fixtures import KEY, free_port

pytestmark = pytest.mark.timeout(300)


def test_chat_json_on_a_server(llama_server, model_path: Path) -> None:
    r = run_cli(
        "chat",
        "--server",
        llama_server.url,
        "--json",
        "--max-tokens",
        "4",
        "--no-save",
        stdin="Hello\nAnd more\n/stats\n",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    turns = [x for x in lines if "reply" in x]
    assert len(turns) == 2
    assert turns[1]["prompt_tokens"] > turns[0]["prompt_tokens"]
    assert turns[0]["model"] == str(model_path) and turns[0]["server"] == llama_server.url
    assert 1 <= turns[0]["completion_tokens"] <= 4 and turns[0]["n_ctx"] == 4096
    stats = next(x for x in lines if x.get("command") == "stats")
    assert stats["n_ctx"] == 4096 and stats["context_used"] > 0
    assert "does not report its context size" in r.stderr


def test_chat_text_output(llama_server) -> None:
    r = run_cli(
        "chat",
        "--server",
        llama_server.url,
        "--max-tokens",
        "3",
        "--ctx",
        "1024",
        "--no-save",
        stdin="Hi\n",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tok/s, first token" in r.stdout and "context " in r.stdout and "/1024," in r.stdout


def test_key_from_env_never_lands_in_config_or_log(llama_server_keyed, data_dir: Path) -> None:
    r = run_cli(
        "--debug",
        "chat",
        "--server",
        llama_server_keyed.url,
        "--api-key-env",
        "MY_SERVER_KEY",
        "--json",
        "--max-tokens",
        "3",
        stdin="Hello\n",
        env={"MY_SERVER_KEY": KEY},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"reply"' in r.stdout
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "desklm.log" for p in files)  # the log was written (with --debug)
    assert any(p.suffix == ".json" for p in files)  # and the conversation saved
    for p in files:
        assert KEY not in p.read_text(errors="replace"), p
    assert KEY not in r.stdout + r.stderr


def test_failures_are_one_line(llama_server_keyed) -> None:
    r = run_cli(
        "chat",
        "--server",
        llama_server_keyed.url,
        "--api-key-env",
        "K",
        stdin="Hi\n",
        env={"K": "wrong"},
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("desklm: error: the server at http://")
    assert "refused the API key (401" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "chat",
        "--server",
        llama_server_keyed.url,
        "--api-key-env",
        "NOT_SET_ANYWHERE",
        stdin="Hi\n",
    )
    assert (
        r.returncode == 2 and "NOT_SET_ANYWHERE: that environment variable is not set" in r.stderr
    )
    r = run_cli("chat", "--server", f"http://127.0.0.1:{free_port()}", stdin="Hi\n")
    assert r.returncode == 2 and "connection refused" in r.stderr
    r = run_cli("chat", "--server", "http://8.8.8.8:8000", stdin="Hi\n")
    assert r.returncode == 2 and "refusing plain http to 8.8.8.8" in r.stderr


def test_wrong_model_name(llama_server) -> None:
    r = run_cli("chat", "--server", llama_server.url, "--model", "llama-70b", stdin="Hi\n")
    assert r.returncode == 2 and "model 'llama-70b' is not served at" in r.stderr


def test_bench_compares_with_the_bare_client(llama_server) -> None:
    r = run_cli(
        "bench", "--server", llama_server.url, "--runs", "1", "--gen-tokens", "16", "--json"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["desklm_tps"] > 0 and out["direct_tps"] > 0 and out["ratio"] > 0
    assert {x["path"] for x in out["rows"]} == {"desklm", "direct"}
    # the same request gives the same tokens on both paths
    assert len({x["tokens"] for x in out["rows"]}) == 1
