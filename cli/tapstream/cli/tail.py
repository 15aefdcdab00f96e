"""`tapstream tail TOPIC`: decode and print a topic's records (single-object or Confluent)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tapstream.core.codec import DecodeError, decode_any
from tapstream.core.settings import TapstreamSettings, load


def _printable(record: dict[str, Any]) -> dict[str, Any]:
    body = record.get("body")
    if isinstance(body, tuple):
        name, fields = body
        fields = {
            k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in fields.items()
        }
        record = {**record, "body": {name: fields}}
    return record


def tail(
    topic: Annotated[
        str, typer.Argument(help="e.g. tapstream.writes.g1 or protected.tapstream.writes.g1")
    ],
    site: Annotated[str, typer.Option(help="protected or recovery cluster")] = "protected",
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning/--new", help="Start at the oldest record.")
    ] = True,
    limit: Annotated[int, typer.Option(help="Stop after this many records (0: follow).")] = 0,
) -> None:
    """Print every record of TOPIC as one JSON line (data bytes are summarised)."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    from tapstream.core.kafka import sync_consumer

    settings = load(TapstreamSettings)
    bootstrap = settings.protected_bootstrap if site == "protected" else settings.recovery_bootstrap
    # Assigned, not subscribed: tail joins no consumer group, so it never waits for a rebalance.
    consumer = sync_consumer(settings, group_id="tapstream-tail", bootstrap=bootstrap)
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        consumer.close()
        raise typer.BadParameter(
            f"topic {topic!r} does not exist on the {site} cluster ({bootstrap})"
        )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in meta.partitions])
    seen = 0
    try:
        while limit == 0 or seen < limit:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            value = msg.value()
            line: dict[str, object] = {"partition": msg.partition(), "offset": msg.offset()}
            if value is None:  # a tombstone (compacted topics, e.g. an analyzer's changelog)
                line["type"] = "tombstone"
            else:
                try:
                    name, record = decode_any(value, settings)
                    line |= {"type": name, **_printable(record)}
                except DecodeError as exc:
                    line["error"] = str(exc)
            typer.echo(json.dumps(line, default=str))
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
