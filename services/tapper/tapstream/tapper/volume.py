"""The protected volume on local disk: a raw file or a block device."""

from __future__ import annotations

import os
import stat
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


class Volume:
    """Positional I/O on one open file descriptor. Short reads and writes are errors."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.fd = -1
        self.size = 0
        self.is_block_device = False

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        self.is_block_device = stat.S_ISBLK(st.st_mode)
        self.size = os.lseek(self.fd, 0, os.SEEK_END) if self.is_block_device else st.st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise OSError(
                5, f"short read on {self.path}: {len(data)} of {length} bytes at {offset}"
            )
        return data

    def write(self, offset: int, data: bytes | memoryview) -> None:
        done = os.pwrite(self.fd, data, offset)
        if done != len(data):
            raise OSError(5, f"short write on {self.path}: {done} of {len(data)} bytes at {offset}")

    def zero(self, offset: int, length: int, punch: bool) -> None:
        """Make the range read as zeroes, freeing space when `punch` (TRIM, or zeroes without NO_HOLE)."""
        if punch and not self.is_block_device:
            try:
                _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
                return
            except OSError:
                pass  # filesystem without hole punching: write zeroes instead
        chunk = bytes(min(length, 1 << 20))
        pos, end = offset, offset + length
        while pos < end:
            n = min(len(chunk), end - pos)
            self.write(pos, memoryview(chunk)[:n])
            pos += n

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def data_extents(self, granule: int) -> list[tuple[int, int]]:
        """Ranges that may hold data (SEEK_DATA/SEEK_HOLE), aligned to `granule`; all of it if unknown."""
        if self.is_block_device:
            return [(0, self.size)]
        extents: list[tuple[int, int]] = []
        pos = 0
        try:
            while pos < self.size:
                start = os.lseek(self.fd, pos, os.SEEK_DATA)
                end = os.lseek(self.fd, start, os.SEEK_HOLE)
                a, b = start // granule * granule, min(self.size, -(-end // granule) * granule)
                if extents and a <= extents[-1][1]:
                    extents[-1] = (extents[-1][0], max(b, extents[-1][1]))
                else:
                    extents.append((a, b))
                pos = end
        except OSError as exc:
            if exc.errno != 6:  # ENXIO: no more data after pos
                return [(0, self.size)]
        return extents


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def create(path: Path, size: int) -> None:
    """A new sparse raw volume of `size` bytes; refuses to overwrite an existing file."""
    if size <= 0 or size % 512:
        raise ValueError(f"volume size must be a positive multiple of 512 bytes, not {size}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.truncate(size)
