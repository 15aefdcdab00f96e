"""Runs site managers as real processes (so tests can SIGTERM them) and the `tapstream` CLI."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .tapper_harness import free_port


@dataclass
class SiteManagerProcess:
    proc: subprocess.Popen[bytes]
    site: str
    url: str
    log: Path
    state_dir: Path
    token: str = ""  # an admin's (the API refuses requests without one)
    verify: ssl.SSLContext | bool = True  # over HTTPS: trusts the CA that signed its certificate

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30, verify=self.verify)

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, headers=self.headers, timeout=30, verify=self.verify)
        r.raise_for_status()
        return r.json()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)


def admin_token(tokens_file: Path) -> str:
    """The test's admin token in `tokens_file` (issued once, kept beside it for later calls), as
    `python -m tapstream.site_manager token issue` does on a real host."""
    from tapstream.site_manager.auth import Role, TokenStore

    kept = tokens_file.with_name(tokens_file.name + ".admin")
    store = TokenStore(tokens_file)
    if kept.exists() and store.authenticate(kept.read_text()) is not None:
        return kept.read_text()
    kept.write_text(store.issue(f"test-admin-{len(store.tokens())}", Role.ADMIN))
    return kept.read_text()


def start_site_manager(
    stack,
    tmp: Path,
    site: str,
    groups: list[str],
    extra: dict[str, str] | None = None,
    timeout: float = 90,
    ca: Path | None = None,
) -> SiteManagerProcess:
    """With TAPSTREAM_SITE_MANAGER_TLS_CERTFILE in `extra` it serves HTTPS, checked against `ca`."""
    port = int((extra or {}).get("TAPSTREAM_SITE_MANAGER_PORT") or free_port())
    state = tmp / f"sm-{site}"
    tokens = Path((extra or {}).get("TAPSTREAM_SITE_MANAGER_TOKENS_FILE") or tmp / "tokens.json")
    env = {
        **stack.env,
        "TAPSTREAM_SITE": site,
        "TAPSTREAM_SITE_MANAGER_PORT": str(port),
        "TAPSTREAM_SITE_MANAGER_STATE_DIR": str(state),
        "TAPSTREAM_REPLICA_DIR": str(tmp / "replicas"),
        "TAPSTREAM_SITE_MANAGER_ONLY_GROUPS": json.dumps(groups),
        "TAPSTREAM_LOG_FORMAT": "console",
        "TAPSTREAM_SITE_MANAGER_STOP_SERVICES": "true",  # tests leave nothing running
        "TAPSTREAM_SITE_MANAGER_TOKENS_FILE": str(tokens),  # both sites of a test share it
        # Tests keep their volumes under their own tmp dir: that is all a site manager may touch.
        "TAPSTREAM_SITE_MANAGER_VOLUME_ROOTS": json.dumps([str(tmp)]),
        "TAPSTREAM_SITE_MANAGER_TARGET_ROOTS": json.dumps([str(tmp)]),
        **(extra or {}),
    }
    log = tmp / f"site-manager-{site}-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapstream.site_manager"], env=env, stdout=out, stderr=out
        )
    scheme = "https" if "TAPSTREAM_SITE_MANAGER_TLS_CERTFILE" in (extra or {}) else "http"
    sm = SiteManagerProcess(
        proc, site, f"{scheme}://127.0.0.1:{port}", log, state, admin_token(tokens),
        ssl.create_default_context(cafile=str(ca)) if ca else True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"site manager exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(sm.url + "/health", timeout=2, verify=sm.verify).json()["ready"]:
                return sm
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"site manager not ready within {timeout}s:\n{log.read_text()[-3000:]}")


def cli_env(
    stack, protected: SiteManagerProcess, recovery: SiteManagerProcess, tmp: Path
) -> dict[str, str]:
    return {
        **stack.env,
        "TAPSTREAM_SITE_MANAGER_PROTECTED_URL": protected.url,
        "TAPSTREAM_SITE_MANAGER_RECOVERY_URL": recovery.url,
        "TAPSTREAM_REPLICA_DIR": str(tmp / "replicas"),
        "TAPSTREAM_API_TOKEN": protected.token,
        "COLUMNS": "200",
    }


def tapstream(
    env: dict[str, str], *args: str, ok: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "tapstream.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert res.returncode == 0, (
            f"tapstream {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        )
    return res


def tapstream_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(tapstream(env, *args, "--json").stdout)


def site_converged(env: dict[str, str], group: str, site: str) -> Any:
    """The group's status at `site` once that site knows the group (its events crossed MirrorMaker 2)
    and runs every service it wants; None before (a 404 while the events are on their way)."""
    res = tapstream(env, "group", "status", group, "--site", site, "--json", ok=False)
    if res.returncode != 0:
        assert "404" in res.stderr, f"group status at {site} failed:\n{res.stdout}\n{res.stderr}"
        return None
    s = json.loads(res.stdout)
    return s["converged"] and all(s["services"].values()) and s
