"""The recovery VDSA's applier across rebalances, two appliers sharing one replica directory (what
two VDSA processes do), with a stand-in for the consumer: a partition that moves away and back
applies from the replica's saved position, never from a stale cursor; a process that kept a stale
state (it missed the revocation) writes nothing; a revoked partition's resume timer never fires.
With a real broker and real processes: tests/integration/test_scale_out.py."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from structlog.testing import capture_logs

from tapstream.core.clock import now_us
from tapstream.core.keep import TagRequest
from tapstream.core.replica import Replica
from tapstream.vdsa.apply import Applier
from tapstream.vdsa.settings import VdsaSettings

GROUP = "g1"
BLOCK = 4096


class FakeConsumer:
    """What the applier calls on aiokafka's consumer."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def applier(replicas: Path, history_s: float = 0.0) -> Applier:
    settings = VdsaSettings(
        _env_file=None,  # type: ignore[call-arg]
        site="recovery",
        vdsa_groups=[GROUP],
        replica_dir=replicas,
        vdsa_journal_history_s=history_s,
    )
    a = Applier(settings)
    a._consumer = FakeConsumer()
    return a


def record(a: Applier, seq: int, fill: int, ts: int = 1) -> Any:
    """Event `seq` of volume v (at Kafka offset seq - 1): one block of `fill` at its own place."""
    data = bytes([fill]) * BLOCK
    value = a.codec.encode_write("v", seq, ts, "hv1", GROUP, (seq % 4) * BLOCK, data)
    return SimpleNamespace(value=value, key=b"v", offset=seq - 1)


async def apply(a: Applier, tp: TopicPartition, *msgs: Any) -> None:
    async with a._batch:
        await a._apply_batch(a._consumer, {tp.topic: GROUP}, {tp: list(msgs)})


def close(*appliers: Applier) -> None:
    for a in appliers:
        for st in a.volumes.values():
            os.close(st.fd)


def image(replicas: Path) -> bytes:
    return Replica(replicas, GROUP, "v").image.read_bytes()


async def test_a_partition_that_comes_back_applies_from_the_saved_position(tmp_path: Path) -> None:
    a, b = applier(tmp_path), applier(tmp_path)
    tp = TopicPartition(a.topic(GROUP), 0)
    await a._on_assigned({tp})
    await apply(a, tp, record(a, 1, 1), record(a, 2, 2))
    assert a._consumer.commits == [{tp: 2}]
    # Another process joins: A gives the partition up, B gets it and applies 3 and 4 (the group's
    # committed offset is 2, so B reads from there).
    await a._on_revoked({tp})
    assert a.volumes == {}
    await b._on_assigned({tp})
    await apply(b, tp, record(b, 3, 3), record(b, 4, 4))
    assert Replica(tmp_path, GROUP, "v").position().seq == 4
    # B leaves, A gets the partition back from offset 2 (say B's last commit was refused): 3 and 4
    # are redeliveries, 5 applies. A stale cursor (at 2) would re-apply 3 and 4 and lose nothing
    # here, but one that kept 2 while the replica is at 4 would halt 5 as a gap, or write 3 over 4.
    await b._on_revoked({tp})
    await a._on_assigned({tp})
    with capture_logs() as logs:
        await apply(a, tp, record(a, 3, 3), record(a, 4, 4), record(a, 5, 5))
    assert not [e for e in logs if e["log_level"] in ("warning", "error")], logs
    pos = Replica(tmp_path, GROUP, "v").position()
    assert (pos.seq, pos.halt, pos.partition, pos.offset) == (5, None, 0, 4)
    assert a._consumer.commits[-1] == {tp: 5}
    want = bytearray(4 * BLOCK)
    for seq in (4, 5, 2, 3):  # 4 and 0 share the first block; 5 and 1 the second
        want[(seq % 4) * BLOCK : (seq % 4 + 1) * BLOCK] = bytes([seq]) * BLOCK
    assert image(tmp_path) == bytes(want)
    close(a, b)


