"""The tapper's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

from tapstream.core.metrics import NAMESPACE

REQUESTS = Counter(f"{NAMESPACE}_tapper_requests", "NBD requests handled", ["volume", "op", "result"])
BYTES = Counter(f"{NAMESPACE}_tapper_bytes", "Bytes read or written through NBD", ["volume", "op"])
PUBLISH_LATENCY = Histogram(
    f"{NAMESPACE}_tapper_publish_seconds", "Time from publishing an event to Kafka's ack", ["mode"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
)
PUBLISH_ERRORS = Counter(f"{NAMESPACE}_tapper_publish_errors", "Events Kafka refused or timed out", ["volume"])
INFLIGHT = Gauge(f"{NAMESPACE}_tapper_inflight_requests", "NBD requests being handled")
DIRTY_BYTES = Gauge(f"{NAMESPACE}_tapper_dirty_bytes", "Bytes marked dirty (events not yet acked)", ["volume"])
SEQ = Gauge(f"{NAMESPACE}_tapper_seq", "Last seq published per volume", ["volume"])
SYNC_BYTES = Counter(f"{NAMESPACE}_tapper_sync_bytes", "Bytes sent by initial and delta syncs", ["volume", "kind"])
CHECKPOINTS = Counter(f"{NAMESPACE}_tapper_checkpoints", "Checkpoint markers written", ["group", "result"])
