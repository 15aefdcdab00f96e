"""The one place that configures Kafka clients: idempotent acks=all producers, secrets passed through."""

from pydantic import SecretStr

from tapstream.core.kafka.config import aiokafka_config, client_config, producer_config
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
