"""Pure generators of the Kafka, MirrorMaker 2 and log4j2 configuration files (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping


def render(props: Mapping[str, object]) -> str:
    """Java .properties text, one `key=value` per line, in the given order."""
    return "".join(f"{_escape(k, key=True)}={_escape(_java(v))}\n" for k, v in props.items())


def _java(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape(text: str, key: bool = False) -> str:
    # java.util.Properties drops a lone backslash (`tapstream\..*` would load as `tapstream..*`).
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    if key:
        for ch in "=: #!":
            text = text.replace(ch, "\\" + ch)
    return text


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
        # The machine and its disk are shared: no partition grows past 2 GiB (benchmarks write GiBs
        # into topics nobody reads again); smaller segments let retention free space sooner.
        "log.retention.bytes": 2 * 1024**3,
        "log.segment.bytes": 128 * 1024 * 1024,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }


def log4j2_config(log_file: str) -> str:
    """log4j2 properties: INFO to one rolling file per process, minus MirrorMaker 2's chatter."""
    return f"""status = error
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
# "refreshing topics took 2 ms" every refresh (2 s) in each direction.
logger.mm2scheduler.name = org.apache.kafka.connect.mirror.Scheduler
logger.mm2scheduler.level = WARN
# KAFKA-20017: 4.1 warns "Could not alter configuration of topic" after every successful config sync.
logger.mm2source.name = org.apache.kafka.connect.mirror.MirrorSourceConnector
logger.mm2source.filter.kafka20017.type = RegexFilter
logger.mm2source.filter.kafka20017.regex = Could not alter configuration of topic .*
logger.mm2source.filter.kafka20017.onMatch = DENY
logger.mm2source.filter.kafka20017.onMismatch = NEUTRAL
"""
