"""Builds the test guest once and caches it (`.tapstream/cache/guest`, gitignored): Debian's cloud
kernel (`apt-get download`, unpacked with `dpkg-deb`), its six virtio modules, and an initramfs of
Debian's static busybox plus `init.sh`, written as a newc cpio here (no cpio tool, no root needed:
the /dev/console node is a cpio entry, not a mknod)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".tapstream" / "cache" / "guest"
BUSYBOX = Path("/bin/busybox")
INIT = Path(__file__).with_name("init.sh")
# Load order (each module's modinfo `depends=` names only modules before it; checked below).
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
)
CMDLINE = "console=ttyS0 quiet panic=-1"


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path

    def cmdline(self, mode: str) -> str:
        """`write` (boot 1) or `verify` (boot 2)."""
        return f"{CMDLINE} tapguest={mode}"


def _run(*args: str, cwd: Path | None = None) -> str:
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res.stdout


def _kernel_package() -> str:
    """The versioned image package Debian's `linux-image-cloud-amd64` depends on now."""
    deps = _run("apt-cache", "depends", "linux-image-cloud-amd64")
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*-cloud-amd64)", deps)
    if found is None:
        raise RuntimeError(
            "apt does not know linux-image-cloud-amd64: run `apt-get update` (the test guest "
            f"boots Debian's cloud kernel)\n{deps}"
        )
    return found.group(1)


def _kernel(out: Path) -> tuple[Path, dict[str, Path]]:
    """vmlinuz and the virtio modules, unpacked from the kernel's .deb into `out`."""
    kernel, mods = out / "vmlinuz", {m: out / f"{m}.ko" for m in MODULES}
    if kernel.exists() and all(p.exists() for p in mods.values()):
        return kernel, mods
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        work = Path(tmp)
        # apt's sandbox user must be able to write there; as root the download is unsandboxed.
        os.chmod(work, 0o777)
        _run("apt-get", "download", "-q", _kernel_package(), cwd=work)
        deb = next(work.glob("linux-image-*.deb"))
        _run("dpkg-deb", "-x", str(deb), str(work / "x"))
        shutil.copyfile(next((work / "x" / "boot").glob("vmlinuz-*")), kernel.with_suffix(".tmp"))
        found = {p.stem: p for p in (work / "x" / "lib" / "modules").rglob("*.ko")}
        for i, m in enumerate(MODULES):
            if m not in found:
                raise RuntimeError(f"the kernel package has no {m}.ko (built in now?)")
            deps = re.search(rb"depends=([a-z0-9_,-]*)", found[m].read_bytes())
            needs = set(filter(None, deps.group(1).decode().split(","))) if deps else set()
            if not needs <= set(MODULES[:i]):
                raise RuntimeError(f"{m}.ko needs {needs - set(MODULES[:i])}: update MODULES")
            shutil.copyfile(found[m], mods[m])
        kernel.with_suffix(".tmp").replace(kernel)
    return kernel, mods


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One newc entry (the format the kernel unpacks an initramfs from), 4-byte aligned."""
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def _initramfs(out: Path, modules: dict[str, Path]) -> Path:
    path = out / "initramfs.cpio.gz"
    if b"ld-linux" in BUSYBOX.read_bytes()[:8192]:  # an ELF interpreter: dynamically linked
        raise RuntimeError("/bin/busybox is not static: `apt-get install busybox-static`")
    entries = [
        *(_cpio_entry(d, 0o040755) for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules")),
        _cpio_entry("dev/console", 0o020600, rdev=(5, 1)),
        _cpio_entry("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
        _cpio_entry("init", 0o100755, INIT.read_bytes()),
        *(_cpio_entry(f"lib/modules/{m}.ko", 0o100644, p.read_bytes()) for m, p in modules.items()),
        _cpio_entry("TRAILER!!!", 0),
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(b"".join(entries), compresslevel=6))
    tmp.replace(path)
    return path


def build_guest(cache: Path = CACHE) -> Guest:
    """The guest's kernel and initramfs (the kernel is downloaded once; the initramfs is rebuilt
    whenever init.sh or busybox is newer than it)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise RuntimeError("the test guest needs Debian's apt-get and dpkg-deb")
    if not BUSYBOX.exists():
        raise RuntimeError("no /bin/busybox: `make system-deps` (Debian: busybox-static)")
    cache.mkdir(parents=True, exist_ok=True)
    kernel, modules = _kernel(cache)
    initrd = cache / "initramfs.cpio.gz"
    newest = max(INIT.stat().st_mtime, BUSYBOX.stat().st_mtime, kernel.stat().st_mtime)
    if not initrd.exists() or initrd.stat().st_mtime < newest:
        initrd = _initramfs(cache, modules)
    return Guest(kernel, initrd)
