"""The recovery after a refused event checks the stream for a hole (no broker: doubles).

A refused event may be followed by later ones that landed all the same (they were already in
flight, or Kafka came back between two deadlines). Kafka's last seq is then past the refused one,
and continuing after it would leave a hole every consumer halts at, forever. The recovery looks at
the seqs Kafka holds from the first refused one on; if one is missing it resends the whole volume,
whose DELTA (bytes_total = the volume) heals the consumers (contract.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tapstream.tapper import metrics
from tapstream.tapper.checkpoint import GroupGate
from tapstream.tapper.dirty_bitmap import DirtyBitmap
from tapstream.tapper.export import Export
from tapstream.tapper.publish import SeqFile
from tapstream.tapper.settings import VolumeSpec

from .test_local_faults import GRANULE, SIZE, AckingStream, FlakyVolume


class RefusedOnceStream(AckingStream):
    """Acks everything, but reports that Kafka refused `first_failed` before the recovery."""

    def __init__(self, first_failed: int) -> None:
        super().__init__()
        self.first_failed = first_failed

    async def settled(self) -> None:
        return None

    def restart_at(self, seq: int) -> None:
        self.seq = self.acked_seq = seq

    def take_first_failed(self) -> int:
        seq, self.first_failed = self.first_failed, 0
        return seq


def recover(tmp_path: Path, kafka_seqs: set[int]) -> tuple[Export, RefusedOnceStream]:
    path = tmp_path / "vol.img"
    path.write_bytes(bytes(SIZE))
    volume = FlakyVolume("v1", path)
    volume.fail = set()
    volume.open()
    export = Export(
        VolumeSpec(name="v1", path=path, group="g1", mode="sync"),
        volume,
        DirtyBitmap(tmp_path / "v1.dirty", SIZE, GRANULE, GRANULE),
        GroupGate(),
        5.0,
        lambda: max(kafka_seqs),
        SeqFile(tmp_path / "s.json"),
        find_seqs_since=lambda since: {s for s in kafka_seqs if s >= since},
    )
    stream = RefusedOnceStream(first_failed=5)
    stream.seq = stream.acked_seq = 4
    export.attach(stream)  # type: ignore[arg-type]

    async def main() -> None:
        export.stream_failed(RuntimeError("event refused"))
        assert export._recovering is not None
        await asyncio.wait_for(export._recovering, 5)

    asyncio.run(main())
    return export, stream


def holes() -> float:
    return metrics.STREAM_HOLES.labels("v1")._value.get()


@pytest.mark.parametrize("missing", [{5}, {6, 7}], ids=["refused-one", "two-after-it"])
def test_a_hole_behind_later_events_resends_the_whole_volume(
    tmp_path: Path, missing: set[int]
) -> None:
    before = holes()
    export, stream = recover(tmp_path, set(range(1, 11)) - missing)
    assert holes() == before + 1
    starts = [body for branch, body in stream.events if branch == "SyncStart"]
    assert [(s["kind"], s["bytes_total"]) for s in starts] == [("DELTA", SIZE)]
    assert stream.seq > 10  # continued after Kafka's last seq
    assert export.bitmap.orphans() == []


def test_a_refused_event_that_landed_after_all_leaves_no_hole(tmp_path: Path) -> None:
    before = holes()
    _export, stream = recover(tmp_path, set(range(1, 11)))  # 5 was refused late, yet is there
    assert holes() == before
    assert [branch for branch, _ in stream.events if branch == "SyncStart"] == []
    assert stream.seq == 10
