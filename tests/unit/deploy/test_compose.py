"""deploy/compose checked offline (YAML, health checks, volumes, settings); `docker compose config`
where a Docker engine answers."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.deploy import checks

COMPOSE = checks.DEPLOY / "compose" / "compose.yaml"
SPEC: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
SERVICES: dict[str, Any] = SPEC["services"]


def tapstream_services(spec: dict[str, Any]) -> dict[str, str]:
    """Compose service -> python module it runs."""
    out = {}
    for name, svc in spec["services"].items():
        module = checks.service_module(svc.get("command", []))
        if module:
            out[name] = module
    return out


def compose_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    declared = set(spec.get("volumes") or {})
    for name, svc in spec["services"].items():
        if "image" not in svc:
            problems.append(f"{name}: no image")
        if "healthcheck" not in svc or not svc["healthcheck"].get("test"):
            problems.append(f"{name}: no health check")
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")) and source not in declared:
                problems.append(f"{name}: volume {source} is not declared")
            if source.startswith("."):
                if not (COMPOSE.parent / source).exists():
                    problems.append(f"{name}: bind source {source} does not exist")
        for dep in svc.get("depends_on", {}):
            if dep not in spec["services"]:
                problems.append(f"{name}: depends on unknown {dep}")
        module = checks.service_module(svc.get("command", []))
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        if module:
            problems += checks.check_settings(module, env, f"compose {name}")
        elif any(k.startswith("TAPSTREAM_") for k in env):
            problems.append(
                f"{name}: TAPSTREAM_* settings but no `python -m tapstream.<service>` command"
            )
    return problems


def test_compose_services_are_complete() -> None:
    assert compose_problems(SPEC) == []
    kafka = [n for n, s in SERVICES.items() if s["image"] == "apache/kafka:4.1.1"]
    assert sorted(kafka) == ["kafka-protected", "kafka-recovery", "mirrormaker"]
    for name in ("kafka-protected", "kafka-recovery"):
        env = SERVICES[name]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and env["CLUSTER_ID"]
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert (
        SERVICES["kafka-protected"]["environment"]["CLUSTER_ID"]
        != SERVICES["kafka-recovery"]["environment"]["CLUSTER_ID"]
    )
    assert "connect-mirror-maker.sh" in SERVICES["mirrormaker"]["command"][0]
    assert any(s["image"].startswith("postgres:") for s in SERVICES.values())


def test_every_service_runs_in_compose() -> None:
    deployed = {m.removeprefix("tapstream.") for m in tapstream_services(SPEC).values()}
    assert checks.services_with_main() <= deployed, sorted(checks.services_with_main() - deployed)
    sites = {
        SERVICES[n]["environment"]["TAPSTREAM_SITE"]
        for n, m in tapstream_services(SPEC).items()
        if m == "tapstream.vdsa"
    }
    assert sites == {"protected", "recovery"}


def test_compose_checks_catch_mistakes() -> None:
    spec = copy.deepcopy(SPEC)
    spec["services"]["journal"]["environment"]["TAPSTREAM_JOURNAL_GROUP"] = (
        "g1"  # the field is _GROUPS
    )
    del spec["services"]["vdsa-recovery"]["healthcheck"]
    spec["services"]["tapper"]["volumes"].append("nowhere:/x")
    spec["services"]["tapper"]["environment"]["TAPSTREAM_TAPPER_LISTEN_PORT"] = "70000"
    problems = "\n".join(compose_problems(spec))
    for expected in (
        "TAPSTREAM_JOURNAL_GROUP is not a setting",
        "vdsa-recovery: no health check",
        "volume nowhere is not declared",
        "TapperSettings rejects",
    ):
        assert expected in problems


def test_committed_mm2_properties_equal_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    from tapstream.cli.main import app

    for key in list(os.environ):
        if key.startswith("TAPSTREAM_"):
            monkeypatch.delenv(key)
    env = {
        "TAPSTREAM_ENV_FILE": "",
        "TAPSTREAM_PROTECTED_BOOTSTRAP": "kafka-protected:9092",
        "TAPSTREAM_RECOVERY_BOOTSTRAP": "kafka-recovery:9092",
    }
    result = CliRunner().invoke(app, ["replicator", "mm2-config", "--rf", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == (COMPOSE.parent / "mm2.properties").read_text()


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not _docker_engine_answers(),
    reason="no Docker engine answers (the offline checks above still ran)",
)
def test_docker_compose_config_accepts_the_file() -> None:
    subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], check=True, timeout=60
    )
