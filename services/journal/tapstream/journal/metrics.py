"""The journal's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

from tapstream.core.metrics import NAMESPACE

INDEXED = Counter(f"{NAMESPACE}_journal_indexed_events", "Events written to the index", ["group"])
INDEX_SECONDS = Histogram(
    f"{NAMESPACE}_journal_batch_seconds", "Time to index one batch (COPY + commit)"
)
PARTITIONS = Gauge(
    f"{NAMESPACE}_journal_partitions",
    "Partitions of the group's write topic this process indexes (with "
    "TAPSTREAM_JOURNAL_SHARE_PARTITIONS, shared through the consumer group tapstream-journal-index)",
    ["group"],
)
