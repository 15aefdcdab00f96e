"""The evaluation's offline replay of the detector: scores traced from a volume's start, a sweep."""

from __future__ import annotations

import random

from bench import detector_replay as dr

T0 = 1_700_000_000_000_000
TEXT = (b"SELECT * FROM accounts WHERE id = 42; -- pgbench-like row text\n" * 20000)[: 1 << 20]


def rec(volume: str, seq: int, ts: int, offset: int, data: bytes) -> dict:
    body = {"offset": offset, "length": len(data), "data": data, "checksum": 0}
    return {
        "group": "g",
        "volume": volume,
        "seq": seq,
        "ts": ts,
        "host": "h",
        "body": ("Write", body),
    }


def test_replay_traces_peaks_from_each_volume_start_and_sweeps_thresholds() -> None:
    rnd = random.Random(1)
    records = [rec("bad", 1, T0, 0, TEXT), rec("good", 1, T0, 0, TEXT)]
    records += [rec("good", 2, T0 + 5_000_000, 0, TEXT)]  # text over text: no evidence
    records += [rec("bad", 2, T0 + 5_000_000, 0, rnd.randbytes(1 << 20))]  # encrypted in place
    traces = dr.replay(records, {"bad": T0 + 1_000_000, "good": T0 + 1_000_000})
    assert traces["good"].peak == 0.0 and traces["good"].delay_s() is None
    assert traces["bad"].peak > 1.0 and traces["bad"].delay_s() == 4.0
    rows = {r["threshold"]: r for r in dr.sweep(traces, {"bad": True, "good": False})}
    assert rows[1.0]["detection_rate"] == 1.0 and rows[1.0]["false_alarm_rate"] == 0.0
    assert rows[4.0]["detection_rate"] == (1.0 if traces["bad"].peak >= 4 else 0.0)
