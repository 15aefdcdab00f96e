"""MirrorMaker 2 configuration generated from tapstream settings (pure)."""

import re

from pydantic import SecretStr

from tapstream.core.settings import TapstreamSettings
from tapstream.replicator.mirrormaker import MirrorTuning, mirrormaker_properties, topics_pattern


def settings(**kw: object) -> TapstreamSettings:
    return TapstreamSettings(protected_bootstrap="p:9092", recovery_bootstrap="r:9092", **kw)


def test_directions_and_loop_free_policy() -> None:
    p = mirrormaker_properties(settings())
    assert p["clusters"] == "protected, recovery"
    assert p["protected.bootstrap.servers"] == "p:9092"
    assert p["recovery.bootstrap.servers"] == "r:9092"
    assert p["protected->recovery.topics"] == r"tapstream\..*"
    assert p["recovery->protected.topics"] == r"tapstream\.(events|writes\..*)"
    assert str(p["replication.policy.class"]).endswith(".DefaultReplicationPolicy")


def test_topic_patterns_match_only_our_topics() -> None:
    every, events = topics_pattern("tapstream"), topics_pattern("tapstream", "events")
    assert re.fullmatch(every, "tapstream.writes.g1")
    assert not re.fullmatch(every, "tapstreamXwrites")
    assert not re.fullmatch(every, "other.tapstream.x")
    assert re.fullmatch(events, "tapstream.events")
    assert not re.fullmatch(events, "tapstream.eventsX")
    assert topics_pattern("acme.ts") == r"acme\.ts\..*"


def test_recovery_writes_flow_back_without_loops() -> None:
    back = str(mirrormaker_properties(settings())["recovery->protected.topics"])
    assert re.fullmatch(back, "tapstream.events") and re.fullmatch(back, "tapstream.writes.g1")
    # What came from the protected site, and other topics, never go back.
    for topic in (
        "protected.tapstream.writes.g1",
        "protected.tapstream.events",
        "tapstream.control",
        "tapstream.progress",
        "tapstream.writesX",
    ):
        assert not re.fullmatch(back, topic), topic


def test_every_internal_replication_factor_follows_the_tuning() -> None:
    for rf in (1, 3):
        p = mirrormaker_properties(settings(), MirrorTuning(internal_replication_factor=rf))
        internal = {k: v for k, v in p.items() if k.endswith("replication.factor")}
        assert {
            "replication.factor", "checkpoints.topic.replication.factor",
            "heartbeats.topic.replication.factor", "offset-syncs.topic.replication.factor",
            "offset.storage.replication.factor", "status.storage.replication.factor",
            "config.storage.replication.factor",
        } <= set(internal)  # fmt: skip
        assert set(internal.values()) == {rf}


def test_new_topics_are_picked_up_quickly_and_records_cross_fast() -> None:
    p = mirrormaker_properties(settings())
    assert int(p["refresh.topics.interval.seconds"]) <= 2
    for alias in ("protected", "recovery"):
        assert int(p[f"{alias}.consumer.fetch.max.wait.ms"]) <= 100
        assert int(p[f"{alias}.producer.linger.ms"]) <= 10
        assert int(p[f"{alias}.producer.max.request.size"]) >= 16 * 1024 * 1024


def test_a_fetch_is_bounded_in_all_not_only_per_partition() -> None:
    # 16 MiB per partition let MirrorMaker 2's fetches of 32+ busy write topics' partitions outgrow
    # its 384 MiB heap (OutOfMemoryError, make bench-scale). Kafka returns a batch larger than the
    # partition limit whole, so a small limit still carries the largest record.
    p = mirrormaker_properties(settings())
    heap = 384 * 1024 * 1024
    for prefix in ("", "protected.", "recovery."):
        total = int(p[f"{prefix}consumer.fetch.max.bytes"])
        per_partition = int(p[f"{prefix}consumer.max.partition.fetch.bytes"])
        assert total <= heap // 4
        assert 64 * per_partition <= heap // 4  # bench-scale's 64 volumes at once


def test_aliases_and_prefix_come_from_settings() -> None:
    p = mirrormaker_properties(
        settings(protected_alias="dc1", recovery_alias="dc2", topic_prefix="ts")
    )
    assert p["dc1->dc2.topics"] == r"ts\..*" and p["dc2->dc1.topics"] == r"ts\.(events|writes\..*)"
    assert p["dc1.bootstrap.servers"] == "p:9092"


def test_plaintext_has_no_security_keys_and_sasl_is_set_on_both_clusters() -> None:
    assert not any("security" in k or "sasl" in k for k in mirrormaker_properties(settings()))
    p = mirrormaker_properties(settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="mm2", kafka_sasl_password=SecretStr('pa"ss'),
        kafka_ssl_cafile="/etc/ca.pem",
    ))  # fmt: skip
    for alias in ("protected", "recovery"):
        assert p[f"{alias}.security.protocol"] == "SASL_SSL"
        assert p[f"{alias}.sasl.mechanism"] == "SCRAM-SHA-512"
        jaas = str(p[f"{alias}.sasl.jaas.config"])
        assert "ScramLoginModule required" in jaas and 'username="mm2"' in jaas
        assert 'password="pa\\"ss"' in jaas
        assert p[f"{alias}.ssl.truststore.location"] == "/etc/ca.pem"
