"""The write fence survives a tapper restart (split brain, DESIGN §6 "Fencing"), is lifted only by
its owner, is rebuilt from tapstream.control when it was sent while the tapper was down (old
checkpoint commands are not acted on), and RESYNC "all" resends the whole volume."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.kafka import client_config, producer_config
from tapstream.core.replay import read_stream
from tapstream.localstack import faults

from .services_harness import wait_until
from .tapper_harness import blank_volume, start_tapper

pytestmark = pytest.mark.integration
SIZE = 4 * 1024 * 1024


def send(stack, group: str, kind: str, args: dict[str, str], cp: str | None = None) -> str:
    settings = stack.settings
    cid = str(uuid.uuid4())
    command = {
        "id": cid,
        "group": group,
        "kind": kind,
        "sender": "test",
        "ts": time.time_ns() // 1000,
        "checkpoint_id": cp,
        "tag": None,
        "volumes": [],
        "args": args,
    }
    # As a site manager would: signed with the stack's control key.
    value = make_codec(settings).encode("Command", sign(command, Keyring.from_settings(settings)))
    p = Producer(producer_config(settings, linger_ms=0))
    p.produce(settings.topic("control"), value, key=group.encode())
    assert p.flush(30) == 0
    return cid


def try_write(uri: str) -> str:
    """'ok', or the errno name of a 4 KiB NBD write's error."""
    res = subprocess.run(
        [
            "/usr/bin/python3",
            "-m",
            "nbd",
            "-u",
            uri,
            "-c",
            """
try:
    h.pwrite(b"\\x5a" * 4096, 0); print("ok")
except nbd.Error as e:
    print(e.errno)
""",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def records(stack, topic: str) -> list[dict[str, Any]]:
    settings = stack.settings
    return [r for _p, _o, r in read_stream(client_config(settings), topic, make_codec(settings))]


def control(stack, group: str, kind: str) -> list[dict[str, Any]]:
    return [
        r
        for r in records(stack, stack.settings.topic("control"))
        if r["group"] == group and r["kind"] == kind
    ]


def bodies(stack, group: str, kind: str) -> list[dict[str, Any]]:
    topic = stack.settings.topic(f"writes.{group}")
    return [r["body"][1] for r in records(stack, topic) if r["body"][0] == kind]


def test_fence_survives_sigkill_and_only_its_owner_lifts_it(stack, tmp_path: Path) -> None:
    group = f"fence-{uuid.uuid4().hex[:8]}"
    vol = blank_volume(tmp_path, "vol", SIZE)
    tapper = start_tapper(stack, tmp_path, group, {"vol": vol})
    try:
        assert try_write(tapper.uri("vol")) == "ok"
        send(stack, group, "PAUSE", {"writes": "refuse", "owner": "op-move"})
        wait_until("writes refused", lambda: try_write(tapper.uri("vol")) == "EPERM", 30)
        assert tapper.stop(signal.SIGKILL) == -signal.SIGKILL

        tapper = start_tapper(stack, tmp_path, group, {"vol": vol})
        assert try_write(tapper.uri("vol")) == "EPERM"  # at once: loaded before it listened

        resume = send(stack, group, "RESUME", {"writes": "allow", "owner": "op-other"})
        wait_until(
            "the wrong owner's RESUME logged as ignored",
            lambda: "op-other" in tapper.log.read_text() and resume in tapper.log.read_text(),
            30,
        )
        assert try_write(tapper.uri("vol")) == "EPERM"

        send(stack, group, "RESUME", {"writes": "allow", "owner": "op-move"})
        wait_until("writes allowed", lambda: try_write(tapper.uri("vol")) == "ok", 30)
        assert tapper.stop() == 0
        # Lifted for good: a restart keeps it lifted.
        tapper = start_tapper(stack, tmp_path, group, {"vol": vol})
        assert try_write(tapper.uri("vol")) == "ok"
        faults.record(
            {
                "scenario": "fenced-tapper-sigkill",
                "fault": "a fenced tapper SIGKILLed and restarted (split brain if the fence is lost)",
                "load": "qemu-io writes",
                "acked": 0,  # every write while fenced was refused with EPERM, after the restart too
                "lost": 0,
            }
        )
    finally:
        tapper.stop(signal.SIGKILL)


def test_fence_sent_while_down_holds_and_old_commands_are_not_acted_on(
    stack, tmp_path: Path
) -> None:
    group = f"fence-down-{uuid.uuid4().hex[:8]}"
    vol = blank_volume(tmp_path, "vol", SIZE)
    tapper = start_tapper(stack, tmp_path, group, {"vol": vol})
    assert try_write(tapper.uri("vol")) == "ok"
    assert tapper.stop(signal.SIGKILL) == -signal.SIGKILL
    # While it is down: a fence, a checkpoint PREPARE and a RESYNC, all older than the next start.
    send(stack, group, "PAUSE", {"writes": "refuse", "owner": "op-failover"})
    old_cp = str(uuid.uuid4())
    send(stack, group, "CHECKPOINT_PREPARE", {}, cp=old_cp)
    send(stack, group, "RESYNC", {"vol": "all"})

    tapper = start_tapper(stack, tmp_path, group, {"vol": vol})
    try:
        assert try_write(tapper.uri("vol")) == "EPERM"
        # A live checkpoint: commands are handled in order, so an answer to the old PREPARE or
        # a sync for the old RESYNC would come before these.
        cp = str(uuid.uuid4())
        send(stack, group, "CHECKPOINT_PREPARE", {}, cp=cp)
        wait_until(
            "PREPARED for the live checkpoint",
            lambda: any(
                r["checkpoint_id"] == cp for r in control(stack, group, "CHECKPOINT_PREPARED")
            ),
            30,
        )
        send(stack, group, "CHECKPOINT_COMMIT", {}, cp=cp)
        wait_until(
            "the live checkpoint's marker",
            lambda: any(b["id"] == cp for b in bodies(stack, group, "Checkpoint")),
            30,
        )
        assert [r["checkpoint_id"] for r in control(stack, group, "CHECKPOINT_PREPARED")] == [cp]
        assert bodies(stack, group, "SyncStart") == []
    finally:
        tapper.stop(signal.SIGKILL)


def test_resync_all_resends_the_whole_volume(stack, tmp_path: Path) -> None:
    group = f"resync-all-{uuid.uuid4().hex[:8]}"
    vol = blank_volume(tmp_path, "vol", SIZE)
    tapper = start_tapper(stack, tmp_path, group, {"vol": vol})
    try:
        assert try_write(tapper.uri("vol")) == "ok"
        send(stack, group, "RESYNC", {"vol": "all"})
        start = wait_until("a SyncStart", lambda: bodies(stack, group, "SyncStart"), 30)
        assert isinstance(start, list) and len(start) == 1
        sync = start[0]
        assert sync["bytes_total"] == SIZE and sync["volume_size"] == SIZE
        assert sync["kind"] == "DELTA"
        end = wait_until(
            "its SyncEnd",
            lambda: [b for b in bodies(stack, group, "SyncEnd") if b["sync_id"] == sync["sync_id"]],
            60,
        )
        assert isinstance(end, list) and end[0]["bytes"] == SIZE
        blocks = [
            b for b in bodies(stack, group, "SyncBlock") if b.get("sync_id") == sync["sync_id"]
        ]
        assert len(blocks) == end[0]["blocks"] > 0
        assert sum(b["length"] for b in blocks) == SIZE
        assert sorted(b["offset"] for b in blocks)[0] == 0
    finally:
        tapper.stop(signal.SIGKILL)
