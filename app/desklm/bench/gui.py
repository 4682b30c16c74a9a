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

from desklm.bench import engine as bench
from desklm.engine import AppConfig, ConversationStore, DeskLMError, Settings


def _wait(signal: Any, timeout_s: float, failed: Any = None) -> list[Any]:
    """Run the event loop until ``signal`` fires (on the UI thread); returns its arguments.
    ``failed`` (the window's failed signal) ends the wait with its reason."""
    loop = QEventLoop()
    got: list[Any] = []
    fired: list[bool] = []
    why: list[str] = []

    def fire(*args: Any) -> None:
        got.extend(args)
        fired.append(True)  # a signal may carry no arguments at all
        loop.quit()

    def fail(reason: str) -> None:
        why.append(reason)
        loop.quit()

    signal.connect(fire)
    if failed is not None:
        failed.connect(fail)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    loop.exec()
    timer.stop()
    signal.disconnect(fire)
    if failed is not None:
        failed.disconnect(fail)
    if why:
        raise DeskLMError(f"the window reported: {why[0]}")
    if not fired:
        raise DeskLMError(f"the window did not answer within {timeout_s:.0f} s")
    return got


def _pump(seconds: float) -> None:
    """Run the UI event loop for ``seconds``."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


class Heartbeat:
    """A 10 ms timer on the UI thread; the longest gap between its ticks is the longest time
    the event loop was stalled (less the 10 ms interval)."""

    def __init__(self, interval_ms: int = 10) -> None:
        self.interval_ms = interval_ms
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    @property
    def max_stall_ms(self) -> float | None:
        return 1000 * max(self.gaps) - self.interval_ms if self.gaps else None


class GuiBench:
    """One window (one inference thread) for every GUI run, as in the real app.

    Each run reloads the model and starts a new chat. Creating a window per run would start a
    new inference thread each time, and with llama.cpp's OpenMP build every thread after the
    first that drives it runs ~13% slower (measured: 87, 80, 79, 79 tok/s from fresh threads;
    92, 92, 91, 91 from one reused thread). DeskLM keeps one inference thread for its lifetime.
    """

    def __init__(self) -> None:
        self.w: Any = None
        self.baseline = 0
        self.vram_baseline: int | None = None
        self.runs = 0

    def _window(self, model: Path, s: Settings, gen_tokens: int) -> Any:
        from desklm.ui.app import make_app
        from desklm.ui.main_window import MainWindow

        if self.w is not None:
            return self.w
        make_app()
        scratch = Path(tempfile.mkdtemp(prefix="desklm-bench-"))
        self.baseline, self.vram_baseline = bench.rss(), bench.vram()
        self.t_window = time.perf_counter()
        self.w = MainWindow(
            bench.bench_settings(s, max_tokens=gen_tokens),
            str(model),
            show_dialogs=False,
            store=ConversationStore(scratch / "c"),
            config=AppConfig(scratch / "settings.json"),
        )
        self.w.controller.runtime.local.probe = False
        self.w.controller.runtime.local.ignore_eos = True  # set before the runner runs anything
        return self.w

    def open_stalls(self, sizes: tuple[int, ...] = (50, 500, 5000)) -> list[dict[str, Any]]:
        """Open saved chats of ``sizes`` messages in the window (after :meth:`run`), then
        scroll to their first message: how long until the chat is shown, the longest stall
        of the UI event loop while it opens, the time to reach the top, and the longest stall
        in all (target < 50 ms)."""
        w = self.w
        store = w.controller.session.store
        out = []
        for n in sizes:
            conv_id = f"bench-open-{n}"
            store.save(
                {
                    "id": conv_id,
                    "title": f"{n} messages",
                    "created": time.time(),
                    "messages": [m.to_dict() for m in bench.synthetic_history(n)],
                }
            )
            hb = Heartbeat()
            hb.start()
            t0 = time.perf_counter()
            w.open_conversation(conv_id)
            _wait(w.conversationShown, 120, w.failed)
            shown = time.perf_counter() - t0
            _pump(0.3)
            opening_stall = hb.max_stall_ms
            # then as a reader would: scroll to the very first message (older ones render
            # on demand as the view nears them)
            t1 = time.perf_counter()
            sb = w.chat.verticalScrollBar()
            while w.chat.pending_older and time.perf_counter() - t1 < 60:
                sb.setValue(0)
                _pump(0.01)
            hb.stop()
            out.append(
                {
                    "messages": n,
                    "shown_s": shown,
                    "opening_stall_ms": opening_stall,
                    "to_top_s": time.perf_counter() - t1,
                    "left_unrendered": w.chat.pending_older,
                    "max_stall_ms": hb.max_stall_ms,
                }
            )
            w.new_conversation()
            _wait(w.conversationShown, 60, w.failed)
        return out

    def run(self, model: Path, s: Settings, gen_tokens: int) -> bench.PathRun:
        first = self.w is None
        w = self._window(model, s, gen_tokens)
        if first:
            w.start()
        else:
            w.settings_panel.changed.emit({"max_tokens": gen_tokens})
            _wait(w.settingsSynced, 60, w.failed)
            w.load_model(str(model))
        info = _wait(w.modelLoaded, 300, w.failed)[0]
        if not first:
            w.new_conversation()
            _wait(w.conversationShown, 60, w.failed)
        hb = Heartbeat()
        w.chat.flush_log.clear()
        t_send = time.perf_counter()
        w.submit(bench.PROMPT)
        _wait(w.firstToken, 300, w.failed)
        ttft = time.perf_counter() - t_send
        hb.start()
        ui_cpu0, wall0 = time.thread_time(), time.perf_counter()
        result = _wait(w.replyFinished, 600, w.failed)[0]
        ui_cpu = time.thread_time() - ui_cpu0  # CPU the UI thread spent while it streamed
        ui_wall = time.perf_counter() - wall0
        hb.stop()
        elapsed = time.perf_counter() - self.t_window
        st = result.stats
        self.runs += 1
        return bench.PathRun(
            "gui",
            info.load_s,
            ttft,
            st.prompt_tokens_per_s,
            st.gen_tokens_per_s,
            (bench.rss() - self.baseline) / bench.MB,
            st.prompt_tokens,
            st.completion_tokens,
            vram_mb=bench.growth_mb(self.vram_baseline, bench.vram()),
            extra={
                "max_stall_ms": hb.max_stall_ms,
                "sampler_core_percent": 100 * w.controller.sampler.cpu_seconds / elapsed,
                "ui_thread_core_percent": 100 * ui_cpu / ui_wall if ui_wall else None,
                "flushes": list(w.chat.flush_log),
            },
        )

    def close(self) -> None:
        if self.w is not None:
            self.w.shutdown()
            self.w.deleteLater()
            self.w = None


def flush_profile(flushes: list[tuple[int, float]]) -> dict[str, Any]:
    """Render cost per flush early and late in a long reply (flat = no quadratic re-render).

    Compares the second fifth of the repaints with the last: the very first ones render an
    almost empty reply and would flatter any growth."""
    n = len(flushes)
    if n < 10:
        return {"flushes": n}
    q = max(1, n // 5)
    first = sum(d for _, d in flushes[q : 2 * q]) / q
    last = sum(d for _, d in flushes[-q:]) / q
    return {
        "flushes": n,
        "chars": flushes[-1][0],
        "second_fifth_ms": 1000 * first,
        "last_fifth_ms": 1000 * last,
        "ratio": last / first if first else None,
        "total_ms": 1000 * sum(d for _, d in flushes),
    }


def launch_time(runs: int = 1) -> list[float]:
    """Seconds from starting the process to the window being shown (a cold Python start)."""
    out = []
    for _ in range(runs):
        env = dict(
            os.environ,
            QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"),
            DESKLM_LAUNCH_T0=repr(time.time()),
        )
        cmd = (
            [sys.executable, "--self-test", "--max-tokens", "2"]
            if getattr(sys, "frozen", False)
            else [sys.executable, "-m", "desklm", "--self-test", "--max-tokens", "2"]
        )
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        try:
            summary = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(float(summary["launch_to_window_s"]))
        except (ValueError, KeyError, IndexError):
            raise DeskLMError(
                f"self-test failed while timing the launch: {r.stderr[-300:]}"
            ) from None
    return out
