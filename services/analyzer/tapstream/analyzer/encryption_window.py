"""Per-volume evidence of the encryption detector, decaying over event time (pure, no I/O).

Each data block's verdict (scoring.py) adds to two exponentially decaying sums on the events' own
time (the tapper's `ts`, so a replay after a restart decides exactly as the first run did):

* `evidence`: 1 per SUSPICIOUS block (low -> high in place, text -> base64/hex in place) and
  `fresh_weight` per FRESH_HIGH block (ciphertext-like data into free blocks: new files);
* `hits`: 1 per block of either kind (unweighted), and `data`: 1 per data block written.

Both halve every `half_life_s`, so a burst and a slow drip over minutes add up alike: encrypting a
few files a second keeps the evidence high however long it takes. The volume's *score* is
min(evidence / min_blocks, share / min_share) with share = hits / data; it alerts at 1.0.

    quiet --evidence--> suspect (onset = that block) --score >= 1--> alerted (one Alert)
    suspect --evidence fades below 5% of min_blocks--> quiet
    alerted --evidence fades below a quarter of min_blocks--> quiet (a new incident may alert)

A container format's header (Verdict.FORMAT: gzip, zstd, age, LUKS, qcow2, ...) opens a *run*:
the blocks after it, in order, are that file's body (ext4 allocates a file's blocks contiguously;
holes and metadata may skip up to `run_gap_blocks`) and are no evidence, wherever they land; a run
ends at a longer jump back or forward, or after `run_idle_s`.

The last clean checkpoint is the newest checkpoint marker before the onset in the volume's stream
(markers and writes share one partition, so "before" is exact: a smaller seq).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from tapstream.analyzer.scoring import Verdict

MAX_CHECKPOINTS = 128
MAX_RUNS = 32


class WindowState(StrEnum):
    """Where a volume stands in the state machine above (saved in the faust table as its value)."""

    QUIET = "quiet"
    SUSPECT = "suspect"
    ALERTED = "alerted"


@dataclass(frozen=True, slots=True)
class WindowRules:
    half_life_s: float = 60.0
    min_blocks: float = 64.0  # decayed evidence (in suspicious 4 KiB blocks) for an alert
    min_share: float = 0.15
    fresh_weight: float = 0.5
    run_idle_s: float = 30.0
    run_gap_blocks: int = 256  # a file's body may skip holes and metadata: up to 1 MiB ahead


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
    score: float
    evidence: float
    suspicious: int
    fresh_high: int
    data_blocks: int
    last_clean: CheckpointSeen | None


@dataclass
class VolumeWindow:
    """Everything the detector keeps per volume; `to_dict`/`from_dict` for the faust table."""

    volume: str
    state: WindowState = WindowState.QUIET
    last_ts: int = 0  # us of the newest event; 0 = none yet
    evidence: float = 0.0
    hits: float = 0.0
    data: float = 0.0
    score: float = 0.0
    peak_score: float = 0.0
    onset_seq: int = 0
    onset_ts: int = 0
    # since the onset (for the alert's message)
    suspicious: int = 0
    fresh_high: int = 0
    data_blocks: int = 0
    last_seq: int = 0
    alerts: int = 0
    runs: list[list[int]] = field(default_factory=list)  # [next block of the run, last ts]
    checkpoints: list[CheckpointSeen] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value  # a plain string for the table's serializer
        d["checkpoints"] = [[c.seq, c.ts, c.id, c.tag] for c in self.checkpoints]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolumeWindow:
        """Also reads the state the tumbling-window detector saved (its extra keys are dropped)."""
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
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
        self, seq: int, ts: int, blocks: list[tuple[int, Verdict]], rules: WindowRules
    ) -> Detection | None:
        """Count one write's (block index, verdict) pairs; a Detection when it raises the alert."""
        self.last_seq = max(self.last_seq, seq)
        self._decay(ts, rules)
        self._expire_runs(ts, rules)
        for index, v in blocks:
            if v == Verdict.ZERO:
                self._continues_run(index, ts, rules)  # zeroes inside a file keep its run going
                continue
            self.data += 1
            if self._continues_run(index, ts, rules):
                continue  # a container's body: no evidence, whatever it looks like
            if v == Verdict.FORMAT:
                self._open_run(index + 1, ts)
                continue
            weight = (
                1.0
                if v == Verdict.SUSPICIOUS
                else rules.fresh_weight
                if v == Verdict.FRESH_HIGH
                else 0.0
            )
            if weight:
                if self.state == WindowState.QUIET:
                    self.state, self.onset_seq, self.onset_ts = WindowState.SUSPECT, seq, ts
                    self.suspicious = self.fresh_high = self.data_blocks = 0
                self.evidence += weight
                self.hits += 1
                if v == Verdict.SUSPICIOUS:
                    self.suspicious += 1
                else:
                    self.fresh_high += 1
            if self.state != WindowState.QUIET:
                self.data_blocks += 1
        self.score = self._score(rules)
        self.peak_score = max(self.peak_score, self.score)
        if self.state != WindowState.SUSPECT or self.score < 1.0:
            return None
        self.state = WindowState.ALERTED
        self.alerts += 1
        return Detection(
            volume=self.volume,
            onset_seq=self.onset_seq,
            onset_ts=self.onset_ts,
            detected_seq=seq,
            detected_ts=ts,
            share=self.share,
            score=self.score,
            evidence=self.evidence,
            suspicious=self.suspicious,
            fresh_high=self.fresh_high,
            data_blocks=self.data_blocks,
            last_clean=self.checkpoint_before(self.onset_seq),
        )

    def on_other(self, seq: int, ts: int, rules: WindowRules) -> None:
        """An event without data (flush, zero, sync bookkeeping): moves time and position only."""
        self.last_seq = max(self.last_seq, seq)
        self._decay(ts, rules)
        self.score = self._score(rules)

    def checkpoint_before(self, seq: int) -> CheckpointSeen | None:
        for c in reversed(self.checkpoints):
            if c.seq < seq:
                return c
        return None

    @property
    def share(self) -> float:
        return self.hits / self.data if self.data else 0.0

    # -- decay and runs ---------------------------------------------------------------------------

    def _score(self, rules: WindowRules) -> float:
        return min(self.evidence / rules.min_blocks, self.share / rules.min_share)

    def _decay(self, ts: int, rules: WindowRules) -> None:
        if self.last_ts and ts > self.last_ts:
            f = math.exp(-(ts - self.last_ts) / 1e6 * math.log(2) / rules.half_life_s)
            self.evidence *= f
            self.hits *= f
            self.data *= f
        self.last_ts = max(self.last_ts, ts)
        if self.state == WindowState.SUSPECT and self.evidence < 0.05 * rules.min_blocks:
            self.state, self.onset_seq, self.onset_ts = WindowState.QUIET, 0, 0
        elif self.state == WindowState.ALERTED and self.evidence < 0.25 * rules.min_blocks:
            self.state, self.onset_seq, self.onset_ts = WindowState.QUIET, 0, 0

    def _continues_run(self, index: int, ts: int, rules: WindowRules) -> bool:
        for run in self.runs:
            if run[0] <= index <= run[0] + rules.run_gap_blocks:
                run[0], run[1] = index + 1, ts
                return True
        return False

    def _open_run(self, next_index: int, ts: int) -> None:
        self.runs.append([next_index, ts])
        del self.runs[:-MAX_RUNS]

    def _expire_runs(self, ts: int, rules: WindowRules) -> None:
        idle = int(rules.run_idle_s * 1e6)
        if self.runs:
            self.runs = [r for r in self.runs if ts - r[1] <= idle]
