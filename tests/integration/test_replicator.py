"""The replicator measures lag and RPO of a group across the real MirrorMaker 2 and publishes them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from tapstream.core.codec import make_codec
from tapstream.core.kafka import TopicSpec, client_config, ensure_topics

from .services_harness import start_service, stop, wait_until
from .tapper_harness import free_port

pytestmark = pytest.mark.integration


def test_replicator_reports_lag_and_rpo(stack, tmp_path: Path, unique_name: str) -> None:
    settings = stack.settings
    codec = make_codec(settings)
    topic = settings.topic(f"writes.{unique_name}")
    import asyncio

    asyncio.run(ensure_topics(client_config(settings), [TopicSpec(topic)]))
    p = Producer({"bootstrap.servers": stack.protected_bootstrap})
    for seq in range(1, 51):
        p.produce(
            topic,
            codec.encode(
                "DiskEvent",
                {
                    "volume": "v",
                    "seq": seq,
                    "ts": 0,
                    "host": "h",
                    "group": unique_name,
                    "body": ("Write", {"offset": 0, "length": 1, "data": b"x", "checksum": 0}),
                },
            ),
            key=b"v",
        )
    assert p.flush(30) == 0
    port = free_port()
    proc = start_service(
        stack,
        "tapstream.replicator",
        tmp_path,
        {
            "TAPSTREAM_REPLICATOR_GROUPS": json.dumps([unique_name]),
            "TAPSTREAM_METRICS_PORT": str(port),
            "TAPSTREAM_REPLICATOR_INTERVAL_S": "0.5",
        },
        "replicator",
    )
    try:
        c = Consumer(
            {
                "bootstrap.servers": stack.recovery_bootstrap,
                "group.id": f"t-{unique_name}",
                "auto.offset.reset": "earliest",
            }
        )
        c.subscribe([settings.topic("progress")])

        def caught_up() -> bool:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                return False
            _, rec = codec.decode(msg.value())
            return (
                rec["source"] == "replicator"
                and rec["group"] == unique_name
                and rec["lag_records"] == 0
            )

        wait_until(
            "the replicator to report the group fully mirrored", caught_up, timeout=90, interval=0
        )
        c.close()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert f'tapstream_rpo_seconds{{group="{unique_name}"}} 0.0' in body
        assert f'tapstream_replication_lag_records{{group="{unique_name}"}} 0.0' in body
    finally:
        assert stop(proc) == 0
