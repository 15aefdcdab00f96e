"""The VDSA's Prometheus metrics."""

from prometheus_client import Counter, Gauge

from tapstream.core.metrics import NAMESPACE

APPLIED = Counter(
    f"{NAMESPACE}_vdsa_applied_events", "Events applied to replicas", ["group", "volume"]
)
APPLIED_SEQ = Gauge(
    f"{NAMESPACE}_vdsa_applied_seq", "Last seq applied to the replica", ["group", "volume"]
)
CHECKPOINTS = Counter(f"{NAMESPACE}_vdsa_checkpoints", "Checkpoint rounds", ["group", "result"])
HELD = Gauge(
    f"{NAMESPACE}_vdsa_held",
    "1 while the replica is held at a kept checkpoint",
    ["group", "volume"],
)
HALTED = Gauge(
    f"{NAMESPACE}_volume_halted",
    "1 while the volume's replica is halted at its last good event (gap, checksum, bracket, "
    "undecodable) waiting for a resync",
    ["group", "volume", "reason"],
)
IO_ERRORS = Counter(
    f"{NAMESPACE}_vdsa_io_errors", "Replica writes that failed (retried later)", ["group", "volume"]
)
IO_FAILING = Gauge(
    f"{NAMESPACE}_vdsa_io_failing",
    "1 while the volume's replica cannot be written (e.g. its disk is full); retried",
    ["group", "volume"],
)
PARTITIONS = Gauge(
    f"{NAMESPACE}_vdsa_partitions",
    "Partitions of the group's write topic this process applies (the consumer group "
    "tapstream-vdsa-apply shares them between VDSA processes)",
    ["group"],
)
