"""``desklm bench``: run the paths interleaved, print medians, ratios and targets."""

from __future__ import annotations

import itertools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from desklm.bench import engine as bench
from desklm.engine.settings import Settings

TARGETS = [
    ("engine generation tok/s vs raw", "engine_gen_ratio", ">=", 0.97),
    ("GUI generation tok/s vs raw", "gui_gen_ratio", ">=", 0.99),
    ("last turn's time to first token vs turn 1", "last_turn_ttft_ratio", "<=", 1.5),
    ("longest UI event-loop stall while streaming (ms)", "max_stall_ms", "<=", 50.0),
    ("gauge sampling cost (% of one core)", "sampler_core_percent", "<", 1.0),
    ("window visible after launch (s)", "launch_to_window_s", "<=", 1.5),
    ("memory above raw llama-cpp-python, engine (MB)", "engine_mem_over_raw_mb", "<=", 150.0),
    ("memory above raw llama-cpp-python, GUI (MB)", "gui_mem_over_raw_mb", "<=", 150.0),
    ("long reply: render cost per repaint, last fifth vs second", "render_ratio", "<=", 1.5),
    ("long chats: first token at 5,000 messages vs 50", "long_ttft_ratio", "<=", 1.5),
    ("longest UI stall opening a 50 / 500 / 5,000-message chat (ms)", "open_stall_ms", "<=", 50.0),
    (
        "switch back to a 2,000-token chat: first token with snapshot vs re-evaluating",
        "switch_ttft_ratio",
        "<=",
        0.10,
    ),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {psutil.cpu_count(logical=False)} cores / {psutil.cpu_count()} threads, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GB RAM, {platform.system()}"
    )


def run(
    model: Path,
    settings: Settings,
    runs: int = 3,
    gen_tokens: int = 128,
    gui: bool = True,
    long_tokens: int = 1200,
    turns: int = 20,
    say: Any = print,
    long_chats: bool = False,
) -> dict[str, Any]:
    s = bench.bench_settings(settings)
    paths = ["raw", "engine", *(["gui"] if gui else [])]
    results: dict[str, list[bench.PathRun]] = {p: [] for p in paths}
    if gui:
        from desklm.bench import gui as bench_gui

        window = bench_gui.GuiBench()
    for i in range(runs):  # interleaved, so drift in the machine hits every path alike
        order = paths[i % len(paths) :] + paths[: i % len(paths)]
        for p in order:
            say(f"run {i + 1}/{runs}: {p}…")
            if p == "raw":
                results[p].append(bench.run_raw(model, s, gen_tokens))
            elif p == "engine":
                results[p].append(bench.run_engine(model, s, gen_tokens))
            else:
                results[p].append(window.run(model, s, gen_tokens))
    med: dict[str, dict[str, Any]] = {}
    for p, rs in results.items():
        med[p] = {
            k: bench.median([getattr(r, k) for r in rs])
            for k in ("load_s", "ttft_s", "prompt_tps", "gen_tps", "memory_mb", "vram_mb")
        }
    out: dict[str, Any] = {
        "model": str(model),
        "machine": machine(),
        "runs": runs,
        "gen_tokens": gen_tokens,
        "settings": s.load_values(),
        "median": med,
    }
    m = out["summary"] = {}
    m["engine_gen_ratio"] = bench.ratio(med["engine"]["gen_tps"], med["raw"]["gen_tps"])
    m["engine_prompt_ratio"] = bench.ratio(med["engine"]["prompt_tps"], med["raw"]["prompt_tps"])
    m["engine_mem_over_raw_mb"] = med["engine"]["memory_mb"] - med["raw"]["memory_mb"]
    say(f"multi-turn: {turns} turns…")
    chat = out["multi_turn"] = bench.multi_turn(model, s, turns)
    m["last_turn_ttft_ratio"] = bench.ratio(chat[-1]["ttft_s"], chat[0]["ttft_s"])
    if gui:
        g = results["gui"]
        m["gui_gen_ratio"] = bench.ratio(med["gui"]["gen_tps"], med["raw"]["gen_tps"])
        m["gui_mem_over_raw_mb"] = med["gui"]["memory_mb"] - med["raw"]["memory_mb"]
        m["max_stall_ms"] = max(r.extra["max_stall_ms"] or 0 for r in g)
        m["sampler_core_percent"] = bench.median([r.extra["sampler_core_percent"] for r in g])
        m["ui_thread_core_percent"] = bench.median([r.extra["ui_thread_core_percent"] for r in g])
        say(f"long reply: {long_tokens} tokens into the window…")
        long = window.run(model, s, long_tokens)
        if long_chats:
            say("opening long chats in the window…")
            opened = out["open_stalls"] = window.open_stalls()
            m["open_stall_ms"] = max((o["max_stall_ms"] or 0) for o in opened)
        window.close()
        prof = bench_gui.flush_profile(long.extra["flushes"])
        out["long_reply"] = {
            "tokens": long.completion_tokens,
            "gen_tps": long.gen_tps,
            "max_stall_ms": long.extra["max_stall_ms"],
            **prof,
        }
        m["render_ratio"] = prof.get("ratio")
        m["max_stall_ms"] = max(m["max_stall_ms"], long.extra["max_stall_ms"] or 0)
        say("launch to window…")
        launches: list[float | None] = list(bench_gui.launch_time(max(1, min(runs, 3))))
        m["launch_to_window_s"] = bench.median(launches)
    if long_chats:
        lc = out["long_chats"] = bench.long_chats(model, s, say=say)
        m["long_ttft_ratio"] = lc["ttft_ratio"]
        m["switch_ttft_ratio"] = lc["switch_ratio"]
    for r in results.values():
        for x in r:
            x.extra.pop("flushes", None)
    out["runs_detail"] = {p: [x.__dict__ for x in rs] for p, rs in results.items()}
    out["targets"] = [
        {
            "target": name,
            "value": m.get(key),
            "op": op,
            "limit": lim,
            "met": _met(m.get(key), op, lim),
        }
        for name, key, op, lim in TARGETS
        if key in m
    ]
    return out


