"""A view reads the replica as it was when it opened, while the VDSA's preserver copies aside what
it overwrites; a broken session makes reads fail, never answer newer bytes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tapstream.instant import preserve
from tapstream.instant.reader import ViewReader, ViewSpec

SIZE = 64 * 1024


def vdsa_write(p: preserve.Preserver, fd: int, offset: int, data: bytes) -> None:
    """What the VDSA's apply does for one Write, under the replica's lock."""
    p.before(fd, "Write", {"offset": offset, "length": len(data)})
    os.pwrite(fd, data, offset)


def open_view(tmp: Path, image: Path, journal: dict[int, bytes]) -> ViewReader:
    delta = tmp / "delta"
    with open(delta, "wb") as f:
        f.truncate(SIZE)
        for off, data in journal.items():
            f.seek(off)
            f.write(data)
    session = preserve.create(image, "test-1")
    spec = ViewSpec(
        SIZE,
        str(image),
        str(delta),
        [(off, off + len(d)) for off, d in sorted(journal.items())],
        str(session),
        "cp",
    )
    spec.save(tmp / "v.json")
    return ViewReader(ViewSpec.load(tmp / "v.json"))


def read(view: ViewReader, offset: int, length: int) -> bytes:
    buf = bytearray(length)
    view.pread(memoryview(buf), offset)
    return bytes(buf)


def test_the_view_keeps_its_base_while_the_replica_moves_on(tmp_path: Path) -> None:
    rnd = random.Random(3)
    image = tmp_path / "vol.img"
    base = rnd.randbytes(SIZE // 2)  # shorter than the volume: the rest reads as zeros
    image.write_bytes(base)
    journal = {4096: b"\xaa" * 8192, 40_000: b"\xbb" * 1000}
    want = bytearray(base + bytes(SIZE - len(base)))
    for off, data in journal.items():
        want[off : off + len(data)] = data
    view = open_view(tmp_path, image, journal)
    p = preserve.Preserver(image)
    fd = os.open(image, os.O_RDWR)
    try:
        assert read(view, 0, SIZE) == want
        for _ in range(300):
            off = rnd.randrange(SIZE - 1)
            data = rnd.randbytes(rnd.randint(1, min(5000, SIZE - off)))
            vdsa_write(p, fd, off, data)
            a = rnd.randrange(SIZE - 1)
            b = rnd.randint(a + 1, SIZE)
            assert read(view, a, b - a) == want[a:b]
        assert read(view, 0, SIZE) == want
        assert os.pread(fd, SIZE, 0) != want[: os.fstat(fd).st_size]  # the replica did change
    finally:
        os.close(fd)
        view.close()
        p.close()


def test_a_closed_session_costs_the_vdsa_nothing_more(tmp_path: Path) -> None:
    image = tmp_path / "vol.img"
    image.write_bytes(bytes(SIZE))
    view = open_view(tmp_path, image, {})
    p = preserve.Preserver(image)
    fd = os.open(image, os.O_RDWR)
    vdsa_write(p, fd, 0, b"x" * 100)
    session = Path(view.spec.session)
    assert (session / "index").stat().st_size == preserve.RECORD.size
    view.close()
    preserve.remove(session)
    vdsa_write(p, fd, 200, b"y" * 100)
    assert p.writers == {} and not session.exists()
    os.close(fd)


def test_a_broken_session_fails_reads(tmp_path: Path) -> None:
    image = tmp_path / "vol.img"
    image.write_bytes(bytes(SIZE))
    view = open_view(tmp_path, image, {})
    os.chmod(Path(view.spec.session) / "index", preserve.BROKEN_MODE)  # what the VDSA does
    (Path(view.spec.session) / "broken").write_text("No space left on device")
    with pytest.raises(OSError, match="broken"):
        read(view, 0, 4096)
    view.close()


def test_a_restarted_vdsa_keeps_only_first_overwrites(tmp_path: Path) -> None:
    image = tmp_path / "vol.img"
    image.write_bytes(b"\x01" * SIZE)
    view = open_view(tmp_path, image, {})
    fd = os.open(image, os.O_RDWR)
    vdsa_write(preserve.Preserver(image), fd, 0, b"\x02" * 4096)
    vdsa_write(preserve.Preserver(image), fd, 0, b"\x03" * 8192)  # a new process: index reloaded
    assert read(view, 0, 8192) == b"\x01" * 8192
    os.close(fd)
    view.close()


def test_a_session_the_vdsa_cannot_write_breaks_instead_of_going_quietly_wrong(
    tmp_path: Path,
) -> None:
    image = tmp_path / "vol.img"
    image.write_bytes(bytes(SIZE))
    view = open_view(tmp_path, image, {})
    p = preserve.Preserver(image)
    p.before(-1, "Write", {"offset": 0, "length": 4096})  # reading the old bytes fails (EBADF)
    assert (Path(view.spec.session) / "broken").read_text()
    with pytest.raises(OSError, match="broken"):
        read(view, 0, 4096)
    view.close()


def test_zeros_are_preserved_as_holes_and_a_restart_appends_after_them(tmp_path: Path) -> None:
    image = tmp_path / "vol.img"
    image.write_bytes(bytes(8192) + b"\x01" * (SIZE - 8192))
    view = open_view(tmp_path, image, {})
    fd = os.open(image, os.O_RDWR)
    vdsa_write(preserve.Preserver(image), fd, 0, b"\x02" * 4096)  # old zeros: nothing written
    assert (Path(view.spec.session) / "data").stat().st_size == 0
    vdsa_write(preserve.Preserver(image), fd, 8192, b"\x03" * 4096)  # a restarted VDSA
    assert read(view, 0, 12288) == bytes(8192) + b"\x01" * 4096
    os.close(fd)
    view.close()
