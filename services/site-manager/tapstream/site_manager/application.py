"""The application layer: load an aggregate, let it decide, append its events, apply them.

Appending goes through a `sink` (Kafka in the service, a list in unit tests). Commands on one
aggregate run one at a time in this process; a caller that passes `expected_version` is refused
when the aggregate moved on since it read it (optimistic concurrency, never a silent merge).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Protocol

from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain.aggregates import Aggregate
from tapstream.site_manager.domain.events import Recorded
from tapstream.site_manager.domain.ledger import ConcurrencyError, Ledger

Sink = Callable[[list[Recorded]], Awaitable[None]]

# Who decides: the API sets the caller's token name for its request; a task the request starts (an
# operation's steps) inherits it; anything else is the site manager's own decision.
ACTOR: ContextVar[str] = ContextVar("tapstream_actor", default="system")


def now_us() -> int:
    return time.time_ns() // 1000


class Application:
    def __init__(
        self,
        site: str,
        ledger: Ledger,
        sink: Sink,
        applied: Callable[[list[Recorded]], Awaitable[None]] | None = None,
        clock: Callable[[], int] = now_us,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.site = site
        self.ledger = ledger
        self.sink = sink
        self.applied = applied
        self.clock = clock
        self.new_id = new_id
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Held while events are applied to the ledger and saved to the projection, here and by the
        # topic's reader: our own events can come back from the topic before `sink` returns, and a
        # caller must not see the command done before the projection (what the API reads) has it.
        self.apply_lock = asyncio.Lock()

    async def execute(
        self,
        aggregate_type: str,
        aggregate_id: str,
        command: c.Command,
        expected_version: int | None = None,
    ) -> Aggregate:
        """Decide and record; DomainError if a rule says no, ConcurrencyError if the version moved."""
        key = (aggregate_type, aggregate_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            agg = self.ledger.expect(aggregate_type, aggregate_id, expected_version)
            events = agg.decide(command)
            if not events:
                return agg
            base, ts, actor = agg.version, self.clock(), ACTOR.get()
            ids = [self.new_id() for _ in events]
            prev = self.ledger.last_id(aggregate_type, aggregate_id)
            recs = [
                Recorded(
                    ids[i],
                    aggregate_type,
                    aggregate_id,
                    base + i + 1,
                    ts,
                    self.site,
                    ev,
                    ids[i - 1] if i else prev,
                    actor,
                )
                for i, ev in enumerate(events)
            ]
            await self.sink(recs)
            async with self.apply_lock:
                applied: list[Recorded] = []
                for rec in recs:
                    applied += self.ledger.accept(rec)
                if self.applied is not None and applied:
                    await self.applied(applied)
            # (Our own events may also come back from the topic first: applied all the same.)
            if not all(self.ledger.holds(r) for r in recs):
                # Another site's event took the version while ours was on its way: ours is a conflict.
                raise ConcurrencyError(
                    f"{aggregate_type} {aggregate_id!r} was changed concurrently at another site; "
                    "your change was recorded as a conflict and not applied: reload and retry"
                )
            return self.ledger.get(aggregate_type, aggregate_id)


class Execute(Protocol):
    """Run a command through the site manager (the service adds its checks and tells the
    reconciler): what operations and the API are given instead of the service itself."""

    async def __call__(
        self,
        aggregate_type: str,
        aggregate_id: str,
        command: c.Command,
        expected_version: int | None = None,
    ) -> Aggregate: ...
