"""schemathesis over the site manager's whole OpenAPI document, with an admin token, against a real
site manager (Kafka and Postgres behind it): no request may get a 5xx, and the other site, which
reads every event the fuzzed one records, stays up and caught up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import httpx

from .site_manager_harness import start_site_manager

NO_SERVICES = {"TAPSTREAM_SITE_MANAGER_RUN_SERVICES": "false"}


def schemathesis_command(
    url: str, token: str, report: Path, config: Path | None = None
) -> list[str]:
    """The exact command (also in the README): every operation, boundary coverage + random
    fuzzing, a bounded number of cases each, a fixed seed, only the 'no 5xx' check. A config file
    may pin the path parameters to a live group, so its operations get past the 404."""
    exe = str(Path(sys.executable).with_name("schemathesis"))
    return [
        exe, *(["--config-file", str(config)] if config else []),
        "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error",
        "--phases", "coverage,fuzzing",
        "--max-examples", "25",
        "--seed", "1",
        "--workers", "1",
        "--request-timeout", "60",
        "--generation-database", "none",
        "--exclude-path", "/tokens/{name}",  # it could revoke the very token the run uses
        "--report", "junit", "--report-junit-path", str(report),
        "--no-color",
    ]  # fmt: skip


def fuzz(cmd: list[str], report: Path) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    # Every operation was tested and none failed (a 5xx is a failure of not_a_server_error).
    suite = ElementTree.parse(report).getroot()
    assert int(suite.get("tests", 0)) >= 25, out[-3000:]
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), out[-6000:]


def test_schemathesis_finds_no_server_error(stack, tmp_path: Path, unique_name: str) -> None:
    group = unique_name
    pm = start_site_manager(stack, tmp_path, "protected", [group], NO_SERVICES)
    rm = start_site_manager(stack, tmp_path, "recovery", [group], NO_SERVICES)
    try:
        api = pm.client()
        # Something for the fuzzer to find: a group with a VM and a volume.
        assert api.post("/groups", json={"name": group}).status_code == 201
        assert api.post(f"/groups/{group}/vms", json={"vm": "vm1"}).status_code == 201
        vol = {"volume": "d0", "path": str(tmp_path / "d0.img"), "size": 1 << 20}
        assert api.post(f"/groups/{group}/vms/vm1/volumes", json=vol).status_code == 201
        # First on the live group (path parameters pinned to it), then anything at all.
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            f'[parameters]\n"path.name" = "{group}"\n"path.vm" = "vm1"\n"path.volume" = "d0"\n'
        )
        fuzz(
            schemathesis_command(pm.url, pm.token, tmp_path / "live.xml", config),
            tmp_path / "live.xml",
        )
        trail = api.get(f"/groups/{group}/events").json()
        assert len(trail) > 3, trail  # the fuzzer changed the live group (beyond our 3 events)
        fuzz(schemathesis_command(pm.url, pm.token, tmp_path / "any.xml"), tmp_path / "any.xml")
        # Both site managers still up and caught up; the recovery one read every fuzzed event.
        for sm in (pm, rm):
            assert sm.proc.poll() is None, sm.log.read_text()[-3000:]
            health = httpx.get(sm.url + "/health", timeout=30).json()
            assert health["ready"] and health["caught_up"], health
            assert "Traceback" not in sm.log.read_text(), sm.log.read_text()[-3000:]
    finally:
        assert pm.stop() == 0
        assert rm.stop() == 0
