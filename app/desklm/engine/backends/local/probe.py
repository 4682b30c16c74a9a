"""Load a model file in a child process first, so a file that makes llama.cpp abort the whole
process (a failed GGML_ASSERT on malformed tensors) takes down only the child.

Header validation (``gguf_info``) catches most bad files; it cannot see inside tensor data or
hyper-parameters that make llama.cpp's own checks abort. So the first time DeskLM meets a file
it loads it (model plus a 512-token context) in a child process; a clean exit is remembered
by path, size and modification time, and later loads skip the probe. The embedded model is
checked by its sha256 and never probed. ``benchmarks`` measure what a probe costs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from desklm.engine.store.files import app_dirs, atomic_write_json
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")
PROBE_TIMEOUT_S = 300


def _known_file() -> Path:
    return app_dirs().cache / "probed-models.json"


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _load_known() -> dict[str, float]:
    try:
        data = json.loads(_known_file().read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def is_known_good(path: Path) -> bool:
    try:
        return _key(path) in _load_known()
    except OSError:
        return False


def remember_good(path: Path) -> None:
    known = _load_known()
    known[_key(path)] = time.time()
    if len(known) > 200:  # keep the newest
        known = dict(sorted(known.items(), key=lambda kv: kv[1])[-200:])
    try:
        atomic_write_json(_known_file(), known)
    except OSError as e:
        log.warning("could not remember the probe result: %s", e)


def probe_command(path: Path) -> list[str]:
    if getattr(sys, "frozen", False):  # a PyInstaller bundle: the app binary is the interpreter
        return [sys.executable, "--probe-model", str(path)]
    return [sys.executable, "-m", "desklm", "--probe-model", str(path)]


def probe(path: Path, timeout: float = PROBE_TIMEOUT_S) -> float:
    """Load ``path`` in a child process; raises DeskLMError with the cause if that fails.

    Returns the seconds the probe took. Skipped (returns 0.0) for files probed before.
    """
    if is_known_good(path):
        return 0.0
    t0 = time.perf_counter()
    env = dict(os.environ, DESKLM_PROBE_CHILD="1")
    try:
        r = subprocess.run(
            probe_command(path),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise DeskLMError(
            f"{path.name}: loading it did not finish within {timeout:.0f} s in a test process"
        ) from None
    took = time.perf_counter() - t0
    if r.returncode == 0:
        remember_good(path)
        log.info("probed %s in %.2fs", path, took)
        return took
    lines = [ln.strip() for ln in (r.stderr or "").splitlines() if ln.strip()]
    if r.returncode == 2 and lines and lines[-1].startswith("desklm: error: "):
        raise DeskLMError(lines[-1][len("desklm: error: ") :])
    if r.returncode < 0:
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = f"signal {-r.returncode}"
        cause = next(
            (ln for ln in reversed(lines) if "GGML_ASSERT" in ln or "error" in ln.lower()),
            lines[-1] if lines else "",
        )
        raise DeskLMError(
            f"{path.name}: llama.cpp crashed reading this file ({sig})"
            + (f": {cause[:200]}" if cause else "")
            + "; the file is damaged or not supported"
        )
    raise DeskLMError(
        f"{path.name}: could not be loaded (test process exit {r.returncode})"
        + (f": {lines[-1][:200]}" if lines else "")
    )
