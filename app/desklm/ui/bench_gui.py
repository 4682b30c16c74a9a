"""The GUI path of ``desklm bench``: the real window (offscreen), worker thread, gauges on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, QTimer

from desklm.engine.bench import MB, PROMPT, PathRun, bench_settings, rss
from desklm.engine.settings import Settings
from desklm.engine.store import AppConfig, ConversationStore
from desklm.errors import DeskLMError


def _wait(signal: Any, timeout_s: float) -> list[Any]:
    """Run the event loop until ``signal`` fires (on the UI thread); returns its arguments."""
    loop = QEventLoop()
    got: list[Any] = []

    def fire(*args: Any) -> None:
        got.extend(args)
        loop.quit()

    signal.connect(fire)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(fire)
    if not got:
        raise DeskLMError(f"the window did not answer within {timeout_s:.0f} s")
    return got


def run_gui(model: Path, s: Settings, gen_tokens: int) -> PathRun:
    from desklm.ui.app import make_app
    from desklm.ui.main_window import MainWindow

    make_app()
    scratch = Path(tempfile.mkdtemp(prefix="desklm-bench-"))
    before = rss()
    w = MainWindow(bench_settings(s, max_tokens=gen_tokens), str(model), show_dialogs=False,
                   store=ConversationStore(scratch / "conversations"),
                   config=AppConfig(scratch / "settings.json"))
    w.worker.engine.probe = False
    w.worker.engine.ignore_eos = True  # set before the worker runs anything
    t_window = time.perf_counter()
    w.start()
    info = _wait(w.modelLoaded, 300)[0]
    # heartbeat: the longest gap between 5 ms ticks while the reply streams
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    hb = QTimer()
    hb.setInterval(5)
    hb.timeout.connect(beat)
    t_send = time.perf_counter()
    w.submit(PROMPT)
    _wait(w.firstToken, 300)
    ttft = time.perf_counter() - t_send
    last[0] = time.perf_counter()
    hb.start()
    result = _wait(w.replyFinished, 600)[0]
    hb.stop()
    elapsed = time.perf_counter() - t_window
    sampler_cpu = w.sampler.cpu_seconds
    mem = (rss() - before) / MB
    flushes = list(w.chat.flush_log)
    w.shutdown()
    w.deleteLater()
    st = result.stats
    return PathRun("gui", info.load_s, ttft, st.prompt_tokens_per_s, st.gen_tokens_per_s, mem,
                   st.prompt_tokens, st.completion_tokens, extra={
                       "max_stall_ms": 1000 * max(gaps) - 5 if gaps else None,
                       "sampler_core_percent": 100 * sampler_cpu / elapsed,
                       "sampler_samples": w.sampler.samples,
                       "flushes": flushes})


def flush_profile(flushes: list[tuple[int, float]]) -> dict[str, Any]:
    """Render cost per flush early and late in a long reply (flat = no quadratic re-render)."""
    n = len(flushes)
    if n < 10:
        return {"flushes": n}
    q = max(1, n // 5)
    first = sum(d for _, d in flushes[:q]) / q
    last = sum(d for _, d in flushes[-q:]) / q
    return {"flushes": n, "chars": flushes[-1][0], "first_fifth_ms": 1000 * first,
            "last_fifth_ms": 1000 * last, "ratio": last / first if first else None,
            "total_ms": 1000 * sum(d for _, d in flushes)}


def launch_time(runs: int = 1) -> list[float]:
    """Seconds from starting the process to the window being shown (a cold Python start)."""
    out = []
    for _ in range(runs):
        env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
                   DESKLM_LAUNCH_T0=repr(time.time()))
        cmd = ([sys.executable, "--self-test", "--max-tokens", "2"] if getattr(sys, "frozen", False)
               else [sys.executable, "-m", "desklm", "--self-test", "--max-tokens", "2"])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        try:
            summary = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(float(summary["launch_to_window_s"]))
        except (ValueError, KeyError, IndexError):
            raise DeskLMError(
                f"self-test failed while timing the launch: {r.stderr[-300:]}") from None
    return out
