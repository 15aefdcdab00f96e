"""Pure generators of the Kafka, MirrorMaker 2 and log4j2 configuration files (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping


def render(props: Mapping[str, object]) -> str:
    """Java .properties text, one `key=value` per line, in the given order."""
    return "".join(f"{k}={_java(v)}\n" for k, v in props.items())


def _java(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def broker_properties(node_id: int, client_port: int, log_dir: str) -> dict[str, object]:
    """A combined broker+controller single node (KRaft); every replication factor is 1."""
    controller_port = client_port + 1
    return {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{client_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{client_port},CONTROLLER://127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": log_dir,
        "num.partitions": 1,
        "default.replication.factor": 1,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "min.insync.replicas": 1,
        "group.initial.rebalance.delay.ms": 0,
        # Our write events carry up to a few MiB per record (large NBD writes are chunked).
        "message.max.bytes": 16 * 1024 * 1024,
        "replica.fetch.max.bytes": 16 * 1024 * 1024,
        "auto.create.topics.enable": False,
        "log.retention.hours": 168,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }


def mirrormaker_properties(
    protected_bootstrap: str,
    recovery_bootstrap: str,
    *,
    protected_alias: str = "protected",
    recovery_alias: str = "recovery",
    topic_prefix: str = "tapstream",
    refresh_interval_s: int = 2,
) -> dict[str, object]:
    """Dedicated MirrorMaker 2: every `<prefix>.*` topic protected -> recovery, and the site
    managers' `<prefix>.events` in both directions. DefaultReplicationPolicy prefixes mirrored topics
    with the source alias and never mirrors a topic back to where it came from, so nothing loops."""
    p, r = protected_alias, recovery_alias
    escaped = topic_prefix.replace(".", r"\.")
    props: dict[str, object] = {
        "clusters": f"{p}, {r}",
        f"{p}.bootstrap.servers": protected_bootstrap,
        f"{r}.bootstrap.servers": recovery_bootstrap,
        f"{p}->{r}.enabled": True,
        f"{p}->{r}.topics": rf"{escaped}\..*",
        f"{r}->{p}.enabled": True,
        f"{r}->{p}.topics": rf"{escaped}\.events",
        "replication.policy.class": "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
        "replication.factor": 1,
        "checkpoints.topic.replication.factor": 1,
        "heartbeats.topic.replication.factor": 1,
        "offset-syncs.topic.replication.factor": 1,
        "offset.storage.replication.factor": 1,
        "status.storage.replication.factor": 1,
        "config.storage.replication.factor": 1,
        "sync.topic.acls.enabled": False,
        # New topics (one per protection group) must be picked up in seconds, not the default 10 min.
        "refresh.topics.interval.seconds": refresh_interval_s,
        "refresh.groups.interval.seconds": 10,
        "sync.topic.configs.interval.seconds": 30,
        "emit.heartbeats.interval.seconds": 1,
        "emit.checkpoints.interval.seconds": 5,
        "sync.group.offsets.enabled": False,
        "tasks.max": 2,
        # Low latency: the RPO is what the stream waits for, not throughput.
        "producer.override.linger.ms": 5,
        "consumer.fetch.max.wait.ms": 50,
        "producer.override.max.request.size": 16 * 1024 * 1024,
        "consumer.max.partition.fetch.bytes": 16 * 1024 * 1024,
        "offset.flush.interval.ms": 2000,
    }
    # The mirrored record must fit: the target producer's request size follows the source's message size.
    for alias in (p, r):
        props[f"{alias}.producer.max.request.size"] = 16 * 1024 * 1024
        props[f"{alias}.producer.linger.ms"] = 5
        props[f"{alias}.consumer.fetch.max.wait.ms"] = 50
    return props


def log4j2_config(log_file: str) -> str:
    """log4j2 properties: everything at INFO to one rolling file per process."""
    return f"""status = warn
name = tapstream
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""
