"""What the test guest says on its serial console (init.sh's TAPGUEST lines)."""

from __future__ import annotations

import re
from pathlib import Path

LINE = re.compile(r"TAPGUEST (WROTE|FOUND|ERROR) (\S+)(?: (OK|FAIL))?")


def said(log: Path, what: str) -> re.Match[str] | None:
    """The guest's first `TAPGUEST <what> ...` line in its serial log; AssertionError on an ERROR
    line (a missing disk, a failed insmod), so a broken guest fails at once, not at a deadline."""
    text = log.read_text(errors="replace") if log.exists() else ""
    for m in LINE.finditer(text):
        if m.group(1) == "ERROR":
            raise AssertionError(f"the guest reported an error:\n{text[-3000:]}")
        if m.group(1) == what:
            return m
    return None
