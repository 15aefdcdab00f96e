"""An Export whose disk fails a write or an fdatasync (no broker: the stream acks at once).

The integration test (test_local_faults.py) injects real EIO on writes; nbdkit 1.32's error filter
cannot fail a flush, so the fdatasync path (fsyncgate) is covered here with a volume whose sync
raises while told to.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from tapstream.tapper import metrics
from tapstream.tapper.checkpoint import GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.export import Export
from tapstream.tapper.protocol.constants import Err
from tapstream.tapper.publish import LaneHooks, SeqFile
from tapstream.tapper.settings import VolumeSpec
from tapstream.tapper.volume import Volume

SIZE = 1 << 20
GRANULE = 64 * 1024


class FlakyVolume(Volume):
    """A real file; `fail` makes pwrite or fdatasync raise EIO like a dying disk."""

    fail: set[str]

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if "write" in self.fail:
            raise OSError(errno.EIO, "Input/output error")
        super().write(offset, data)

    def sync(self) -> None:
        if "sync" in self.fail:
            raise OSError(errno.EIO, "Input/output error")
        super().sync()


class AckingStream(LaneHooks):
    """The VolumeStream surface Export and SyncMode use; every event is acked at once."""

    healthy = True
    chunk_bytes = 1 << 20
    outstanding_bytes = 0
    seq = acked_seq = 0

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def _done(self, done: Any) -> asyncio.Future[Any]:
        if done is not None:
            done(True)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def publish(self, branch: str, body: dict[str, Any], done: Any = None) -> asyncio.Future[Any]:
        self.seq += 1
        self.events.append((branch, body))
        return self._done(done)

    def publish_data(self, offset: int, data: Any, done: Any = None, sync_id: Any = None) -> int:
        self.seq += 1
        self.events.append(("SyncBlock" if sync_id else "Write", (offset, bytes(data))))
        self._done(done)
        return 1

    async def backlog_below(self, limit: int) -> None:
        return None


def make_export(tmp_path: Path) -> tuple[Export, FlakyVolume, AckingStream]:
    path = tmp_path / "vol.img"
    path.write_bytes(bytes(SIZE))
    volume = FlakyVolume("v1", path)
    volume.fail = set()
    volume.open()
    bitmap = DirtyBitmap(tmp_path / "v1.dirty", SIZE, GRANULE, GRANULE)
    spec = VolumeSpec(name="v1", path=path, group="g1", mode="sync")
    export = Export(spec, volume, bitmap, GroupGate(), 5.0, lambda: 0, SeqFile(tmp_path / "s.json"))
    stream = AckingStream()
    export.attach(stream)  # type: ignore[arg-type]
    export.health.interval_s = export.health.max_interval_s = 0.05
    return export, volume, stream


async def request(call: Any, *args: Any) -> int:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    call(*args, lambda err, _msg: fut.done() or fut.set_result(err))
    return await asyncio.wait_for(fut, 5)


async def until_healthy(export: Export) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while export.health.failed or export.bitmap.orphans():
        assert loop.time() < deadline, "the volume did not recover"
        export.housekeeping(loop.time() + 1e6)  # a probe is always due
        await asyncio.sleep(0.01)


def failed_gauge() -> float:
    return metrics.VOLUME_FAILED.labels("v1")._value.get()


def test_failed_fdatasync_fails_the_volume_and_a_probe_resends_what_it_covered(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        export, volume, stream = make_export(tmp_path)
        assert await request(export.write, 0, b"A" * 4096, False) == 0
        volume.fail.add("sync")
        assert await request(export.flush) == Err.EIO
        assert export.health.failed and failed_gauge() == 1
        # the write the failed fdatasync covered is marked for a resend, durably
        assert export.bitmap.dirty_ranges() == [(0, GRANULE)]
        volume.fail.clear()  # a later fdatasync would succeed, yet the volume stays failed
        assert await request(export.write, 8192, b"B" * 4096, False) == Err.EIO
        assert await request(export.flush) == Err.EIO
        assert export.consistent is not None
        assert export.read(8192, 4096) == bytes(4096)  # refused writes never reached the disk
        stream.events.clear()
        await until_healthy(export)
        assert failed_gauge() == 0
        kinds = [k for k, _ in stream.events]
        assert kinds == ["SyncStart", "SyncBlock", "SyncEnd"]
        assert stream.events[0][1]["kind"] == "DELTA"
        offset, data = stream.events[1][1]
        assert (offset, data[:4096]) == (0, b"A" * 4096)
        assert await request(export.write, 8192, b"B" * 4096, True) == 0

    asyncio.run(run())


def test_failed_write_gets_eio_marks_the_region_and_retries_until_the_disk_works(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        export, volume, stream = make_export(tmp_path)
        volume.fail.add("write")
        assert await request(export.write, 3 * GRANULE, b"C" * 4096, False) == Err.EIO
        assert export.bitmap.dirty_ranges() == [(3 * GRANULE, 4 * GRANULE)]
        assert not any(k == "Write" for k, _ in stream.events)  # nothing published for it
        assert await request(export.zero, 0, 4096, False, False, False) == Err.EIO
        assert export.read(0, 16) == bytes(16)  # reads go on
        loop = asyncio.get_running_loop()
        export.housekeeping(loop.time() + 1e6)  # a probe, while the disk still fails
        await asyncio.sleep(0.1)
        assert export.health.failed and export.health.errors == 1
        volume.fail.clear()
        await until_healthy(export)
        blocks = [body for k, body in stream.events if k == "SyncBlock"]
        assert [off for off, _ in blocks] == [3 * GRANULE]
        assert await request(export.write, 3 * GRANULE, b"C" * 4096, False) == 0

    asyncio.run(run())


@pytest.mark.parametrize("code", [errno.ENOSPC])
def test_enospc_is_answered_as_enospc(tmp_path: Path, code: int) -> None:
    async def run() -> None:
        export, volume, _ = make_export(tmp_path)

        def full(offset: int, data: bytes | memoryview) -> None:
            raise OSError(code, "No space left on device")

        volume.write = full  # type: ignore[method-assign]
        assert await request(export.write, 0, b"x" * 512, False) == Err.ENOSPC
        assert await request(export.write, 512, b"x" * 512, False) == Err.ENOSPC

    asyncio.run(run())


def test_async_write_whose_dirty_mark_cannot_be_saved_gets_an_error_not_a_hang(
    tmp_path: Path,
) -> None:
    """Async mode acknowledges a write once its dirty mark is durable: if the bitmap's msync fails
    (a full or failing state dir), the waiting writes are refused and the volume fails."""

    async def run() -> None:
        export, _volume, _ = make_export(tmp_path)
        export.spec = export.spec.model_copy(update={"mode": "async"})
        export.attach(AckingStream())  # type: ignore[arg-type]
        real_sync = export.bitmap.sync

        def broken() -> None:
            raise OSError(errno.EIO, "msync failed")

        export.bitmap.sync = broken  # type: ignore[method-assign]
        assert await request(export.write, 0, b"D" * 4096, False) == Err.EIO
        assert export.health.failed
        export.bitmap.sync = real_sync  # type: ignore[method-assign]
        await until_healthy(export)
        assert await request(export.write, 0, b"D" * 4096, False) == 0

    asyncio.run(run())
