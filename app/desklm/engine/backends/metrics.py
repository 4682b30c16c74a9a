"""A serving engine's own Prometheus metrics, as a few labelled readings for the gauges.

vLLM serves ``/metrics`` always; llama-server with ``--metrics``. The exposition text is parsed
with ``prometheus_client``'s parser. :func:`server_metrics` never raises: a reading the server
does not give is :data:`~desklm.engine.monitor.NA`. Cheap enough for the 2 Hz sampler thread
(one GET with a short timeout); call it from there, never from the UI thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from desklm.engine.monitor import NA

log = logging.getLogger("desklm.monitor")

# reading key -> (label, unit, [(metric family name, how to combine samples)])
# vLLM: gpu_cache_usage_perc (V0) / kv_cache_usage_perc (V1) are fractions 0..1, despite "perc".
READINGS: dict[str, tuple[str, str, list[str]]] = {
    "kv_cache": (
        "server KV cache",
        "%",
        ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio"],
    ),
    "requests_running": (
        "server requests running",
        "",
        ["vllm:num_requests_running", "llamacpp:requests_processing"],
    ),
    "requests_waiting": (
        "server requests waiting",
        "",
        ["vllm:num_requests_waiting", "llamacpp:requests_deferred"],
    ),
    "tokens_per_s": ("server tokens/s", "tok/s", ["llamacpp:predicted_tokens_seconds"]),
}
_MEAN = {
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "llamacpp:kv_cache_usage_ratio",
    "llamacpp:predicted_tokens_seconds",
}


@dataclass(frozen=True)
class ServerReading:
    """One gauge reading from the server: ``value`` is a number (a fraction for %), or NA."""

    label: str
    value: Any
    unit: str = ""

    def __str__(self) -> str:
        if self.value is NA:
            return f"{self.label} n/a"
        if self.unit == "%":
            return f"{self.label} {100 * self.value:.0f}%"
        if self.unit:
            return f"{self.label} {self.value:.1f} {self.unit}"
        return f"{self.label} {self.value:g}"


def parse_metrics(text: str) -> dict[str, ServerReading]:
    """The readings in Prometheus exposition ``text`` (every key present; NA where absent).

    Several samples of one metric (vLLM labels each with ``model_name``, one per engine) are
    summed for counts and averaged for ratios and rates.
    """
    found: dict[str, list[float]] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith(("_created", "_bucket", "_sum", "_count")):
                    continue
                found.setdefault(s.name, []).append(float(s.value))
    except (ValueError, TypeError, IndexError) as e:  # a damaged exposition: keep what parsed
        log.info("server metrics: could not parse all of it (%s)", e)
    out = {}
    for key, (label, unit, names) in READINGS.items():
        value: Any = NA
        for name in names:
            vals = found.get(name)
            if vals:
                value = sum(vals) / len(vals) if name in _MEAN else sum(vals)
                break
        out[key] = ServerReading(label, value, unit)
    return out


_hinted: set[str] = set()


def server_metrics(
    url: str, api_key: str | None = None, timeout: float = 1.5
) -> dict[str, ServerReading]:
    """GET the server's ``/metrics`` and parse it. Never raises; all NA when unavailable.

    ``url`` is the connection's URL (with or without ``/v1``); nothing is resolved or checked
    here beyond what the connection already passed.
    """
    root = url.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text = ""
    try:
        r = httpx.get(root + "/metrics", headers=headers, timeout=timeout)
        if r.status_code == 200:
            text = r.text
        elif root not in _hinted:
            _hinted.add(root)
            log.info(
                "server metrics: %s/metrics answered %d (llama-server needs --metrics); "
                "server gauges show n/a",
                root,
                r.status_code,
            )
    except httpx.HTTPError as e:
        if root not in _hinted:
            _hinted.add(root)
            log.info("server metrics: %s/metrics unavailable (%s)", root, type(e).__name__)
    return parse_metrics(text)
