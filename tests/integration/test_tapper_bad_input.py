"""Bad input gets the NBD error the protocol prescribes and the connection stays usable; garbage
closes only its own connection; random frames never take the server down."""

from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .tapper_harness import run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 16 * 1024 * 1024
IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513


@pytest.fixture(scope="module")
def tapper(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    vol = tmp / "vol.img"
    vol.write_bytes(b"")
    with open(vol, "r+b") as f:
        f.truncate(SIZE)
    proc = start_tapper(stack, tmp, f"bad-{tmp.name[-6:]}", {"vol": vol})
    yield proc
    assert proc.stop() == 0


def still_serves(tapper) -> None:
    out = run(["nbdinfo", "--size", tapper.uri("vol")]).stdout.strip()
    assert out == str(SIZE)


def nbdsh(tapper, script: str) -> str:
    # nbdsh is `python3 -m nbd` with Debian's python3-libnbd: run it with Debian's python3, whatever
    # python3 comes first on the PATH.
    res = subprocess.run(
        ["/usr/bin/python3", "-m", "nbd", "-u", tapper.uri("vol"), "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_out_of_range_and_oversize_requests_get_errors_and_connection_stays(tapper) -> None:
    # libnbd with strict mode off sends what a buggy client would; the server must answer each.
    out = nbdsh(
        tapper,
        f"""
import errno
h.set_strict_mode(0)
def code(f):
    try:
        f(); return 0
    except nbd.Error as e:
        return e.errno  # libnbd gives the errno's name, e.g. EINVAL
print("read-past-end", code(lambda: h.pread(4096, {SIZE} - 512)))
print("write-past-end", code(lambda: h.pwrite(b"x" * 4096, {SIZE} - 512)))
print("zero-past-end", code(lambda: h.zero(8192, {SIZE})))
print("unaligned", code(lambda: h.pread(100, 3)))
print("read-too-big", code(lambda: h.pread(64 * 1024 * 1024, 0)))
print("write-too-big", code(lambda: h.pwrite(b"z" * (33 * 1024 * 1024), 0)))
print("fua-flush-ok", code(lambda: h.flush(nbd.CMD_FLAG_FUA)))
print("bad-flag", code(lambda: h.pwrite(b"w" * 512, 0, nbd.CMD_FLAG_NO_HOLE)))
print("then-ok", code(lambda: h.pwrite(b"y" * 4096, 4096)), h.pread(4096, 4096) == b"y" * 4096)
""",
    )
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert lines["read-past-end"] == "EINVAL"  # EINVAL
    assert (
        lines["write-past-end"] == "ENOSPC"
    )  # ENOSPC, as the protocol asks for writes past the end
    assert lines["zero-past-end"] == "ENOSPC"
    assert lines["unaligned"] == "0"  # the minimum block size is 1: any byte range is served
    assert (
        lines["read-too-big"] == "EOVERFLOW"
    )  # a payload-less request above the advertised maximum
    assert (
        lines["write-too-big"] == "EINVAL"
    )  # its payload was read and skipped: the stream stays in step
    assert lines["fua-flush-ok"] == "0"  # FUA is accepted on any command
    assert lines["bad-flag"] == "EINVAL"  # NO_HOLE belongs to WRITE_ZEROES only
    assert lines["then-ok"] == "0 True"
    still_serves(tapper)


def handshake(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    greeting = _recv(s, 18)
    assert greeting[:8] == b"NBDMAGIC"
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    s.sendall(struct.pack(">QII", IHAVEOPT, 1, 3) + b"vol")  # NBD_OPT_EXPORT_NAME
    size, _flags = struct.unpack(">QH", _recv(s, 10))
    assert size == SIZE
    return s


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def honest_read(port: int) -> None:
    """A well-behaved client on a connection of its own: negotiates, reads 512 bytes, gets them."""
    with handshake(port) as s:
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 0, 0xC0FFEE, 4096, 512))
        magic, error, handle = struct.unpack(">IIQ", _recv(s, 16))
        assert (magic, error, handle) == (0x67446698, 0, 0xC0FFEE)
        assert len(_recv(s, 512)) == 512


def test_unknown_command_gets_einval_and_connection_stays(tapper) -> None:
    with handshake(tapper.port) as s:
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 42, 7, 0, 512))
        magic, error, handle = struct.unpack(">IIQ", _recv(s, 16))
        assert (magic, error, handle) == (0x67446698, 22, 7)
        s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 0, 8, 0, 512))  # READ still works
        magic, error, handle = struct.unpack(">IIQ", _recv(s, 16))
        assert (error, handle) == (0, 8) and len(_recv(s, 512)) == 512


def test_starttls_is_refused_cleanly(tapper) -> None:
    with socket.create_connection(("127.0.0.1", tapper.port), timeout=10) as s:
        _recv(s, 18)
        s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 5, 0))
        _magic, option, rep, length = struct.unpack(">QIII", _recv(s, 20))
        assert option == 5 and rep == 2**31 + 2  # NBD_REP_ERR_POLICY
        _recv(s, length)
    still_serves(tapper)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(garbage=st.binary(min_size=1, max_size=300))
def test_garbage_handshake_closes_only_that_connection(tapper, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", tapper.port), timeout=10) as s:
        _recv(s, 18)
        s.sendall(garbage)
        honest_read(tapper.port)  # served while the garbage connection is open
        s.shutdown(socket.SHUT_WR)
        try:  # the server ends the connection (a timeout here fails the test)
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass  # closed with some of our bytes unread: closed all the same
    honest_read(tapper.port)


frames = st.tuples(
    st.integers(0, 0xFFFF),
    st.integers(0, 12),
    st.integers(0, 2**64 - 1),
    st.one_of(st.integers(0, SIZE), st.integers(0, 2**64 - 1)),
    st.integers(0, 70000),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests=st.lists(frames, min_size=1, max_size=8), tail=st.binary(max_size=64))
def test_random_frames_never_take_the_server_down(tapper, requests, tail: bytes) -> None:
    with handshake(tapper.port) as s:
        try:
            for flags, typ, handle, offset, length in requests:
                if typ == 2:
                    continue  # DISC would just end the stream early
                s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, typ, handle, offset, length))
                if typ == 1:
                    s.sendall(bytes(min(length, 70000)))
            s.sendall(tail)
        except OSError:
            pass  # the server may close this connection (bad magic): only this one
        honest_read(tapper.port)  # served beside the fuzzing connection
    honest_read(tapper.port)


def test_server_survived_the_fuzzing(tapper, tmp_path: Path) -> None:
    still_serves(tapper)
    copy = tmp_path / "copy.img"
    run(["nbdcopy", tapper.uri("vol"), str(copy)])
    assert copy.stat().st_size == SIZE
