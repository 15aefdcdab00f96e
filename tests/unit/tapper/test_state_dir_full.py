"""A full state dir (issue 10, item 7): the dirty bitmap reserves its blocks when it is opened, so a
full disk fails there with a clear error instead of a SIGBUS at a later store into a new page; the
seq file's write never raises (the older floor stays valid) and says so once, and again when it
heals. The real full filesystem: tests/integration/test_disk_full.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tapstream.core.durable import atomic_write
from tapstream.tapper import publish
from tapstream.tapper.dirty_bitmap import BitmapSpaceError, DirtyBitmap, reserve
from tapstream.tapper.publish import SeqFile

SIZE = 256 << 20  # 256 MiB at 4 KiB a bit: an 8 KiB bitmap, two pages


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_new_bitmap_has_all_its_blocks(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", SIZE, granule=4096, extent=4096)
    try:
        assert os.path.getsize(bm.path) == 8192
        assert allocated(bm.path) >= 8192, "sparse: a store on a full disk would SIGBUS"
    finally:
        bm.close()


def test_reserve_without_fallocate_keeps_the_content_and_allocates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.dirty"
    with open(path, "wb") as f:
        f.write(b"\x81")
        f.truncate(8192)  # a sparse tail, as the old code left it
    calls = []

    def unsupported(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    bm = DirtyBitmap(path, SIZE, granule=4096, extent=4096)
    try:
        assert calls == [(0, 8192)]
        assert bm.dirty() == [0, 7], "the rewrite lost the bits"
        assert allocated(path) >= 8192
    finally:
        bm.close()


def test_reserve_rewrites_a_short_file_with_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "posix_fallocate")
    path = tmp_path / "x"
    path.write_bytes(b"\x01\x02")
    fd = os.open(path, os.O_RDWR)
    try:
        reserve(fd, 4096)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\x01\x02" + bytes(4094)


def test_a_full_disk_fails_the_new_bitmap_clearly_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    path = tmp_path / "state" / "disk7.dirty"
    with capture_logs() as logs, pytest.raises(BitmapSpaceError) as caught:
        DirtyBitmap(path, SIZE, granule=4096, extent=4096)
    err = caught.value
    assert err.errno == errno.ENOSPC
    text = str(err)
    assert "'disk7'" in text and str(path) in text and "is full" in text
    assert "TAPSTREAM_TAPPER_STATE_DIR" in text
    assert not path.exists(), "a sparse bitmap was left behind"
    assert [e["event"] for e in logs] == ["dirty bitmap cannot be reserved"]
    assert logs[0]["volume"] == "disk7"


def test_a_full_disk_keeps_an_existing_bitmap_and_its_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v.dirty"
    bm = DirtyBitmap(path, SIZE, granule=4096, extent=4096)
    bm.set_dirty(3 * 4096, 1)
    bm.close()

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(BitmapSpaceError):
        DirtyBitmap(path, SIZE, granule=4096, extent=4096)
    monkeypatch.undo()
    again = DirtyBitmap(path, SIZE, granule=4096, extent=4096)
    try:
        assert again.dirty() == [3]
    finally:
        again.close()


def test_a_failed_msync_is_logged_with_the_file_and_raised(tmp_path: Path) -> None:
    bm = DirtyBitmap(tmp_path / "v.dirty", SIZE, granule=4096, extent=4096)

    class FailingMap:
        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    real, bm._map = bm._map, FailingMap()  # type: ignore[assignment]
    try:
        with capture_logs() as logs, pytest.raises(OSError):
            bm.sync()
        assert logs[0]["path"] == str(bm.path) and "state dir" in logs[0]["hint"]
    finally:
        bm._map = real
        bm.close()


def test_the_seq_file_survives_a_full_disk_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = SeqFile(tmp_path / "v.seq.json")
    assert seq.write(5)

    def full(path: Path, data: str | bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish, "atomic_write", full)
    with capture_logs() as logs:
        assert seq.write(6) is False
        assert seq.write(7) is False  # no exception, and no second error line every 5 s
    assert [e["log_level"] for e in logs] == ["error"]
    assert "state dir" in logs[0]["hint"] and logs[0]["path"] == str(seq.path)
    assert seq.read() == 5, "the older floor stays"
    monkeypatch.setattr(publish, "atomic_write", atomic_write)
    with capture_logs() as logs:
        assert seq.write(8)
    assert [e["event"] for e in logs] == ["the volume's acked seq is saved again"]
    assert seq.read() == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.seq.json"]


def test_atomic_write_leaves_the_old_content_and_no_temp_on_enospc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "v.seq.json"
    atomic_write(p, "old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        atomic_write(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["v.seq.json"]
