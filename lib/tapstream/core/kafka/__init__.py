"""Every Kafka client tapstream uses is built here, from one settings object.

Nobody else sets `acks` or `enable.idempotence`. The write path produces with confluent-kafka
(librdkafka: batching, compression and idempotence in C); async consumers use aiokafka.
"""

from tapstream.core.kafka.admin import TopicSpec, ensure_topics
from tapstream.core.kafka.config import client_config, consumer_config, producer_config
from tapstream.core.kafka.consumer import (
    assign_at,
    make_consumer,
    partitions_now,
    seek_at,
    sync_consumer,
    wait_for_partitions,
)
from tapstream.core.kafka.exceptions import KafkaUnavailable, PublishError
from tapstream.core.kafka.producer import AsyncProducer

__all__ = [
    "AsyncProducer",
    "KafkaUnavailable",
    "PublishError",
    "TopicSpec",
    "assign_at",
    "client_config",
    "consumer_config",
    "ensure_topics",
    "make_consumer",
    "partitions_now",
    "producer_config",
    "seek_at",
    "sync_consumer",
    "wait_for_partitions",
]
