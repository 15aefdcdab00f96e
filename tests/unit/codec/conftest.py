"""A tiny schema registry speaking the two endpoints our codec uses (a registry is no Kafka or
Postgres: a small real HTTP server stands in for it in unit tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Registry(BaseHTTPRequestHandler):
    schemas: list[str] = []
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # /subjects/{subject}/versions
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            if body["schema"] not in self.schemas:
                self.schemas.append(body["schema"])
            self._send(200, {"id": self.schemas.index(body["schema"]) + 1})

    def do_GET(self) -> None:  # /schemas/ids/{id}
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if 1 <= schema_id <= len(self.schemas):
            self._send(200, {"schema": self.schemas[schema_id - 1]})
        else:
            self._send(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture(scope="session")
def registry_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
