"""Prometheus metrics: one endpoint per process, metric names prefixed `tapstream_`."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

NAMESPACE = "tapstream"


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> int:
    """Start the /metrics endpoint in a daemon thread; port 0 means no endpoint. Returns the port."""
    if port == 0:
        return 0
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
