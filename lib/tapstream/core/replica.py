"""Replica volumes at the recovery site: the image, its applied position, and the lock between the
VDSA (which applies) and restore (which copies).

Layout: `<replica_dir>/<group>/<volume>.img`, `<volume>.pos.json` ({"seq", "partition", "offset",
"ts", "open_syncs", "halt"}), `<volume>.lock`. The position is written (tmp, fsync, rename) only after the data it covers
was fdatasync'ed, so after a crash the VDSA re-applies from an older position: applying an event
twice gives the same bytes, so nothing is skipped and nothing is doubled.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tapstream.core.durable import atomic_write_json
from tapstream.core.names import check_name


@dataclass
class Position:
    seq: int = 0
    partition: int = -1
    offset: int = -1
    ts: int = 0
    open_syncs: list[str] = field(default_factory=list)  # syncs begun and not ended at `seq`
    halt: dict[str, Any] | None = None  # why the replica stopped at `seq` (core.contract)


class Replica:
    def __init__(self, replica_dir: Path, group: str, volume: str) -> None:
        # Every replica path is built here: a name from a record never leaves the replica dir.
        base = replica_dir / check_name("group", group)
        check_name("volume", volume)
        self.image = base / f"{volume}.img"
        self.pos_file = base / f"{volume}.pos.json"
        self.lock_file = base / f"{volume}.lock"

    def position(self) -> Position:
        try:
            saved = json.loads(self.pos_file.read_text())
        except FileNotFoundError:
            return Position()
        known = Position.__dataclass_fields__
        return Position(**{k: v for k, v in saved.items() if k in known})

    def save_position(self, pos: Position) -> None:
        atomic_write_json(self.pos_file, asdict(pos))

    def open(self, size: int = 0) -> int:
        self.image.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.image, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if size and os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return fd

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
