"""MirrorMaker 2 configuration as a pure function of tapstream's settings (no I/O).

The replicator's own: `tapstream replicator mm2-config` prints it for real clusters (pass
`MirrorTuning(internal_replication_factor=3)`), `strimzi.py` wraps it in a KafkaMirrorMaker2
resource, and the local stack writes it to `mm2.properties` for its dedicated MirrorMaker 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapstream.core.settings import TapstreamSettings

MIB = 1024 * 1024


@dataclass(frozen=True)
class MirrorTuning:
    """What differs between a laptop and production; defaults suit the single-node local stack."""

    # Every internal topic (offset-syncs, checkpoints, heartbeats, Connect config/offset/status).
    # -1: each cluster's default.replication.factor (sites of different sizes).
    internal_replication_factor: int = 1
    # Where MirrorMaker 2 reaches the protected cluster, when not at settings.protected_bootstrap:
    # the fault-injecting proxies in front of its brokers (the local chaos stack).
    protected_via: str | None = None
    # How long a flow's Connect worker waits for a departed member before reassigning its tasks
    # (Connect's default: 5 min). In dedicated mode each flow has one worker: after a cut it rejoins
    # its group as a "new" member and, with the default, gets its tasks back only 5 min later.
    rebalance_delay_ms: int | None = None
    # New topics (one per protection group, and tests make many) are mirrored within seconds,
    # not the default 10 minutes.
    refresh_topics_s: int = 2
    tasks_max: int = 2
    # Low latency: the RPO is what the stream waits for, not throughput.
    linger_ms: int = 5
    fetch_max_wait_ms: int = 50
    # Our write events carry up to a few MiB per record (large NBD writes are chunked).
    max_message_bytes: int = 16 * MIB
    # A fetch's memory, per partition and in all: Kafka returns a batch larger than the partition
    # limit whole, so the limit bounds memory, not record size. 16 MiB per partition (the old
    # setting) let a fetch of 32+ busy partitions outgrow a 384 MiB heap (OutOfMemoryError in
    # `make bench-scale`); these are the Java consumer's defaults, spelled out.
    partition_fetch_bytes: int = 1 * MIB
    fetch_bytes: int = 50 * MIB
    # Mirrored topics are created with the source's configs; later changes are synced this often.
    sync_topic_configs_s: int = 60


def topics_pattern(prefix: str, name: str = ".*") -> str:
    """Java regex of `<prefix>.<name>` with the prefix's dots taken literally."""
    return prefix.replace(".", r"\.") + r"\." + name


def mirrormaker_properties(
    settings: TapstreamSettings, tuning: MirrorTuning = MirrorTuning()
) -> dict[str, object]:
    """Dedicated MirrorMaker 2: every `<prefix>.*` topic protected -> recovery; recovery ->
    protected the site managers' `<prefix>.events` and the write topics `<prefix>.writes.*` that a
    failed-over group's recovery-site tapper publishes (reverse protection, failback).
    DefaultReplicationPolicy prefixes a mirrored topic with its source alias and never mirrors a
    topic back to the cluster it came from; neither pattern matches a prefixed (mirrored) topic,
    so nothing loops."""
    p, r = settings.protected_alias, settings.recovery_alias
    rf = tuning.internal_replication_factor
    props: dict[str, object] = {
        "clusters": f"{p}, {r}",
        f"{p}.bootstrap.servers": tuning.protected_via or settings.protected_bootstrap,
        f"{r}.bootstrap.servers": settings.recovery_bootstrap,
        f"{p}->{r}.enabled": True,
        f"{p}->{r}.topics": topics_pattern(settings.topic_prefix),
        f"{r}->{p}.enabled": True,
        f"{r}->{p}.topics": topics_pattern(settings.topic_prefix, r"(events|writes\..*)"),
        "replication.policy.class": "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
        "replication.factor": rf,
        "checkpoints.topic.replication.factor": rf,
        "heartbeats.topic.replication.factor": rf,
        "offset-syncs.topic.replication.factor": rf,
        "offset.storage.replication.factor": rf,
        "status.storage.replication.factor": rf,
        "config.storage.replication.factor": rf,
        "sync.topic.acls.enabled": False,
        "refresh.topics.interval.seconds": tuning.refresh_topics_s,
        "refresh.groups.interval.seconds": 10,
        "sync.topic.configs.interval.seconds": tuning.sync_topic_configs_s,
        # Heartbeats every second: `up` proves each direction works by seeing them mirrored.
        "emit.heartbeats.interval.seconds": 1,
        "emit.checkpoints.interval.seconds": 5,
        "sync.group.offsets.enabled": False,
        "tasks.max": tuning.tasks_max,
        "offset.flush.interval.ms": 2000,
        # Every plugin on our classpath has a ServiceLoader manifest: skip the slow scan (~6 s).
        "plugin.discovery": "service_load",
        "consumer.fetch.max.wait.ms": tuning.fetch_max_wait_ms,
        "consumer.max.partition.fetch.bytes": tuning.partition_fetch_bytes,
        "consumer.fetch.max.bytes": tuning.fetch_bytes,
    }
    for alias in (p, r):
        # Each direction's Connect worker reads its target cluster's settings.
        props[f"{alias}.plugin.discovery"] = "service_load"
        # A mirrored record must fit: the target producer's request size follows the message size.
        props[f"{alias}.producer.max.request.size"] = tuning.max_message_bytes
        props[f"{alias}.producer.linger.ms"] = tuning.linger_ms
        props[f"{alias}.consumer.fetch.max.wait.ms"] = tuning.fetch_max_wait_ms
        props[f"{alias}.consumer.max.partition.fetch.bytes"] = tuning.partition_fetch_bytes
        props[f"{alias}.consumer.fetch.max.bytes"] = tuning.fetch_bytes
        if tuning.rebalance_delay_ms is not None:
            props[f"{alias}.scheduled.rebalance.max.delay.ms"] = tuning.rebalance_delay_ms
        for key, value in security_properties(settings).items():
            props[f"{alias}.{key}"] = value
    return props


def security_properties(settings: TapstreamSettings) -> dict[str, object]:
    """Java client security settings from tapstream's (the same for both clusters)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    props: dict[str, object] = {"security.protocol": protocol}
    if settings.kafka_ssl_cafile is not None:
        # Java clients read a PEM CA bundle directly (KIP-651).
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = str(settings.kafka_ssl_cafile)
    if protocol.startswith("SASL"):
        mechanism = settings.kafka_sasl_mechanism or "PLAIN"
        props["sasl.mechanism"] = mechanism
        login = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if mechanism == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        password = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        )
        props["sasl.jaas.config"] = (
            f'{login} required username="{_jaas(settings.kafka_sasl_username or "")}" '
            f'password="{_jaas(password)}";'
        )
    return props


def _jaas(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
