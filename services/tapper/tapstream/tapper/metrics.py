"""The tapper's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

from tapstream.core.metrics import NAMESPACE

REQUESTS = Counter(
    f"{NAMESPACE}_tapper_requests", "NBD requests answered", ["volume", "op", "result"]
)
BYTES = Counter(f"{NAMESPACE}_tapper_bytes", "Bytes read or written through NBD", ["volume", "op"])
PUBLISH_LATENCY = Histogram(
    f"{NAMESPACE}_tapper_publish_seconds",
    "Time from publishing an event to Kafka's ack",
    ["mode"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
PUBLISH_ERRORS = Counter(
    f"{NAMESPACE}_tapper_publish_errors", "Events Kafka refused or timed out", ["volume"]
)
PUBLISH_TIMEOUTS = Counter(
    f"{NAMESPACE}_tapper_publish_timeouts",
    "Sync-mode requests failed with EIO because Kafka did not ack in time",
    ["volume"],
)
STREAM_HEALTHY = Gauge(
    f"{NAMESPACE}_tapper_stream_healthy",
    "1 while the volume's event stream publishes, 0 while it recovers from a Kafka failure",
    ["volume"],
)
INFLIGHT = Gauge(
    f"{NAMESPACE}_tapper_inflight_requests", "NBD requests received and not yet answered"
)
DIRTY_BYTES = Gauge(
    f"{NAMESPACE}_tapper_dirty_bytes", "Bytes marked dirty (events not yet acked)", ["volume"]
)
SEQ = Gauge(f"{NAMESPACE}_tapper_seq", "Last seq published per volume", ["volume"])
SYNC_BYTES = Counter(
    f"{NAMESPACE}_tapper_sync_bytes", "Bytes sent by initial and delta syncs", ["volume", "kind"]
)
CHECKPOINTS = Counter(
    f"{NAMESPACE}_tapper_checkpoints", "Checkpoint markers written", ["group", "result"]
)
AHEAD = Gauge(
    f"{NAMESPACE}_tapper_async_ahead",
    "1 while an async volume only marks its bitmap because Kafka is behind",
    ["volume"],
)
CHECKPOINTS_REFUSED = Counter(
    f"{NAMESPACE}_tapper_checkpoints_refused",
    "Checkpoints refused because a volume's stream was not consistent",
    ["group"],
)
RPO = Gauge(
    f"{NAMESPACE}_tapper_rpo_seconds",
    "At most how far the volume's stream in Kafka is behind the volume: the age of the oldest "
    "event not yet acked, or in async mode since the volume went ahead of a slow Kafka",
    ["volume"],
)
BACKLOG = Gauge(
    f"{NAMESPACE}_tapper_backlog_bytes",
    "Bytes acknowledged to the VM and not yet in Kafka: events awaiting their ack, plus, while an "
    "async volume is ahead of a slow Kafka, the dirty regions its catch-up will resend",
    ["volume"],
)
BITMAP_SYNC = Histogram(
    f"{NAMESPACE}_tapper_bitmap_sync_seconds",
    "msync of the dirty bitmap before acks (async mode)",
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
FENCED = Gauge(
    f"{NAMESPACE}_tapper_fenced",
    "1 while the group's writes are refused (fenced by a site manager operation)",
    ["group"],
)
STREAM_HOLES = Counter(
    f"{NAMESPACE}_tapper_stream_holes",
    "Times a recovery found an event Kafka refused missing while later ones landed (the whole "
    "volume was resent: its consumers halt at the hole and heal on that sync)",
    ["volume"],
)
LOST_UPSTREAM = Counter(
    f"{NAMESPACE}_tapper_lost_upstream",
    "Times Kafka held fewer of a volume's events than it had acknowledged (the whole volume was "
    "resent)",
    ["volume"],
)
VOLUME_FAILED = Gauge(
    f"{NAMESPACE}_tapper_volume_failed",
    "1 while the protected volume refuses writes after a local I/O error (until a probe succeeds)",
    ["volume"],
)
IO_ERRORS = Counter(
    f"{NAMESPACE}_tapper_io_errors",
    "Errors of the protected volume's own writes, zero/trims and fdatasyncs",
    ["volume", "op"],
)
TLS_HANDSHAKES = Counter(
    f"{NAMESPACE}_tapper_tls_handshakes",
    "NBD_OPT_STARTTLS upgrades by outcome (failed: bad or missing client certificate, timeout)",
    ["outcome"],
)
ZEROING = Gauge(
    f"{NAMESPACE}_tapper_zeroing",
    "Large WRITE_ZEROES/TRIM requests running in the zeroing thread (off the event loop)",
)
CONNECTIONS = Gauge(
    f"{NAMESPACE}_tapper_connections", "NBD connections in transmission, per export", ["volume"]
)
CONNECTIONS_REFUSED = Counter(
    f"{NAMESPACE}_tapper_connections_refused",
    "Connections refused at the per-export limit (TAPSTREAM_TAPPER_MAX_CONNECTIONS_PER_EXPORT)",
    ["volume"],
)
