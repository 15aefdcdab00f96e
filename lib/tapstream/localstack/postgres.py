"""One real PostgreSQL per site, from the binaries the `pgserver` package ships."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

with warnings.catch_warnings():  # pgserver asks platformdirs for a runtime dir we never use
    warnings.simplefilter("ignore")
    import pgserver
    from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
# Postgres refuses to run as root; as root we run it as this system user (as pgserver itself does).
SYSTEM_USER = "pgserver"


def _user() -> str | None:
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _run(args: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, user=user)


def start(pgdata: Path, port: int, log_file: Path) -> None:
    """initdb on first use, then `pg_ctl start` listening on 127.0.0.1:port (trust auth, local only)."""
    user = _user()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sockets = pgdata.parent / f"{pgdata.name}-sock"
    sockets.mkdir(exist_ok=True)
    if user is not None:
        ensure_prefix_permissions(pgdata.parent)
        for path in (pgdata.parent, sockets, log_file.parent):
            shutil.chown(path, user)
        if not log_file.exists():
            log_file.touch()
        shutil.chown(log_file, user)
    if not (pgdata / "PG_VERSION").exists():
        res = _run(
            [
                str(BIN / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            user,
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed for {pgdata}:\n{res.stderr[-2000:]}")
    if is_running(pgdata):
        return
    opts = f"-p {port} -h 127.0.0.1 -k {sockets} -c fsync=on -c max_connections=200"
    res = _run(
        [
            str(BIN / "pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(log_file),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ],
        user,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"postgres did not start on port {port}; see {log_file}:\n{res.stderr[-2000:]}"
        )


def is_running(pgdata: Path) -> bool:
    return pid(pgdata) is not None


def pid(pgdata: Path) -> int | None:
    """The postmaster's pid if it is alive."""
    from tapstream.localstack.processes import alive

    try:
        value = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return value if alive(value) else None


def stop(pgdata: Path) -> bool:
    if not is_running(pgdata):
        return False
    res = _run(
        [str(BIN / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"], _user()
    )
    if res.returncode != 0:
        raise RuntimeError(f"pg_ctl stop failed for {pgdata}: {res.stderr[-1000:]}")
    return True
