"""One client cannot stall the others: a greedy client's large WRITE_ZEROES runs off the event loop
while an honest client's writes elsewhere on the volume complete (beside a slow client stuck in the
middle of a request and one that never negotiates), a write over the range being
zeroed waits and lands after the zeroes (on disk and in the stream), and a client beyond the
per-export connection limit is refused with qemu-img's own error while the others go on."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from .tapper_harness import images_equal, replay, run, start_tapper

pytestmark = pytest.mark.integration
MiB = 1 << 20
SIZE = 2048 * MiB
# Written out as zeroes (NO_HOLE): seconds for the disk. 256 MiB took a fast page cache less time
# than ten sync writes through Kafka, and the test then failed now and then.
ZEROED = 1024 * MiB
IHAVEOPT = 0x49484156454F5054
REQUEST = struct.Struct(">IHHQQI")
NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_WRITE_ZEROES = 1, 2, 6
NBD_CMD_FLAG_NO_HOLE = 1 << 1


def recv(s: socket.socket, n: int) -> bytes:
    data = s.recv(n, socket.MSG_WAITALL)
    if len(data) != n:
        raise ConnectionError("closed")
    return data


def connect(port: int) -> socket.socket:
    """Fixed newstyle, NBD_OPT_GO "vol": a connection in transmission with simple replies."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    recv(s, 18)
    payload = struct.pack(">I", 3) + b"vol" + struct.pack(">H", 0)
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 7, len(payload)) + payload)
    while True:
        _magic, _opt, rep, n = struct.unpack(">QIII", recv(s, 20))
        recv(s, n)
        if rep != 3:  # NBD_REP_INFO
            assert rep == 1, f"NBD_OPT_GO answered {rep:#x}"
            return s


def request(typ: int, handle: int, offset: int, length: int, flags: int = 0) -> bytes:
    return REQUEST.pack(0x25609513, flags, typ, handle, offset, length)


def reply(s: socket.socket) -> tuple[int, int]:
    _magic, error, handle = struct.unpack(">IIQ", recv(s, 16))
    return error, handle


def test_greedy_zeroing_does_not_stall_an_honest_client(
    stack, tmp_path: Path, unique_name: str
) -> None:
    vol = tmp_path / "vol.img"
    with open(vol, "wb") as f:
        f.truncate(SIZE)
    tapper = start_tapper(stack, tmp_path, unique_name, {"vol": vol})
    try:
        greedy, honest, slow = connect(tapper.port), connect(tapper.port), connect(tapper.port)
        slow.sendall(request(NBD_CMD_WRITE, 9, 2 * ZEROED - MiB, 4096) + b"\x01" * 1000)  # stalls
        silent = socket.create_connection(("127.0.0.1", tapper.port))  # never negotiates
        # The zeroing, then a write inside its range, pipelined on one connection.
        greedy.sendall(
            request(NBD_CMD_WRITE_ZEROES, 1, 0, ZEROED, NBD_CMD_FLAG_NO_HOLE)
            + request(NBD_CMD_WRITE, 2, MiB, 4096)
            + b"\xab" * 4096
        )
        start = time.monotonic()
        for i in range(10):  # beside the zeroed range: one at a time, each waits for Kafka
            honest.sendall(request(NBD_CMD_WRITE, 100 + i, ZEROED + i * MiB, 4096) + b"\xcd" * 4096)
            assert reply(honest) == (0, 100 + i)
            if i == 0:  # answered while the zeroing still runs: it did not wait behind it
                greedy.settimeout(0.0)
                with pytest.raises(BlockingIOError):
                    greedy.recv(1)
                greedy.settimeout(120)
        honest_s = time.monotonic() - start
        assert reply(greedy) == (0, 1)  # the zeroes first,
        assert reply(greedy) == (0, 2)  # then the write that waited behind them
        greedy_s = time.monotonic() - start
        assert honest_s < greedy_s
        for s in (greedy, honest):
            s.sendall(request(NBD_CMD_DISC, 0, 0, 0))
            s.close()
        slow.close()
        silent.close()
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-3000:]
    with open(vol, "rb") as f:
        f.seek(MiB)
        assert f.read(4096) == b"\xab" * 4096
        f.seek(ZEROED)
        assert f.read(4096) == b"\xcd" * 4096
    assert os.stat(vol).st_blocks * 512 >= ZEROED  # NO_HOLE: the zeroes were written out
    replica = tmp_path / "replica.img"
    replay(stack, unique_name, "vol", replica, SIZE)
    images_equal(vol, replica)  # Zero before the Write in the stream, as on the disk


def test_connections_beyond_the_limit_are_refused(stack, tmp_path: Path, unique_name: str) -> None:
    vol = tmp_path / "vol.img"
    with open(vol, "wb") as f:
        f.truncate(64 * MiB)
    tapper = start_tapper(
        stack,
        tmp_path,
        unique_name,
        {"vol": vol},
        extra_env={"TAPSTREAM_TAPPER_MAX_CONNECTIONS_PER_EXPORT": "2"},
    )
    try:
        held = [connect(tapper.port), connect(tapper.port)]
        res = subprocess.run(
            ["qemu-img", "info", "-f", "raw", tapper.uri("vol")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode != 0 and "already has 2 connections" in res.stderr, res.stderr
        held.pop().close()
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 64k", tapper.uri("vol")])
        held[0].close()
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-3000:]
