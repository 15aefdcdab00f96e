"""Example: a wiper detector. Wipers destroy rather than encrypt: they zero or trim (discard) large
spans of a disk that held data. Each zeroed/trimmed byte over a 1 MiB region this analyzer saw data
in counts, decaying with a half-life on event time; a WARNING alert fires when the decayed count
passes `min_bytes` (default 256 MiB), with the last checkpoint before the burst as the one to go
back to. A fresh filesystem's discard (mkfs) trims regions that held no data, and so does not count.

python -m tapstream.analyzer run tapstream.analyzer.examples.wiper:Wiper --group g1
"""

from __future__ import annotations

import math
from typing import ClassVar

from tapstream.analyzer import AlertRequest, Analyzer, Context, Event

REGION = 1 << 20


class Wiper(Analyzer):
    name: ClassVar[str] = "wiper"
    half_life_s: ClassVar[float] = 60.0
    min_bytes: ClassVar[int] = 256 << 20

    def on_write(self, ev: Event, ctx: Context) -> None:
        regions = ctx.state.setdefault("data_regions", {})  # region number -> 1 (JSON keys)
        for r in range(
            ev.disk_offset // REGION, (ev.disk_offset + max(ev.length, 1) - 1) // REGION + 1
        ):
            regions[str(r)] = 1

    def on_zero(self, ev: Event, ctx: Context) -> None:
        regions = ctx.state.setdefault("data_regions", {})
        wiped = 0
        start, end = ev.disk_offset, ev.disk_offset + ev.length
        for r in range(
            start // REGION, (end - 1) // REGION + 1 if end > start else start // REGION
        ):
            if regions.pop(str(r), None):  # data there before: destroyed now
                wiped += min(end, (r + 1) * REGION) - max(start, r * REGION)
        last = ctx.state.get("last_ts", ev.ts)
        decay = math.exp(-max(0, ev.ts - last) / 1e6 * math.log(2) / self.half_life_s)
        score = ctx.state.get("wiped", 0.0) * decay + wiped
        ctx.state.update(last_ts=ev.ts, wiped=score)
        if wiped and not ctx.state.get("onset"):
            ctx.state["onset"] = [ev.seq, ev.ts]
        if score < self.min_bytes / 8:
            ctx.state.pop("onset", None)
            ctx.state.pop("alerted", None)  # quiet again: a new burst may alert
        if score >= self.min_bytes and not ctx.state.get("alerted"):
            ctx.state["alerted"] = True
            onset_seq, onset_ts = ctx.state.get("onset", [ev.seq, ev.ts])
            clean = ctx.checkpoint_before(onset_seq)
            ctx.alert(
                AlertRequest(
                    kind="wiper",
                    volume=ev.volume,
                    severity="WARNING",
                    message=f"{ev.volume}: {score / (1 << 20):.0f} MiB of data zeroed or trimmed "
                    f"recently (a wiper, or a mass delete with discard)",
                    onset_ts=onset_ts,
                    detected_ts=ev.ts,
                    score=score / self.min_bytes,
                    last_clean_checkpoint=clean,
                    dedupe_key=f"{ev.volume}:wiper:{onset_seq}",
                )
            )
