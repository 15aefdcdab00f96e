"""The journal's Prometheus metrics."""

from prometheus_client import Counter, Histogram

from tapstream.core.metrics import NAMESPACE

INDEXED = Counter(f"{NAMESPACE}_journal_indexed_events", "Events written to the index", ["group"])
INDEX_SECONDS = Histogram(
    f"{NAMESPACE}_journal_batch_seconds", "Time to index one batch (COPY + commit)"
)
