"""The tapper as real clients use it: qemu-img, qemu-io, nbdcopy, nbdinfo and fio (with verify).
After each run the events read back from Kafka replay onto a blank image equal to the volume, byte
for byte, with no gap in seq."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from .tapper_harness import images_equal, native_writes, replay, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 64 * 1024 * 1024
TOOLS = ["qemu-img", "qemu-io", "nbdcopy", "nbdinfo", "fio"]


@pytest.fixture(scope="module", autouse=True)
def tools_present() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"missing {missing}: run `make system-deps` (qemu-utils libnbd-bin fio)"


def new_volume(tmp: Path, name: str = "vol", size: int = SIZE) -> Path:
    path = tmp / f"{name}.img"
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def check_replay(stack, tmp: Path, group: str, volume: str, path: Path) -> int:
    replica = tmp / f"{volume}.replayed.img"
    result = replay(stack, group, volume, replica, os.path.getsize(path))
    images_equal(path, replica)
    assert result.events > 0
    return result.last_seq


@pytest.mark.parametrize("mode", ["sync", "async", "sync-native", "async-native"])
def test_fio_verify_and_replay(stack, tmp_path: Path, unique_name: str, mode: str) -> None:
    vol = new_volume(tmp_path)
    tapper = start_tapper(
        stack,
        tmp_path,
        unique_name,
        {"vol": vol},
        mode=mode.split("-")[0],
        extra_env={"TAPSTREAM_TAPPER_NATIVE": "on" if mode.endswith("native") else "off"},
    )
    try:
        run(
            [
                "fio",
                "--name=verify",
                "--ioengine=nbd",
                f"--uri={tapper.uri('vol')}",
                "--rw=randwrite",
                "--bs=4k,64k",
                "--bsrange=4k-256k",
                "--size=32M",
                "--iodepth=16",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",
                "--randrepeat=0",
                "--norandommap=0",
            ]
        )
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-2000:]
    check_replay(stack, tmp_path, unique_name, "vol", vol)
    if mode.endswith("native"):  # fio's writes took the compiled path, not the fallback
        assert native_writes(tapper.log)["vol"] > 100


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
def test_qemu_img_convert_qemu_io_nbdcopy_nbdinfo(
    stack, tmp_path: Path, unique_name: str, native: bool
) -> None:
    vol = new_volume(tmp_path)
    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.truncate(SIZE)
        f.seek(1 << 20)
        f.write(os.urandom(3 << 20))
        f.seek(40 << 20)
        f.write(b"tapstream" * 10000)
    tapper = start_tapper(
        stack,
        tmp_path,
        unique_name,
        {"vol": vol, "other": new_volume(tmp_path, "other")},
        extra_env={"TAPSTREAM_TAPPER_NATIVE": "on" if native else "off"},
    )
    try:
        uri = tapper.uri("vol")
        info = run(["nbdinfo", "--json", uri]).stdout
        assert '"export-size": 67108864' in info and '"can_multi_conn": true' in info
        listed = run(["nbdinfo", "--list", f"nbd://127.0.0.1:{tapper.port}"]).stdout
        assert "vol" in listed and "other" in listed
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), uri])
        images_equal(src, vol)
        run(
            [
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "write -P 0xab 8M 1M",
                "-c",
                "write -z 1M 64k",
                "-c",
                "discard 2M 128k",
                "-c",
                "flush",
                "-c",
                "write -f -P 0xcd 9M 4k",
                uri,
            ]
        )
        out = run(
            [
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "read -P 0xab 8M 4k",
                "-c",
                "read -P 0 1M 64k",
                "-c",
                "read -P 0xcd 9M 4k",
                uri,
            ]
        ).stdout
        assert "Pattern verification failed" not in out
        copy = tmp_path / "copy.img"
        run(["nbdcopy", uri, str(copy)])
        images_equal(copy, vol)
        run(["nbdcopy", str(src), tapper.uri("other")])
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-2000:]
    check_replay(stack, tmp_path, unique_name, "vol", vol)
    check_replay(stack, tmp_path, unique_name, "other", tmp_path / "other.img")
    if native:
        assert native_writes(tapper.log)["vol"] > 0


def test_sigkill_during_async_fio_then_delta_sync(stack, tmp_path: Path, unique_name: str) -> None:
    vol = new_volume(tmp_path)
    tapper = start_tapper(stack, tmp_path, unique_name, {"vol": vol}, mode="async")
    import subprocess
    import time

    fio = subprocess.Popen(
        [
            "fio",
            "--name=load",
            "--ioengine=nbd",
            f"--uri={tapper.uri('vol')}",
            "--rw=randwrite",
            "--bs=64k",
            "--size=48M",
            "--iodepth=16",
            "--time_based",
            "--runtime=30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill once real writes are flowing: the volume file has grown data blocks.
    deadline = time.monotonic() + 30
    while os.stat(vol).st_blocks * 512 < 8 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    tapper.stop(signal.SIGKILL)
    fio.wait(60)
    before = tapper.log.read_text()
    restarted = start_tapper(stack, tmp_path, unique_name, {"vol": vol}, mode="async")
    try:
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", restarted.uri("vol")])
    finally:
        assert restarted.stop() == 0
    log = (
        restarted.log.read_text()[len(before) :]
        if restarted.log == tapper.log
        else restarted.log.read_text()
    )
    assert "delta sync" in log or "sync done" in log, log[-3000:]
    check_replay(stack, tmp_path, unique_name, "vol", vol)
