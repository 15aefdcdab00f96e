"""Every Kafka client of the services is configured through tapstream.core.kafka.config, so the
TLS and SASL settings reach it (`tapstream tail` and `status` once built their own and ignored
them). The local stack's harness (lib/tapstream/localstack) is the admin and is left out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CLIENTS = {"Consumer", "Producer", "AdminClient"}


def bare_clients() -> list[str]:
    """`Consumer({...})` and the like whose config dict spreads no `**conf` (from client_config)."""
    found = []
    files = [*ROOT.glob("services/*/tapstream/**/*.py"), *ROOT.glob("lib/tapstream/core/**/*.py")]
    for path in files:
        if "/tests/" in str(path):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else None
            conf = node.args[0]
            if name in CLIENTS and isinstance(conf, ast.Dict) and None not in conf.keys:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_client_takes_the_security_settings() -> None:
    assert bare_clients() == []


def test_tail_and_status_use_the_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Run for real up to the client: the config they build carries SASL_SSL and the user."""
    import confluent_kafka

    from tapstream.cli.recovery import _latest_progress
    from tapstream.cli.tail import tail
    from tapstream.core.settings import TapstreamSettings

    seen: list[dict[str, object]] = []

    class Refused(Exception):
        pass

    def consumer(conf: dict[str, object]) -> None:
        seen.append(conf)
        raise Refused

    monkeypatch.setattr(confluent_kafka, "Consumer", consumer)
    env = {
        "TAPSTREAM_ENV_FILE": "",
        "TAPSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TAPSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TAPSTREAM_KAFKA_SASL_USERNAME": "tapstream-cli",
        "TAPSTREAM_KAFKA_SASL_PASSWORD": "pw",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for call in (
        lambda: tail("tapstream.control", "recovery", True, 1),
        lambda: _latest_progress(TapstreamSettings(_env_file=None)),  # type: ignore[call-arg]
    ):
        try:
            call()
        except Refused:
            pass
    assert [c["security.protocol"] for c in seen] == ["SASL_SSL", "SASL_SSL"]
    assert [c["sasl.username"] for c in seen] == ["tapstream-cli", "tapstream-cli"]
    assert seen[0]["bootstrap.servers"] == TapstreamSettings(_env_file=None).recovery_bootstrap  # type: ignore[call-arg]
