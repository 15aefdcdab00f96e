"""Wall-clock time as tapstream's records carry it: microseconds since the epoch (Avro `ts` fields)."""

from __future__ import annotations

import time


def now_us() -> int:
    return time.time_ns() // 1000
