"""The one table of which service reads and writes which topic and consumer group, on which cluster.

Both the local secured brokers' ACLs and the Kubernetes `KafkaUser`s are generated from `table()`;
tests/unit/core/test_acl.py checks it against the topics and groups the code names, so a service
that starts using a topic the table does not grant fails a unit test, not a deployment.

Pure (no I/O). Names follow the settings (`topic_prefix`, MirrorMaker 2 aliases), so a renamed
prefix renames every ACL.

Principals that reach both clusters (the replicator, MirrorMaker 2, the recovery VDSA, both site
managers, the CLI) have the same user name and password on both (`crosses_sites`): the Kafka
settings hold one SASL identity per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from tapstream.core.settings import Site, TapstreamSettings

ResourceType = Literal["topic", "group", "cluster", "transactionalId"]
PatternType = Literal["literal", "prefix"]
CLUSTERS: tuple[Site, Site] = ("protected", "recovery")

# What Kafka grants implicitly: Read, Write, Delete and Alter each include Describe;
# AlterConfigs includes DescribeConfigs.
IMPLIES = {
    "Read": {"Describe"},
    "Write": {"Describe"},
    "Delete": {"Describe"},
    "Alter": {"Describe"},
    "AlterConfigs": {"DescribeConfigs"},
}

READ = ("Read", "Describe")
WRITE = ("Write", "Describe")
OWN = ("Read", "Write", "Create", "Describe")  # a topic this service also creates if missing
PRODUCE = ("Write", "Create", "Describe")
# MirrorMaker 2's own topics (Connect storage, offset syncs, checkpoints, heartbeats, mirrors).
MANAGE = ("Read", "Write", "Create", "Describe", "DescribeConfigs", "AlterConfigs", "Alter")


@dataclass(frozen=True)
class Grant:
    """Operations on one resource (exact name, or every name starting with `name`)."""

    resource: ResourceType
    name: str  # "" for the cluster
    pattern: PatternType
    operations: tuple[str, ...]
    why: str = ""

    def covers(self, resource: ResourceType, name: str, operation: str) -> bool:
        """Whether this grant allows `operation` on `resource` `name` (Kafka's implications included)."""
        if resource != self.resource:
            return False
        ops = set(self.operations)
        for op in self.operations:
            ops |= IMPLIES.get(op, set())
        if operation not in ops:
            return False
        if resource == "cluster":
            return True
        return name == self.name if self.pattern == "literal" else name.startswith(self.name)


@dataclass(frozen=True)
class Principal:
    """One Kafka user: the service it runs as and what it may do on each cluster."""

    service: str
    user: str
    summary: str
    grants: dict[Site, tuple[Grant, ...]] = field(default_factory=dict)
    # One process reaches both clusters: the same user and password on both (a Secret created at
    # both sites). False for the tappers and the checkpoint VDSA: they run at either site but only
    # ever reach their own site's cluster, so each cluster may give them its own password.
    crosses_sites: bool = False

    def allows(self, cluster: Site, resource: ResourceType, name: str, operation: str) -> bool:
        return any(g.covers(resource, name, operation) for g in self.grants.get(cluster, ()))


def _topic(name: str, ops: Iterable[str], why: str = "", prefix: bool = False) -> Grant:
    return Grant("topic", name, "prefix" if prefix else "literal", tuple(ops), why)


def _group(name: str, ops: Iterable[str] = READ, why: str = "", prefix: bool = True) -> Grant:
    return Grant("group", name, "prefix" if prefix else "literal", tuple(ops), why)


def _cluster(*ops: str, why: str = "") -> Grant:
    return Grant("cluster", "", "literal", ops, why)


IDEMPOTENT = _cluster("IdempotentWrite", why="idempotent producer (acks=all, no duplicates)")


def other(site: Site) -> Site:
    return "recovery" if site == "protected" else "protected"


def table(s: TapstreamSettings) -> dict[str, Principal]:
    """Every principal, by service name (`tapper`, `vdsa-recovery`, `site-manager-protected`, ...)."""
    writes = s.topic("writes.")  # one topic per protection group: a prefix
    control, events, alerts = s.topic("control"), s.topic("events"), s.topic("alerts")
    progress, dlq = s.topic("progress"), s.topic("dlq")
    prefix = s.topic_prefix
    group = f"{prefix}-"  # consumer group names: <prefix>-<service>...

    def mirrored(topic: str, source: Site) -> str:
        return s.mirrored(topic, source=source)

    dead_letters = _topic(dlq, PRODUCE, "poison records go to the dead-letter topic")
    principals: list[Principal] = []

    # Tappers write at whichever site is active (the recovery site after a failover), each on the
    # cluster of its own site: the same grants on both clusters, no cross-site password.
    tapper = (
        _topic(writes, OWN, "publishes writes; reads its last seq back after a restart", True),
        _topic(control, OWN, "fences, checkpoint rounds (answers on control)"),
        _group(f"{group}tapper", why="last-seq reader (assigned, never commits)"),
        IDEMPOTENT,
    )
    principals.append(
        Principal(
            "tapper",
            f"{group}tapper",
            "Writes its groups' streams; talks on control.",
            {c: tapper for c in CLUSTERS},
        )
    )
    # The VDSA's checkpoint role runs at the active site too (pointed at that site's cluster).
    coordinator = (
        _topic(control, OWN, "checkpoint rounds"),
        IDEMPOTENT,
    )
    principals.append(
        Principal(
            "vdsa-protected",
            f"{group}vdsa-protected",
            "Drives checkpoint rounds over control.",
            {c: coordinator for c in CLUSTERS},
        )
    )
    principals.append(
        Principal(
            "vdsa-recovery",
            f"{group}vdsa-recovery",
            "Applies the mirrored writes to the replicas; restores run in its pod.",
            {
                "recovery": (
                    _topic(mirrored(writes, "protected"), READ, "the mirrored write stream", True),
                    _topic(
                        mirrored(control, "protected"),
                        READ,
                        "kept checkpoints (CHECKPOINT_TAG) from the mirrored control topic",
                    ),
                    _topic(progress, PRODUCE, "applied positions"),
                    _topic(alerts, PRODUCE, "a halted replica raises an alert"),
                    dead_letters,
                    _group(f"{group}vdsa", why="tapstream-vdsa-apply"),
                    _group(f"{group}restore", why="`tapstream restore` run in the VDSA's pod"),
                    IDEMPOTENT,
                ),
                "protected": (
                    _topic(control, WRITE, "asks the tappers for a RESYNC of a halted volume"),
                    IDEMPOTENT,
                ),
            },
            crosses_sites=True,
        )
    )
    principals.append(
        Principal(
            "journal",
            f"{group}journal",
            "Indexes the mirrored writes and tags; follows the replicas' progress.",
            {
                "recovery": (
                    _topic(mirrored(writes, "protected"), READ, "the mirrored write stream", True),
                    _topic(mirrored(control, "protected"), READ, "checkpoint tags"),
                    _topic(progress, READ, "restorability, trimming"),
                    dead_letters,
                    _group(
                        f"{group}journal", why="processes sharing partitions (offsets in Postgres)"
                    ),
                    IDEMPOTENT,
                ),
            },
        )
    )
    principals.append(
        Principal(
            "replicator",
            f"{group}replicator",
            "Measures MirrorMaker 2's lag and the RPO at the recovery site.",
            {
                "protected": (
                    _topic(writes, READ, "source end offsets", True),
                    _group(f"{group}replicator", why="lag probe (assigned, never commits)"),
                ),
                "recovery": (
                    _topic(mirrored(writes, "protected"), READ, "mirrored end offsets", True),
                    _topic(progress, PRODUCE, "lag and RPO"),
                    _group(f"{group}replicator", why="lag probe (assigned, never commits)"),
                    IDEMPOTENT,
                ),
            },
            crosses_sites=True,
        )
    )
    # User code: reads the write stream, publishes alerts. Never control: a command from an
    # analyzer could pause writes or release kept checkpoints.
    app = f"{prefix}-analyzer"
    principals.append(
        Principal(
            "analyzer",
            f"{group}analyzer",
            "Reads the write stream, publishes alerts; no control.",
            {
                "protected": (
                    _topic(writes, READ, "the write stream", True),
                    _topic(alerts, PRODUCE, "alerts"),
                    _topic(control, ("Describe",), "sees that the topic exists; no Write"),
                    _topic(app, MANAGE[:5], "faust changelogs (<app id>-<table>-changelog)", True),
                    _group(app, why="one consumer group per analyzer and protection group"),
                    dead_letters,
                    IDEMPOTENT,
                ),
            },
        )
    )
    for site in CLUSTERS:
        far = other(site)

        def manager(cluster: Site, site: Site = site, far: Site = far) -> tuple[Grant, ...]:
            shared = (
                _topic(control, OWN, "commands, fences, checkpoints at either site"),
                _topic(writes, READ, "what changed after a checkpoint (reverse, failback)", True),
                _topic(mirrored(writes, other(cluster)), READ, "restore, reverse apply", True),
                _group(f"{group}replay", why="reads a write topic (assigned)"),
                _group(f"{group}restore", why="restores for failover test and failover"),
                _group(f"{group}site-manager"),
                IDEMPOTENT,
                # The web console: the analyzers' and the VDSAs' alerts, the recovery site's RPO.
                _topic(alerts, READ, "the console's alerts"),
                *((_topic(progress, READ, "the console's RPO"),) if cluster == "recovery" else ()),
            )
            if cluster != site:
                return shared
            return (
                *shared,
                _topic(events, OWN, "this site's event-sourced state"),
                _topic(mirrored(events, far), READ, "the other site's events"),
                dead_letters,
            )

        principals.append(
            Principal(
                f"site-manager-{site}",
                f"{group}site-manager-{site}",
                f"The {site} site's manager: its state, and commands to both sites (move, failback).",
                {c: manager(c) for c in CLUSTERS},
                crosses_sites=True,
            )
        )

    def mirrormaker(cluster: Site) -> tuple[Grant, ...]:
        source = other(cluster)  # the direction that runs against this cluster as its target
        alias = s.protected_alias if source == "protected" else s.recovery_alias
        if cluster == "protected":
            mirrored_out: tuple[Grant, ...] = (
                _topic(f"{prefix}.", (*READ, "DescribeConfigs"), "mirrored", True),
            )
        else:
            mirrored_out = (
                _topic(events, (*READ, "DescribeConfigs"), "mirrored back"),
                _topic(writes, (*READ, "DescribeConfigs"), "reverse protection", True),
            )
        return (
            *mirrored_out,
            _topic(f"{alias}.", MANAGE, "mirrored topics, checkpoints, mirrored heartbeats", True),
            _topic("heartbeats", MANAGE),
            _topic("mm2-", MANAGE, "offset syncs, dedicated-mode Connect storage", True),
            _topic("mirrormaker2-cluster", MANAGE, "Strimzi's Connect storage", True),
            _group(f"{alias}-mm2", why="dedicated-mode Connect workers"),
            _group("mirrormaker2-cluster", why="Strimzi's Connect workers"),
            _group(group, ("Describe",), "checkpoint connector reads consumer offsets"),
            _cluster("Describe", "DescribeConfigs", "IdempotentWrite"),
        )

    principals.append(
        Principal(
            "mirrormaker2",
            f"{group}mirrormaker",
            "Both MirrorMaker 2 directions.",
            {c: mirrormaker(c) for c in CLUSTERS},
            crosses_sites=True,
        )
    )
    # The operator's CLI: reads any tapstream topic (tail, status, analyze), commands (resync,
    # checkpoint keep/release) and restores.
    everything = (
        _topic(f"{prefix}.", READ, "tail, status, analyze", True),
        _group(f"{group}", ("Describe",), "analyzer lag (consumer group offsets)"),
        _group(f"{group}tail"),
        _group(f"{group}status"),
        _group(f"{group}change-rate-cli"),
        _group(f"{group}eval-reader"),
    )
    principals.append(
        Principal(
            "cli",
            f"{group}cli",
            "The operator's tapstream CLI: tail, status, analyze, restore, resync, keep.",
            {
                "protected": (
                    *everything,
                    _topic(f"{s.recovery_alias}.{prefix}.", READ, "tail", True),
                    _topic(control, PRODUCE, "resync, checkpoint keep/release, checkpoint create"),
                    _cluster("Describe", "IdempotentWrite", why="lists analyzer groups"),
                ),
                "recovery": (
                    *everything,
                    _topic(f"{s.protected_alias}.{prefix}.", READ, "tail, restore", True),
                    _group(f"{group}restore"),
                ),
            },
            crosses_sites=True,
        )
    )
    return {p.service: p for p in principals}


def acl_rows(
    principal: Principal, cluster: Site
) -> list[tuple[ResourceType, str, PatternType, str]]:
    """(resource, name, pattern, operation) one per ACL binding, in the table's order."""
    return [
        (g.resource, g.name, g.pattern, op)
        for g in principal.grants.get(cluster, ())
        for op in g.operations
    ]
