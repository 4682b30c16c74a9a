"""Server gauges: Prometheus exposition text as vLLM and llama-server publish it, parsed with
prometheus_client's parser; and a real /metrics endpoint on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from desklm.engine.backends.metrics import parse_metrics, server_metrics
from desklm.engine.monitor import NA
from tests.remote_fixtures import free_port, metrics_server

DATA = Path(__file__).resolve().parents[1] / "data"


def test_vllm_v1() -> None:
    r = parse_metrics((DATA / "metrics_vllm.txt").read_text())
    assert abs(r["kv_cache"].value - 0.4312) < 1e-9
    assert str(r["kv_cache"]) == "server KV cache 43%"
    assert (
        r["requests_running"].value == 3
        and str(r["requests_running"]) == "server requests running 3"
    )
    assert r["requests_waiting"].value == 2
    assert r["tokens_per_s"].value is NA and str(r["tokens_per_s"]) == "server tokens/s n/a"


def test_vllm_v0_names() -> None:
    r = parse_metrics((DATA / "metrics_vllm_v0.txt").read_text())
    assert abs(r["kv_cache"].value - 0.0875) < 1e-9
    assert r["requests_running"].value == 1 and r["requests_waiting"].value == 0


def test_two_vllm_engines_are_combined() -> None:
    text = (DATA / "metrics_vllm.txt").read_text()
    second = "\n".join(
        line.replace('engine="0"', 'engine="1"').replace(" 0.4312", " 0.2312")
        for line in text.splitlines()
        if line.startswith("vllm:")
    )
    r = parse_metrics(text + second + "\n")
    assert r["requests_running"].value == 6  # counts add up
    assert abs(r["kv_cache"].value - 0.3312) < 1e-9  # usage is averaged


def test_llama_server() -> None:
    r = parse_metrics((DATA / "metrics_llamacpp.txt").read_text())
    assert r["kv_cache"].value == 0.25 and str(r["kv_cache"]) == "server KV cache 25%"
    assert r["requests_running"].value == 1 and r["requests_waiting"].value == 0
    assert str(r["tokens_per_s"]) == "server tokens/s 97.9 tok/s"


def test_nothing_or_garbage_is_all_na() -> None:
    for text in ("", "<html>not metrics</html>\n"):
        r = parse_metrics(text)
        assert set(r) == {"kv_cache", "requests_running", "requests_waiting", "tokens_per_s"}
        assert all(v.value is NA for v in r.values())


def test_server_metrics_over_http() -> None:
    with metrics_server((DATA / "metrics_llamacpp.txt").read_bytes()) as (url, seen):
        r = server_metrics(url, "k")
        assert r["kv_cache"].value == 0.25 and seen == ["Bearer k"]
    # a server that is gone: all n/a, no exception, quickly
    r = server_metrics(f"http://127.0.0.1:{free_port()}")
    assert all(v.value is NA for v in r.values())


def test_llama_cpp_python_server_has_no_metrics(llama_server) -> None:
    r = server_metrics(llama_server.url)
    assert all(v.value is NA for v in r.values())
