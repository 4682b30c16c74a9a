"""Live gauges: VRAM, GPU, RAM, CPU, tokens/s, time to first token, context fill.

Each :class:`GaugeCard` paints a title, a value, an optional bar, and a sparkline of the last
minute (120 points at 2 Hz). Painting is cheap and only happens on updates (2 Hz from the
sampler, plus the throttled token flushes while streaming).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from desklm.engine import NA, Snapshot, fmt_bytes, is_na
from desklm.ui import theme

HISTORY = 120  # points: one minute at 2 Hz

# Colours are theme keys (desklm.ui.theme), looked up when a card paints, so a theme change
# shows at the next repaint.


class GaugeCard(QWidget):
    def __init__(
        self, title: str, color: QColor | str = "accent", parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName(f"gauge:{title}")
        self.title = title
        self.color = color
        self.value_text = "…"
        self.detail = ""
        self.sub = ""
        self.fraction: float | None = None  # 0..1 for a bar, None for no bar
        self.history: deque[float] = deque(maxlen=HISTORY)
        self.history_max: float | None = None  # fixed scale (e.g. 100 for percent)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setToolTip(title)

    HEIGHT = 70  # px: eight cards fit a 1280x800 window's column without a scrollbar

    def sizeHint(self) -> QSize:
        return QSize(240, self.HEIGHT)

    def minimumSizeHint(self) -> QSize:
        return QSize(180, self.HEIGHT)

    def set(
        self,
        value_text: str,
        detail: str = "",
        fraction: float | None = None,
        point: float | None = None,
        sub: str = "",
    ) -> None:
        self.value_text = value_text
        self.detail = detail
        self.sub = sub
        self.fraction = None if fraction is None else max(0.0, min(1.0, fraction))
        if point is not None:
            self.history.append(point)
        self.update()

    def regions(self) -> dict[str, QRectF]:
        """Where each part is drawn: the title row, the value, the sparkline beside the value
        (never under any text), the sub line and the bar. Tests check they do not overlap."""
        r = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        inner = r.adjusted(10, 5, -10, -5)
        small = QFontMetrics(self._small_font()).height()
        big = QFontMetrics(self._value_font()).height()
        title = QRectF(inner.left(), inner.top(), inner.width(), small)
        value_w = QFontMetrics(self._value_font()).horizontalAdvance(self.value_text) + 8
        row = QRectF(inner.left(), title.bottom() + 1, inner.width(), big)
        value = QRectF(row.left(), row.top(), min(row.width(), value_w), big)
        spark = QRectF(
            value.right() + 4, row.top() + 3, max(0.0, row.right() - value.right() - 4), big - 6
        )
        sub = QRectF(inner.left(), row.bottom() + 1, inner.width(), small)
        bar = QRectF(inner.left(), inner.bottom() - 4, inner.width(), 4)
        return {"title": title, "value": value, "spark": spark, "sub": sub, "bar": bar}

    def _small_font(self) -> QFont:
        f = QFont(self.font())
        f.setPointSizeF(max(6.0, f.pointSizeF() * theme.TYPE["caption"]))
        return f

    def _value_font(self) -> QFont:
        f = QFont(self.font())
        f.setPointSizeF(f.pointSizeF() * theme.TYPE["value"] * 0.95)
        f.setBold(True)
        return f

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        th = theme.current()
        own = QColor(self.color) if isinstance(self.color, QColor) else th.color(self.color)
        muted = th.color("muted")
        box = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        p.setPen(QPen(th.color("border"), 1))
        p.setBrush(th.color("base"))
        p.drawRoundedRect(box, theme.RADIUS["card"], theme.RADIUS["card"])
        reg = self.regions()
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        spark = reg["spark"]
        if len(self.history) >= 2 and spark.width() > 20:
            top = max(self.history_max or 0.0, max(self.history), 1e-9)
            path = QPainterPath()
            n = len(self.history)
            step = spark.width() / (HISTORY - 1)
            x0 = spark.right() - step * (n - 1)
            for i, v in enumerate(self.history):
                pt = QPointF(x0 + i * step, spark.bottom() - spark.height() * (v / top))
                path.moveTo(pt) if i == 0 else path.lineTo(pt)
            c = QColor(own)
            c.setAlpha(170)
            p.setPen(QPen(c, 1.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.save()
            p.setClipRect(spark)
            p.drawPath(path)
            p.restore()
        small = self._small_font()
        p.setFont(small)
        p.setPen(muted)
        fm = QFontMetrics(small)
        title = reg["title"]
        detail_w = fm.horizontalAdvance(self.detail) if self.detail else 0
        p.drawText(
            title.adjusted(0, 0, -detail_w - 6, 0),
            left,
            fm.elidedText(
                self.title, Qt.TextElideMode.ElideRight, int(title.width() - detail_w - 6)
            ),
        )
        if self.detail:
            p.drawText(
                title, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, self.detail
            )
        p.setFont(self._value_font())
        p.setPen(th.color("text"))
        p.drawText(reg["value"], left, self.value_text)
        if self.sub:
            p.setFont(small)
            p.setPen(muted)
            sub = reg["sub"]
            p.drawText(
                sub, left, fm.elidedText(self.sub, Qt.TextElideMode.ElideRight, int(sub.width()))
            )
        if self.fraction is not None:
            bar = reg["bar"]
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(th.color("track"))
            p.drawRoundedRect(bar, 2, 2)
            color = (
                th.color("error")
                if self.fraction > 0.9
                else th.color("warn")
                if self.fraction > 0.75
                else own
            )
            p.setBrush(color)
            p.drawRoundedRect(
                QRectF(bar.left(), bar.top(), bar.width() * self.fraction, bar.height()), 2, 2
            )
        p.end()


def pct(v: Any) -> str:
    return "n/a" if is_na(v) or v is None else f"{v:.0f}%"


class GaugePanel(QWidget):
    """The column of gauges. Fed by :meth:`on_snapshot` (2 Hz) and by the chat's turn events."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setSpacing(theme.SPACE[1] + 2)
        lay.setContentsMargins(theme.SPACE[2], theme.SPACE[2], theme.SPACE[2], theme.SPACE[2])
        self.vram = GaugeCard("VRAM", "gpu")
        self.gpu = GaugeCard("GPU utilisation", "gpu")
        self.ram = GaugeCard("RAM", "cpu")
        self.cpu = GaugeCard("CPU", "cpu")
        self.tps = GaugeCard("Tokens / s")
        self.ttft = GaugeCard("Time to first token")
        self.ctx = GaugeCard("Context")
        # a model on a server: what the server reports about itself (its /metrics)
        self.server = GaugeCard("Server", "gpu")
        self.server.history_max = 1.0
        self.server.hide()
        self.remote = False
        self.cpu.history_max = self.gpu.history_max = 100.0
        self.ctx.history_max = 1.0
        for card in (
            self.tps,
            self.ttft,
            self.ctx,
            self.server,
            self.ram,
            self.cpu,
            self.vram,
            self.gpu,
        ):
            lay.addWidget(card)
        lay.addStretch(1)
        self.last_snapshot: Snapshot | None = None
        self.tps_value: float | None = None
        self.ttft_value: float | None = None
        self.set_speed(None, live=False)
        self.set_ttft(None)
        self.set_context(0, 0)
        theme.notifier().themeChanged.connect(self._repaint)

    def _repaint(self, _palette: object = None) -> None:
        for card in self.cards().values():
            card.update()

    def cards(self) -> dict[str, GaugeCard]:
        return {
            "vram": self.vram,
            "gpu": self.gpu,
            "ram": self.ram,
            "cpu": self.cpu,
            "tokens_per_s": self.tps,
            "ttft": self.ttft,
            "context": self.ctx,
            "server": self.server,
        }

    def set_remote(self, remote: bool) -> None:
        """On a server's model: VRAM and GPU are the server's, and a Server card shows what
        its /metrics say (until the first reading: "waiting for the server's metrics")."""
        self.remote = remote
        self.server.setVisible(remote)
        if remote:
            self.server.set("…", "", None, None, sub="waiting for the server's metrics")
        if self.last_snapshot is not None:
            self.on_snapshot(self.last_snapshot)

    def on_server_metrics(self, readings: dict[str, Any]) -> None:
        """The server's own readings (``engine.server_metrics``), labelled as the server's."""
        if not self.remote:
            return
        kv = readings.get("kv_cache")
        kv_v = NA if kv is None else kv.value
        parts = []
        for key, word in (("requests_running", "running"), ("requests_waiting", "waiting")):
            r = readings.get(key)
            if r is not None and not is_na(r.value):
                parts.append(f"{r.value:g} {word}")
        tps = readings.get("tokens_per_s")
        if tps is not None and not is_na(tps.value):
            parts.append(f"{tps.value:.1f} tok/s")
        if is_na(kv_v) and not parts:
            # vLLM and llama-server (with --metrics) publish /metrics; many servers do not
            self.server.set("n/a", "", None, None, sub="this server publishes no /metrics")
            return
        self.server.set(
            "n/a" if is_na(kv_v) else f"{100 * kv_v:.0f}%",
            "server KV cache",
            None if is_na(kv_v) else kv_v,
            None if is_na(kv_v) else kv_v,
            sub=" · ".join(parts) or "requests: n/a",
        )

    def on_snapshot(self, snap: Snapshot) -> None:
        self.last_snapshot = snap
        self.ram.set(
            fmt_bytes(snap.rss),
            f"anon {fmt_bytes(snap.rss_anon)}",
            None if is_na(snap.ram_total) else snap.ram_used / snap.ram_total,
            None if is_na(snap.rss) else snap.rss / 2**20,
            sub=f"system {fmt_bytes(snap.ram_used)} / {fmt_bytes(snap.ram_total)}",
        )
        self.cpu.set(
            pct(snap.cpu_percent),
            "this process",
            None,
            None if is_na(snap.cpu_percent) else snap.cpu_percent,
            sub="100% = every core busy",
        )
        if self.remote:  # the model's memory and GPU are the server's, not this machine's
            self.vram.set("on the server", "", None, None, sub="the model runs on the server")
            self.gpu.set("on the server", "", None, None, sub="see the Server card")
            self.gpu.hide()
            return
        if not snap.gpus:
            self.vram.set("No NVIDIA GPU", "", None, None, sub="running on CPU")
            self.gpu.set("No NVIDIA GPU", "", None, None, sub="running on CPU")
            self.gpu.hide()  # one card says it: two said the same thing
            return
        self.gpu.show()
        used = sum(g.vram_used for g in snap.gpus if not is_na(g.vram_used))
        total = sum(g.vram_total for g in snap.gpus if not is_na(g.vram_total))
        mine = [g.vram_process for g in snap.gpus]
        mine_txt = (
            "n/a"
            if all(is_na(m) for m in mine)
            else fmt_bytes(sum(m for m in mine if not is_na(m)))
        )
        names = ", ".join(g.name for g in snap.gpus)
        self.vram.set(
            f"{fmt_bytes(used)} / {fmt_bytes(total)}",
            f"DeskLM {mine_txt}",
            used / total if total else None,
            used / 2**20,
            sub=names,
        )
        utils = [g.util_percent for g in snap.gpus if not is_na(g.util_percent)]
        util = max(utils) if utils else NA
        self.gpu.set(
            pct(util),
            "",
            None if is_na(util) else util / 100,
            None if is_na(util) else util,
            sub=names,
        )

    def set_speed(
        self, tps: float | None, live: bool, api: bool = False, shared_with: int = 0
    ) -> None:
        """``api``: the figure is an API client's request, not the user's chat.
        ``shared_with``: other requests were decoded in the same steps (the figure is a
        share of the model's speed)."""
        self.tps_value = tps
        others = f"{shared_with} other request{'s' if shared_with != 1 else ''}"
        self.tps.set(
            "—" if tps is None else f"{tps:.1f}",
            "API request" if api else "live" if live else "last reply",
            None,
            tps,
            sub=f"generation speed, shared with {others}" if shared_with else "generation speed",
        )

    def set_ttft(self, ttft: float | None, api: bool = False) -> None:
        self.ttft_value = ttft
        txt = "—" if ttft is None else (f"{ttft * 1000:.0f} ms" if ttft < 1 else f"{ttft:.2f} s")
        self.ttft.set(
            txt,
            "API request" if api else "",
            None,
            None if ttft is None else ttft * 1000,
            sub="from the request to the first word" if api else "from send to the first word",
        )

    def set_context(self, used: int, n_ctx: int, api: bool = False) -> None:
        frac = used / n_ctx if n_ctx else 0.0
        full = f"{frac * 100:.0f}% full" if n_ctx else ""
        self.ctx.set(
            f"{used:,} / {n_ctx:,}" if n_ctx else "no model",
            f"API · {full}" if api and n_ctx else full,
            frac,
            frac,
            sub="tokens in the KV cache / context length",
        )

    def readings(self) -> dict[str, str]:
        """What each card shows now (for the self-test summary and tests); the Server card
        only while it is shown (a model on a server)."""
        return {
            k: " · ".join(x for x in (c.value_text, c.detail, c.sub) if x)
            for k, c in self.cards().items()
            if k != "server" or self.remote
        }
