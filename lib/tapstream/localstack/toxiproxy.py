"""Toxiproxy between MirrorMaker 2 and the protected cluster: a real TCP cut, latency or bandwidth
cap on the link between the sites, driven through toxiproxy's HTTP API.

The server is built once from the Go module proxy (`go install`) into a per-version cache, like the
Kafka jars; its proxies are declared in a JSON file given with `-config`, so a restarted server
has them again (and that file's path marks the process as ours).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tapstream.localstack import processes

MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"


class ToxiproxyError(RuntimeError):
    """Go is missing, the build failed, or the API refused a request."""


def binary(cache: Path, version: str) -> Path:
    """The toxiproxy server of `version`, built with `go install` on first use."""
    target = cache / version
    exe = target / "server"  # `go install` names the binary after its package directory
    if exe.is_file():
        return exe
    if shutil.which("go") is None:
        raise ToxiproxyError(
            "`go` is not on the PATH: install it (Debian: apt-get install golang-go) and retry."
        )
    target.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["go", "install", f"{MODULE}@{version}"],
        capture_output=True, text=True, env={**os.environ, "GOBIN": str(target)},
    )  # fmt: skip
    if res.returncode != 0 or not exe.is_file():
        raise ToxiproxyError(f"building toxiproxy {version} failed:\n{res.stderr[-2000:]}")
    return exe


@dataclass(frozen=True)
class ProxySpec:
    name: str
    listen: int
    upstream: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": f"127.0.0.1:{self.listen}",
            "upstream": f"127.0.0.1:{self.upstream}",
            "enabled": True,
        }


@dataclass(frozen=True)
class ToxiproxyNode:
    home: Path  # <state>/toxiproxy: proxies.json
    pid_file: Path
    log: Path
    port: int  # HTTP API

    @property
    def conf(self) -> Path:
        return self.home / "proxies.json"

    @property
    def api(self) -> Toxiproxy:
        return Toxiproxy(f"http://127.0.0.1:{self.port}")

    def pid(self) -> int | None:
        return processes.read_pid(self.pid_file, marker=str(self.conf))

    def start(self, exe: Path, proxies: list[ProxySpec]) -> None:
        """Start the server with `proxies` (unless it runs; then make sure it has them)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(json.dumps([p.as_json() for p in proxies], indent=2))
        if self.pid() is None:
            taken = [
                p for p in [self.port] + [x.listen for x in proxies] if processes.port_in_use(p)
            ]
            if taken:
                raise RuntimeError(
                    f"port {', '.join(map(str, taken))} is taken by a process that is not our "
                    "toxiproxy: stop it, or choose other ports (TAPSTREAM_TOXIPROXY_PORT)"
                )
            cmd = [str(exe), "-host", "127.0.0.1", "-port", str(self.port),
                   "-config", str(self.conf)]  # fmt: skip
            # Info, not the default debug: a line per connection is enough.
            processes.start(cmd, self.pid_file, self.log, env={**os.environ, "LOG_LEVEL": "info"})

    def stop(self) -> bool:
        return processes.stop(self.pid_file, marker=str(self.conf), timeout_s=10)


class Toxiproxy:
    """The HTTP API (https://github.com/Shopify/toxiproxy#http-api), just what the tests need."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: object = None) -> Any:
        res = httpx.request(method, self.url + path, json=body, timeout=10)
        if res.status_code >= 300:
            raise ToxiproxyError(f"{method} {path}: {res.status_code} {res.text}")
        return res.json() if res.content else None

    def answers(self) -> bool:
        return bool(self._call("GET", "/version"))

    def proxies(self) -> dict[str, Any]:
        return dict(self._call("GET", "/proxies"))

    def populate(self, proxies: list[ProxySpec]) -> None:
        """Create or update `proxies` (a running server reads its -config file only at start)."""
        self._call("POST", "/populate", [p.as_json() for p in proxies])

    def set_enabled(self, name: str, enabled: bool) -> None:
        """A disabled proxy closes its connections and refuses new ones: the link is cut."""
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(
        self, proxy: str, kind: str, stream: str, attributes: dict[str, int], name: str = ""
    ) -> None:
        """`kind` latency ({latency, jitter} ms) or bandwidth ({rate} KB/s); `stream` upstream
        (MirrorMaker 2 -> broker) or downstream (broker -> MirrorMaker 2)."""
        body = {"name": name or f"{kind}_{stream}", "type": kind, "stream": stream,
                "toxicity": 1.0, "attributes": attributes}  # fmt: skip
        self._call("POST", f"/proxies/{proxy}/toxics", body)

    def reset(self) -> None:
        """Every proxy enabled again and every toxic removed."""
        self._call("POST", "/reset")
