"""Large WRITE_ZEROES and TRIM run off the event loop (a 100 GiB zeroing written out would stop
every client of the tapper for minutes), while the stream keeps the disk's order.

`RangeGate` is the pure part: the ranges being zeroed in the zeroing thread, and the requests that
overlap one of them (or an earlier held request) held in arrival order. A request touches the disk
only through `run_when_clear`, so a write over a range being zeroed waits and its event comes after
the Zero's, as on the disk; requests elsewhere on the volume go on. Reads are not held: a read
racing an unfinished zero may see either content, as the protocol allows for concurrent requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# One thread per tapper: a client zeroing many ranges waits for itself, and the shared default
# executor (fdatasync for FLUSH and FUA, bitmap msyncs) stays free for the others.
ZEROING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapper-zeroing")


class RangeGate:
    def __init__(self) -> None:
        self.busy: list[tuple[int, int]] = []
        self.held: deque[tuple[int, int, Callable[[], None]]] = deque()

    def blocked(self, start: int, end: int) -> bool:
        return any(a < end and start < b for a, b in self.busy) or any(
            a < end and start < b for a, b, _ in self.held
        )

    def run_when_clear(self, start: int, end: int, run: Callable[[], None]) -> bool:
        """Run now (True), or hold behind what it overlaps (False)."""
        if self.blocked(start, end):
            self.held.append((start, end, run))
            return False
        run()
        return True

    def begin(self, start: int, end: int) -> None:
        self.busy.append((start, end))

    def end(self, start: int, end: int) -> list[tuple[int, int, Callable[[], None]]]:
        """The zeroing of [start, end) is done: the held requests, in arrival order. The caller
        passes each to `run_when_clear` again (one may start a zeroing that the next overlaps)."""
        self.busy.remove((start, end))
        held, self.held = list(self.held), deque()
        return held

    def __len__(self) -> int:
        return len(self.held)