def _met(v: float | None, op: str, lim: float) -> bool | None:
    if v is None:
        return None
    return {">=": v >= lim, "<=": v <= lim, "<": v < lim}[op]


def _f(v: Any, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def table(out: dict[str, Any]) -> str:
    med = out["median"]
    paths = list(med)
    lines = [
        f"DeskLM bench — {Path(out['model']).name}",
        f"machine: {out['machine']}",
        f"settings: n_ctx {out['settings']['n_ctx']}, threads {out['settings']['n_threads']}"
        f", GPU layers {out['settings']['n_gpu_layers']}; {out['runs']} interleaved runs, "
        f"{out['gen_tokens']} generated tokens, medians",
        "",
    ]
    head = (
        f"{'':22}"
        + "".join(f"{p:>11}" for p in paths)
        + "".join(f"{p + '/raw':>12}" for p in paths if p != "raw")
    )
    lines.append(head)
    rows = [
        ("load (s)", "load_s", 2),
        ("first token (ms)", "ttft_s", 0),
        ("prompt tok/s", "prompt_tps", 1),
        ("generation tok/s", "gen_tps", 1),
        ("memory (MB)", "memory_mb", 1),
    ]
    if any(med[p].get("vram_mb") is not None for p in paths):  # only where NVML reads VRAM
        rows.append(("VRAM (MB)", "vram_mb", 1))
    for label, key, d in rows:
        vals = [med[p][key] for p in paths]
        if key == "ttft_s":
            vals = [None if v is None else v * 1000 for v in vals]
        row = f"{label:22}" + "".join(f"{_f(v, d):>11}" for v in vals)
        for p in paths:
            if p != "raw":
                r = bench.ratio(med[p][key], med["raw"][key])
                row += f"{_f(r, 3) + 'x':>12}"
        lines.append(row)
    t = out["multi_turn"]
    lines += [
        "",
        f"multi-turn ({len(t)} turns): first token "
        f"{t[0]['ttft_s'] * 1000:.0f} ms on turn 1, {t[-1]['ttft_s'] * 1000:.0f} ms on turn"
        f" {len(t)}; prompt tokens evaluated per turn: "
        + ", ".join(str(x["evaluated"]) for x in t),
    ]
    if "long_reply" in out:
        lr = out["long_reply"]
        lines.append(
            f"long reply ({lr['tokens']} tokens, {lr.get('chars', 0):,} chars): "
            f"{lr.get('flushes')} repaints, {_f(lr.get('second_fifth_ms'), 2)} ms each in "
            f"the second fifth, {_f(lr.get('last_fifth_ms'), 2)} ms in the last; "
            f"{_f(lr.get('total_ms'), 0)} ms rendering in all"
        )
    if "long_chats" in out:
        lines += ["", *long_chats_lines(out["long_chats"])]
    for o in out.get("open_stalls", []):
        lines.append(
            f"  opening a {o['messages']:,}-message chat in the window: shown in "
            f"{o['shown_s'] * 1000:,.0f} ms (longest UI stall "
            f"{_f(o['opening_stall_ms'], 0)} ms); scrolled to its first message in "
            f"{o['to_top_s']:.2f} s (longest stall {_f(o['max_stall_ms'], 0)} ms)"
        )
    lines += ["", "targets:"]
    for tg in out["targets"]:
        mark = {True: "met ", False: "MISS", None: "n/a "}[tg["met"]]
        lines.append(f"  [{mark}] {tg['target']}: {_f(tg['value'], 3)} ({tg['op']} {tg['limit']})")
    return "\n".join(lines)


def long_chats_lines(lc: dict[str, Any]) -> list[str]:
    lines = [f"long chats (n_ctx {lc['n_ctx']}; opened cold, trimmed to fit, then one more turn):"]
    for h in lc["histories"]:
        lines.append(
            f"  {h['messages']:>6,} messages: first token {h['ttft_s'] * 1000:,.0f} ms "
            f"(planning {h['plan_s'] * 1000:,.0f} ms, {h['dropped']:,} dropped, "
            f"{h['evaluated']:,} tokens read); "
            f"next turn {h['next_ttft_s'] * 1000:,.0f} ms"
        )
    for key, label in (
        ("snapshot_ram", "with its snapshot (RAM)"),
        ("snapshot_disk", "with its snapshot (disk)"),
        ("reevaluate", "re-evaluating it"),
    ):
        r = lc[key]
        lines.append(
            f"  switch back to a {r['prompt_tokens']:,}-token chat {label}: first token "
            f"{r['ttft_s'] * 1000:,.0f} ms ({r['restored']:,} restored, "
            f"{r['evaluated']:,.0f} evaluated; planning"
            + (" and restoring " if r["restored"] else " ")
            + f"{(r.get('prepare_s') or 0) * 1000:,.0f} ms)"
        )
    per = lc.get("snapshot_bytes_per_1000_tokens")
    if per:
        lines.append(f"  snapshot size: {per / 2**20:.2f} MB per 1,000 tokens")
    return lines


def plot(out: dict[str, Any], path: Path) -> Path:
    """A PNG chart (QPainter, offscreen): generation and prompt speed per path, and turns."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen

    from desklm.ui.app import make_app

    make_app()
    lc = out.get("long_chats")
    w, h = 1000, 920 if lc else 520
    img = QImage(w, h, QImage.Format.Format_ARGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    title = QFont()
    title.setPointSize(13)
    title.setBold(True)
    p.setFont(title)
    p.drawText(20, 30, f"DeskLM bench — {Path(out['model']).name}")
    small = QFont()
    small.setPointSize(8)
    p.setFont(small)
    p.drawText(20, 48, out["machine"])
    colors = {"raw": QColor("#8a93a3"), "engine": QColor("#4f8cff"), "gui": QColor("#3fb68b")}

    def bars(x0: float, title_: str, key: str) -> None:
        med = out["median"]
        vals = {k: v[key] or 0.0 for k, v in med.items()}
        top = max(vals.values()) * 1.15 or 1.0
        area = QRectF(x0, 80, 280, 360)
        p.setPen(QColor("black"))
        p.drawText(QRectF(x0, 60, 280, 18), Qt.AlignmentFlag.AlignCenter, title_)
        bw = area.width() / (len(vals) * 1.5)
        for i, (k, v) in enumerate(vals.items()):
            bh = area.height() * v / top
            r = QRectF(area.left() + bw * (0.25 + 1.5 * i), area.bottom() - bh, bw, bh)
            p.fillRect(r, colors.get(k, QColor("gray")))
            p.drawText(
                QRectF(r.left() - 10, r.top() - 16, r.width() + 20, 14),
                Qt.AlignmentFlag.AlignCenter,
                f"{v:.1f}",
            )
            p.drawText(
                QRectF(r.left() - 10, area.bottom() + 4, r.width() + 20, 14),
                Qt.AlignmentFlag.AlignCenter,
                k,
            )

    bars(20, "generation tokens/s", "gen_tps")
    bars(340, "prompt tokens/s", "prompt_tps")
    # multi-turn: first token per turn
    turns = out["multi_turn"]
    area = QRectF(680, 80, 290, 360)
    p.setPen(QColor("black"))
    p.drawText(
        QRectF(680, 60, 290, 18),
        Qt.AlignmentFlag.AlignCenter,
        f"first token per turn (ms), {len(turns)} turns",
    )
    top = max(t["ttft_s"] for t in turns) * 1000 * 1.2
    p.setPen(QPen(colors["engine"], 2))
    pts = [
        (
            area.left() + area.width() * i / (len(turns) - 1),
            area.bottom() - area.height() * t["ttft_s"] * 1000 / top,
        )
        for i, t in enumerate(turns)
    ]
    for (x1, y1), (x2, y2) in itertools.pairwise(pts):
        p.drawLine(int(x1), int(y1), int(x2), int(y2))
    p.setPen(QColor("black"))
    p.drawText(
        QRectF(area.left(), area.bottom() + 4, area.width(), 14),
        Qt.AlignmentFlag.AlignCenter,
        f"turn 1: {turns[0]['ttft_s'] * 1000:.0f} ms  ·  "
        f"turn 20: {turns[-1]['ttft_s'] * 1000:.0f} ms",
    )
    if lc:

        def panel(x0: float, title_: str, vals: list[tuple[str, float]], color: QColor) -> None:
            area = QRectF(x0, 560, 440, 300)
            p.setPen(QColor("black"))
            p.drawText(QRectF(x0, 535, 440, 18), Qt.AlignmentFlag.AlignCenter, title_)
            top = max(v for _, v in vals) * 1.15 or 1.0
            bw = area.width() / (len(vals) * 1.5)
            for i, (k, v) in enumerate(vals):
                bh = area.height() * v / top
                r = QRectF(area.left() + bw * (0.25 + 1.5 * i), area.bottom() - bh, bw, bh)
                p.fillRect(r, color)
                p.drawText(
                    QRectF(r.left() - 30, r.top() - 16, r.width() + 60, 14),
                    Qt.AlignmentFlag.AlignCenter,
                    f"{v:,.0f}",
                )
                p.drawText(
                    QRectF(r.left() - 30, area.bottom() + 4, r.width() + 60, 14),
                    Qt.AlignmentFlag.AlignCenter,
                    k,
                )

        panel(
            20,
            f"long chats: first token of a new turn (ms), n_ctx {lc['n_ctx']}",
            [(f"{x['messages']:,} msgs", x["ttft_s"] * 1000) for x in lc["histories"]],
            colors["engine"],
        )
        per = lc.get("snapshot_bytes_per_1000_tokens") or 0
        panel(
            520,
            f"switch back to a {lc['reevaluate']['prompt_tokens']:,}-token chat: first "
            f"token (ms); snapshot {per / 2**20:.1f} MB / 1k tokens",
            [
                ("snapshot, RAM", lc["snapshot_ram"]["ttft_s"] * 1000),
                ("snapshot, disk", lc["snapshot_disk"]["ttft_s"] * 1000),
                ("re-evaluate", lc["reevaluate"]["ttft_s"] * 1000),
            ],
            colors["gui"],
        )
    met = sum(1 for t in out["targets"] if t["met"])
    p.drawText(20, h - 20, f"targets met: {met} of {len(out['targets'])}")
    p.end()
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    from desklm.engine.store.files import write_user_file

    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if not img.save(buf, "PNG"):  # type: ignore[call-overload]  # the stubs say bytes; PySide6 takes str
        from desklm.errors import DeskLMError

        raise DeskLMError("could not draw the chart")
    buf.close()
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_user_file(path, bytes(data.data()))  # a link is written through, a device opened
    return path


def run_tune(model: Path, settings: Settings, say: Any = print) -> bench.TuneResult:
    from desklm.engine.chat.session import ChatSession

    sess = ChatSession(model, settings)
    sess.load()
    t0 = time.perf_counter()
    r = bench.tune(sess, progress=lambda i, n, what: say(f"[{i}/{n}] {what}"))
    say(f"tuned in {time.perf_counter() - t0:.1f} s")
    sess.engine.unload()
    return r


def dump(obj: Any) -> str:
    return json.dumps(obj, default=lambda o: o.__dict__, indent=2)


def _stderr(msg: str) -> None:
    if sys.stderr is not None:
        print(msg, file=sys.stderr, flush=True)
