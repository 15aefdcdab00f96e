"""The journal index is a projection: dropped and rebuilt from the mirrored topic, it is the same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tapstream.journal.store import JournalStore
from tapstream.vdsa.coordinator import create_checkpoint

from .services_harness import start_service, stop, wait_until
from .tapper_harness import run, start_tapper

pytestmark = pytest.mark.integration


def snapshot(stack, group: str) -> tuple[list, list]:
    async def q() -> tuple[list, list]:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            assert store.pool
            ev = await store.pool.fetch(
                "select volume, seq, kind, off, len, ts, topic, kpartition, koffset, "
                "checksum from journal_events where group_name=$1 order by volume, seq",
                group,
            )
            cps = await store.pool.fetch(
                "select id, tag, ts, volume, seq, volume_size from journal_checkpoints "
                "where group_name=$1 order by ts, volume",
                group,
            )
            return [tuple(r) for r in ev], [tuple(r) for r in cps]
        finally:
            await store.stop()

    return asyncio.run(q())


def test_rebuild_gives_the_same_index(stack, tmp_path: Path, unique_name: str) -> None:
    vol = tmp_path / "v.img"
    with open(vol, "wb") as f:
        f.truncate(16 << 20)
    tapper = start_tapper(stack, tmp_path, unique_name, {"v": vol})
    try:
        run(
            [
                "fio",
                "--name=w",
                "--ioengine=nbd",
                f"--uri={tapper.uri('v')}",
                "--rw=randwrite",
                "--bs=4k",
                "--size=2M",
                "--iodepth=4",
                "--verify_state_save=0",
            ]
        )
        asyncio.run(create_checkpoint(stack.settings, unique_name, "one"))
        run(
            [
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "write -z 0 64k",
                "-c",
                "discard 1M 64k",
                tapper.uri("v"),
            ]
        )
        asyncio.run(create_checkpoint(stack.settings, unique_name, "two"))
    finally:
        assert tapper.stop() == 0
    groups = {"TAPSTREAM_JOURNAL_GROUPS": json.dumps([unique_name])}
    journal = start_service(stack, "tapstream.journal", tmp_path, groups, "journal")
    try:

        def indexed() -> tuple[list, list] | None:
            snap = snapshot(stack, unique_name)
            return snap if len(snap[1]) == 2 else None

        before = wait_until("both checkpoints indexed", indexed)
    finally:
        assert stop(journal) == 0
    rebuilt = start_service(
        stack,
        "tapstream.journal",
        tmp_path,
        {**groups, "TAPSTREAM_JOURNAL_REBUILD": "true"},
        "journal-rebuild",
    )
    try:
        log = tmp_path / "journal-rebuild.log"
        wait_until(
            "the journal to drop the index", lambda: "rebuilding from the topic" in log.read_text()
        )
        after = wait_until(
            "the rebuilt index to match",
            lambda: (snap := snapshot(stack, unique_name)) == before and snap,
        )
    finally:
        assert stop(rebuilt) == 0
    assert after == before and len(before[0]) > 500
