"""The per-volume window state machine: pure, milliseconds."""

from __future__ import annotations

import json

from tapstream.analyzer.encryption_window import VolumeWindow, WindowRules, WindowState
from tapstream.analyzer.scoring import Verdict

S = 1_000_000
RULES = WindowRules(window_s=10, min_blocks=8, min_share=0.5, cooldown_windows=2)
T0 = 1_700_000_000 * S
SUS, PLAIN, FRESH = Verdict.SUSPICIOUS, Verdict.PLAIN, Verdict.FRESH_HIGH


def test_alerts_once_with_onset_and_last_clean_checkpoint() -> None:
    w = VolumeWindow("v")
    w.on_checkpoint(1, T0, "cp-old", None)
    w.on_blocks(2, T0 + 1, [PLAIN] * 4, RULES)
    w.on_checkpoint(3, T0 + 2, "cp-clean", "auto")
    assert w.on_blocks(4, T0 + 3 * S, [SUS] * 4, RULES) is None  # below min_blocks
    d = w.on_blocks(5, T0 + 4 * S, [SUS] * 4, RULES)
    assert d is not None and d.onset_seq == 4 and d.onset_ts == T0 + 3 * S
    assert d.last_clean is not None and d.last_clean.id == "cp-clean" and d.share == 8 / 12
    # The checkpoint taken after the onset is never "clean".
    w.on_checkpoint(6, T0 + 5 * S, "cp-dirty", None)
    assert w.on_blocks(7, T0 + 6 * S, [SUS] * 50, RULES) is None  # no second alert
    assert w.checkpoint_before(d.onset_seq).id == "cp-clean"


def test_share_below_threshold_does_not_alert() -> None:
    w = VolumeWindow("v")
    assert w.on_blocks(1, T0, [SUS] * 10 + [PLAIN] * 11, RULES) is None
    assert w.on_blocks(2, T0 + 1, [FRESH] * 100, RULES) is None


def test_quiet_window_resets_the_onset() -> None:
    w = VolumeWindow("v")
    w.on_blocks(1, T0, [SUS] * 3, RULES)
    assert w.state == "suspect"
    w.on_blocks(2, T0 + 11 * S, [PLAIN], RULES)  # the window closed with 3 < 8 suspicious
    assert w.state == "quiet"
    d = w.on_blocks(3, T0 + 12 * S, [SUS] * 8, RULES)
    assert d is not None and d.onset_seq == 3


def test_cooldown_then_a_new_incident_alerts_again() -> None:
    w = VolumeWindow("v")
    assert w.on_blocks(1, T0, [SUS] * 8, RULES) is not None
    assert w.on_blocks(2, T0 + 10 * S, [SUS] * 8, RULES) is None  # still the same incident
    w.on_other(3, T0 + 45 * S, RULES)  # three quiet windows pass
    assert w.state == "quiet"
    d = w.on_blocks(4, T0 + 46 * S, [SUS] * 8, RULES)
    assert d is not None and d.onset_seq == 4 and w.alerts == 2


def test_state_survives_a_round_trip_and_redelivery_is_seen() -> None:
    w = VolumeWindow("v")
    w.on_checkpoint(1, T0, "cp", "t")
    w.on_blocks(2, T0 + 1, [SUS] * 8, RULES)
    again = VolumeWindow.from_dict(w.to_dict())
    assert again == w and again.seen(2) and not again.seen(3)


def test_the_state_is_saved_as_its_string_and_read_back_as_the_enum() -> None:
    w = VolumeWindow("v1", state=WindowState.ALERTED)
    saved = json.loads(json.dumps(w.to_dict()))
    assert saved["state"] == "alerted"
    again = VolumeWindow.from_dict(saved)
    assert again.state is WindowState.ALERTED and again == w
