"""ENOSPC under the tapper's state dir and under the replica dir (issue 10, item 7 "Local faults").

The full disk is real: a small tmpfs mounted on the directory (or, where mount is not permitted, a
small ext4 image served by fuse2fs; TAPSTREAM_TEST_SMALL_FS=fuse2fs forces it), filled up to ENOSPC
by a filler file, freed by removing it. Every mount is undone by the fixture's finalizer, also when
a test fails.

- A sparse memory-mapped dirty bitmap on a full tmpfs dies by SIGBUS at the first store into a new
  page (the whole tapper, every VM of the host); the bitmap reserves its blocks at open, so the
  same store works (test 1 shows both).
- Tapper: with the state dir full, both volumes (sync and async) keep taking writes, the tapper
  lives, says the state dir is full, and saves its seq files again once space is back; its stream
  replays byte-identical. A tapper started on a state dir too full to create a bitmap refuses to
  start with a message naming the volume, the file and the remedy (the choice: the tapper opens
  all its volumes at start, and a volume served without a durable bitmap could lose a region's
  resend after a crash).
- Recovery VDSA, one replica dir for two groups, one group's directory on the small filesystem:
  the full volume's replica stays at its saved position, the error is logged and counted
  (tapstream_vdsa_io_errors, tapstream_vdsa_io_failing), the other group's volume keeps applying,
  and once space is back the full one converges byte-identical.

The journal's database is left out: Postgres is shared by the running stack, and a private one on
a small filesystem is beyond this file (see the note of the change).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tapstream.core.ports import free_port
from tapstream.core.replica import Replica
from tapstream.localstack import faults

from .services_harness import start_service, stop, wait_until
from .tapper_harness import TapperProcess, blank_volume, images_equal, replay, run, start_tapper

pytestmark = pytest.mark.integration


# --- a small filesystem ---------------------------------------------------------------------------
@dataclass
class SmallFs:
    path: Path
    kind: str  # "tmpfs" or "fuse2fs"

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> int:
        """Write the filler until ENOSPC (in ever smaller pieces, to the last block); returns bytes."""
        written = 0
        with open(self.filler, "ab", buffering=0) as out:
            for piece in (1 << 20, 64 << 10, 4096, 512, 1):
                try:
                    while True:
                        written += out.write(bytes(piece))
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
            try:
                os.fsync(out.fileno())
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        return written

    def free(self) -> None:
        self.filler.unlink()

    def full(self) -> bool:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize < 4096


def _mount(where: Path, size_mb: int, scratch: Path) -> SmallFs:
    where.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TAPSTREAM_TEST_SMALL_FS", "tmpfs") == "tmpfs":
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0:
            return SmallFs(where, "tmpfs")
    if not (shutil.which("fuse2fs") and shutil.which("mkfs.ext4") and os.path.exists("/dev/fuse")):
        pytest.skip("cannot mount a tmpfs here and fuse2fs or /dev/fuse is missing")
    image = scratch / f"{where.name}.ext4"
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    run(["mkfs.ext4", "-F", "-q", "-m", "0", str(image)])
    run(["fuse2fs", str(image), str(where), "-o", "fakeroot"])
    wait_until(f"fuse2fs mounted on {where}", lambda: os.path.ismount(where), 30)
    return SmallFs(where, "fuse2fs")


def _unmount(where: Path) -> None:
    if not os.path.ismount(where):
        return
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)  # busy: detach now
    assert not os.path.ismount(where), f"{where} is still mounted"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[Path, int], SmallFs]]:
    """small_fs(directory, size_mb): a small filesystem mounted on `directory`, unmounted at the end."""
    mounted: list[Path] = []
    scratch = tmp_path / "small-fs-images"
    scratch.mkdir()

    def make(where: Path, size_mb: int) -> SmallFs:
        fs = _mount(where, size_mb, scratch)
        mounted.append(where)
        return fs

    try:
        yield make
    finally:
        for where in reversed(mounted):
            _unmount(where)


def qemu_write(uri: str, offset: int, pattern: int, length: int = 65536) -> None:
    run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern} {offset} {length}", uri])


def logged(path: Path, *needles: str) -> list[dict[str, object]]:
    """The JSON log lines of `path` that contain every needle."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if all(n in line for n in needles):
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"line": line})
    return out


def metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.split()[-1])
    return 0.0


# --- 1. the SIGBUS itself ---------------------------------------------------------------------------
_STORE_ON_A_FULL_DISK = """
import errno, sys
from pathlib import Path
from tapstream.tapper import dirty_bitmap
if sys.argv[2] == "sparse":
    dirty_bitmap.reserve = lambda fd, nbytes: None  # what the bitmap did before
bm = dirty_bitmap.DirtyBitmap(Path(sys.argv[1]) / "v.dirty", 256 << 20, 4096, 4096)
bm.set_dirty(0, 1)  # the first page exists either way
try:
    with open(Path(sys.argv[1]) / "filler", "ab", buffering=0) as f:
        while True:
            f.write(bytes(4096))
except OSError as exc:
    assert exc.errno == errno.ENOSPC, exc
print("full", flush=True)
bm.set_dirty(200 << 20, 1)  # a store into the second page
bm.sync()
print("stored", flush=True)
"""


def test_a_full_state_dir_sigbuses_a_sparse_bitmap_not_a_reserved_one(
    tmp_path: Path, small_fs: Callable[[Path, int], SmallFs]
) -> None:
    fs = small_fs(tmp_path / "state", 1)
    if fs.kind != "tmpfs":
        pytest.skip("the SIGBUS needs a kernel filesystem that allocates at page fault (tmpfs)")
    results = {}
    for how in ("sparse", "reserved"):
        res = subprocess.run(
            [sys.executable, "-c", _STORE_ON_A_FULL_DISK, str(fs.path), how],
            capture_output=True,
            text=True,
            timeout=60,
        )
        results[how] = res
        for p in fs.path.iterdir():
            p.unlink()
    sparse, reserved = results["sparse"], results["reserved"]
    assert sparse.returncode == -signal.SIGBUS and "full" in sparse.stdout, sparse
    assert reserved.returncode == 0 and "stored" in reserved.stdout, reserved.stderr


# --- 2. the tapper's state dir --------------------------------------------------------------------
BIG = 256 << 20  # at a 4 KiB granule: an 8 KiB bitmap, so a write far in touches its second page
FAR = 200 << 20


def _volumes_env(group: str, vols: dict[str, tuple[Path, str]]) -> str:
    return json.dumps(
        [{"name": n, "path": str(p), "group": group, "mode": mode} for n, (p, mode) in vols.items()]
    )


