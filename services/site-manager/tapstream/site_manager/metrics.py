"""Prometheus metrics of the site manager."""

from prometheus_client import Counter, Histogram

from tapstream.core.metrics import NAMESPACE

EVENTS = Counter(
    "site_manager_events",
    "Domain events applied to the projection",
    ["aggregate", "type", "source"],
    namespace=NAMESPACE,
)
CONFLICTS = Counter(
    "site_manager_conflicts",
    "Events kept aside: another event holds their version",
    namespace=NAMESPACE,
)
COMMAND_SECONDS = Histogram(
    "site_manager_command_seconds",
    "Time to decide and record a command",
    ["command"],
    namespace=NAMESPACE,
)
OPERATIONS = Counter(
    "site_manager_operations",
    "Recovery operations by kind and outcome",
    ["kind", "outcome"],
    namespace=NAMESPACE,
)
HTTP_REQUESTS = Counter(
    "site_manager_http_requests",
    "REST requests",
    ["method", "route", "status"],
    namespace=NAMESPACE,
)
