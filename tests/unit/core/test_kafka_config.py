"""The one place that configures Kafka clients: idempotent acks=all producers, secrets passed through."""

from pydantic import SecretStr

from tapstream.core.kafka.config import (
    aiokafka_config,
    client_config,
    consumer_config,
    producer_config,
)
from tapstream.core.settings import TapstreamSettings


def test_producer_is_idempotent_and_waits_for_all_replicas() -> None:
    conf = producer_config(TapstreamSettings())
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["bootstrap.servers"] == "127.0.0.1:19092"


def test_site_selects_its_own_cluster() -> None:
    settings = TapstreamSettings(site="recovery", recovery_bootstrap="r:1")
    assert client_config(settings)["bootstrap.servers"] == "r:1"
    assert aiokafka_config(settings)["bootstrap_servers"] == "r:1"


def test_sasl_credentials_reach_the_client_but_not_repr() -> None:
    settings = TapstreamSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="tapper",
        kafka_sasl_password=SecretStr("s3cret"),
    )
    conf = client_config(settings)
    assert conf["sasl.password"] == "s3cret"
    assert conf["security.protocol"] == "SASL_SSL"
    assert "s3cret" not in repr(settings)


def test_message_limit_leaves_room_for_the_largest_chunk() -> None:
    conf = producer_config(TapstreamSettings(), max_message_bytes=2 * 1024 * 1024)
    assert conf["message.max.bytes"] > 2 * 1024 * 1024


def test_a_synchronous_consumer_carries_the_security_settings() -> None:
    settings = TapstreamSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cli",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_cafile="/etc/ca.pem",
    )
    conf = consumer_config(settings, group_id="tapstream-tail", bootstrap="r:1")
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("cli", "s3cret")
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["bootstrap.servers"] == "r:1"
    assert (conf["group.id"], conf["enable.auto.commit"]) == ("tapstream-tail", False)


def test_a_synchronous_consumer_from_a_built_config_keeps_it_and_takes_options() -> None:
    base = client_config(TapstreamSettings(kafka_security_protocol="SSL"))
    conf = consumer_config(base, group_id="g", options={"enable.partition.eof": True})
    assert conf["security.protocol"] == "SSL"
    assert conf["enable.partition.eof"] is True
    assert "group.id" not in base  # the caller's config is not changed


def test_the_factory_builds_the_client_from_that_config(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import confluent_kafka

    from tapstream.core.kafka import sync_consumer

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(confluent_kafka, "Consumer", seen.append)
    sync_consumer(TapstreamSettings(kafka_security_protocol="SSL"), group_id="g")
    assert seen[0]["security.protocol"] == "SSL" and seen[0]["group.id"] == "g"


async def test_assign_at_resumes_where_a_reader_left_off_else_at_the_beginning() -> None:
    from aiokafka import TopicPartition

    from tapstream.core.kafka import assign_at

    class Fake:
        def __init__(self) -> None:
            self.calls: list[tuple[str, object]] = []

        def assign(self, tps: list[TopicPartition]) -> None:
            self.calls.append(("assign", [tp.partition for tp in tps]))

        def seek(self, tp: TopicPartition, offset: int) -> None:
            self.calls.append(("seek", (tp.partition, offset)))

        async def seek_to_beginning(self, tp: TopicPartition) -> None:
            self.calls.append(("beginning", tp.partition))

    fake = Fake()
    await assign_at(fake, [TopicPartition("t", 0), TopicPartition("t", 1)], {1: 42})  # type: ignore[arg-type]
    assert fake.calls == [("assign", [0, 1]), ("beginning", 0), ("seek", (1, 42))]
