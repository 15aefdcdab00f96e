"""A real schema registry (Apicurio, Confluent-compatible API) and kcat with Avro, once per session.

The local stack's registry is reused when it runs (`make up REGISTRY=1`) and left running; else it
is built (first time: a few minutes, cached after) and started here, and stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tapstream.core.settings import load
from tapstream.localstack import LocalStackSettings, Stack, readiness
from tapstream.localstack.kcat import binary
from tapstream.localstack.registry import RegistryNode, build


@pytest.fixture(scope="session")
def registry(stack) -> Iterator[RegistryNode]:
    local = load(LocalStackSettings)
    node = Stack(local).registry
    started = False
    if node.pid() is None:
        node.start(build(local.registry_cache, local.maven_repo), local.registry_heap)
        started = True
    try:
        readiness.wait_for(
            f"schema registry ({node.url})", node.answers, local.ready_timeout_s, node.log,
            running=node.pid,
        )  # fmt: skip
        node.require_backward()
        yield node
    finally:
        if started:
            node.stop()


@pytest.fixture(scope="session")
def kcat() -> Path:
    return binary(load(LocalStackSettings).kcat_cache)
