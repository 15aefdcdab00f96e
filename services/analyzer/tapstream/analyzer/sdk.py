"""The analyzer SDK: write a class, get decoding, per-volume order, state and checkpoints for free.

    from tapstream.analyzer import Analyzer, Context, Event

    class BigWrites(Analyzer):
        name = "big-writes"

        def on_write(self, ev: Event, ctx: Context) -> None:
            if ev.length >= 1 << 20:
                ctx.state["big"] = ctx.state.get("big", 0) + 1

    # python -m tapstream.analyzer run mymodule:BigWrites   (TAPSTREAM_ANALYZER_GROUP=g1)

The runtime (runtime.py, faust) calls the hooks once per event, in each volume's order. Events a
restarted analyzer already processed (seq at or below the volume's last seq) are skipped, so hooks
see each event once; a gap in seq is logged and counted. `ctx.state` is a JSON-able dict per volume
kept in a faust table (changelog-backed: it survives restarts). This module imports no I/O library.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

MAX_CHECKPOINTS = 64


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded DiskEvent. `kind` is the body's branch: Write, Zero, Flush, Checkpoint,
    SyncStart, SyncBlock or SyncEnd; `body` holds its fields."""

    group: str
    volume: str
    seq: int
    ts: int  # microseconds, UTC
    host: str
    kind: str
    body: dict[str, Any]
    partition: int = 0
    offset: int = 0  # Kafka offset

    @property
    def data(self) -> bytes:
        return self.body.get("data", b"")

    @property
    def disk_offset(self) -> int:
        return int(self.body.get("offset", 0))

    @property
    def length(self) -> int:
        return int(self.body.get("length", 0))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    ts: int
    id: str
    tag: str | None


@dataclass(frozen=True, slots=True)
class AlertRequest:
    """What an analyzer asks the runtime to publish as an Alert."""

    kind: str
    volume: str
    message: str
    onset_ts: int
    detected_ts: int
    severity: str = "WARNING"
    score: float = 0.0
    encrypted_share: float = 0.0
    last_clean_checkpoint: Checkpoint | None = None
    details: dict[str, str] = field(default_factory=dict)
    dedupe_key: str = ""  # same key -> same Alert id (consumers can drop a repeat)
    tag_checkpoint: bool = False  # also ask for last_clean_checkpoint to be tagged


@dataclass
class VolumeMeta:
    """What the runtime keeps per volume besides the analyzer's own state."""

    last_seq: int = 0
    gaps: int = 0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_seq": self.last_seq,
            "gaps": self.gaps,
            "state": self.state,
            "checkpoints": [[c.seq, c.ts, c.id, c.tag] for c in self.checkpoints],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VolumeMeta:
        if not d:
            return cls()
        return cls(
            d.get("last_seq", 0),
            d.get("gaps", 0),
            [Checkpoint(*c) for c in d.get("checkpoints", [])],
            d.get("state", {}),
        )


class Context:
    """What a hook sees besides the event: the volume's state, checkpoints, alerting, tables."""

    def __init__(
        self,
        group: str,
        volume: str,
        meta: VolumeMeta,
        tables: dict[str, MutableMapping[str, Any]],
        alert: Callable[[AlertRequest], None],
    ) -> None:
        self.group = group
        self.volume = volume
        self._meta = meta
        self._tables = tables
        self._alert = alert

    @property
    def state(self) -> dict[str, Any]:
        """JSON-able per-volume state, persisted after each event."""
        return self._meta.state

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self._meta.checkpoints[-1] if self._meta.checkpoints else None

    def checkpoint_before(self, seq: int) -> Checkpoint | None:
        """Newest checkpoint marker of this volume with a smaller seq (None if none is remembered)."""
        for c in reversed(self._meta.checkpoints):
            if c.seq < seq:
                return c
        return None

    def table(self, name: str) -> MutableMapping[str, Any]:
        """A raw-bytes table the analyzer declared in `tables`; key it by volume (co-partitioned)."""
        return self._tables[name]

    def alert(self, request: AlertRequest) -> None:
        """Publish an Alert (encoded with the shared codec) on tapstream.alerts."""
        self._alert(request)


class Analyzer:
    """Subclass and override the hooks you need; `name` becomes part of the consumer group."""

    name: ClassVar[str] = "custom"
    tables: ClassVar[tuple[str, ...]] = ()  # extra raw-bytes faust tables (e.g. block memory)

    def on_write(self, ev: Event, ctx: Context) -> None:
        """A Write or a SyncBlock (both carry data)."""

    def on_zero(self, ev: Event, ctx: Context) -> None:
        """WRITE_ZEROES or TRIM (`ev.body["trim"]`)."""

    def on_checkpoint(self, ev: Event, ctx: Context) -> None:
        """A crash-consistent checkpoint marker (already in `ctx.last_checkpoint`)."""

    def on_other(self, ev: Event, ctx: Context) -> None:
        """Flush, SyncStart, SyncEnd."""

    def on_event(self, ev: Event, ctx: Context) -> None:
        """Every event; by default dispatches to the hooks above."""
        if ev.kind in ("Write", "SyncBlock"):
            self.on_write(ev, ctx)
        elif ev.kind == "Zero":
            self.on_zero(ev, ctx)
        elif ev.kind == "Checkpoint":
            self.on_checkpoint(ev, ctx)
        else:
            self.on_other(ev, ctx)


class Dispatcher:
    """Per-volume bookkeeping around an Analyzer (pure): dedupe by seq, gaps, checkpoints."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def handle(
        self,
        ev: Event,
        meta: VolumeMeta,
        tables: dict[str, MutableMapping[str, Any]],
        alert: Callable[[AlertRequest], None],
    ) -> str:
        """Run the analyzer on `ev`; returns "skipped" (seen before), "gap" or "ok"."""
        if ev.seq <= meta.last_seq:
            return "skipped"
        result = "gap" if meta.last_seq and ev.seq != meta.last_seq + 1 else "ok"
        if result == "gap":
            meta.gaps += 1
        meta.last_seq = ev.seq
        if ev.kind == "Checkpoint":
            meta.checkpoints.append(
                Checkpoint(
                    ev.seq, int(ev.body.get("ts") or ev.ts), ev.body["id"], ev.body.get("tag")
                )
            )
            del meta.checkpoints[:-MAX_CHECKPOINTS]
        self.analyzer.on_event(ev, Context(ev.group, ev.volume, meta, tables, alert))
        return result
