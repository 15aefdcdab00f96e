"""Per-volume window state machine of the encryption detector (pure, no I/O).

Windows are tumbling, `window_s` long, on the events' own time (the tapper's `ts`), so a replay
after a restart decides exactly as the first run did. Within the current window the detector
counts data blocks written and the suspicious ones (scoring.Verdict.SUSPICIOUS); it alerts as soon
as both `min_blocks` and `min_share` are reached, without waiting for the window to close.

    quiet --suspicious block--> suspect (onset = that block) --threshold--> alerted (one Alert)
    suspect --window closes below min_blocks--> quiet
    alerted --`cooldown_windows` quiet windows--> quiet (a new incident may alert again)

The last clean checkpoint is the newest checkpoint marker before the onset in the volume's stream
(markers and writes share one partition, so "before" is exact: a smaller seq).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from tapstream.analyzer.scoring import Verdict

MAX_CHECKPOINTS = 128


class WindowState(StrEnum):
    """Where a volume stands in the state machine above (saved in the faust table as its value)."""

    QUIET = "quiet"
    SUSPECT = "suspect"
    ALERTED = "alerted"


@dataclass(frozen=True, slots=True)
class WindowRules:
    window_s: float = 10.0
    min_blocks: int = 64
    min_share: float = 0.3
    cooldown_windows: int = 3


@dataclass(frozen=True, slots=True)
class CheckpointSeen:
    seq: int
    ts: int
    id: str
    tag: str | None


@dataclass(frozen=True, slots=True)
class Detection:
    """What an Alert reports."""

    volume: str
    onset_seq: int
    onset_ts: int
    detected_seq: int
    detected_ts: int
    share: float
    suspicious: int
    data_blocks: int
    fresh_high: int
    last_clean: CheckpointSeen | None


@dataclass
class VolumeWindow:
    """Everything the detector keeps per volume; `to_dict`/`from_dict` for the faust table."""

    volume: str
    state: WindowState = WindowState.QUIET
    window_start: int = 0  # us; 0 = no window yet
    data_blocks: int = 0
    suspicious: int = 0
    fresh_high: int = 0
    zero_blocks: int = 0
    onset_seq: int = 0
    onset_ts: int = 0
    quiet_windows: int = 0
    last_seq: int = 0
    alerts: int = 0
    checkpoints: list[CheckpointSeen] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value  # a plain string for the table's serializer
        d["checkpoints"] = [[c.seq, c.ts, c.id, c.tag] for c in self.checkpoints]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolumeWindow:
        d = dict(d)
        d["state"] = WindowState(d.get("state", WindowState.QUIET))
        d["checkpoints"] = [CheckpointSeen(*c) for c in d.get("checkpoints", [])]
        return cls(**d)

    # -- events ---------------------------------------------------------------------------------

    def seen(self, seq: int) -> bool:
        """True for an event this state already contains (redelivered after a restart)."""
        return seq <= self.last_seq

    def on_checkpoint(self, seq: int, ts: int, checkpoint_id: str, tag: str | None) -> None:
        self.last_seq = max(self.last_seq, seq)
        self.checkpoints.append(CheckpointSeen(seq, ts, checkpoint_id, tag))
        del self.checkpoints[:-MAX_CHECKPOINTS]

    def on_blocks(
        self, seq: int, ts: int, verdicts: list[Verdict], rules: WindowRules
    ) -> Detection | None:
        """Count one write's block verdicts; a Detection when this write raises the alert."""
        self.last_seq = max(self.last_seq, seq)
        self._advance(ts, rules)
        for v in verdicts:
            if v == Verdict.ZERO:
                self.zero_blocks += 1
                continue
            self.data_blocks += 1
            if v == Verdict.FRESH_HIGH:
                self.fresh_high += 1
            elif v == Verdict.SUSPICIOUS:
                self.suspicious += 1
                if self.state == WindowState.QUIET:
                    self.state, self.onset_seq, self.onset_ts = WindowState.SUSPECT, seq, ts
        if self.state != WindowState.SUSPECT or self.suspicious < rules.min_blocks:
            return None
        share = self.suspicious / self.data_blocks
        if share < rules.min_share:
            return None
        self.state, self.quiet_windows = WindowState.ALERTED, 0
        self.alerts += 1
        return Detection(
            volume=self.volume,
            onset_seq=self.onset_seq,
            onset_ts=self.onset_ts,
            detected_seq=seq,
            detected_ts=ts,
            share=share,
            suspicious=self.suspicious,
            data_blocks=self.data_blocks,
            fresh_high=self.fresh_high,
            last_clean=self.checkpoint_before(self.onset_seq),
        )

    def on_other(self, seq: int, ts: int, rules: WindowRules) -> None:
        """An event without data (flush, zero, sync bookkeeping): moves time and position only."""
        self.last_seq = max(self.last_seq, seq)
        self._advance(ts, rules)

    def checkpoint_before(self, seq: int) -> CheckpointSeen | None:
        for c in reversed(self.checkpoints):
            if c.seq < seq:
                return c
        return None

    # -- windows --------------------------------------------------------------------------------

    def _advance(self, ts: int, rules: WindowRules) -> None:
        width = int(rules.window_s * 1e6)
        if self.window_start == 0:
            self.window_start = ts - ts % width
            return
        if ts < self.window_start + width:
            return
        self._close(rules)
        elapsed = (ts - self.window_start) // width
        for _ in range(
            min(int(elapsed) - 1, rules.cooldown_windows + 1)
        ):  # empty windows are quiet
            self._close(rules)
        self.window_start += elapsed * width

    def _close(self, rules: WindowRules) -> None:
        quiet = self.suspicious < rules.min_blocks
        if self.state == WindowState.SUSPECT and quiet:
            self.state, self.onset_seq, self.onset_ts = WindowState.QUIET, 0, 0
        elif self.state == WindowState.ALERTED:
            self.quiet_windows = self.quiet_windows + 1 if quiet else 0
            if self.quiet_windows >= rules.cooldown_windows:
                self.state, self.onset_seq, self.onset_ts = WindowState.QUIET, 0, 0
        self.data_blocks = self.suspicious = self.fresh_high = self.zero_blocks = 0