def test_tapper_keeps_serving_with_its_state_dir_full_and_recovers(
    stack, tmp_path: Path, unique_name: str, small_fs: Callable[[Path, int], SmallFs]
) -> None:
    group = unique_name
    fs = small_fs(tmp_path / "tapper-state", 1)  # start_tapper's TAPSTREAM_TAPPER_STATE_DIR
    # fuse2fs refuses even an overwrite of allocated blocks once it is nearly full, so an async
    # volume's msync fails there (and modes.py leaves the requests that wait for it unanswered
    # until a later msync works): on fuse2fs both volumes are sync, whose writes never msync.
    second = "async" if fs.kind == "tmpfs" else "sync"
    vols = {
        "s0": (blank_volume(tmp_path, "s0", BIG), "sync"),
        "a0": (blank_volume(tmp_path, "a0", BIG), second),
    }
    tapper: TapperProcess = start_tapper(
        stack,
        tmp_path,
        group,
        {},
        extra_env={
            "TAPSTREAM_TAPPER_VOLUMES": _volumes_env(group, vols),
            "TAPSTREAM_TAPPER_BITMAP_GRANULE": "4096",
        },
    )
    try:
        for i, name in enumerate(vols):
            qemu_write(tapper.uri(name), 0, 0x11 + i)
        for name in vols:
            bitmap = fs.path / f"{name}.dirty"
            assert bitmap.stat().st_size == 8192
            assert bitmap.stat().st_blocks * 512 >= 8192, "the bitmap is sparse"
        seq_file = fs.path / "s0.seq.json"
        wait_until("the seq file saved", lambda: seq_file.exists(), 30)
        before = json.loads(seq_file.read_text())["acked_seq"]

        fs.fill()
        assert fs.full()
        for i, name in enumerate(vols):
            # The async write's mark lands in the bitmap's second page: a SIGBUS if it were sparse.
            qemu_write(tapper.uri(name), FAR, 0x21 + i)
            qemu_write(tapper.uri(name), FAR + (1 << 20), 0x31 + i, 1 << 20)
        complaint = wait_until(
            "the tapper to say its state dir is full",
            lambda: logged(tapper.log, "cannot save the volume's acked seq", "state dir"),
            30,
        )
        assert isinstance(complaint, list)
        assert tapper.proc.poll() is None, "the tapper died"
        for i, name in enumerate(vols):
            qemu_write(tapper.uri(name), FAR + (4 << 20), 0x41 + i)  # still served
        assert json.loads(seq_file.read_text())["acked_seq"] == before, "written while full?"
        assert not list(fs.path.glob("*.tmp")), "a temp file holds on to the space"

        fs.free()
        wait_until(
            "the seq files saved again",
            lambda: len(logged(tapper.log, "the volume's acked seq is saved again")) == 2,
            30,
        )
        assert json.loads(seq_file.read_text())["acked_seq"] > before
        assert tapper.proc.poll() is None
        assert tapper.stop() == 0
        for name, (path, _mode) in vols.items():
            out = tmp_path / f"{name}.replayed"
            replay(stack, group, name, out, BIG)
            images_equal(path, out)
        faults.record(
            {
                "scenario": "tapper-state-dir-full",
                "fault": "ENOSPC under the tapper's state dir (bitmaps, seq files; small tmpfs)",
                "load": "qemu-io writes, a sync and an async volume",
                "lost": 0,  # both streams replay to their volumes byte for byte
                "halted": 0,
            }
        )
    finally:
        if tapper.proc.poll() is None:
            tapper.stop(signal.SIGKILL)


def test_tapper_refuses_to_start_when_its_state_dir_cannot_hold_a_bitmap(
    stack, tmp_path: Path, unique_name: str, small_fs: Callable[[Path, int], SmallFs]
) -> None:
    fs = small_fs(tmp_path / "tapper-state", 1)
    fs.fill()
    vol = blank_volume(tmp_path, "d0", BIG)
    with pytest.raises(RuntimeError, match="tapper exited with 1") as caught:
        start_tapper(
            stack,
            tmp_path,
            unique_name,
            {"d0": vol},
            extra_env={"TAPSTREAM_TAPPER_BITMAP_GRANULE": "4096"},
        )
    text = str(caught.value)
    assert "cannot reserve the 8192-byte dirty bitmap of volume 'd0'" in text, text
    assert str(fs.path / "d0.dirty") in text and "is full" in text
    assert "TAPSTREAM_TAPPER_STATE_DIR" in text
    assert not (fs.path / "d0.dirty").exists(), "a sparse bitmap was left behind"


# --- 3. the recovery VDSA's replica dir ------------------------------------------------------------
SIZE = 8 << 20


