"""Applying events to an image: gap detection, checksums, idempotence."""

import os
from pathlib import Path

import crc32c
import pytest

from tapstream.core.replay import StreamError, VolumeReplay


def write(seq: int, offset: int, data: bytes) -> dict:
    return {
        "seq": seq,
        "body": (
            "Write",
            {"offset": offset, "length": len(data), "data": data, "checksum": crc32c.crc32c(data)},
        ),
    }


def test_apply_in_order_is_idempotent_and_detects_gaps(tmp_path: Path) -> None:
    path = tmp_path / "img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, 4096)
    r = VolumeReplay(fd, "v")
    r.apply(write(1, 0, b"abc"))
    r.apply(write(1, 0, b"zzz"))  # a duplicate delivery changes nothing
    r.apply({"seq": 2, "body": ("Zero", {"offset": 1, "length": 1, "trim": False})})
    with pytest.raises(StreamError, match="gap"):
        r.apply(write(4, 0, b"x"))
    os.close(fd)
    assert path.read_bytes()[:3] == b"a\0c"


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "img", os.O_RDWR | os.O_CREAT)
    bad = write(1, 0, b"abc")
    bad["body"][1]["checksum"] ^= 1
    with pytest.raises(StreamError, match="checksum"):
        VolumeReplay(fd, "v").apply(bad)
    os.close(fd)
