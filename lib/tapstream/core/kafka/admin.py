"""Topic creation: idempotent, with the configs each topic needs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from tapstream.core.kafka.exceptions import KafkaUnavailable


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = -1  # -1: the broker's default.replication.factor
    config: dict[str, str] = field(default_factory=dict)


async def ensure_topics(
    conf: dict[str, str | int | float | bool], specs: list[TopicSpec], timeout: float = 30.0
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""

    def create() -> None:
        admin = AdminClient(conf)
        try:
            existing = admin.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"Kafka at {conf.get('bootstrap.servers')} did not answer in {timeout:.0f}s: {exc}. "
                "Is the cluster up (`make status`)?"
            ) from None
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config))
            for s in specs
            if s.name not in existing
        ]
        if not new:
            return
        for _name, fut in admin.create_topics(new, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a concurrent creator won
                    raise

    await asyncio.to_thread(create)
