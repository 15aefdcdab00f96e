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


# -- more benign workloads (issue 16): each looks like ransomware to a naive block-level detector -----


def _logs(mnt: Path, n: int, size: int, seed: int) -> list[Path]:
    rnd = random.Random(seed)
    out = mnt / "var" / "log"
    out.mkdir(parents=True, exist_ok=True)
    words = [b"GET", b"POST", b"/api/v1/items", b"200", b"404", b"user=", b"ms", b"INFO", b"WARN"]
    logs = []
    for i in range(n):
        lines = []
        total = 0
        while total < size:
            line = b"2026-12-02T04:%02d:%02d %s\n" % (
                rnd.randrange(60),
                rnd.randrange(60),
                b" ".join(rnd.choice(words) + b"%d" % rnd.randrange(10**4) for _ in range(8)),
            )
            lines.append(line)
            total += len(line)
        p = out / f"app.log.{i}"
        p.write_bytes(b"".join(lines))
        logs.append(p)
    os.sync()
    return logs


def log_rotation(mnt: Path, seed: int = 0, codec: str = "gzip") -> None:
    """logrotate: each old log compressed to a new file, the original deleted; the compressed output
    reuses the blocks the deleted originals freed (low-entropy blocks turn high, in place)."""
    import zstandard

    compress = gzip.compress if codec == "gzip" else zstandard.ZstdCompressor(level=3).compress
    ext = ".gz" if codec == "gzip" else ".zst"
    for p in _logs(mnt, 24, 600_000, seed):
        (p.parent / (p.name + ext)).write_bytes(compress(p.read_bytes()))
        p.unlink()


def log_rotation_zstd(mnt: Path, seed: int = 0) -> None:
    log_rotation(mnt, seed, "zstd")


def compilation(mnt: Path, seed: int = 0) -> None:
    """A build: C sources generated, compiled to objects and linked, objects rebuilt once."""
    src = mnt / "build"
    src.mkdir(exist_ok=True)
    for i in range(24):
        body = "\n".join(
            f"int f{i}_{j}(int x) {{ return x * {j} + {i} - (x >> {j % 7}); }}" for j in range(400)
        )
        (src / f"m{i}.c").write_text(f"#include <stdio.h>\n{body}\n")
    (src / "main.c").write_text("int main(void) { return 0; }\n")
    for _round in range(2):
        objs = []
        for c in sorted(src.glob("*.c")):
            o = c.with_suffix(".o")
            sh("cc", "-O1", "-g", "-c", str(c), "-o", str(o))
            objs.append(str(o))
        sh("cc", "-o", str(src / "app"), *objs)


def backup_tar_gz(mnt: Path, seed: int = 0) -> None:
    """A nightly backup: the data tree as a new .tar.gz, the previous backup deleted."""
    import tarfile

    out = mnt / "backup"
    out.mkdir(exist_ok=True)
    for night in range(2):
        with tarfile.open(out / f"data-{night}.tar.gz", "w:gz") as tar:
            tar.add(mnt / "data", arcname="data")
        if night:
            (out / f"data-{night - 1}.tar.gz").unlink()


def _age_header(rnd: random.Random) -> bytes:
    """The text header of an age-encrypted file (https://age-encryption.org/v1), scrypt recipient."""
    import base64

    salt = base64.b64encode(rnd.randbytes(16)).rstrip(b"=")
    body = base64.b64encode(rnd.randbytes(32)).rstrip(b"=")
    mac = base64.b64encode(rnd.randbytes(32)).rstrip(b"=")
    return b"age-encryption.org/v1\n-> scrypt " + salt + b" 18\n" + body + b"\n--- " + mac + b"\n"


def backup_encrypted(mnt: Path, seed: int = 0) -> None:
    """An encrypted backup (age format: text header, then ciphertext) of the data tree, twice, the
    older one deleted: megabytes of ciphertext, legitimately."""
    import tarfile

    rnd = random.Random(seed)
    enc = _cipher(seed + 100)
    out = mnt / "backup"
    out.mkdir(exist_ok=True)
    for night in range(2):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(mnt / "data", arcname="data")
        (out / f"data-{night}.tar.age").write_bytes(_age_header(rnd) + enc(buf.getvalue()))
        if night:
            (out / f"data-{night - 1}.tar.age").unlink()


def media_reencode(mnt: Path, seed: int = 0) -> None:
    """Photos written, then re-encoded in place at another quality (JPEG over JPEG, PNG to JPEG)."""
    import numpy as np
    from PIL import Image

    rnd = np.random.default_rng(seed)
    out = mnt / "photos"
    out.mkdir(exist_ok=True)
    for i in range(16):
        img = (rnd.random((600, 800, 3)) * 80 + np.linspace(0, 170, 800)[None, :, None]).astype(
            "uint8"
        )
        Image.fromarray(img).save(out / f"img{i}.png")
    for p in sorted(out.glob("*.png")):
        with Image.open(p) as im:
            im.convert("RGB").save(p.with_suffix(".jpg"), "JPEG", quality=90)
        p.unlink()
    for p in sorted(out.glob("*.jpg")):
        with Image.open(p) as im:
            im.load()
            im.save(p, "JPEG", quality=70)


