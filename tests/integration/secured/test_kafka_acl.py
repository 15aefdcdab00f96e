"""A real secured broker (SASL_SSL + SCRAM-SHA-512, StandardAuthorizer, the ACL table's users and
ACLs) refuses a service what the table does not grant: an analyzer cannot write tapstream.control,
the site manager can; `tapstream tail` reads it with the CLI's credentials.

The brokers are the secured two-site stack's (conftest.py), not the default stack's."""

from __future__ import annotations

import json

import pytest

from tapstream.core.kafka import AsyncProducer, TopicSpec, client_config, ensure_topics
from tapstream.core.kafka.config import producer_config
from tapstream.core.kafka.exceptions import PublishError
from tapstream.localstack.secured import SecuredKafka
from tapstream.localstack.secured_stack import SecuredSites

pytestmark = [pytest.mark.integration, pytest.mark.secured]


@pytest.fixture(scope="module")
def secured(sites: SecuredSites) -> tuple[SecuredKafka, float]:
    """The protected node of the secured stack (the table's protected ACLs), and its start-up time."""
    return sites.kafka["protected"], sites.startup_s  # type: ignore[attr-defined]


async def test_an_analyzer_cannot_command_and_the_site_manager_can(
    secured: tuple[SecuredKafka, float],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka, startup_s = secured
    control = kafka.settings().topic("control")
    manager = kafka.settings("tapstream-site-manager-protected")
    analyzer = kafka.settings("tapstream-analyzer")
    # The site manager creates the control topic and commands over it.
    await ensure_topics(client_config(manager), [TopicSpec(control, partitions=1)])
    p = AsyncProducer(producer_config(manager, linger_ms=0, delivery_timeout_ms=15_000))
    await p.start()
    try:
        msg = await p.produce(control, b"PAUSE from the site manager", key=b"g1")
        assert msg.offset() == 0
    finally:
        await p.stop()
    # The analyzer may publish alerts but not write control: refused by the broker's ACLs.
    await ensure_topics(client_config(analyzer), [TopicSpec(analyzer.topic("alerts"))])
    p = AsyncProducer(producer_config(analyzer, linger_ms=0, delivery_timeout_ms=15_000))
    await p.start()
    try:
        await p.produce(analyzer.topic("alerts"), b"an alert", key=b"vol")
        with pytest.raises(PublishError, match="TOPIC_AUTHORIZATION_FAILED"):
            await p.produce(control, b"forged RELEASE", key=b"g1")
    finally:
        await p.stop(timeout=5)
    # Nothing but the site manager's record is on control; the CLI (its own user) reads it.
    from tapstream.cli.tail import tail

    env = {
        "TAPSTREAM_ENV_FILE": "",
        "TAPSTREAM_PROTECTED_BOOTSTRAP": kafka.bootstrap,
        "TAPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TAPSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TAPSTREAM_KAFKA_SASL_USERNAME": "tapstream-cli",
        "TAPSTREAM_KAFKA_SASL_PASSWORD": kafka.passwords["tapstream-cli"],
        "TAPSTREAM_KAFKA_SSL_CAFILE": str(kafka.ca_file),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    tail(control, "protected", True, 1)
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["offset"] == 0
    print(f"secured broker up with users and ACLs in {startup_s:.1f}s")


async def test_a_wrong_password_is_refused(secured: tuple[SecuredKafka, float]) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    kafka, _ = secured
    intruder = kafka.settings(
        "tapstream-site-manager-protected", kafka_sasl_password="not-the-password"
    )
    errors: list[KafkaError] = []
    admin = AdminClient({**client_config(intruder), "error_cb": errors.append})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(1)  # serves the error callback
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_acl_bindings_cover_the_table(secured: tuple[SecuredKafka, float]) -> None:
    """What the broker holds is the table: every principal's bindings, nothing else."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    from tapstream.localstack.secured import acl_bindings

    kafka, _ = secured
    admin = AdminClient(client_config(kafka.settings("admin")))
    every = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip
    held = admin.describe_acls(every, request_timeout=30).result()
    want = [b for p in kafka.principals.values() for b in acl_bindings(p, kafka.cluster)]
    assert sorted(map(str, held)) == sorted(map(str, want))
    assert not any("analyzer" in str(b) and "control" in str(b) and "WRITE" in str(b) for b in held)


async def test_aiokafka_consumers_log_in_and_read_only_what_is_granted(
    secured: tuple[SecuredKafka, float],
) -> None:
    """The services' aiokafka path (make_consumer: SCRAM over TLS with the CA file): the checkpoint
    VDSA reads control from its start; an analyzer's consumer is refused it."""
    from aiokafka.errors import TopicAuthorizationFailedError

    from tapstream.core.dlq import DeadLetters, Poison
    from tapstream.core.kafka import make_consumer

    kafka, _ = secured
    control = kafka.settings().topic("control")
    vdsa = kafka.settings("tapstream-vdsa-protected")
    await ensure_topics(client_config(vdsa), [TopicSpec(control, partitions=1)])
    p = AsyncProducer(producer_config(vdsa, linger_ms=0, delivery_timeout_ms=15_000))
    await p.start()
    try:
        sent = await p.produce(control, b"CHECKPOINT_PREPARE from the VDSA", key=b"g1")
    finally:
        await p.stop()
    consumer = make_consumer(vdsa, group_id=None, isolation_level="read_uncommitted")
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition(control, 0)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset())
        got = await consumer.getmany(tp, timeout_ms=10_000)
        assert [m.value for m in got[tp]][:1] == [b"CHECKPOINT_PREPARE from the VDSA"]
    finally:
        await consumer.stop()
    analyzer = kafka.settings("tapstream-analyzer")
    consumer = make_consumer(analyzer, control, group_id=None)
    await consumer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await consumer.getmany(timeout_ms=10_000)
            await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    # The analyzer's dead letters go through (Create and Write on tapstream.dlq).
    dead = DeadLetters(analyzer, "analyzer.test")
    await dead.start()
    try:
        fut = dead.send(control, 0, 7, b"k", b"poison", Poison("undecodable", "test"))
        assert fut is not None
        await fut
    finally:
        await dead.stop()


async def test_a_refused_checkpoint_tag_does_not_crash_the_analyzer(
    secured: tuple[SecuredKafka, float],
) -> None:
    """The analyzer's CHECKPOINT_TAG request through a real aiokafka producer (faust's transport):
    refused for the analyzer, counted and logged, not raised; sent for a principal that may."""
    from aiokafka import AIOKafkaProducer

    from tapstream.analyzer import metrics
    from tapstream.analyzer.runtime import ask_to_keep
    from tapstream.core.kafka.config import aiokafka_config

    kafka, _ = secured
    control = kafka.settings().topic("control")
    await ensure_topics(
        client_config(kafka.settings("tapstream-site-manager-protected")),
        [TopicSpec(control, partitions=1)],
    )
    refused = metrics.COMMANDS_REFUSED.labels("encryption", "g1")
    before = refused._value.get()
    for user, sent in (("tapstream-analyzer", False), ("tapstream-site-manager-protected", True)):
        producer = AIOKafkaProducer(**aiokafka_config(kafka.settings(user)))
        await producer.start()
        try:
            ok = await ask_to_keep(
                lambda p=producer: p.send_and_wait(control, b"CHECKPOINT_TAG", key=b"g1"),
                "encryption",
                "g1",
                "cp-1",
            )
        finally:
            await producer.stop()
        assert ok is sent, user
    assert refused._value.get() == before + 1


@pytest.fixture(scope="module")
def recovery(sites: SecuredSites) -> SecuredKafka:
    """The recovery node of the secured stack (the table's recovery ACLs)."""
    return sites.kafka["recovery"]


async def test_the_recovery_vdsa_reads_the_mirrored_control_topic(recovery: SecuredKafka) -> None:
    """The issue's finding, against a broker: MirrorMaker 2 writes protected.tapstream.control, the
    recovery VDSA (kept checkpoints) and the journal (tags) read it; the VDSA may not command here."""
    from aiokafka import TopicPartition

    from tapstream.core.kafka import make_consumer

    s = recovery.settings()
    mirrored = s.mirrored(s.topic("control"))
    mm2 = recovery.settings("tapstream-mirrormaker")
    await ensure_topics(client_config(mm2), [TopicSpec(mirrored, partitions=1)])
    p = AsyncProducer(producer_config(mm2, linger_ms=0, delivery_timeout_ms=15_000))
    await p.start()
    try:
        sent = await p.produce(mirrored, b"CHECKPOINT_TAG keep", key=b"g1")
    finally:
        await p.stop()
    for user in ("tapstream-vdsa-recovery", "tapstream-journal"):
        consumer = make_consumer(recovery.settings(user), group_id=None)
        await consumer.start()
        try:
            tp = TopicPartition(mirrored, 0)
            consumer.assign([tp])
            consumer.seek(tp, sent.offset())
            got = await consumer.getmany(tp, timeout_ms=10_000)
            assert [m.value for m in got[tp]][:1] == [b"CHECKPOINT_TAG keep"], user
        finally:
            await consumer.stop()
    vdsa = recovery.settings("tapstream-vdsa-recovery")
    await ensure_topics(
        client_config(recovery.settings("tapstream-site-manager-recovery")),
        [TopicSpec(s.topic("control"), partitions=1)],
    )
    p = AsyncProducer(producer_config(vdsa, linger_ms=0, delivery_timeout_ms=15_000))
    await p.start()
    try:
        with pytest.raises(PublishError, match="TOPIC_AUTHORIZATION_FAILED"):
            await p.produce(s.topic("control"), b"RESYNC", key=b"g1")
    finally:
        await p.stop(timeout=5)
