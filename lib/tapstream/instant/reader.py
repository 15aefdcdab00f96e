"""Answers reads of a checkpoint view from its spec file (written by `view.open_view`).

Imports only the standard library and this package: it runs inside nbdkit's embedded Python.
A read of the replica is checked against the preserve index afterwards: the VDSA writes a range's
old bytes and its index record before it overwrites the range, so if new records touch what was
just read, the read may have seen newer bytes and is planned again (from the preserved copy).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tapstream.instant.extents import Extents
from tapstream.instant.planner import Source, plan, touches
from tapstream.instant.preserve import SessionReader


@dataclass(frozen=True)
class ViewSpec:
    size: int
    base: str  # the replica image
    delta: str  # the journal's events up to the checkpoint, applied to an empty sparse file
    journal: list[tuple[int, int]]  # the ranges those events changed
    session: str  # the preserve session
    checkpoint: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> ViewSpec:
        raw = json.loads(path.read_text())
        raw["journal"] = [tuple(r) for r in raw["journal"]]
        return cls(**raw)


class ViewReader:
    def __init__(self, spec: ViewSpec) -> None:
        self.spec = spec
        self.journal = Extents()
        for start, end in spec.journal:
            self.journal.fill(start, end, start)  # same offsets in the delta file
        self.session = SessionReader(Path(spec.session))
        self.delta_fd = os.open(spec.delta, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.base_fd = os.open(spec.base, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.base_fd = -1  # the replica never got a byte: it reads as zeros
        self.fds = {
            Source.DELTA: self.delta_fd,
            Source.PRESERVED: self.session.data_fd,
            Source.BASE: self.base_fd,
        }
        self.lock = threading.Lock()
        with self.lock:
            self.session.refresh()

    def pread(self, buf: memoryview, offset: int) -> None:
        """Fill `buf` with the view's bytes at `offset`."""
        while True:
            with self.lock:
                reads = plan(offset, len(buf), self.journal, self.session.map)
            for r in reads:
                _read_exact(self.fds[r.source], buf[r.at : r.at + r.length], r.src)
            if not any(r.source is Source.BASE for r in reads):
                return
            with self.lock:
                added = self.session.refresh()
            if not touches(reads, added):
                return

    def close(self) -> None:
        self.session.close()
        os.close(self.delta_fd)
        if self.base_fd >= 0:
            os.close(self.base_fd)


def _read_exact(fd: int, out: memoryview, offset: int) -> None:
    """Read into `out`; what lies past the file's end (a sparse or shorter replica) is zeros."""
    done = 0
    while done < len(out):
        n = os.preadv(fd, [out[done:]], offset + done) if fd >= 0 else 0
        if n == 0:
            out[done:] = bytes(len(out) - done)
            return
        done += n
