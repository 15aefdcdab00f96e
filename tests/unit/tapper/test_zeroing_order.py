"""A zeroing that runs off the event loop holds the requests that overlap it, in both modes: their
events come after the Zero's, as on the disk; requests elsewhere on the volume go on (no broker)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from tapstream.tapper.checkpoint import GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.export import Export
from tapstream.tapper.publish import LaneHooks, SeqFile
from tapstream.tapper.settings import VolumeSpec
from tapstream.tapper.volume import Volume

SIZE = 4 << 20
GRANULE = 64 * 1024


class SlowZeroVolume(Volume):
    """A real file whose zeroing waits until the test lets it finish."""

    release: threading.Event

    def zero(self, offset: int, length: int, punch: bool) -> None:
        assert self.release.wait(5)
        super().zero(offset, length, punch)


class Stream(LaneHooks):
    """The VolumeStream surface the export and the modes use; every event is acked at once."""

    healthy = True
    chunk_bytes = 1 << 20
    outstanding_bytes = 0
    seq = acked_seq = 0

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def publish(self, branch: str, body: dict[str, Any], done: Any = None) -> None:
        self.events.append((branch, body.get("offset", -1)))
        if done is not None:
            done(True)

    def publish_data(self, offset: int, data: Any, done: Any = None, sync_id: Any = None) -> int:
        self.events.append(("Write", offset))
        if done is not None:
            done(True)
        return 1

    async def settled(self) -> None:
        return None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_write_over_a_range_being_zeroed_waits_for_it(tmp_path: Path, mode: str) -> None:
    async def run() -> None:
        path = tmp_path / "vol.img"
        path.write_bytes(b"\xff" * SIZE)
        volume = SlowZeroVolume("v1", path)
        volume.release = threading.Event()
        volume.open()
        bitmap = DirtyBitmap(tmp_path / "v1.dirty", SIZE, GRANULE, GRANULE)
        spec = VolumeSpec(name="v1", path=path, group="g1", mode=mode)
        export = Export(
            spec, volume, bitmap, GroupGate(), 5.0, lambda: 0, SeqFile(tmp_path / "s.json"),
            inline_zero_bytes=0,
        )  # fmt: skip
        stream = Stream()
        export.attach(stream)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        answers: dict[str, asyncio.Future[int]] = {}

        def reply(name: str) -> Any:
            answers[name] = loop.create_future()
            return lambda error, _message: answers[name].set_result(error)

        # async mode: every region's mark durable first, so nothing waits for the bitmap's msync
        for offset in range(0, SIZE, GRANULE):
            export.write(offset, b"\xff", False, reply(f"mark{offset}"))
        await asyncio.gather(*answers.values())
        stream.events.clear()

        export.zero(0, 1 << 20, False, False, False, reply("zero"))
        export.write(4096, b"A" * 4096, False, reply("over"))
        export.write(2 << 20, b"B" * 4096, False, reply("elsewhere"))
        assert await asyncio.wait_for(answers["elsewhere"], 5) == 0
        assert not answers["over"].done() and export.ranges.held
        volume.release.set()
        assert await asyncio.wait_for(answers["over"], 5) == 0
        assert await asyncio.wait_for(answers["zero"], 5) == 0
        assert stream.events == [("Write", 2 << 20), ("Zero", 0), ("Write", 4096)]
        assert export.read(0, 4096) == bytes(4096) and export.read(4096, 4096) == b"A" * 4096
        await export.drain()
        volume.close()
        bitmap.close()

    asyncio.run(run())
