"""The CLI's errors name what to do next (no server needed)."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from tapstream.cli.main import app


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "site"),
    [
        (["group", "list"], "protected"),
        (["move", "g1"], "recovery"),
        (["failback", "g1"], "protected"),
    ],
)
def test_no_site_manager_says_how_to_start_one(
    args: list[str], site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    env = {"TAPSTREAM_ENV_FILE": "", f"TAPSTREAM_SITE_MANAGER_{site.upper()}_URL": url}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"no answer from the {site} site manager at {url}" in text
    assert f"TAPSTREAM_SITE={site} python -m tapstream.site_manager" in text
