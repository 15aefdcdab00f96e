"""The recovery side scales out (issue 13, item 6): two VDSA and two journal processes share the
partitions of a group's topic through their consumer groups (tapstream-vdsa-apply,
tapstream-journal-index). Four volumes, one partition each, are written by fio (nbd engine) through
the tapper while all four processes run; one VDSA and one journal are SIGKILLed mid-stream and the
writes go on; the survivors take their partitions over. Then a checkpoint: a restore at it (replica
plus journal window) is byte-identical to every protected volume, and so is every replica once it
reaches it. Also: a journal write whose partition another process moved lands nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tapstream.core.ports import free_port
from tapstream.core.replica import Replica
from tapstream.journal.restore import restore
from tapstream.journal.rows import EventRow
from tapstream.journal.store import JournalStore, StaleOffsets
from tapstream.vdsa.coordinator import create_checkpoint

from .services_harness import metric, start_service, stop, wait_until
from .tapper_harness import blank_volume, images_equal, qemu_write, start_tapper
from .test_recovery import checkpoints_indexed

pytestmark = pytest.mark.integration
SIZE = 16 * 1024 * 1024
VOLUMES = ["v0", "v1", "v4", "v5"]  # keys that librdkafka's partitioner spreads over 4 partitions
HISTORY_S = 5.0  # the replicas trail by this much, so restores combine replica and journal


def fio(uris: dict[str, str], seconds: int, seed: int) -> subprocess.Popen[bytes]:
    """One fio job per volume: random 4k-64k writes of random data at a steady 256 KiB/s each."""
    cmd = [
        "fio",
        "--ioengine=nbd",
        "--rw=randwrite",
        "--bsrange=4k-64k",
        "--iodepth=4",
        "--size=16M",
        "--time_based",
        f"--runtime={seconds}",
        "--rate=256k",
        "--refill_buffers",
        f"--randseed={seed}",
        "--verify_state_save=0",
    ]
    for v, uri in uris.items():
        cmd += [f"--name={v}", f"--uri={uri}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def marker_seqs(stack, group: str, checkpoint: str) -> dict[str, int]:
    async def q() -> dict[str, int]:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            found = {v: await store.find_checkpoint(group, v, checkpoint) for v in VOLUMES}
            return {v: row["seq"] for v, row in found.items() if row}
        finally:
            await store.stop()

    return asyncio.run(q())


def test_two_vdsas_and_two_journals_share_a_group_and_survive_losing_one_each(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    replicas = tmp_path / "replicas"
    settings = stack.settings.model_copy(update={"replica_dir": replicas})
    vols = {v: blank_volume(tmp_path, v, SIZE) for v in VOLUMES}
    tapper = start_tapper(stack, tmp_path, group, vols)  # one partition per volume
    uris = {v: tapper.uri(v) for v in VOLUMES}
    for v in VOLUMES:  # the first writes create the topic, MirrorMaker 2 mirrors it
        qemu_write(uris[v], 0, 0x11)
    vdsa_ports, journal_ports = [free_port(), free_port()], [free_port(), free_port()]
    journals = [
        start_service(
            stack,
            "tapstream.journal",
            tmp_path,
            {
                "TAPSTREAM_JOURNAL_GROUPS": json.dumps([group]),
                "TAPSTREAM_JOURNAL_SHARE_PARTITIONS": "true",
                "TAPSTREAM_METRICS_PORT": str(port),
            },
            f"journal{i}",
        )
        for i, port in enumerate(journal_ports)
    ]
    vdsas = [
        start_service(
            stack,
            "tapstream.vdsa",
            tmp_path,
            {
                "TAPSTREAM_VDSA_GROUPS": json.dumps([group]),
                "TAPSTREAM_SITE": "recovery",
                "TAPSTREAM_REPLICA_DIR": str(replicas),
                "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": str(HISTORY_S),
                "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
                "TAPSTREAM_METRICS_PORT": str(port),
            },
            f"vdsa{i}",
        )
        for i, port in enumerate(vdsa_ports)
    ]
    procs = [*journals, *vdsas]
    writer: subprocess.Popen[bytes] | None = None

    def gauge(port: int, name: str) -> float:
        for p in procs:
            assert p.poll() is None, f"a service exited with {p.returncode}: see {tmp_path}"
        try:
            return metric(port, name)
        except (OSError, httpx.HTTPError):
            return 0.0  # its metrics endpoint is not up yet

    def shares(ports: list[int], name: str) -> list[float]:
        return [gauge(p, name) for p in ports]

    try:
        # Both VDSAs and both journals own partitions of the topic, and each has done work.
        wait_until(
            "the two VDSAs sharing the 4 partitions",
            lambda: sorted(shares(vdsa_ports, "tapstream_vdsa_partitions")) == [2, 2],
            timeout=90,
        )
        wait_until(
            "the two journals sharing the 4 partitions",
            lambda: sorted(shares(journal_ports, "tapstream_journal_partitions")) == [2, 2],
            timeout=90,
        )
        writer = fio(uris, seconds=20, seed=7)
        vdsa_before = shares(vdsa_ports, "tapstream_vdsa_applied_events_total")
        journal_before = shares(journal_ports, "tapstream_journal_indexed_events_total")

        def both_grow(ports: list[int], name: str, before: list[float]) -> bool:
            return all(n > b for n, b in zip(shares(ports, name), before, strict=True))

        # Each journal indexes its partitions' writes; each VDSA applies its volumes' writes once
        # they are HISTORY_S old (so neither process can be idle).
        wait_until(
            "both journals indexing fio's writes",
            lambda: both_grow(
                journal_ports, "tapstream_journal_indexed_events_total", journal_before
            ),
            timeout=60,
        )
        wait_until(
            "both VDSAs applying",
            lambda: both_grow(vdsa_ports, "tapstream_vdsa_applied_events_total", vdsa_before),
            timeout=60,
        )
        assert writer.poll() is None, "fio ended before the kill: nothing is mid-stream"
        for victim in (vdsas[0], journals[0]):
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        procs = [journals[1], vdsas[1]]
        # The survivors get every partition once the group drops the dead members (its session
        # timeout), while fio keeps writing.
        wait_until(
            "the surviving VDSA owning all 4 partitions",
            lambda: gauge(vdsa_ports[1], "tapstream_vdsa_partitions") == 4,
            timeout=60,
        )
        wait_until(
            "the surviving journal owning all 4 partitions",
            lambda: gauge(journal_ports[1], "tapstream_journal_partitions") == 4,
            timeout=60,
        )
        out, _ = writer.communicate(timeout=120)
        assert writer.returncode == 0, out.decode()[-2000:]

        cp = asyncio.run(create_checkpoint(settings, group, "after-the-kills"))
        for v, path in vols.items():  # no writes in flight: each volume is exactly the checkpoint
            shutil.copyfile(path, tmp_path / f"{v}-at-cp.img")
        wait_until(
            "the checkpoint indexed for every volume",
            lambda: len(marker_seqs(stack, group, cp)) == len(VOLUMES),
            timeout=60,
        )
        seqs = marker_seqs(stack, group, cp)
        for v in VOLUMES:
            got = tmp_path / f"{v}-restored.img"
            asyncio.run(restore(settings, group, v, cp, got))
            images_equal(tmp_path / f"{v}-at-cp.img", got)
        # Every replica reaches the checkpoint (the last event) and holds exactly the volume.
        wait_until(
            "every replica at the checkpoint",
            lambda: all(Replica(replicas, group, v).position().seq >= seqs[v] for v in VOLUMES),
            timeout=90,
            interval=0.5,
        )
        partitions = set()
        for v in VOLUMES:
            replica = Replica(replicas, group, v)
            pos = replica.position()
            assert pos.halt is None, (v, pos.halt)
            partitions.add(pos.partition)
            images_equal(tmp_path / f"{v}-at-cp.img", replica.image)
        assert len(partitions) == len(VOLUMES), f"volumes share partitions: {partitions}"
        assert "partitions assigned" in (tmp_path / "vdsa1.log").read_text()
        assert checkpoints_indexed(stack, group)[-1]["id"] == cp
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        assert tapper.stop() == 0
        for p in [*journals, *vdsas]:
            stop(p)


def test_a_journal_write_of_a_partition_another_process_moved_lands_nothing(
    stack, unique_name: str
) -> None:
    """Two journal processes that both believe they own a partition (one missed its revocation):
    the write that expects the stored offset it last saw wins; the other is rolled back whole."""
    topic = f"protected.tapstream.writes.{unique_name}"

    def row(seq: int) -> EventRow:
        return EventRow(unique_name, "v", seq, "Write", 0, 4, 1, topic, 0, seq - 1, None)

    async def go() -> tuple[dict[int, int], list[int]]:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            part = (topic, 0)
            await store.write([row(1)], [], {part: 1}, expect={part: None})
            with pytest.raises(StaleOffsets) as first_claim:  # the row exists now
                await store.write([row(2)], [], {part: 2}, expect={part: None})
            assert first_claim.value.parts == {part}
            await store.write([row(2)], [], {part: 2}, expect={part: 1})  # the owner goes on
            with pytest.raises(StaleOffsets):  # the one that missed its revocation
                await store.write([row(3)], [], {part: 3}, expect={part: 1})
            assert store.pool
            seqs = await store.pool.fetch(
                "select seq from journal_events where group_name=$1 order by seq", unique_name
            )
            offsets = await store.offsets(topic)
            await store.reset(topic, unique_name)
            return offsets, [r["seq"] for r in seqs]
        finally:
            await store.stop()

    offsets, seqs = asyncio.run(go())
    assert offsets == {0: 2}
    assert seqs == [1, 2]
