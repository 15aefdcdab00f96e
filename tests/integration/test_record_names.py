"""A record's names never become a path outside the replicas: the recovery VDSA sets a record whose
volume is `../../etc/x` (or whose group is not its own) aside on tapstream.dlq and creates no file
for it, and keeps applying the valid volume beside it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tapstream.core.codec import make_codec
from tapstream.core.kafka import TopicSpec, client_config, ensure_topics

from .services_harness import start_recovery_vdsa, stop, wait_until
from .test_halt import raw_records

pytestmark = pytest.mark.integration


def test_a_record_naming_a_path_outside_the_replicas_creates_nothing(
    stack, tmp_path: Path, unique_name: str
) -> None:
    group = unique_name
    settings = stack.settings
    codec = make_codec(settings)
    recovery = client_config(settings, settings.recovery_bootstrap)
    mirrored = settings.mirrored(settings.topic(f"writes.{group}"))
    asyncio.run(ensure_topics(recovery, [TopicSpec(mirrored, partitions=1)]))
    work = tmp_path / "a" / "b"  # replicas/<group>/../../etc/x would be tmp_path/a/etc/x
    replicas = work / "replicas"
    replicas.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*")}
    vdsa = start_recovery_vdsa(stack, tmp_path, [group], replicas)
    producer = Producer(recovery)
    offsets: dict[str, int] = {}
    try:
        data = b"\x42" * 4096
        for what, value, key in (
            ("dotdot", codec.encode_write("../../etc/x", 1, 1, "h", group, 0, data), b"disk0"),
            ("slash", codec.encode_write("a/b", 1, 1, "h", group, 0, data), b"a/b"),
            ("group", codec.encode_write("disk0", 1, 1, "h", "../" + group, 0, data), b"disk0"),
        ):
            producer.produce(
                mirrored,
                value=value,
                key=key,
                partition=0,
                on_delivery=lambda err, msg, w=what: offsets.__setitem__(
                    w, -1 if err else msg.offset()
                ),
            )
        assert producer.flush(10) == 0 and min(offsets.values()) >= 0

        def dead_letters() -> dict[int, str]:
            return {
                int(dict(m.headers())["tapstream.dlq.offset"]): dict(m.headers())[
                    "tapstream.dlq.reason"
                ].decode()
                for m in raw_records(recovery, settings.topic("dlq"))
                if dict(m.headers() or [])["tapstream.dlq.topic"] == mirrored.encode()
            }

        wait_until(
            "the VDSA set the three records aside",
            lambda: set(offsets.values()) <= set(dead_letters()),
            timeout=90,
        )
        assert {dead_letters()[o] for o in offsets.values()} == {"invalid"}
        assert vdsa.poll() is None, "the VDSA died"
        created = {p for p in tmp_path.rglob("*")} - before
        outside = [p for p in created if not p.is_relative_to(replicas) and p.suffix != ".log"]
        assert outside == [], outside
        assert not (tmp_path / "a" / "etc").exists()
        assert not list(replicas.rglob("*.img")), "a replica was made for a refused record"
    finally:
        stop(vdsa)
