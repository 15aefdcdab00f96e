"""A kept checkpoint (CHECKPOINT_TAG, what the encryption analyzer publishes after an alert) outlives
the journal history: the recovery VDSA holds the replica at it, the journal shows it kept and resolves
its tag, and a restore by that tag is byte-identical to the volume at the checkpoint. Released, the
replica moves on."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tapstream.core.replica import Replica
from tapstream.journal.restore import restore
from tapstream.journal.store import JournalStore
from tapstream.vdsa.coordinator import create_checkpoint
from tapstream.vdsa.holds import send_tag

from .services_harness import groups_env, start_service, stop, wait_until
from .tapper_harness import blank_volume, images_equal, run, start_tapper
from .test_recovery import SIZE, checkpoints_indexed, fio

pytestmark = pytest.mark.integration
HISTORY_S = 5.0


def find(stack, group: str, ref: str) -> dict | None:
    async def q() -> dict | None:
        store = JournalStore(stack.recovery_database_url)
        await store.start()
        try:
            return await store.find_checkpoint(group, "disk0", ref)
        finally:
            await store.stop()

    return asyncio.run(q())


def test_kept_checkpoint_outlives_the_history_until_released(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    vol = blank_volume(tmp_path, "disk0", SIZE)
    replicas = tmp_path / "replicas"
    env = {**stack.env, "TAPSTREAM_REPLICA_DIR": str(replicas)}
    settings = stack.settings.model_copy(update={"replica_dir": replicas})
    tapper = start_tapper(stack, tmp_path, group, {"disk0": vol})
    journal = start_service(
        stack, "tapstream.journal", tmp_path, groups_env("JOURNAL", group), "journal"
    )
    vdsa_env = {
        **groups_env("VDSA", group),
        "TAPSTREAM_SITE": "recovery",
        "TAPSTREAM_REPLICA_DIR": str(replicas),
        "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": str(HISTORY_S),
        "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
    }
    vdsa = start_service(stack, "tapstream.vdsa", tmp_path, vdsa_env, "vdsa")
    replica = Replica(replicas, group, "disk0")
    try:
        fio(tapper.uri("disk0"), seed=3000)
        a = asyncio.run(create_checkpoint(settings, group, "before-upgrade"))
        shutil.copyfile(vol, tmp_path / "at-a.img")  # no writes in flight: the volume is exactly A
        # What the analyzer does after an alert; must reach the VDSA before A ages past the history.
        asyncio.run(
            send_tag(
                settings, group, a, "last-clean", True, sender="analyzer.test", reason="encryption"
            )
        )
        fio(tapper.uri("disk0"), seed=3001)
        b = asyncio.run(create_checkpoint(settings, group, "after"))
        b_time = time.time()
        shutil.copyfile(vol, tmp_path / "at-b.img")
        assert (tmp_path / "at-a.img").read_bytes() != (tmp_path / "at-b.img").read_bytes()

        wait_until("both checkpoints indexed", lambda: len(checkpoints_indexed(stack, group)) == 2)
        a_seq = find(stack, group, a)["seq"]  # type: ignore[index]
        b_seq = find(stack, group, b)["seq"]  # type: ignore[index]
        wait_until("the replica held at A", lambda: replica.position().seq == a_seq, timeout=30)
        # Past the history everything up to B would have been applied without the hold.
        wait_until(
            "B aged past the history", lambda: time.time() > b_time + HISTORY_S + 3, timeout=30
        )
        assert replica.position().seq == a_seq, "the replica passed the kept checkpoint"
        images_equal(tmp_path / "at-a.img", replica.image)
        assert "replica held at a kept checkpoint" in (tmp_path / "vdsa.log").read_text()
        # Saved beside the replica too, so the hold outlives the control topic's retention.
        assert list(json.loads((replicas / group / "kept.json").read_text())) == [a]
        # Holds survive a crash: the hold is re-read from the control topic, the marker read again.
        vdsa.send_signal(signal.SIGKILL)
        vdsa.wait(10)
        vdsa = start_service(stack, "tapstream.vdsa", tmp_path, vdsa_env, "vdsa2")
        wait_until(
            "the restarted VDSA holding at A",
            lambda: "replica held at a kept checkpoint" in (tmp_path / "vdsa2.log").read_text(),
            timeout=30,
        )
        assert replica.position().seq == a_seq

        # The operator's view: A keeps its own tag, gains last-clean, is kept and still restorable.
        listing = json.loads(
            run(
                [sys.executable, "-m", "tapstream.cli.main", "checkpoint", "list", group, "--json"],
                env=env,
            ).stdout
        )
        row_a = next(r for r in listing if r["id"] == a)
        assert (row_a["tag"], row_a["tags"], row_a["kept"], row_a["restorable"]) == (
            "before-upgrade",
            ["last-clean"],
            True,
            True,
        )
        assert next(r for r in listing if r["id"] == b)["kept"] is False
        assert find(stack, group, "before-upgrade")["id"] == a  # type: ignore[index]

        res = asyncio.run(
            restore(settings, group, "disk0", "last-clean", tmp_path / "restored-a.img")
        )
        assert (res.checkpoint_id, res.replica_seq, res.events_applied) == (a, a_seq, 0)
        images_equal(tmp_path / "at-a.img", tmp_path / "restored-a.img")
        # The journal still holds what came after A (trim stops at the replica), so B restores too.
        asyncio.run(restore(settings, group, "disk0", b, tmp_path / "restored-b.img"))
        images_equal(tmp_path / "at-b.img", tmp_path / "restored-b.img")

        # Released (by tag, through the CLI): the replica moves on to B and beyond.
        run(
            [
                sys.executable,
                "-m",
                "tapstream.cli.main",
                "checkpoint",
                "release",
                group,
                "last-clean",
            ],
            env=env,
        )
        wait_until("the replica past A", lambda: replica.position().seq >= b_seq, timeout=30)
        images_equal(tmp_path / "at-b.img", replica.image)
        wait_until(
            "the journal showing A released",
            lambda: not next(r for r in checkpoints_indexed(stack, group) if r["id"] == a)["kept"],
            timeout=30,
        )
        assert "kept checkpoint released" in (tmp_path / "vdsa2.log").read_text()

        # Asked again once the replica passed it: too late, and the VDSA says so.
        asyncio.run(send_tag(settings, group, a, "too-late", True, sender="analyzer.test"))
        wait_until(
            "the VDSA warning that A cannot be kept any more",
            lambda: "already applied to the replica" in (tmp_path / "vdsa2.log").read_text(),
            timeout=30,
        )
        assert replica.position().seq >= b_seq
        # A rebuilt index gets its tags back from the control topic.
        stop(journal)
        journal = start_service(
            stack,
            "tapstream.journal",
            tmp_path,
            {**groups_env("JOURNAL", group), "TAPSTREAM_JOURNAL_REBUILD": "true"},
            "journal2",
        )
        wait_until(
            "A's tags back after the rebuild",
            lambda: (
                [(r["tags"], r["kept"]) for r in checkpoints_indexed(stack, group) if r["id"] == a]
                == [(["last-clean", "too-late"], True)]
            ),
            timeout=30,
        )
    finally:
        assert tapper.stop() == 0
        stop(journal)
        stop(vdsa)
