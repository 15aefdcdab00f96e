"""The replicator's Prometheus metrics."""

from prometheus_client import Counter, Gauge

from tapstream.core.metrics import NAMESPACE

LAG = Gauge(
    f"{NAMESPACE}_replication_lag_records",
    "Records on the protected cluster not yet mirrored",
    ["group"],
)
RPO = Gauge(
    f"{NAMESPACE}_rpo_seconds", "Age of the oldest write not yet on the recovery cluster", ["group"]
)
MM2_RESTARTS = Counter(
    f"{NAMESPACE}_mirrormaker_restarts", "Times the replicator restarted MirrorMaker 2"
)
