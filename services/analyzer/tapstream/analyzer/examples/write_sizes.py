"""Example: a write-size histogram per volume, and an INFO alert when a volume's writes turn large.

python -m tapstream.analyzer run tapstream.analyzer.examples.write_sizes:WriteSizes
"""

from __future__ import annotations

from tapstream.analyzer import AlertRequest, Analyzer, Context, Event

BUCKETS = (4096, 16384, 65536, 262144, 1048576)


class WriteSizes(Analyzer):
    name = "write-sizes"

    def on_write(self, ev: Event, ctx: Context) -> None:
        bucket = next((str(b) for b in BUCKETS if ev.length <= b), "larger")
        hist = ctx.state.setdefault("histogram", {})
        hist[bucket] = hist.get(bucket, 0) + 1
        large = hist.get("1048576", 0) + hist.get("larger", 0)
        if large >= 100 and not ctx.state.get("told"):
            ctx.state["told"] = True
            ctx.alert(
                AlertRequest(
                    kind="write-sizes",
                    volume=ev.volume,
                    severity="INFO",
                    message=f"{ev.volume}: {large} writes of 256 KiB+ so far (bulk load?)",
                    onset_ts=ev.ts,
                    detected_ts=ev.ts,
                    details={"histogram": str(hist)},
                )
            )