def test_vdsa_survives_a_full_replica_disk_and_converges_when_space_returns(
    stack, tmp_path: Path, unique_name: str, small_fs: Callable[[Path, int], SmallFs]
) -> None:
    ok_group, full_group = f"{unique_name}-ok", f"{unique_name}-full"
    vols = {
        "ok0": (ok_group, blank_volume(tmp_path, "ok0", SIZE)),
        "full0": (full_group, blank_volume(tmp_path, "full0", SIZE)),
    }
    replicas = tmp_path / "replicas"
    fs = small_fs(replicas / full_group, 4)
    replica = {name: Replica(replicas, group, name) for name, (group, _p) in vols.items()}
    port = free_port()
    tapper = start_tapper(
        stack,
        tmp_path,
        ok_group,
        {},
        extra_env={
            "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
                [
                    {"name": n, "path": str(p), "group": g, "mode": "sync"}
                    for n, (g, p) in vols.items()
                ]
            )
        },
    )
    vdsa = start_service(
        stack,
        "tapstream.vdsa",
        tmp_path,
        {
            "TAPSTREAM_VDSA_GROUPS": json.dumps([ok_group, full_group]),
            "TAPSTREAM_SITE": "recovery",
            "TAPSTREAM_REPLICA_DIR": str(replicas),
            "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": "0",
            "TAPSTREAM_VDSA_RETRY_IO_S": "1",
            "TAPSTREAM_METRICS_PORT": str(port),
        },
        "vdsa",
    )
    vdsa_log = tmp_path / "vdsa.log"

    def converged(name: str) -> bool:
        r = replica[name]
        if not r.image.exists() or r.position().halt is not None:
            return False
        got = r.image.read_bytes()
        return got + bytes(SIZE - len(got)) == vols[name][1].read_bytes()

    try:
        for i, name in enumerate(vols):
            qemu_write(tapper.uri(name), 0, 0x51 + i, 1 << 20)
        for name in vols:
            wait_until(f"{name}'s replica applied", lambda n=name: converged(n), 120, 0.5)
        saved = replica["full0"].position().seq

        fs.fill()
        assert fs.full()
        for i, name in enumerate(vols):
            qemu_write(tapper.uri(name), 2 << 20, 0x61 + i, 1 << 20)
        wait_until(
            "ok0 applied past the other group's full disk", lambda: converged("ok0"), 60, 0.5
        )
        errors = wait_until(
            "the VDSA to report the full replica disk",
            lambda: logged(vdsa_log, "replica write failed", full_group),
            60,
        )
        assert isinstance(errors, list)
        first = errors[0]
        assert first["volume"] == "full0" and first["errno"] == "ENOSPC", first
        assert "TAPSTREAM_REPLICA_DIR" in str(first["hint"])
        assert str(replica["full0"].image) == first["path"]
        wait_until(
            "the I/O errors counted and retried",
            lambda: metric(port, "tapstream_vdsa_io_errors_total", group=full_group) >= 2,
            30,
        )
        assert metric(port, "tapstream_vdsa_io_failing", group=full_group, volume="full0") == 1
        assert metric(port, "tapstream_vdsa_io_errors_total", group=ok_group) == 0
        assert replica["full0"].position().seq == saved, "moved past what it could write"
        assert not converged("full0")

        # The other group goes on while the full one keeps failing.
        for k in range(3):
            qemu_write(tapper.uri("ok0"), (4 << 20) + k * 65536, 0x71 + k)
        wait_until("ok0 kept applying", lambda: converged("ok0"), 60, 0.5)
        assert vdsa.poll() is None, "the VDSA died"

        fs.free()
        t0 = time.monotonic()
        wait_until("full0 converged once space is back", lambda: converged("full0"), 90, 0.5)
        recover_s = time.monotonic() - t0
        assert metric(port, "tapstream_vdsa_io_failing", group=full_group, volume="full0") == 0
        assert logged(vdsa_log, "replica writes work again", full_group)
        assert not list(fs.path.glob("*.tmp")), "a temp file was left behind"
        assert vdsa.poll() is None, "the VDSA died"
        for name in vols:
            assert converged(name)
        faults.record(
            {
                "scenario": "replica-dir-full",
                "fault": "ENOSPC under one group's replica dir (4 MB tmpfs)",
                "load": "qemu-io 64 KiB writes to two groups, sync mode",
                "lost": 0,  # both replicas equal their protected volumes
                "halted": 0,
                "recover_s": round(recover_s, 2),
            }
        )
    finally:
        stop(vdsa)
        tapper.stop()
