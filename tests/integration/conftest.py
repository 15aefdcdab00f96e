"""Session fixtures for integration tests: both sites, real Kafka + MirrorMaker 2 + Postgres.

Which stack (TAPSTREAM_TEST_STACK, default auto):
  1. a local stack that already runs (`make up`) is reused and left running;
  2. else, where a Docker engine answers, testcontainers supply one Kafka and one Postgres per site
     (MirrorMaker 2 still runs from the local jars, pointed at them);
  3. else the local stack is started and stopped at the end of the session.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from pydantic import SecretStr

from tapstream.core.settings import TapstreamSettings, load
from tapstream.localstack import LocalStackSettings, Stack
from tapstream.localstack.classpath import resolve
from tapstream.localstack.control_keys import control_key_env
from tapstream.localstack.mirrormaker_node import MirrorMakerNode
from tapstream.localstack.readiness import kafka_answers, postgres_answers


@dataclass
class RunningStack:
    settings: TapstreamSettings
    protected_bootstrap: str
    recovery_bootstrap: str
    protected_database_url: str
    recovery_database_url: str
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    kind: Literal["local", "containers"] = "local"


def _running(s: Stack) -> bool:
    """Every component of the local stack runs and answers (what `make up` leaves behind)."""
    try:
        return (
            (s.root / "local.env").exists()
            and all(c.up for c in s.status())
            and all(kafka_answers(s.bootstrap(site)) for site in ("protected", "recovery"))
            and all(postgres_answers(s.database_url(site)) for site in ("protected", "recovery"))
        )
    except Exception:
        return False


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _running_stack(settings: TapstreamSettings, state_dir: Path, kind: str) -> RunningStack:
    url = {site: settings.protected_database_url if site == "protected" else settings.recovery_database_url
           for site in ("protected", "recovery")}  # fmt: skip
    variables = {
        "TAPSTREAM_PROTECTED_BOOTSTRAP": settings.protected_bootstrap,
        "TAPSTREAM_RECOVERY_BOOTSTRAP": settings.recovery_bootstrap,
        "TAPSTREAM_PROTECTED_DATABASE_URL": url["protected"].get_secret_value(),
        "TAPSTREAM_RECOVERY_DATABASE_URL": url["recovery"].get_secret_value(),
        "TAPSTREAM_STATE_DIR": str(state_dir),
    }
    env_file = state_dir / "local.env"
    if kind == "containers":
        variables |= control_key_env(state_dir)  # as `make up` writes it
        keys = json.loads(variables["TAPSTREAM_CONTROL_KEYS"])
        settings = settings.model_copy(
            update={
                "control_keys": {k: SecretStr(v) for k, v in keys.items()},
                "control_key_id": variables["TAPSTREAM_CONTROL_KEY_ID"],
            }
        )
        env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    return RunningStack(
        settings=settings,
        protected_bootstrap=settings.protected_bootstrap,
        recovery_bootstrap=settings.recovery_bootstrap,
        protected_database_url=url["protected"].get_secret_value(),
        recovery_database_url=url["recovery"].get_secret_value(),
        state_dir=state_dir,
        env={**os.environ, **variables, "TAPSTREAM_ENV_FILE": str(env_file)},
        kind=kind,  # type: ignore[arg-type]
    )


def _containers(local: LocalStackSettings, work: Path, cleanup: ExitStack) -> RunningStack:
    """One Kafka and one Postgres container per site; MirrorMaker 2 from the local jars."""
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    kafka = {site: cleanup.enter_context(KafkaContainer().with_kraft()) for site in ("p", "r")}
    pg = {site: cleanup.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
          for site in ("p", "r")}  # fmt: skip
    settings = TapstreamSettings.model_validate(
        {
            "protected_bootstrap": kafka["p"].get_bootstrap_server(),
            "recovery_bootstrap": kafka["r"].get_bootstrap_server(),
            "protected_database_url": SecretStr(pg["p"].get_connection_url()),
            "recovery_database_url": SecretStr(pg["r"].get_connection_url()),
        }
    )
    mm = MirrorMakerNode(work / "mirrormaker", work / "mirrormaker.pid", work / "mirrormaker.log")
    since = time.time()
    mm.start(settings, resolve(work, local.maven_repo), local.mirrormaker_heap)
    cleanup.callback(mm.stop)
    mm.wait_ready(settings, since, local.ready_timeout_s)
    return _running_stack(settings, work, "containers")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    local = load(LocalStackSettings)
    s = Stack(local)
    with ExitStack() as cleanup:
        if not _running(s):
            # Parts of a stack running means someone's stack: complete it, never stop it.
            ours = not any(c.up for c in s.status())
            docker = local.test_stack == "containers" or (
                local.test_stack == "auto" and ours and _docker_answers()
            )
            if docker:
                yield _containers(local, tmp_path_factory.mktemp("stack"), cleanup)
                return
            s.up()
            if ours and os.environ.get("TAPSTREAM_KEEP_STACK") != "1":
                cleanup.callback(s.down)
        yield _running_stack(s.client_settings(), s.root, "local")


@pytest.fixture
def local_stack(stack: RunningStack) -> Stack:
    """The local stack's manager, for tests of `make up` itself (not meaningful on containers)."""
    if stack.kind != "local":
        pytest.skip("runs on the local stack only (this session uses containers)")
    return Stack(load(LocalStackSettings))


@pytest.fixture
def unique_name() -> str:
    """A fresh lowercase name for topics, groups and volumes, so tests never share state."""
    return f"t-{uuid.uuid4().hex[:8]}"
