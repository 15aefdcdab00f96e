"""Pure generators of the Kafka, MirrorMaker 2 and log4j2 configuration files (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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


def broker_properties(
    node_id: int,
    client_port: int,
    log_dir: str,
    *,
    voters: Sequence[tuple[int, int]] = (),
    link: tuple[int, int] | None = None,
    retention_check_ms: int | None = None,
) -> dict[str, object]:
    """A combined broker+controller KRaft node (controller on client_port + 1).

    Alone (no `voters`) every replication factor is 1. One of several nodes (`voters`: the node id
    and controller port of each, itself included) every replication factor is min(3, nodes) with
    min.insync.replicas 2, so an acks=all write survives one broker's death, and a replica that was
    out of sync never becomes leader. `link` = (port, advertised port) adds a listener MM2 for
    MirrorMaker 2 whose advertised address is a proxy's, so MM2's clients stay on the proxy.
    `retention_check_ms` sets how often the broker deletes segments past retention (a static
    broker config; Kafka's default is 5 minutes)."""
    controller_port = client_port + 1
    quorum = [port for _, port in voters] or [controller_port]
    rf = min(3, len(voters)) if len(voters) > 1 else 1
    min_isr = 1 if rf == 1 else 2
    listeners = [
        f"PLAINTEXT://127.0.0.1:{client_port}",
        f"CONTROLLER://127.0.0.1:{controller_port}",
    ]
    advertised = list(listeners)
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if link is not None:
        listeners.append(f"MM2://127.0.0.1:{link[0]}")
        advertised.append(f"MM2://127.0.0.1:{link[1]}")
        protocols += ",MM2:PLAINTEXT"
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in quorum),
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        "log.dirs": log_dir,
        "num.partitions": 1,
        "default.replication.factor": rf,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "min.insync.replicas": min_isr,
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
    if retention_check_ms is not None:
        props["log.retention.check.interval.ms"] = retention_check_ms
    if rf > 1:
        # Kafka's default, said out loud: an acknowledged write is never dropped by an election.
        props["unclean.leader.election.enable"] = False
        # A dead broker is fenced (and its partitions' leaders moved) after 6 s, not 9: sync-mode
        # writes stall for that long, well inside the tapper's publish timeout.
        props["broker.heartbeat.interval.ms"] = 1000
        props["broker.session.timeout.ms"] = 6000
    return props


def initial_controllers(voters: Sequence[tuple[int, int, str]]) -> str:
    """StorageTool's `--initial-controllers`: `id@host:port:directory-id`, comma-separated; every
    node of the quorum is formatted with the same value (each finds its own directory id in it)."""
    return ",".join(f"{node}@127.0.0.1:{port}:{directory}" for node, port, directory in voters)


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


def secured_properties(
    props: Mapping[str, object],
    *,
    ca_file: str,
    keystore_file: str,
    admin_password: str,
    broker_principal: str,
    admin: str = "admin",
) -> dict[str, object]:
    """`broker_properties` of a lone node, secured: clients on SASL_SSL with SCRAM-SHA-512, the
    controller on mutual TLS (KRaft controllers cannot use SCRAM: its credentials live in the
    metadata they serve), and the StandardAuthorizer: what no ACL allows is refused, except to the
    admin and the broker itself (`broker_principal`, the subject of its certificate).

    `keystore_file` is one PEM file with the broker's unencrypted PKCS#8 key and its certificate;
    `ca_file` the CA that signed it (clients trust it too)."""
    out = dict(props)
    swap = {"PLAINTEXT://": "SASL_SSL://"}
    for key in ("listeners", "advertised.listeners"):
        text = str(out[key])
        for old, new in swap.items():
            text = text.replace(old, new)
        out[key] = text
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{admin_password}";'
    )
    out |= {
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": keystore_file,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": ca_file,
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": False,
        "super.users": f"User:{admin};User:{broker_principal}",
    }
    return out


def scram_format_args(users: Mapping[str, str]) -> list[str]:
    """StorageTool `format` arguments creating SCRAM-SHA-512 users (name -> password) with the
    cluster, so the first client (and the broker itself) can log in."""
    return [
        arg
        for name, password in users.items()
        for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
    ]
