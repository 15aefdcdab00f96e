"""The stream contract: consecutive seq, checksums, sync brackets, halt and heal (no I/O)."""

from __future__ import annotations

import crc32c
import pytest

from tapstream.core.contract import Cursor, Halt


def write(seq: int, data: bytes = b"abc", offset: int = 0, checksum: int | None = None) -> dict:
    crc = crc32c.crc32c(data) if checksum is None else checksum
    body = {"offset": offset, "length": len(data), "data": data, "checksum": crc}
    return {"seq": seq, "body": ("Write", body)}


def sync_start(seq: int, sync_id: str, kind: str = "DELTA", total: int = 4096) -> dict:
    body = {"sync_id": sync_id, "kind": kind, "volume_size": 4096, "bytes_total": total}
    return {"seq": seq, "body": ("SyncStart", body)}


def sync_block(seq: int, sync_id: str, data: bytes = b"x" * 16) -> dict:
    body = {
        "sync_id": sync_id,
        "offset": 0,
        "length": len(data),
        "data": data,
        "checksum": crc32c.crc32c(data),
    }
    return {"seq": seq, "body": ("SyncBlock", body)}


def sync_end(seq: int, sync_id: str) -> dict:
    return {"seq": seq, "body": ("SyncEnd", {"sync_id": sync_id, "blocks": 1, "bytes": 16})}


def run(cursor: Cursor, *records: dict) -> list[str]:
    verdicts = []
    for r in records:
        v = cursor.check(r)
        if v in ("apply", "heal"):
            cursor.advance(r)
        verdicts.append(v)
    return verdicts


def test_consecutive_events_apply_and_redeliveries_are_skipped() -> None:
    c = Cursor("v")
    assert run(c, write(1), write(2), write(1), write(2), write(3)) == [
        "apply",
        "apply",
        "duplicate",
        "duplicate",
        "apply",
    ]
    assert c.seq == 3


def test_a_gap_halts_and_names_what_is_missing() -> None:
    c = Cursor("v", seq=5)
    with pytest.raises(Halt) as exc:
        c.check(write(9))
    assert exc.value.reason == "gap" and "expected seq 6, got 9" in exc.value.detail
    assert c.seq == 5  # check changes nothing


def test_a_stream_that_starts_after_seq_1_is_a_gap_on_a_blank_replica() -> None:
    # Retention (or a deleted topic) took the first events: the replica would miss them.
    with pytest.raises(Halt, match="gap"):
        Cursor("v").check(write(40))


def test_bad_checksum_and_bad_length_halt() -> None:
    with pytest.raises(Halt) as exc:
        Cursor("v").check(write(1, checksum=crc32c.crc32c(b"abc") ^ 1))
    assert exc.value.reason == "checksum"
    rec = write(1)
    rec["body"][1]["length"] = 2
    with pytest.raises(Halt, match="checksum"):
        Cursor("v").check(rec)


def test_sync_blocks_need_an_open_sync() -> None:
    c = Cursor("v")
    with pytest.raises(Halt) as exc:
        c.check(sync_block(1, "s1"))
    assert exc.value.reason == "bracket"
    assert run(c, sync_start(1, "s1"), sync_block(2, "s1"), sync_end(3, "s1")) == ["apply"] * 3
    assert c.open_syncs == []
    with pytest.raises(Halt, match="bracket"):
        c.check(sync_block(4, "s1"))  # closed


def test_interleaved_and_abandoned_syncs_stay_valid() -> None:
    # A crash mid-sync leaves s1 open forever; a RESYNC may run beside a recovery delta.
    c = Cursor("v")
    recs = [sync_start(1, "s1"), sync_block(2, "s1"), sync_start(3, "s2"), sync_start(4, "s3")]
    recs += [sync_block(5, "s2"), sync_block(6, "s3"), sync_end(7, "s3"), sync_block(8, "s2")]
    assert run(c, *recs) == ["apply"] * 8
    assert c.open_syncs == ["s1", "s2"]


def test_halted_volume_waits_for_a_sync_of_the_whole_volume() -> None:
    c = Cursor("v", seq=10)
    with pytest.raises(Halt) as exc:
        c.check(write(12))
    c.stop(exc.value)
    assert c.halt == {"reason": "gap", "detail": exc.value.detail, "seq": 12}
    partial = sync_start(13, "p", total=1024)  # a delta of some regions cannot heal a hole
    assert run(c, write(13), partial, sync_block(14, "p")) == ["halted"] * 3
    assert run(c, sync_start(15, "full"), sync_block(16, "full"), sync_end(17, "full")) == [
        "heal",
        "apply",
        "apply",
    ]
    assert c.halt is None and c.seq == 17 and c.open_syncs == []
    assert run(c, write(18)) == ["apply"]


def test_a_blank_replica_heals_on_any_sync() -> None:
    # A new replica reading a topic whose start retention removed: an INITIAL sync gives it all.
    c = Cursor("v")
    assert run(c, sync_start(50, "i", kind="INITIAL", total=100), sync_block(51, "i")) == [
        "heal",
        "apply",
    ]


def test_cursor_round_trips_through_json() -> None:
    c = Cursor("v", 7, ["s1"], {"reason": "gap", "detail": "d", "seq": 9})
    assert Cursor.from_json("v", c.to_json()) == c
    assert Cursor.from_json("v", {}) == Cursor("v")


def test_a_hole_right_before_a_sync_of_the_whole_volume_heals_without_halting() -> None:
    # Kafka lost acknowledged events; the tapper continued after them with a full resend.
    c = Cursor("v", seq=10)
    assert run(c, sync_start(15, "full"), sync_block(16, "full")) == ["heal", "apply"]
    with pytest.raises(Halt, match="gap"):
        Cursor("v", seq=10).check(sync_start(15, "part", total=100))  # a partial one cannot
