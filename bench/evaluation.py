"""The analyzer's evaluation set: file workloads on an ext4 volume mounted through the tapper.

Used by `make eval-analyzer` (bench/eval_analyzer.py) and the integration test (what the analyzers
publish is read with tapstream.analyzer.published). The filesystem is
made with `mkfs.ext4 -d` from a text/source tree, copied onto the protected volume with `nbdcopy`,
and mounted without a kernel module (`nbdfuse` shows the NBD export as a file, `fuse2fs` mounts the
ext4 in it), so every block a workload changes goes through the tapper.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    pass

REPO = Path(__file__).resolve().parents[1]
SOURCES = (
    REPO / "lib",
    REPO / "services",
    REPO / "tests",
    Path("/usr/share/perl5"),
    Path("/usr/lib/python3/dist-packages"),
)


def sh(*cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({res.returncode}): {res.stdout[-800:]}{res.stderr[-800:]}"
        )
    return res


def wait_for(
    what: str, check: Callable[[], object], timeout: float = 60, interval: float = 0.1
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def text_tree(dest: Path, limit_bytes: int) -> int:
    """Copy text and source files (no .pyc, no binaries) into `dest` up to `limit_bytes`."""
    total = 0
    for root in SOURCES:
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if total >= limit_bytes:
                return total
            if (
                not p.is_file()
                or p.is_symlink()
                or "__pycache__" in p.parts
                or p.suffix in (".pyc", ".so", ".bin")
            ):
                continue
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if b"\x00" in data[:4096]:
                continue
            out = dest / root.name / p.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            total += len(data)
    return total


def make_fs_image(path: Path, size: int, content: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(content), str(path))


def _unmount(path: Path) -> None:
    cmd = ["umount", str(path)] if os.geteuid() == 0 else ["fusermount3", "-u", str(path)]
    subprocess.run(cmd, capture_output=True, timeout=60)


@contextlib.contextmanager
def mounted(uri: str, work: Path) -> Iterator[Path]:
    """The ext4 on the NBD export `uri`, mounted at a fresh folder; unmounted (flushed) on exit."""
    work.mkdir(parents=True, exist_ok=True)
    nbd_mnt, fs_mnt = work / "nbd", work / "mnt"
    nbd_mnt.mkdir(exist_ok=True)
    fs_mnt.mkdir(exist_ok=True)
    pid = work / "nbdfuse.pid"
    pid.unlink(missing_ok=True)
    with open(work / "fuse.log", "ab") as log:
        nbdfuse = subprocess.Popen(
            ["nbdfuse", "-P", str(pid), str(nbd_mnt), uri],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        fuse2fs = None
        try:
            wait_for("nbdfuse", lambda: pid.exists() and (nbd_mnt / "nbd").exists())
            fuse2fs = subprocess.Popen(
                ["fuse2fs", "-f", str(nbd_mnt / "nbd"), str(fs_mnt), "-o", "fakeroot"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            wait_for("fuse2fs", lambda: os.path.ismount(fs_mnt))
            yield fs_mnt
        finally:
            # Inner mount first; each FUSE server flushes to the tapper and exits once unmounted.
            if fuse2fs is not None:
                _unmount(fs_mnt)
                fuse2fs.wait(60)
            _unmount(nbd_mnt)
            nbdfuse.wait(60)


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# -- workloads: each takes the mounted filesystem and a seed -----------------------------------------


def _cipher(seed: int) -> Callable[[bytes], bytes]:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    rnd = random.Random(seed)
    key = rnd.randbytes(32)

    def encrypt(data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(key), modes.CTR(rnd.randbytes(16))).encryptor()
        return enc.update(data) + enc.finalize()

    return encrypt


def encrypt_in_place(mnt: Path, seed: int = 1) -> None:
    """Ransomware, the common way: every file read, AES-CTR encrypted, written back over itself."""
    enc = _cipher(seed)
    for p in files(mnt / "data"):
        with open(p, "r+b") as f:
            data = f.read()
            f.seek(0)
            f.write(enc(data))


def encrypt_to_new_files(mnt: Path, seed: int = 2) -> None:
    """Ransomware that writes `<name>.locked` and deletes the original."""
    enc = _cipher(seed)
    for p in files(mnt / "data"):
        (p.parent / (p.name + ".locked")).write_bytes(enc(p.read_bytes()))
        p.unlink()


def encrypt_partially(mnt: Path, seed: int = 3) -> None:
    """Intermittent encryption: only the first 1 KiB of every 16 KiB of each file (fast ransomware)."""
    enc = _cipher(seed)
    for p in files(mnt / "data"):
        with open(p, "r+b") as f:
            size = p.stat().st_size
            for off in range(0, size, 16384):
                f.seek(off)
                chunk = f.read(1024)
                f.seek(off)
                f.write(enc(chunk))


def copy_text_tree(mnt: Path, seed: int = 0, limit: int = 24 << 20) -> None:
    """Copying text and source trees in."""
    text_tree(mnt / "copied", limit)


def database_load(mnt: Path, seed: int = 0) -> None:
    """pgbench-shaped: a 24 MiB table file of 8 KiB pages, then pages rewritten in place at random."""
    rnd = random.Random(seed)

    def page(n: int, version: int) -> bytes:
        rows = b"".join(
            b"%08d|%08d|%+012d|%s\n"
            % (n * 50 + i, rnd.randrange(10**6), rnd.randrange(-(10**8), 10**8), b" " * 60)
            for i in range(50)
        )
        return (b"PGPAGE%04d" % version + rows).ljust(8192, b"\x00")[:8192]

    pages = 3072
    f: BinaryIO
    path = mnt / "pgdata" / "base" / "16384"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for n in range(pages):
            f.write(page(n, 0))
    with open(path, "r+b") as f:
        for v in range(1, 4000):
            n = rnd.randrange(pages)
            f.seek(n * 8192)
            f.write(page(n, v))
    wal = mnt / "pgdata" / "pg_wal" / "000000010000000000000001"
    wal.parent.mkdir(parents=True, exist_ok=True)
    wal.write_bytes(b"".join(page(n, 9) for n in range(1024)))


def compressed_files(mnt: Path, seed: int = 0) -> None:
    """Already-compressed files: new .gz/.zst/.png/.jpg, then some of them rewritten (high over high)."""
    import numpy as np
    import zstandard
    from PIL import Image

    rnd = np.random.default_rng(seed)
    out = mnt / "media"
    out.mkdir(exist_ok=True)
    text = b"".join(p.read_bytes() for p in files(mnt / "data")[:400])
    for i in range(8):
        (out / f"archive{i}.tar.gz").write_bytes(
            gzip.compress(text[i * 100_000 :] + os.urandom(200_000))
        )
        (out / f"dump{i}.zst").write_bytes(
            zstandard.ZstdCompressor(level=3).compress(text[::-1] * 2 + os.urandom(300_000))
        )
        img = (rnd.random((480, 640, 3)) * 60 + np.linspace(0, 190, 640)[None, :, None]).astype(
            "uint8"
        )
        for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
            b = io.BytesIO()
            Image.fromarray(img).save(b, fmt)
            (out / f"photo{i}.{ext}").write_bytes(b.getvalue())
    for i in range(4):  # edited and saved again: high-entropy data over high-entropy blocks
        (out / f"archive{i}.tar.gz").write_bytes(gzip.compress(os.urandom(400_000) + text[:50_000]))


def package_install(mnt: Path, seed: int = 0) -> None:
    """pip/apt-like: remove an old version's files, unpack a new one (sources, .pyc, .so, wheels)."""
    site = mnt / "site-packages"
    old = mnt / "data"
    victims = files(old)[: len(files(old)) // 3]
    for p in victims:  # an upgrade removes the old files first
        p.unlink()
    import sysconfig

    src = Path(sysconfig.get_paths()["purelib"])
    total = 0
    for pkg in (
        "rich",
        "pydantic",
        "faust",
        "aiokafka",
        "yaml",
        "structlog",
        "typer",
        "zstandard",
        "crc32c",
    ):
        root = src / pkg
        if not root.exists():
            continue
        for p in root.rglob("*"):
            if p.is_file() and total < 48 << 20:
                dest = site / p.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dest)
                total += p.stat().st_size
    cache = mnt / "cache"
    cache.mkdir(exist_ok=True)
    for whl in sorted(Path.home().glob(".cache/pip/wheels/**/*.whl"))[:10]:
        shutil.copyfile(whl, cache / whl.name)


def delete_and_trim(mnt: Path, seed: int = 0) -> None:
    """rm -rf of half the tree, a big log written and deleted, then fstrim."""
    data = files(mnt / "data")
    for p in data[: len(data) // 2]:
        p.unlink()
    big = mnt / "big.log"
    big.write_bytes(b"log line: nothing to see here\n" * 300_000)
    big.unlink()
    # fuse2fs 1.47 fails the unlink (ERANGE) of a file whose holes were punched with fallocate -p,
    # so trimming is asked for the whole filesystem instead (fuse2fs may not support FITRIM).
    subprocess.run(["fstrim", str(mnt)], capture_output=True)


CASES: dict[str, tuple[bool, Callable[..., None]]] = {
    "copy-text-tree": (False, copy_text_tree),
    "database-load": (False, database_load),
    "compressed-files": (False, compressed_files),
    "package-install": (False, package_install),
    "delete-and-trim": (False, delete_and_trim),
    "encrypt-in-place": (True, encrypt_in_place),
    "encrypt-new-files-delete-originals": (True, encrypt_to_new_files),
    "encrypt-partial-blocks": (True, encrypt_partially),
}
