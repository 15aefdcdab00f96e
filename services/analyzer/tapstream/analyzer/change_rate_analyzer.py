"""The built-in change-rate analyzer: bytes and blocks changed per volume per window, as metrics.

The same accounting (change_rate.py) backs `tapstream analyze change-rate GROUP`, which reads the
write topic itself for any period still in it and sizes the WAN link for an RPO.
"""

from __future__ import annotations

from typing import ClassVar

from tapstream.analyzer import metrics
from tapstream.analyzer.change_rate import ChangeRate
from tapstream.analyzer.sdk import Analyzer, Context, Event
from tapstream.analyzer.settings import AnalyzerSettings


class ChangeRateAnalyzer(Analyzer):
    name: ClassVar[str] = "change-rate"

    def __init__(self, settings: AnalyzerSettings | None = None) -> None:
        s = settings or AnalyzerSettings()
        self.window_s = s.analyzer_change_window_s
        # Windows in memory only: after a restart the open window starts again (metrics, not alerts).
        self.rate = ChangeRate(self.window_s)

    def on_write(self, ev: Event, ctx: Context) -> None:
        self._close_old(ev, ctx)
        self.rate.add_write(ev.volume, ev.ts, ev.disk_offset, ev.length)
        metrics.BYTES.labels(ctx.group, ev.volume).inc(ev.length)

    def on_zero(self, ev: Event, ctx: Context) -> None:
        self._close_old(ev, ctx)
        self.rate.add_zero(ev.volume, ev.ts, ev.disk_offset, ev.length)

    def _close_old(self, ev: Event, ctx: Context) -> None:
        start = ev.ts - ev.ts % self.rate.width
        for key in [k for k in self.rate.windows if k[0] == ev.volume and k[1] < start]:
            w = self.rate.windows.pop(key)
            metrics.UNIQUE.labels(ctx.group, ev.volume).set(w.unique_blocks)
            metrics.RATE.labels(ctx.group, ev.volume).set(w.bytes_written / self.window_s)
            totals = ctx.state.setdefault(
                "totals", {"bytes": 0, "unique_blocks": 0, "rewritten_blocks": 0}
            )
            totals["bytes"] += w.bytes_written
            totals["unique_blocks"] += w.unique_blocks
            totals["rewritten_blocks"] += w.rewritten_blocks
