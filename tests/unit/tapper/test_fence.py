"""The write fence: who fences, who may lift it, and that it survives a restart (no broker)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.settings import TapstreamSettings
from tapstream.tapper import metrics
from tapstream.tapper.checkpoint import resync_ranges
from tapstream.tapper.fence import Decision, Fence, FenceFile, decide
from tapstream.tapper.fencing import Fences, decode_command


def cmd(kind: str, group: str = "g1", cid: str = "c1", **args: str) -> dict[str, Any]:
    return {"id": cid, "group": group, "kind": kind, "ts": 1_000, "args": args}


def pause(owner: str | None = None, cid: str = "p1") -> dict[str, Any]:
    return cmd("PAUSE", cid=cid, writes="refuse", **({"owner": owner} if owner else {}))


def resume(owner: str | None = None) -> dict[str, Any]:
    return cmd("RESUME", cid="r1", writes="allow", **({"owner": owner} if owner else {}))


def test_pause_fences_for_its_owner_or_its_command_id() -> None:
    d = decide(Fence("g1"), pause("op-a"))
    assert d.changed and d.fence.owners == {"op-a"} and d.fence.command == "p1"
    assert "op-a" in (d.fence.reason or "")
    assert decide(Fence("g1"), pause(cid="cmd-7")).fence.owners == {"cmd-7"}


def test_resume_with_the_owner_or_without_one_lifts_it() -> None:
    fenced = decide(Fence("g1"), pause("op-a")).fence
    for r in (resume("op-a"), resume()):
        d = decide(fenced, r)
        assert d.changed and not d.fence.fenced and d.fence.reason is None


def test_resume_of_another_operation_is_ignored_with_a_warning_naming_both() -> None:
    fenced = decide(Fence("g1"), pause("op-a")).fence
    d = decide(fenced, resume("op-b"))
    assert not d.changed and d.fence == fenced
    assert d.warning is not None and "op-a" in d.warning and "op-b" in d.warning


def test_a_fence_of_two_operations_needs_both_resumes() -> None:
    f = decide(decide(Fence("g1"), pause("op-a")).fence, pause("op-b", cid="p2")).fence
    f = decide(f, resume("op-b")).fence
    assert f.owners == {"op-a"}  # op-a's fence still stands
    assert not decide(f, resume("op-a")).fence.fenced


def test_other_commands_and_other_groups_leave_the_fence() -> None:
    fenced = decide(Fence("g1"), pause("op-a")).fence
    for c in (
        cmd("PAUSE", writes="allow"),
        cmd("CHECKPOINT_PREPARE"),
        cmd("RESYNC", vol="all"),
        {**resume(), "group": "g2"},
    ):
        assert decide(fenced, c) == Decision(fenced, False)
    assert not decide(Fence("g1"), resume("op-a")).changed  # nothing to lift


def test_file_round_trip_and_replace(tmp_path: Path) -> None:
    f = FenceFile(tmp_path / "state", "g1")
    assert f.read() == Fence("g1")
    fence = Fence("g1", frozenset({"op-a"}), "p1", 5, {0: 42})
    f.write(fence)
    assert f.read() == fence
    assert json.loads(f.path.read_text())["fenced"] is True
    f.write(Fence("g1", offsets={0: 43}))
    assert f.read() == Fence("g1", offsets={0: 43})
    assert sorted(p.name for p in f.path.parent.iterdir()) == ["fence.g1.json"]  # no tmp left


def test_a_corrupt_file_stops_the_start(tmp_path: Path) -> None:
    f = FenceFile(tmp_path, "g1")
    f.path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        f.read()
    f.path.write_text('{"offsets": {}}')
    with pytest.raises(ValueError, match="corrupt"):
        f.read()


@dataclass
class Vol:
    group: str
    fenced: str | None = None


def test_fences_enforce_persist_and_reload(tmp_path: Path) -> None:
    vols = [Vol("g1"), Vol("g1"), Vol("g2")]
    fences = Fences(tmp_path, ["g1", "g2"], lambda: vols)
    fences.load()
    asyncio.run(fences.on_command(pause("op-a"), 0, 9))
    assert vols[0].fenced and vols[1].fenced and vols[2].fenced is None
    assert metrics.FENCED.labels("g1")._value.get() == 1
    assert metrics.FENCED.labels("g2")._value.get() == 0
    # A restart: a new process loads the saved fence before it serves.
    again = [Vol("g1"), Vol("g2")]
    restarted = Fences(tmp_path, ["g1", "g2"], lambda: again)
    restarted.load()
    assert again[0].fenced and "op-a" in again[0].fenced and again[1].fenced is None
    assert restarted.state["g1"].offsets == {0: 10}  # the replay goes on after the PAUSE
    asyncio.run(restarted.on_command(resume("op-b"), 0, 10))
    assert again[0].fenced  # the wrong owner
    asyncio.run(restarted.on_command(resume("op-a"), 0, 11))
    assert again[0].fenced is None
    assert metrics.FENCED.labels("g1")._value.get() == 0
    assert FenceFile(tmp_path, "g1").read() == Fence("g1", frozenset(), "r1", 1_000, {0: 12})


def test_resync_ranges() -> None:
    assert resync_ranges("all", 1 << 20) == [(0, 1 << 20)]
    assert resync_ranges("0-4096,8192-16384", 1 << 20) == [(0, 4096), (8192, 16384)]
    assert resync_ranges("0-4096,4096-99999999", 8192) == [(0, 4096), (4096, 8192)]


def test_control_records_that_are_not_commands_are_skipped() -> None:
    codec = make_codec(TapstreamSettings())
    command = {**pause("op-a"), "sender": "t", "checkpoint_id": None, "tag": None, "volumes": []}
    command |= {"key_id": None, "signature": None}
    assert decode_command(codec, codec.encode("Command", command)) == command
    flush = {"volume": "v", "seq": 1, "ts": 1, "host": "h", "group": "g1"}
    foreign = codec.encode("DiskEvent", {**flush, "body": ("Flush", {"fua": False})})
    for value in (None, b"", b"garbage", foreign):
        assert decode_command(codec, value) is None