async def test_a_process_that_missed_its_revocation_writes_nothing_over_the_replica(
    tmp_path: Path,
) -> None:
    """A zombie (its session expired while it stalled) still holds seq 2; the new owner applied up
    to 4. Its next batch must not land on the replica: it drops its state and reads again."""
    a, b = applier(tmp_path), applier(tmp_path)
    tp = TopicPartition(a.topic(GROUP), 0)
    await a._on_assigned({tp})
    await apply(a, tp, record(a, 1, 1), record(a, 2, 2))
    await b._on_assigned({tp})  # A was never told
    await apply(b, tp, record(b, 3, 3), record(b, 4, 4))
    before = image(tmp_path)
    with capture_logs() as logs:
        await apply(a, tp, record(a, 3, 0xEE), record(a, 4, 0xEE))  # what A believes comes next
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "the replica moved on without this process (another VDSA applies the volume): what this "
        "process read of it is dropped, the replica's position stands"
    ]
    assert image(tmp_path) == before
    assert Replica(tmp_path, GROUP, "v").position().seq == 4
    assert a.volumes == {}
    assert a._consumer.seeks[-1] == (tp, 2)  # read again from the batch's start
    assert a._consumer.commits == [{tp: 2}]  # nothing committed for the dropped batch
    # Read again, the same records are redeliveries below the saved position.
    await apply(a, tp, record(a, 3, 3), record(a, 4, 4))
    assert image(tmp_path) == before and a._consumer.commits[-1] == {tp: 4}
    close(a, b)


async def test_a_revoked_partitions_resume_timer_is_cancelled(tmp_path: Path) -> None:
    a = applier(tmp_path, history_s=3600)
    tp = TopicPartition(a.topic(GROUP), 0)
    await a._on_assigned({tp})
    await apply(a, tp, record(a, 1, 1, ts=now_us()))  # too young: paused until it ages
    assert tp in a._consumer.paused
    timer = a._timers[tp]
    await a._on_revoked({tp})
    assert timer.cancelled() and a._timers == {}
    a._resume(tp)  # a timer that fired anyway resumes nothing it no longer owns
    assert tp in a._consumer.paused
    close(a)


async def test_records_of_a_partition_no_longer_owned_are_not_applied(tmp_path: Path) -> None:
    a = applier(tmp_path)
    tp = TopicPartition(a.topic(GROUP), 0)
    await a._on_assigned({TopicPartition(a.topic(GROUP), 1)})
    await apply(a, tp, record(a, 1, 1))
    assert a.volumes == {} and a._consumer.commits == []
    assert not Replica(tmp_path, GROUP, "v").image.exists()


def marker(a: Applier, seq: int, checkpoint: str) -> Any:
    body = {"id": checkpoint, "ts": 1, "tag": None, "volumes": ["v"], "volume_size": 4 * BLOCK}
    value = a.codec.encode(
        "DiskEvent",
        {
            "volume": "v",
            "seq": seq,
            "ts": 1,
            "host": "hv1",
            "group": GROUP,
            "body": ("Checkpoint", body),
        },
    )
    return SimpleNamespace(value=value, key=b"v", offset=seq - 1)


async def test_a_kept_checkpoint_holds_again_at_the_partitions_new_owner(tmp_path: Path) -> None:
    a, b = applier(tmp_path), applier(tmp_path)
    for x in (a, b):  # both follow the control topic: both know the checkpoint is kept
        x.holds.keeps.apply(TagRequest(GROUP, "cp1", "gold", True, "", 1, "test"))
    tp = TopicPartition(a.topic(GROUP), 0)
    await a._on_assigned({tp})
    await apply(a, tp, record(a, 1, 1), marker(a, 2, "cp1"), record(a, 3, 3))
    assert tp in a._held_tps and tp in a._consumer.paused
    assert a._consumer.commits == [{tp: 1}]  # up to the marker, not past it
    await a._on_revoked({tp})
    assert a._held_tps == {} and a.volumes == {}
    # The new owner reads from the committed offset: the marker again, and it holds there.
    await b._on_assigned({tp})
    before = image(tmp_path)
    await apply(b, tp, marker(b, 2, "cp1"), record(b, 3, 3))
    assert tp in b._held_tps and tp in b._consumer.paused
    assert b.volumes[(GROUP, "v")].held_at == "cp1"
    assert Replica(tmp_path, GROUP, "v").position().seq == 2
    assert image(tmp_path) == before  # 3 waits for the release
    assert b._consumer.commits == [{tp: 1}]
    close(a, b)
