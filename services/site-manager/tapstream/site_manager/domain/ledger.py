"""The aggregates as the events made them, and the rule for accepting an event (pure, no I/O).

Events reach a site manager from two streams: its own `tapstream.events` and the other site's,
mirrored. Per aggregate, versions must follow 1, 2, 3...: an event ahead of its predecessor waits
for it. Two events decided concurrently on the same predecessor (two sites took the same version)
are never merged: one deterministic winner holds the version, the earlier by (ts, id), at both
sites whatever order they arrive in. A winner that arrives after the loser was applied supersedes
it: the loser and everything built on it are rolled back and kept aside as conflicts, and the
aggregate is rebuilt from its remaining events. So the state depends only on the set of events, not
on the order the two streams interleave, and a rebuild from the topics gives the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tapstream.site_manager.domain.aggregates import AGGREGATES, Aggregate
from tapstream.site_manager.domain.events import Recorded


class ConcurrencyError(RuntimeError):
    """The aggregate changed since the caller read it (optimistic concurrency): reload and retry."""


class Outcome(Enum):
    APPLIED = "applied"
    DUPLICATE = (
        "duplicate"  # the same event again (MirrorMaker 2 redelivery, our own write read back)
    )
    CONFLICT = "conflict"  # another event holds this version
    WAITING = "waiting"  # a predecessor is missing yet
    SUPERSEDES = "supersedes"  # wins the version from the event applied there (rolled back)


def wins(a: Recorded, b: Recorded) -> bool:
    """Of two events decided on the same predecessor, which one holds the version: the same answer
    at every site (the earlier decision; the id breaks a tie)."""
    return (a.ts, a.id) < (b.ts, b.id)


@dataclass
class Entry:
    aggregate: Aggregate
    events: list[Recorded] = field(default_factory=list)  # applied, index = version - 1
    waiting: dict[int, Recorded] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.events]


class Ledger:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.conflicts: list[Recorded] = []
        # Applied events a later-arriving winner rolled back (also in `conflicts`); the service
        # drains this to undo them in its projection.
        self.superseded: list[Recorded] = []

    def get(self, aggregate_type: str, aggregate_id: str) -> Aggregate:
        """The aggregate (version 0 when it has no events yet)."""
        entry = self.entries.get((aggregate_type, aggregate_id))
        if entry is None:
            return AGGREGATES[aggregate_type](aggregate_id)
        return entry.aggregate

    def all(self, aggregate_type: str) -> list[Aggregate]:
        return [
            e.aggregate
            for (t, _), e in sorted(self.entries.items())
            if t == aggregate_type and e.aggregate.version
        ]

    def accept(self, rec: Recorded) -> list[Recorded]:
        """Apply `rec` if it is the next version (or wins its version); returns every event applied
        (with any it released)."""
        outcome = self.check(rec)
        if outcome is Outcome.SUPERSEDES:
            self._roll_back(self._entry(rec), rec.version)
        elif outcome is not Outcome.APPLIED:
            return []
        entry = self._entry(rec)
        applied = []
        nxt: Recorded | None = rec
        while nxt is not None:
            entry.aggregate.apply(nxt.event)
            entry.events.append(nxt)
            applied.append(nxt)
            nxt = entry.waiting.pop(entry.aggregate.version + 1, None)
            if nxt is not None and self._forked(entry, nxt):
                self.conflicts.append(nxt)
                nxt = None
        return applied

    def _roll_back(self, entry: Entry, version: int) -> None:
        """Undo the events from `version` on (they lost it) and rebuild the aggregate without them."""
        kept, lost = entry.events[: version - 1], entry.events[version - 1 :]
        entry.aggregate = type(entry.aggregate)(entry.aggregate.id)
        entry.events = []
        for r in kept:
            entry.aggregate.apply(r.event)
            entry.events.append(r)
        for r in lost:
            self.superseded.append(r)
            if all(c.id != r.id for c in self.conflicts):
                self.conflicts.append(r)

    @staticmethod
    def _forked(entry: Entry, rec: Recorded) -> bool:
        """`rec` follows the version we hold but was decided on another event than the one we hold."""
        return bool(rec.prev) and bool(entry.ids) and entry.ids[-1] != rec.prev

    def check(self, rec: Recorded) -> Outcome:
        """Classify `rec`; CONFLICT and WAITING events are recorded here."""
        entry = self._entry(rec)
        version = entry.aggregate.version
        if rec.version <= version:
            held = entry.events[rec.version - 1]
            if held.id == rec.id:
                return Outcome.DUPLICATE
            if rec.prev == held.prev and wins(rec, held):
                return Outcome.SUPERSEDES
            if all(c.id != rec.id for c in self.conflicts):
                self.conflicts.append(rec)
            return Outcome.CONFLICT
        if rec.version == version + 1 and self._forked(entry, rec):
            # Next in number, but built on another history (the other site's concurrent change):
            # applying it would merge two histories silently.
            if all(c.id != rec.id for c in self.conflicts):
                self.conflicts.append(rec)
            return Outcome.CONFLICT
        if rec.version > version + 1:
            early = entry.waiting.get(rec.version)
            if early is None or early.id == rec.id:
                entry.waiting[rec.version] = rec
            elif early.prev == rec.prev and wins(rec, early):
                entry.waiting[rec.version] = rec  # the deterministic winner waits instead
                if all(c.id != early.id for c in self.conflicts):
                    self.conflicts.append(early)
            elif all(c.id != rec.id for c in self.conflicts):
                self.conflicts.append(rec)
            return Outcome.WAITING
        return Outcome.APPLIED

    def last_id(self, aggregate_type: str, aggregate_id: str) -> str:
        entry = self.entries.get((aggregate_type, aggregate_id))
        return entry.events[-1].id if entry is not None and entry.events else ""

    def holds(self, rec: Recorded) -> bool:
        """Whether `rec` is the event applied at its version."""
        entry = self.entries.get((rec.aggregate_type, rec.aggregate_id))
        return (
            entry is not None
            and len(entry.events) >= rec.version
            and entry.events[rec.version - 1].id == rec.id
        )

    def expect(
        self, aggregate_type: str, aggregate_id: str, expected_version: int | None
    ) -> Aggregate:
        """The aggregate, after checking the caller's idea of its version."""
        agg = self.get(aggregate_type, aggregate_id)
        if expected_version is not None and agg.version != expected_version:
            raise ConcurrencyError(
                f"{aggregate_type} {aggregate_id!r} is at version {agg.version}, not {expected_version}: it changed "
                "since you read it; reload it and retry"
            )
        return agg

    def _entry(self, rec: Recorded) -> Entry:
        key = (rec.aggregate_type, rec.aggregate_id)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = Entry(AGGREGATES[rec.aggregate_type](rec.aggregate_id))
        return entry
