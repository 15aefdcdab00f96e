"""The SDK's dispatcher: order, dedupe after a restart, gaps, checkpoints; the built-in analyzers
driven through it with plain dicts as tables (no Kafka)."""

from __future__ import annotations

import os
import random

from tapstream.analyzer.encryption import EncryptionAnalyzer
from tapstream.analyzer.examples.write_sizes import WriteSizes
from tapstream.analyzer.sdk import AlertRequest, Dispatcher, Event, VolumeMeta
from tapstream.analyzer.settings import AnalyzerSettings
from tapstream.core.codec import make_codec
from tapstream.core.settings import TapstreamSettings

TEXT = (b"SELECT * FROM accounts WHERE id = 42; -- pgbench-like row text\n" * 20000)[: 1 << 20]
T0 = 1_700_000_000_000_000


def write(seq: int, offset: int, data: bytes, ts: int | None = None) -> Event:
    return Event(
        "g",
        "v",
        seq,
        ts or T0 + seq * 1000,
        "h",
        "Write",
        {"offset": offset, "length": len(data), "data": data, "checksum": 0},
    )


def checkpoint(seq: int, cid: str) -> Event:
    return Event(
        "g",
        "v",
        seq,
        T0 + seq * 1000,
        "h",
        "Checkpoint",
        {"id": cid, "ts": T0 + seq * 1000, "tag": None, "volumes": ["v"], "volume_size": 0},
    )


def test_encryption_analyzer_through_the_dispatcher_alerts_once() -> None:
    settings = AnalyzerSettings(_env_file=None)  # type: ignore[call-arg]
    d = Dispatcher(EncryptionAnalyzer(settings))
    meta, tables, alerts = VolumeMeta(), {"blocks": {}}, []
    events = [write(1, 0, TEXT), write(2, 1 << 20, TEXT), checkpoint(3, "cp-clean")]
    # Encryption a window later: the share counts that window's writes only.
    later = T0 + 20_000_000
    events += [
        write(4 + i, i << 20, random.Random(i).randbytes(1 << 20), later + i) for i in range(2)
    ]
    for ev in events:
        assert d.handle(ev, meta, tables, alerts.append) == "ok"
    assert len(alerts) == 1
    a: AlertRequest = alerts[0]
    assert a.volume == "v" and a.last_clean_checkpoint and a.last_clean_checkpoint.id == "cp-clean"
    # The share weighs the text written 20 s earlier at 2^(-20/60): 256 of 256 + 406.
    assert a.onset_ts == later and 0.35 < a.encrypted_share < 0.4 and a.tag_checkpoint
    assert a.score >= 1.0
    # A restart redelivers the last events: they are skipped, nothing alerts twice.
    restored = VolumeMeta.from_dict(meta.to_dict())
    assert [d.handle(ev, restored, tables, alerts.append) for ev in events[-2:]] == [
        "skipped",
        "skipped",
    ]
    assert len(alerts) == 1


def test_gaps_are_counted_and_new_ciphertext_alerts_unless_a_container_header_opens_it() -> None:
    d = Dispatcher(EncryptionAnalyzer(AnalyzerSettings(_env_file=None)))  # type: ignore[call-arg]
    meta, tables, alerts = VolumeMeta(), {"blocks": {}}, []
    # An encrypted backup (age header, then its ciphertext) into free space: no evidence.
    age = b"age-encryption.org/v1\n-> scrypt c2FsdA 18\nYm9keQ\n--- bWFj\n"
    backup = age + os.urandom((1 << 20) - len(age))
    assert d.handle(write(1, 0, backup), meta, tables, alerts.append) == "ok"
    assert d.handle(write(3, 1 << 20, os.urandom(1 << 20)), meta, tables, alerts.append) == "gap"
    assert meta.gaps == 1 and alerts == []  # the second MiB continues the backup's run
    # Headerless ciphertext written elsewhere (encrypted copies of files): weak evidence each,
    # enough of it alerts.
    d.handle(write(4, 64 << 20, os.urandom(1 << 20)), meta, tables, alerts.append)
    # Not "== 256": a truly random block fails the chi-square uniformity test (< 330, 255 degrees
    # of freedom) once in about 1,000, so one of 256 does in about one run in five.
    assert len(alerts) == 1 and int(alerts[0].details["fresh_high_blocks"]) >= 250


def test_the_example_counts_write_sizes_per_volume() -> None:
    d = Dispatcher(WriteSizes())
    meta, alerts = VolumeMeta(), []
    for i in range(1, 102):
        d.handle(write(i, 0, b"x" * (4096 if i == 1 else 1 << 20)), meta, {}, alerts.append)
    assert meta.state["histogram"] == {"4096": 1, "1048576": 100}
    assert len(alerts) == 1 and alerts[0].kind == "write-sizes"


def test_a_checkpoint_tag_command_reads_as_unknown_for_an_old_reader() -> None:
    import io
    import json
    from pathlib import Path

    from fastavro import parse_schema, schemaless_reader

    codec = make_codec(TapstreamSettings(_env_file=None))  # type: ignore[call-arg]
    cmd = {
        "id": "c",
        "group": "g",
        "kind": "CHECKPOINT_TAG",
        "sender": "analyzer.encryption",
        "ts": 1,
        "checkpoint_id": "cp",
        "tag": "last-clean",
        "volumes": ["v"],
        "args": {"keep": "true"},
    }
    data = codec.encode("Command", cmd)
    assert codec.decode(data) == ("Command", {**cmd, "key_id": None, "signature": None})
    from tapstream.core.codec.schemas import current, schema_dir

    old = parse_schema(json.loads((Path(schema_dir()) / "history" / "Command.v1.avsc").read_text()))
    got = schemaless_reader(io.BytesIO(data[10:]), current()["Command"].parsed, old)
    assert got["kind"] == "UNKNOWN" and got["checkpoint_id"] == "cp"


def test_the_wiper_example_alerts_on_zeroing_data_not_on_trimming_free_space() -> None:
    from tapstream.analyzer.examples.wiper import Wiper

    def zero(seq: int, offset: int, length: int) -> Event:
        body = {"offset": offset, "length": length, "trim": True}
        return Event("g", "v", seq, T0 + seq * 1000, "h", "Zero", body)

    d = Dispatcher(Wiper())
    meta, alerts = VolumeMeta(), []
    d.handle(write(1, 0, b"x" * (1 << 20)), meta, {}, alerts.append)
    for i in range(2, 300):  # data in the first 298 MiB, one write per MiB
        d.handle(write(i, (i - 1) << 20, b"y" * 4096), meta, {}, alerts.append)
    d.handle(checkpoint(300, "cp-before"), meta, {}, alerts.append)
    d.handle(zero(301, 1 << 30, 1 << 30), meta, {}, alerts.append)  # free space: mkfs discard
    assert alerts == []
    d.handle(zero(302, 0, 300 << 20), meta, {}, alerts.append)  # the data: wiped
    (a,) = alerts
    assert (
        a.kind == "wiper" and a.last_clean_checkpoint and a.last_clean_checkpoint.id == "cp-before"
    )
    assert a.score >= 1.0
