"""How long a record takes to cross from the protected to the recovery cluster through the local
stack's MirrorMaker 2, against a baseline measured in the same run: the same producer and consumer
settings on the protected cluster alone (what any Kafka delivery costs, without the crossing).

Produces N timestamped records at a steady pace, reads them back, prints p50/p95/p99 and the
crossing/baseline ratio, and writes bench/results/mirror_latency.json.

    .venv/bin/python bench/mirror_latency.py [--records 300] [--interval-ms 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tapstream.core.settings import TapstreamSettings, load

PRIMER = struct.pack(">d", 0.0)


def measure(
    produce_to: str,
    topic: str,
    read_from: str,
    read_topic: str,
    n: int,
    interval_s: float,
    progress: Progress,
    label: str,
) -> list[float]:
    """Seconds from produce to consume for `n` records sent every `interval_s`."""
    consumer = Consumer({"bootstrap.servers": read_from, "group.id": f"lat-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 200,
                         "fetch.wait.max.ms": 10, "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([read_topic])
    producer = Producer({"bootstrap.servers": produce_to, "linger.ms": 0, "acks": "all"})
    try:
        # The topic (or its mirror, which MirrorMaker 2 creates at its next refresh) must exist and
        # the consumer hold its partition before timing starts: send a primer and wait for it.
        producer.produce(topic, PRIMER)
        producer.flush(10)
        deadline = time.monotonic() + 120
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{read_topic} never delivered on {read_from}: is the stack up (`make status`)?"
                )
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                break
        task = progress.add_task(label, total=n)
        latencies: list[float] = []
        sent = 0
        next_send = time.monotonic()
        deadline = time.monotonic() + 60 + n * interval_s * 2
        while len(latencies) < n and time.monotonic() < deadline:
            now = time.monotonic()
            if sent < n and now >= next_send:
                producer.produce(topic, struct.pack(">d", time.time()))
                producer.poll(0)
                sent += 1
                next_send = now + interval_s
            msg = consumer.poll(0.002)
            value = msg.value() if msg is not None and msg.error() is None else None
            if value is not None and value != PRIMER:
                (t_sent,) = struct.unpack(">d", value)
                latencies.append(time.time() - t_sent)
                progress.advance(task)
        if len(latencies) < n:
            raise SystemExit(f"only {len(latencies)} of {n} records arrived on {read_topic}")
        return latencies
    finally:
        producer.flush(10)
        consumer.close()


def summary(latencies: list[float]) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    return {"records": len(latencies), "p50_ms": q[49] * 1e3, "p95_ms": q[94] * 1e3,
            "p99_ms": q[98] * 1e3, "max_ms": max(latencies) * 1e3}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "mirror_latency.json"
    )
    args = ap.parse_args()
    s = load(TapstreamSettings)
    # One topic per run, so neither run reads the other's records.
    run = uuid.uuid4().hex[:8]
    base_topic, cross_topic = s.topic(f"latency.{run}.base"), s.topic(f"latency.{run}.cross")
    admin = AdminClient({"bootstrap.servers": s.protected_bootstrap})
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in (base_topic, cross_topic)]).values():
        fut.result(30)
    interval = args.interval_ms / 1000
    with Progress(console=Console(stderr=True), transient=True) as progress:
        baseline = measure(s.protected_bootstrap, base_topic, s.protected_bootstrap, base_topic,
                           args.records, interval, progress, "baseline: protected -> protected")  # fmt: skip
        crossing = measure(s.protected_bootstrap, cross_topic, s.recovery_bootstrap, s.mirrored(cross_topic),
                           args.records, interval, progress, "crossing: protected -> recovery")  # fmt: skip
    result = {
        "baseline_protected_to_protected": summary(baseline),
        "crossing_protected_to_recovery": summary(crossing),
        "p50_ratio": statistics.median(crossing) / statistics.median(baseline),
        "records": args.records,
        "interval_ms": args.interval_ms,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table = Table("path", "records", "p50 ms", "p95 ms", "p99 ms", "max ms",
                  title="Record latency through the local stack")  # fmt: skip
    for name, key in (("protected -> protected (baseline)", "baseline_protected_to_protected"),
                      ("protected -> recovery (MirrorMaker 2)", "crossing_protected_to_recovery")):  # fmt: skip
        r = result[key]
        table.add_row(
            name,
            str(r["records"]),
            *(f"{r[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
        )
    Console().print(table)
    Console().print(
        f"crossing p50 / baseline p50 = {result['p50_ratio']:.1f}x; written to {args.out}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
