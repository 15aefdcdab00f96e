"""The encryption detector replayed offline over a group's write stream: every volume's score over
time, so the evaluation measures margins, a threshold sweep (ROC) and detection delays instead of
only counting alerts. The same code as the faust analyzer runs (the SDK's Dispatcher and the
EncryptionAnalyzer, with plain dicts as tables), so a replay decides exactly as the service did."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tapstream.analyzer.encryption import EncryptionAnalyzer
from tapstream.analyzer.sdk import Dispatcher, Event, VolumeMeta
from tapstream.analyzer.settings import AnalyzerSettings

SWEEP = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)


@dataclass
class Trace:
    """One volume's scores from a moment on (its workload's start)."""

    since_us: int
    peak: float = 0.0
    peak_ts: int = 0
    crossings: dict[float, int] = field(default_factory=dict)  # threshold -> first ts at/above it
    points: list[tuple[int, float]] = field(default_factory=list)

    def add(self, ts: int, score: float) -> None:
        if ts < self.since_us:
            return
        if score > self.peak:
            self.peak, self.peak_ts = score, ts
        for t in SWEEP:
            if score >= t and t not in self.crossings:
                self.crossings[t] = ts
        if not self.points or ts - self.points[-1][0] >= 250_000:
            self.points.append((ts, score))

    def delay_s(self, threshold: float = 1.0) -> float | None:
        ts = self.crossings.get(threshold)
        return None if ts is None else round((ts - self.since_us) / 1e6, 2)


def replay(
    records: Iterable[dict[str, Any]],
    starts_us: Mapping[str, int],
    settings: AnalyzerSettings | None = None,
) -> dict[str, Trace]:
    """Run the detector over `records` (decoded DiskEvents in stream order); trace the volumes in
    `starts_us` from their start time on."""
    dispatcher = Dispatcher(EncryptionAnalyzer(settings or AnalyzerSettings()))
    metas: dict[str, VolumeMeta] = {}
    tables: dict[str, Any] = {"blocks": {}}
    traces = {v: Trace(t) for v, t in starts_us.items()}
    for rec in records:
        branch, body = rec["body"]
        ev = Event(rec["group"], rec["volume"], rec["seq"], rec["ts"], rec["host"], branch, body)
        meta = metas.setdefault(ev.volume, VolumeMeta())
        dispatcher.handle(ev, meta, tables, lambda _request: None)
        trace = traces.get(ev.volume)
        window = meta.state.get("window")
        if trace is not None and window:
            trace.add(ev.ts, float(window.get("score", 0.0)))
    return traces


def sweep(traces: Mapping[str, Trace], malicious: Mapping[str, bool]) -> list[dict[str, float]]:
    """Detection rate and false-alarm rate per threshold (the score scaled: 1.0 is the default)."""
    bad = [v for v, m in malicious.items() if m]
    good = [v for v, m in malicious.items() if not m]
    rows = []
    for t in SWEEP:
        rows.append(
            {
                "threshold": t,
                "detection_rate": sum(traces[v].peak >= t for v in bad) / max(1, len(bad)),
                "false_alarm_rate": sum(traces[v].peak >= t for v in good) / max(1, len(good)),
            }
        )
    return rows


def main() -> None:
    """Replay a finished evaluation's group with the current detector: `--group eval-HHMMSS`.
    Each volume is traced from its first checkpoint (the evaluation checkpoints every volume after
    writing its filesystem, before its workload)."""
    import argparse
    import json

    from tapstream.core.codec import make_codec
    from tapstream.core.kafka import client_config
    from tapstream.core.replay import read_stream
    from tapstream.core.settings import TapstreamSettings, load

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--group", required=True)
    ap.add_argument("--malicious", default="", help="comma-separated volumes that are malicious")
    args = ap.parse_args()
    settings = load(TapstreamSettings)
    records = [
        rec
        for _p, _o, rec in read_stream(
            client_config(settings), settings.topic(f"writes.{args.group}"), make_codec(settings)
        )
    ]
    starts: dict[str, int] = {}
    for rec in records:
        if rec["body"][0] == "Checkpoint":
            starts.setdefault(rec["volume"], rec["ts"])
    traces = replay(records, starts)
    bad = set(filter(None, args.malicious.split(",")))
    out = {
        v: {"peak": round(t.peak, 3), "delay_s": t.delay_s(), "malicious": v in bad}
        for v, t in sorted(traces.items())
    }
    print(json.dumps(out, indent=1))
    if bad:
        print(json.dumps(sweep(traces, {v: v in bad for v in traces}), indent=1))


if __name__ == "__main__":
    main()
