"""The chaos stack: a second two-site stack of its own (state dir `.tapstream-chaos`, ports 29xxx and
25432/25433), with a 3-broker protected site and a toxiproxy between MirrorMaker 2 and it. Brought
up once per session and stopped at the end, it never touches the shared stack (`make up`).

Its tests are marked `chaos` and run only when asked for (`pytest -m chaos`, `make chaos`).
Inside this directory the `stack` and `local_stack` fixtures are the chaos stack's, so the existing
harnesses (start_tapper, start_service, replay) run on it unchanged.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tapstream.localstack import LocalStackSettings, Stack
from tapstream.localstack.kafka_node import KafkaNode
from tapstream.localstack.toxiproxy import Toxiproxy

from ..conftest import RunningStack, _running_stack

REPO = Path(__file__).resolve().parents[3]
# Ports: protected node i on 29092 + 10*i (controller +1, MM2 listener +2, its proxy +3).
CHAOS = {
    "state_dir": REPO / ".tapstream-chaos",
    "protected_kafka_port": 29092,
    "recovery_kafka_port": 29192,
    "protected_pg_port": 25432,
    "recovery_pg_port": 25433,
    "toxiproxy_port": 28474,
    "protected_brokers": 3,
    "link_proxy": True,
    # 2 cores and a shared stack beside us: small heaps.
    "kafka_heap": "320m",
    "mirrormaker_heap": "384m",
    # Brokers delete segments past retention every second, not every 5 minutes (a static broker
    # config): the cut-longer-than-retention scenario watches a short retention pass.
    "kafka_retention_check_ms": 1000,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: needs the chaos stack (3 protected brokers, toxiproxy link); `make chaos`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Chaos tests run only when selected with -m (they start a stack of their own): otherwise they
    are deselected, not skipped, so `make test` neither runs them nor counts them."""
    if "chaos" in (config.option.markexpr or ""):
        return
    chaos = [item for item in items if item.get_closest_marker("chaos")]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [item for item in items if not item.get_closest_marker("chaos")]


@dataclass
class Chaos:
    """The chaos stack's manager and its link proxy, for the tests that break things."""

    stack: Stack
    running: RunningStack

    @property
    def proxy(self) -> Toxiproxy:
        assert self.stack.toxiproxy is not None
        return self.stack.toxiproxy.api

    @property
    def links(self) -> list[str]:
        return [p.name for p in self.stack.link_proxies()]

    def broker(self, node_id: int) -> KafkaNode:
        return next(n for n in self.stack.brokers["protected"] if n.node_id == node_id)


@pytest.fixture(scope="session")
def chaos() -> Iterator[Chaos]:
    s = Stack(LocalStackSettings.model_validate(CHAOS))
    if not any(c.up for c in s.status()):
        # Nothing of ours runs: a fresh cluster (topics of an earlier session would only cost time).
        shutil.rmtree(s.root, ignore_errors=True)
    try:
        s.up()
        yield Chaos(s, _running_stack(s.client_settings(), s.root, "local"))
    finally:
        if os.environ.get("TAPSTREAM_KEEP_CHAOS") != "1":
            s.down()


@pytest.fixture(scope="session")
def stack(chaos: Chaos) -> RunningStack:
    return chaos.running


@pytest.fixture
def local_stack(chaos: Chaos) -> Stack:
    return chaos.stack