def vm_image_copy(mnt: Path, seed: int = 0) -> None:
    """A VM image copied in as a compressed qcow2 (zlib clusters: high entropy after a header)."""
    raw = Path(tempfile_dir()) / f"vm-{seed}.raw"
    try:
        make_fs_image(raw, 48 << 20, mnt / "data")
        sh("qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(mnt / "vm.qcow2"))
        sh("qemu-img", "convert", "-O", "qcow2", str(raw), str(mnt / "vm-plain.qcow2"))
    finally:
        raw.unlink(missing_ok=True)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def encrypted_container_setup(mnt: Path, seed: int = 0) -> None:
    """A LUKS2 container set up in a file and filled: its header (magic and JSON), then 24 MiB of
    ciphertext written front to back, as `cryptsetup luksFormat` plus a filesystem inside do."""
    enc = _cipher(seed + 200)
    header = b"LUKS\xba\xbe\x00\x02" + b"\x00" * 8 + b'{"keyslots":{},"segments":{}}'.ljust(16376)
    with open(mnt / "vault.luks", "wb") as f:
        f.write(header)
        for _ in range(24):
            f.write(enc(bytes(1 << 20)))


# -- more malicious workloads (issue 16) -------------------------------------------------------------


def encrypt_in_place_encoded(mnt: Path, seed: int = 4, encoding: str = "base64") -> None:
    """Ransomware that writes its ciphertext in a text-safe encoding (base64 or hex), over the file."""
    import base64
    import binascii

    enc = _cipher(seed)
    encode = base64.encodebytes if encoding == "base64" else binascii.hexlify
    for p in files(mnt / "data"):
        data = p.read_bytes()
        with open(p, "r+b") as f:
            f.write(encode(enc(data)))


def encrypt_in_place_hex(mnt: Path, seed: int = 5) -> None:
    encrypt_in_place_encoded(mnt, seed, "hex")


def encrypt_file_heads(mnt: Path, seed: int = 6) -> None:
    """Intermittent: only the first 4 KiB of every file is encrypted (enough to ruin most formats)."""
    enc = _cipher(seed)
    for p in files(mnt / "data"):
        with open(p, "r+b") as f:
            head = f.read(4096)
            f.seek(0)
            f.write(enc(head))


def encrypt_slowly(mnt: Path, seed: int = 7, seconds: float = 60.0) -> None:
    """Slow and intermittent: every third file, half of it encrypted in place, spread evenly over
    `seconds` (evades per-window thresholds)."""
    enc = _cipher(seed)
    victims = files(mnt / "data")[::3]
    pause = seconds / max(1, len(victims))
    for p in victims:
        with open(p, "r+b") as f:
            data = f.read()
            f.seek(0)
            f.write(enc(data[: len(data) // 2 + 1]))
            f.flush()
            os.fsync(f.fileno())
        time.sleep(pause)  # the attack's own pacing, not a readiness wait


def encrypt_copies_then_delete(mnt: Path, seed: int = 8) -> None:
    """Encrypted copies into a new directory first; the originals are deleted only at the end."""
    enc = _cipher(seed)
    out = mnt / "vault"
    for p in files(mnt / "data"):
        dest = out / p.relative_to(mnt / "data")
        dest.parent.mkdir(parents=True, exist_ok=True)
        (dest.parent / (dest.name + ".crypt")).write_bytes(enc(p.read_bytes()))
    shutil.rmtree(mnt / "data")


CASES: dict[str, tuple[bool, Callable[..., None]]] = {
    "copy-text-tree": (False, copy_text_tree),
    "database-load": (False, database_load),
    "compressed-files": (False, compressed_files),
    "package-install": (False, package_install),
    "delete-and-trim": (False, delete_and_trim),
    "encrypt-in-place": (True, encrypt_in_place),
    "encrypt-new-files-delete-originals": (True, encrypt_to_new_files),
    "encrypt-partial-blocks": (True, encrypt_partially),
    "log-rotation-gzip": (False, log_rotation),
    "log-rotation-zstd": (False, log_rotation_zstd),
    "compilation": (False, compilation),
    "backup-tar-gz": (False, backup_tar_gz),
    "backup-encrypted-age": (False, backup_encrypted),
    "media-reencode": (False, media_reencode),
    "vm-image-copy": (False, vm_image_copy),
    "encrypted-container-setup": (False, encrypted_container_setup),
    "encrypt-in-place-base64": (True, encrypt_in_place_encoded),
    "encrypt-in-place-hex": (True, encrypt_in_place_hex),
    "encrypt-file-heads": (True, encrypt_file_heads),
    "encrypt-slowly": (True, encrypt_slowly),
    "encrypt-copies-then-delete": (True, encrypt_copies_then_delete),
}
