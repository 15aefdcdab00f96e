"""Whether the protected volume's own disk can be trusted with writes (pure state, no I/O).

HEALTHY -> FAILED on any error of a local write, zero/trim or fdatasync. After a failed fdatasync
the page cache state is unknown (Linux marks the pages clean: "fsyncgate"), so a later fdatasync
that succeeds proves nothing about earlier writes; the volume stays FAILED until a probe re-writes
the failed ranges' current content and fdatasyncs them. While FAILED, writes and flushes are
refused (reads go on): acknowledging a write the disk may drop would break the RPO promise.
FAILED -> HEALTHY when a probe succeeds; probes back off from `interval_s` to `max_interval_s`;
an operator RESUME asks for one at once.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

Range = tuple[int, int]  # (start, end) in bytes, end exclusive


def merge(ranges: list[Range]) -> list[Range]:
    """Sorted, coalesced, without empty ranges."""
    out: list[Range] = []
    for a, b in sorted(r for r in ranges if r[1] > r[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


@dataclass
class LocalHealth:
    interval_s: float = 2.0
    max_interval_s: float = 30.0
    failed: bool = False
    op: str = ""  # what failed first: write, zero, flush
    errno: int = 0  # its OS error
    message: str = ""
    since: float = 0.0
    errors: int = 0  # errors since FAILED began
    ranges: list[Range] = field(default_factory=list)  # what the probe re-writes, then resends
    probing: bool = False
    next_probe: float = 0.0
    _delay: float = 0.0
    _errors_at_probe: int = 0

    def fail(self, now: float, op: str, err: int, message: str, ranges: list[Range]) -> bool:
        """Record a local I/O error; True if the volume just went from HEALTHY to FAILED."""
        self.errors += 1
        self.ranges = merge(self.ranges + ranges)
        if self.failed:
            return False
        self.failed, self.op, self.errno, self.message, self.since = True, op, err, message, now
        self._delay = self.interval_s
        self.next_probe = now + self._delay
        return True

    def refusal(self) -> tuple[int, str] | None:
        """(errno, message) for a write or flush arriving while FAILED; None when HEALTHY."""
        if not self.failed:
            return None
        return (
            errno.ENOSPC if self.errno == errno.ENOSPC else errno.EIO,
            f"the protected volume failed a local {self.op} ({os.strerror(self.errno)}); "
            "writes are refused until it is healthy again",
        )

    def probe_due(self, now: float) -> bool:
        return self.failed and not self.probing and now >= self.next_probe

    def probe_now(self) -> None:
        """An operator said the disk is fixed: probe at the next tick (a probe still decides)."""
        self.next_probe = 0.0

    def probe_started(self) -> list[Range]:
        """The ranges to re-write; writes are refused meanwhile, so none are added."""
        self.probing = True
        self._errors_at_probe = self.errors
        return list(self.ranges)

    def probe_done(self, now: float, ok: bool) -> list[Range] | None:
        """After a probe: the ranges to resend if the volume is HEALTHY again, else None (back off)."""
        self.probing = False
        if not self.failed:
            return None
        if ok and self.errors != self._errors_at_probe:
            ok = False  # an error landed during the probe (a late fdatasync): its ranges were not in it
        if not ok:
            self._delay = min(self._delay * 2, self.max_interval_s)
            self.next_probe = now + self._delay
            return None
        ranges, self.ranges = self.ranges, []
        self.failed, self.errors = False, 0
        return ranges
