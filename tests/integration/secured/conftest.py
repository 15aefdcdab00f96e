"""The secured two-site stack (lib/tapstream/localstack/secured_stack.py: SASL_SSL + SCRAM-SHA-512,
the StandardAuthorizer with the ACL table's users and grants, MirrorMaker 2 as its own principal),
started once for this folder's tests and stopped after them. Its own home and free ports: the
default stack of the other tests keeps running beside it. `make secured` runs only these tests
(`-m secured`); `make test` runs them with the rest."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tapstream.core.ports import free_port
from tapstream.core.settings import load
from tapstream.localstack import LocalStackSettings
from tapstream.localstack.classpath import resolve
from tapstream.localstack.secured_stack import SecuredSites


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "secured: runs on the secured two-site stack; `make secured`"
    )


def free_pair() -> int:
    """A port p with p + 1 free too (a node's client and controller listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no two adjacent free ports")


@pytest.fixture(scope="package")
def sites() -> Iterator[SecuredSites]:
    local = load(LocalStackSettings)
    classpath = resolve(local.state_dir.resolve(), local.maven_repo)
    kafka_ports = {"protected": free_pair(), "recovery": free_pair()}
    while kafka_ports["recovery"] in (kafka_ports["protected"], kafka_ports["protected"] + 1):
        kafka_ports["recovery"] = free_pair()
    # Not under pytest's tmp dir: a pytest session starting meanwhile makes /tmp/pytest-of-<user>
    # 0700 again, and Postgres (run as its own user when we are root) loses its data directory.
    home = Path(tempfile.mkdtemp(prefix="tapstream-secured-"))
    s = SecuredSites(
        home,
        kafka_ports,  # type: ignore[arg-type]
        {"protected": free_port(), "recovery": free_port()},
    )
    began = time.monotonic()
    try:
        s.up(classpath, local.ready_timeout_s)
        s.startup_s = time.monotonic() - began  # type: ignore[attr-defined]
        yield s
    finally:
        s.down()
        shutil.rmtree(home, ignore_errors=True)


def as_stack(sites: SecuredSites, service: str, **extra: str) -> SimpleNamespace:
    """What the harnesses (tapper_harness, services_harness, site_manager_harness) take as `stack`:
    a child environment logged in as `service`'s principal."""
    return SimpleNamespace(env=sites.env(service, **extra))
