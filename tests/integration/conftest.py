"""Session fixtures for integration tests: the real two-site stack, started once per session.

A stack that already runs (e.g. after `make up`) is reused and left running; one this session
started is stopped at the end. Where a Docker engine answers, testcontainers could supply Kafka
instead, but MirrorMaker 2 and both sites are simplest as local processes, which need no engine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tapstream.core.settings import TapstreamSettings
from tapstream.localstack import LocalStackSettings, Stack
from tapstream.localstack.readiness import kafka_answers


@dataclass
class RunningStack:
    settings: TapstreamSettings
    protected_bootstrap: str
    recovery_bootstrap: str
    protected_database_url: str
    recovery_database_url: str
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)


def _all_up(stack: Stack) -> bool:
    return all(c.up for c in stack.status()) and all(
        kafka_answers(stack.bootstrap(site)) for site in ("protected", "recovery")
    )


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    local = LocalStackSettings()
    s = Stack(local)
    started_here = False
    try:
        reuse = _all_up(s)
    except Exception:
        reuse = False
    if not reuse:
        s.up()
        started_here = True
    env = {**os.environ, **s.env(), "TAPSTREAM_ENV_FILE": str(s.root / "local.env")}
    settings = TapstreamSettings(
        protected_bootstrap=s.bootstrap("protected"),
        recovery_bootstrap=s.bootstrap("recovery"),
        protected_database_url=s.database_url("protected"),
        recovery_database_url=s.database_url("recovery"),
    )
    yield RunningStack(
        settings=settings,
        protected_bootstrap=s.bootstrap("protected"),
        recovery_bootstrap=s.bootstrap("recovery"),
        protected_database_url=s.database_url("protected"),
        recovery_database_url=s.database_url("recovery"),
        state_dir=s.root,
        env=env,
    )
    if started_here and os.environ.get("TAPSTREAM_KEEP_STACK") != "1":
        s.down()


@pytest.fixture
def unique_name() -> str:
    """A fresh lowercase name for topics, groups and volumes, so tests never share state."""
    return f"t-{uuid.uuid4().hex[:8]}"
