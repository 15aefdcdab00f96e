"""How long a record takes to cross from the protected cluster to the recovery cluster through the
local stack's MirrorMaker 2. Produces N timestamped records on protected, reads them on recovery
under their mirrored name, and prints p50/p95/p99 (also to bench/results/mirror_latency.json).

    .venv/bin/python bench/mirror_latency.py [--records 200] [--interval-ms 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tapstream.core.settings import TapstreamSettings, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/mirror_latency.json"))
    args = ap.parse_args()
    s = load(TapstreamSettings)
    topic = f"tapstream.latency.{uuid.uuid4().hex[:8]}"
    mirrored = s.mirrored(topic)
    admin = AdminClient({"bootstrap.servers": s.protected_bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(30)
    consumer = Consumer({"bootstrap.servers": s.recovery_bootstrap, "group.id": f"lat-{topic}",
                         "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 200,
                         "fetch.wait.max.ms": 10})
    consumer.subscribe([mirrored])
    producer = Producer({"bootstrap.servers": s.protected_bootstrap, "linger.ms": 0, "acks": "all"})
    # Wait until MirrorMaker 2 mirrors the new topic: send a primer and read it on the far side.
    producer.produce(topic, struct.pack(">d", 0.0))
    producer.flush(10)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            break
    else:
        raise SystemExit(f"{mirrored} never appeared on the recovery cluster: is MirrorMaker 2 up (`make status`)?")
    latencies: list[float] = []
    sent = 0
    next_send = time.monotonic()
    while len(latencies) < args.records and time.monotonic() < deadline + 300:
        now = time.monotonic()
        if sent < args.records and now >= next_send:
            producer.produce(topic, struct.pack(">d", time.time()))
            producer.poll(0)
            sent += 1
            next_send = now + args.interval_ms / 1000
        msg = consumer.poll(0.005)
        if msg is not None and msg.error() is None:
            (t_sent,) = struct.unpack(">d", msg.value())
            if t_sent > 0:
                latencies.append(time.time() - t_sent)
    consumer.close()
    producer.flush(10)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    result = {"records": len(latencies), "p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000,
              "p99_ms": q[98] * 1000, "max_ms": latencies[-1] * 1000}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"protected -> recovery through MirrorMaker 2, {len(latencies)} records: "
          f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")


if __name__ == "__main__":
    main()
