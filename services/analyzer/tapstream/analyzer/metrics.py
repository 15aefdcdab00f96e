"""The analyzers' Prometheus metrics."""

from prometheus_client import Counter, Gauge

from tapstream.core.metrics import NAMESPACE

EVENTS = Counter(
    f"{NAMESPACE}_analyzer_events", "Events processed", ["analyzer", "group", "volume", "result"]
)
SEQ = Gauge(f"{NAMESPACE}_analyzer_seq", "Last seq processed", ["analyzer", "group", "volume"])
ALERTS = Counter(
    f"{NAMESPACE}_analyzer_alerts", "Alerts published", ["analyzer", "group", "volume", "kind"]
)
BLOCKS = Counter(
    f"{NAMESPACE}_analyzer_blocks",
    "4 KiB blocks scored by the encryption detector",
    ["group", "volume", "verdict"],
)
SHARE = Gauge(
    f"{NAMESPACE}_analyzer_encrypted_share",
    "Share of the recent (decayed) data blocks that look encrypted",
    ["group", "volume"],
)
BYTES = Counter(
    f"{NAMESPACE}_analyzer_changed_bytes", "Bytes written (change rate)", ["group", "volume"]
)
UNIQUE = Gauge(
    f"{NAMESPACE}_analyzer_window_unique_blocks",
    "Distinct blocks changed in the last closed window",
    ["group", "volume"],
)
RATE = Gauge(
    f"{NAMESPACE}_analyzer_window_bytes_per_second",
    "Bytes/s written in the last closed window",
    ["group", "volume"],
)
COMMANDS_REFUSED = Counter(
    f"{NAMESPACE}_analyzer_commands_refused",
    "Commands (checkpoint tags) the cluster refused this analyzer: its ACLs give it no control",
    ["analyzer", "group"],
)
SCORE = Gauge(
    f"{NAMESPACE}_analyzer_encryption_score",
    "The encryption detector's score per volume (1.0 alerts): min(evidence / min_blocks, "
    "share / min_share), evidence decaying with the half-life",
    ["group", "volume"],
)
