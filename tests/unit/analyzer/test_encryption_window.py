"""The per-volume decaying evidence and its state machine: pure, milliseconds."""

from __future__ import annotations

import json

from tapstream.analyzer.encryption_window import VolumeWindow, WindowRules, WindowState
from tapstream.analyzer.scoring import Verdict

S = 1_000_000
RULES = WindowRules(half_life_s=10, min_blocks=8, min_share=0.5, fresh_weight=0.5, run_idle_s=5)
T0 = 1_700_000_000 * S
SUS, PLAIN, FRESH, FORMAT = (
    Verdict.SUSPICIOUS,
    Verdict.PLAIN,
    Verdict.FRESH_HIGH,
    Verdict.FORMAT,
)


def at(verdicts: list[Verdict], first: int = 0) -> list[tuple[int, Verdict]]:
    """(block index, verdict) pairs for consecutive blocks from `first`."""
    return [(first + i, v) for i, v in enumerate(verdicts)]


def test_alerts_once_with_onset_and_last_clean_checkpoint() -> None:
    w = VolumeWindow("v")
    w.on_checkpoint(1, T0, "cp-old", None)
    w.on_blocks(2, T0, at([PLAIN] * 4, 1000), RULES)
    w.on_checkpoint(3, T0, "cp-clean", "auto")
    assert w.on_blocks(4, T0, at([SUS] * 4), RULES) is None  # below min_blocks
    d = w.on_blocks(5, T0, at([SUS] * 4, 4), RULES)
    assert d is not None and d.onset_seq == 4 and d.onset_ts == T0
    assert d.last_clean is not None and d.last_clean.id == "cp-clean"
    assert d.share == 8 / 12 and d.score == 1.0 and d.suspicious == 8
    # The checkpoint taken after the onset is never "clean".
    w.on_checkpoint(6, T0 + 5, "cp-dirty", None)
    assert w.on_blocks(7, T0 + 6, at([SUS] * 50, 8), RULES) is None  # no second alert
    assert w.checkpoint_before(d.onset_seq).id == "cp-clean"


def test_share_below_threshold_does_not_alert() -> None:
    w = VolumeWindow("v")
    assert w.on_blocks(1, T0, at([SUS] * 10 + [PLAIN] * 11), RULES) is None
    assert 0.9 < w.score < 1.0  # share 10/21 against 0.5


def test_fresh_ciphertext_counts_at_its_weight() -> None:
    w = VolumeWindow("v")
    assert w.on_blocks(1, T0, at([FRESH] * 15), RULES) is None  # 7.5 < 8
    assert w.on_blocks(2, T0, at([FRESH], 15), RULES) is not None


def test_a_container_run_is_no_evidence_until_it_breaks() -> None:
    w = VolumeWindow("v")
    # A .gz written over freed text blocks: header, then its body in order, across two writes.
    assert w.on_blocks(1, T0, at([FORMAT] + [SUS] * 20, 100), RULES) is None
    assert w.on_blocks(2, T0 + S, at([SUS] * 20, 121), RULES) is None
    assert w.evidence == 0 and w.state == WindowState.QUIET
    # A block away from the run's end is evidence again.
    w.on_blocks(3, T0 + 2 * S, at([SUS] * 3, 500), RULES)
    assert w.evidence == 3
    # An idle run closes: its next block is evidence then.
    w.on_blocks(4, T0 + 10 * S, at([SUS], 141), RULES)
    assert w.state == WindowState.SUSPECT and w.suspicious == 4


def test_slow_encryption_adds_up_across_minutes() -> None:
    """One suspicious block every second never makes a 10 s window of 8, but the decaying sum
    (half-life 10 s: steady state ~14 blocks) reaches the threshold."""
    w = VolumeWindow("v")
    detected = None
    for i in range(60):
        detected = detected or w.on_blocks(i + 1, T0 + i * S, at([SUS], i), RULES)
    assert detected is not None and detected.onset_seq == 1 and detected.detected_ts < T0 + 20 * S


def test_evidence_fades_and_resets_the_onset() -> None:
    w = VolumeWindow("v")
    w.on_blocks(1, T0, at([SUS] * 3), RULES)
    assert w.state == WindowState.SUSPECT
    w.on_blocks(2, T0 + 60 * S, at([PLAIN]), RULES)  # six half-lives: 3 -> 0.05 < 5% of 8
    assert w.state == WindowState.QUIET
    d = w.on_blocks(3, T0 + 61 * S, at([SUS] * 8), RULES)
    assert d is not None and d.onset_seq == 3


def test_cooldown_then_a_new_incident_alerts_again() -> None:
    w = VolumeWindow("v")
    assert w.on_blocks(1, T0, at([SUS] * 8), RULES) is not None
    assert w.on_blocks(2, T0 + 5 * S, at([SUS] * 8), RULES) is None  # the same incident
    w.on_other(3, T0 + 60 * S, RULES)  # the evidence fades below a quarter of min_blocks
    assert w.state == WindowState.QUIET
    d = w.on_blocks(4, T0 + 61 * S, at([SUS] * 8), RULES)
    assert d is not None and d.onset_seq == 4 and w.alerts == 2


def test_state_survives_a_round_trip_and_redelivery_is_seen() -> None:
    w = VolumeWindow("v")
    w.on_checkpoint(1, T0, "cp", "t")
    w.on_blocks(2, T0 + 1, at([FORMAT, SUS, SUS]), RULES)
    again = VolumeWindow.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again == w and again.seen(2) and not again.seen(3)


def test_the_tumbling_window_state_of_the_previous_detector_still_loads() -> None:
    old = {
        "volume": "v1",
        "state": "alerted",
        "window_start": T0,
        "data_blocks": 3,
        "suspicious": 2,
        "fresh_high": 0,
        "zero_blocks": 1,
        "onset_seq": 7,
        "onset_ts": T0,
        "quiet_windows": 1,
        "last_seq": 9,
        "alerts": 1,
        "checkpoints": [[1, T0, "cp", None]],
    }
    w = VolumeWindow.from_dict(old)
    assert w.state is WindowState.ALERTED and w.last_seq == 9 and w.checkpoints[0].id == "cp"
    saved = json.loads(json.dumps(w.to_dict()))
    assert saved["state"] == "alerted" and VolumeWindow.from_dict(saved) == w
