"""Start libvirt's daemons where no service manager does (a container, a CI runner, the tests):
`virtlogd` (QEMU's console and log files go through it) and `libvirtd`, each only if its socket
does not answer yet, so calling this again is harmless."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class LibvirtdError(RuntimeError):
    """libvirt's daemons are not installed or did not come up."""


def system_uri() -> str:
    """`qemu:///system` as root, else the user's own `qemu:///session`."""
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(path))
        return True
    except OSError:
        return False


def _sockets() -> tuple[Path, Path]:
    if os.geteuid() == 0:
        run = Path("/run/libvirt")
    else:
        run = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}") / "libvirt"
    return run / "virtlogd-sock", run / "libvirt-sock"


def ensure_libvirtd(within_s: float = 30.0) -> None:
    """Both daemons answer on their sockets, started here (`-d`: they daemonise) when they did not.
    Only for qemu:///system as root, or qemu:///session as a user without a session bus."""
    for daemon, sock in zip(("virtlogd", "libvirtd"), _sockets(), strict=True):
        if _answers(sock):
            continue
        exe = shutil.which(daemon) or shutil.which(daemon, path="/usr/sbin:/sbin")
        if exe is None:
            raise LibvirtdError(
                f"{daemon} is not installed: `make system-deps` (Debian: libvirt-daemon-system)"
            )
        res = subprocess.run([exe, "-d"], capture_output=True, text=True, timeout=within_s)
        if res.returncode != 0 and not _answers(sock):
            raise LibvirtdError(f"{daemon} -d failed ({res.returncode}): {res.stderr.strip()}")
        deadline = time.monotonic() + within_s
        while not _answers(sock):
            if time.monotonic() > deadline:
                raise LibvirtdError(f"{daemon} did not answer on {sock} within {within_s:.0f}s")
            time.sleep(0.1)


if __name__ == "__main__":  # python -m tapstream.site_manager.vms.libvirtd
    ensure_libvirtd()
    print(f"libvirt answers at {system_uri()}")
