"""A tiny schema registry speaking the two endpoints our codec uses, and a registry that never
answers. A registry is no Kafka or Postgres: a small real HTTP server stands in for it here."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Registry:
    """State of one fake registry: what was registered, what was asked, how to fail."""

    url: str = ""
    schemas: list[str] = field(default_factory=list)  # id = index + 1
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _fail(self) -> bool:
            if registry.fail_with is None:
                return False
            self._send(
                registry.fail_with, {"error_code": registry.fail_with, "message": "told to fail"}
            )
            return True

        def do_POST(self) -> None:
            registry.requests.append(("POST", self.path))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            match = re.fullmatch(r"/subjects/([^/]+)/versions", self.path)
            if self._fail():
                return
            if match is None or body.get("schemaType", "AVRO") != "AVRO":
                self._send(422, {"error_code": 42201, "message": "Invalid schema"})
                return
            with registry.lock:
                if body["schema"] not in registry.schemas:
                    registry.schemas.append(body["schema"])
                schema_id = registry.schemas.index(body["schema"]) + 1
                registry.subjects.setdefault(match.group(1), []).append(schema_id)
            self._send(200, {"id": schema_id})

        def do_GET(self) -> None:
            registry.requests.append(("GET", self.path))
            match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
            if self._fail():
                return
            schema_id = int(match.group(1)) if match else 0
            if 1 <= schema_id <= len(registry.schemas):
                self._send(200, {"schema": registry.schemas[schema_id - 1]})
            else:
                self._send(404, {"error_code": 40403, "message": "Schema not found"})

    return Handler


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A fresh fake registry per test (starting one takes a millisecond)."""
    state = Registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry_url(registry: Registry) -> str:
    return registry.url


@pytest.fixture
def closed_port() -> int:
    """A port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """Accepts TCP connections (the kernel's backlog) and never answers: the hang case."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
