"""The scale bench's arithmetic, apart from its I/O: percentiles, Prometheus samples by label, how
long the oldest item a consumer has not reached has waited (from sampled head counts), rates over
a window, which partition a volume's events go to, and where a series of points bends.

A "head" series is [(t, count)] sampled over time, counts non-decreasing: a tapper's last published
seq of a volume, or a partition's end offset. A consumer's position is a count too (the last seq
applied or indexed, the mirrored partition's end offset): it has everything up to it.
"""

from __future__ import annotations

import bisect
import re
import statistics
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Series = Sequence[tuple[float, float]]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between the closest ranks; None without values."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def per_volume(samples: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Each volume's p50 and p99 over its samples, summed up across volumes: the median volume's
    p50 and p99 and the worst volume's p99 (with its name)."""
    p50 = {v: percentile(s, 50) for v, s in samples.items() if s}
    p99 = {v: percentile(s, 99) for v, s in samples.items() if s}
    if not p99:
        return {"volumes": 0}
    worst = max(p99, key=lambda v: p99[v] or 0.0)
    return {
        "volumes": len(p99),
        "p50_median": statistics.median(x for x in p50.values() if x is not None),
        "p99_median": statistics.median(x for x in p99.values() if x is not None),
        "p99_max": p99[worst],
        "p99_max_volume": worst,
    }


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """A metric's samples in Prometheus text format, summed per value of `label` (other labels
    of the same value add up); samples without the label are left out."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = _SAMPLE.match(line)
        if m is None or m["name"] != name:
            continue
        labels = dict(_LABEL.findall(m["labels"] or ""))
        if label in labels:
            out[labels[label]] = out.get(labels[label], 0.0) + float(m["value"])
    return out


def total(text: str, name: str) -> float | None:
    """The sum of every sample of `name` (any labels); None if it has none."""
    seen, s = False, 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line) if line.startswith(name) else None
        if m is not None and m["name"] == name:
            seen, s = True, s + float(m["value"])
    return s if seen else None


def partition_of(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random: CRC-32 of the key)
    sends a keyed record to; the tapper keys each event with its volume's name."""
    return zlib.crc32(key.encode()) % partitions


def time_lag(head: Series, t: float, consumed: float) -> float:
    """Seconds the first item past `consumed` had existed at time `t` (0 if the consumer has every
    item the head series shows). Its arrival is interpolated between the two head samples around
    it, as if items came at an even pace in between; an item older than the first sample gives
    the age of that sample (a lower bound)."""
    counts = [c for _, c in head]
    i = bisect.bisect_right(counts, consumed)  # first sample holding an item past `consumed`
    if i == len(head):
        return 0.0
    if i == 0:
        return max(0.0, t - head[0][0])
    (t0, c0), (t1, c1) = head[i - 1], head[i]
    arrived = t0 + (consumed + 1 - c0) / (c1 - c0) * (t1 - t0)
    return max(0.0, t - arrived)


def value_at(series: Series, t: float) -> float:
    """A count at time `t`, linear between samples, held flat outside them."""
    if not series:
        return 0.0
    times = [x for x, _ in series]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return series[0][1]
    if i == len(series):
        return series[-1][1]
    (t0, c0), (t1, c1) = series[i - 1], series[i]
    return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1


def rate(series: Series, t0: float, t1: float) -> float:
    """Items per second between t0 and t1."""
    return (value_at(series, t1) - value_at(series, t0)) / (t1 - t0) if t1 > t0 else 0.0


def keeps_up(produced: float, consumed: float) -> float | None:
    """What share of the items produced over a window a consumer got through in it (1.0: kept up;
    above 1: it caught up on a backlog)."""
    return consumed / produced if produced > 0 else None


# --- where it bends ------------------------------------------------------------------------------
WRITE_FLOOR = 0.9  # the writers got less than this share of their rate
KEEP_UP_FLOOR = 0.9  # a consumer got through less than this share of what was written...
LAG_CEILING_S = 2.0  # ...and its lag reached this at the window's end
RPO_CEILING_S = 2.0  # recovery-site RPO p99 above this (the README's RPO target at 10 MB/s)
FLAT_GAIN = 1.1  # more volumes added less than 10% to the aggregate


def why_bent(point: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[str]:
    """Every sign that a point is past the knee, in words (empty: it scaled)."""
    reasons = []
    ratio = point.get("write_ratio")
    if ratio is not None and ratio < WRITE_FLOOR:
        reasons.append(f"the writers got {ratio:.0%} of their rate")
    for key, what in (
        ("mirror", "MirrorMaker 2"),
        ("journal", "the journal"),
        ("vdsa", "the VDSA"),
    ):
        part = point.get(key) or {}
        share, lag = part.get("keeps_up"), part.get("lag_end_s")
        if share is not None and share < KEEP_UP_FLOOR and (lag or 0) > LAG_CEILING_S:
            reasons.append(
                f"{what} got through {share:.0%} of what was written, {lag:.1f} s behind at the end"
            )
    failures = point.get("mirrormaker_task_failures") or []
    if failures:
        oom = any("OutOfMemoryError" in line for line in failures)
        reasons.append(
            "a MirrorMaker 2 task failed"
            + (" (Java heap space)" if oom else "")
            + ": its partitions stay unmirrored until its tasks are reconfigured"
        )
    rpo = (point.get("rpo_recovery_s") or {}).get("p99_max")
    if rpo is not None and rpo > RPO_CEILING_S:
        reasons.append(f"recovery-site RPO p99 {rpo:.1f} s (worst volume)")
    if previous is not None and point["n"] > previous["n"]:
        gain = point["write_mbps"] / previous["write_mbps"] if previous["write_mbps"] else None
        if gain is not None and gain < FLAT_GAIN:
            reasons.append(
                f"{point['n']} volumes wrote {point['write_mbps']:.1f} MB/s against "
                f"{previous['write_mbps']:.1f} MB/s with {previous['n']}: the aggregate stopped growing"
            )
    return reasons


def busiest(cpu_s: Mapping[str, float], window_s: float, top: int = 3) -> str:
    """The processes that burnt the most CPU, in cores, e.g. 'tapper 0.9, kafka-recovery 0.4'."""
    ranked = sorted(cpu_s.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{k} {v / window_s:.2f}" for k, v in ranked) if window_s > 0 else ""


def bends(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per tapper count: the first N past the knee, why, and the CPU picture there."""
    out = []
    for tappers in sorted({p["tappers"] for p in points}):
        row = sorted((p for p in points if p["tappers"] == tappers), key=lambda p: p["n"])
        bent = None
        for i, p in enumerate(row):
            reasons = why_bent(p, row[i - 1] if i else None)
            if reasons:
                bent = (p, reasons)
                break
        best = max(row, key=lambda p: p["write_mbps"])
        entry: dict[str, Any] = {
            "tappers": tappers,
            "peak_write_mbps": best["write_mbps"],
            "peak_at_n": best["n"],
            "bends_at_n": None,
            "reasons": [],
        }
        if bent is not None:
            p, reasons = bent
            entry["bends_at_n"] = p["n"]
            entry["reasons"] = reasons
            entry["cpu_busy_pct"] = p.get("cpu_busy_pct")
            entry["cores_by_process"] = busiest(p.get("cpu_s", {}), p.get("window_s", 0.0))
        out.append(entry)
    return out
