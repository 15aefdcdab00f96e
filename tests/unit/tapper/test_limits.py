"""What one NBD client may take, without a broker: connections per export (in the pure negotiation
and through the server), READ/WRITE bytes in flight per connection, the negotiation timeout, and
the order kept around a zeroing that runs off the event loop (RangeGate)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from tapstream.tapper.protocol.constants import IHAVEOPT, REQUEST_MAGIC, Cmd, Opt, Rep
from tapstream.tapper.protocol.handshake import ExportInfo, Negotiation
from tapstream.tapper.server import Limits, NbdServer
from tapstream.tapper.zeroing import RangeGate

MiB = 1 << 20


def _go(name: bytes = b"vol") -> bytes:
    payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    return struct.pack(">QII", IHAVEOPT, Opt.GO, len(payload)) + payload


def test_negotiation_refuses_go_and_closes_export_name_when_admit_says_no() -> None:
    exports = {"vol": ExportInfo("vol", MiB, 1)}
    neg = Negotiation(exports, admit=lambda name: f"{name} is full")
    out = neg.feed(bytearray(struct.pack(">I", 3) + _go()))
    _m, opt, rep, n = struct.unpack_from(">QIII", out)
    assert (opt, rep, out[20 : 20 + n]) == (Opt.GO, Rep.ERR_POLICY, b"vol is full")
    assert neg.agreed is None and neg.closed is None  # the client may try another export
    neg = Negotiation(exports, admit=lambda name: "full")
    name = struct.pack(">QII", IHAVEOPT, Opt.EXPORT_NAME, 3) + b"vol"
    assert neg.feed(bytearray(struct.pack(">I", 3) + name)) == b"" and neg.closed == "full"
    # NBD_OPT_INFO opens no transmission: never refused
    neg = Negotiation(exports, admit=lambda name: "full")
    info = _go().replace(struct.pack(">I", Opt.GO), struct.pack(">I", Opt.INFO), 1)
    out = neg.feed(bytearray(struct.pack(">I", 3) + info))
    assert struct.unpack_from(">QIII", out)[2] == Rep.INFO


def test_range_gate_holds_overlaps_in_order_and_lets_the_rest_pass() -> None:
    gate, ran = RangeGate(), []

    def job(tag: str) -> Callable[[], None]:
        return lambda: ran.append(tag)

    gate.begin(0, 100)
    assert not gate.run_when_clear(50, 60, job("a"))  # inside the zeroing: held
    assert gate.run_when_clear(100, 200, job("b"))  # beside it: runs
    assert gate.run_when_clear(150, 160, job("c"))  # b ran and left nothing busy
    assert not gate.run_when_clear(55, 150, job("d"))  # overlaps held `a`: held behind it
    assert ran == ["b", "c"] and len(gate) == 2
    for start, end, run in gate.end(0, 100):
        gate.run_when_clear(start, end, run)
    assert ran == ["b", "c", "a", "d"] and len(gate) == 0 and not gate.busy


class HoldingExport:
    """Writes are kept unanswered until the test answers them (a slow disk, or Kafka)."""

    def __init__(self) -> None:
        self.name = "vol"
        self.volume = SimpleNamespace(size=256 * MiB)
        self.spec = SimpleNamespace(mode="sync")
        self.gate = None
        self.pending: list[Callable[[int, str], None]] = []

    def write(self, offset: int, data: bytes, fua: bool, reply: Callable[[int, str], None]) -> None:
        self.pending.append(reply)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(length)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readexactly(18)
    writer.write(struct.pack(">I", 3) + _go())
    while True:
        _m, _opt, rep, n = struct.unpack(">QIII", await reader.readexactly(20))
        await reader.readexactly(n)
        if rep != Rep.INFO:
            return reader, writer, rep


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in 5 s")


async def test_connections_per_export_are_limited_and_freed() -> None:
    server = NbdServer(cast(Any, {"vol": HoldingExport()}), limits=Limits(connections_per_export=2))
    port = await server.listen_tcp("127.0.0.1", 0)
    try:
        first = await _connect(port)
        second = await _connect(port)
        assert (first[2], second[2]) == (Rep.ACK, Rep.ACK)
        assert (await _connect(port))[2] == Rep.ERR_POLICY
        first[1].write(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, Cmd.DISC, 1, 0, 0))
        first[1].close()
        await _until(lambda: server.per_export["vol"] == 1)
        assert (await _connect(port))[2] == Rep.ACK
    finally:
        await server.stop(grace_s=1)


async def test_inflight_bytes_stop_reading_until_replies_come_back() -> None:
    export = HoldingExport()
    server = NbdServer(cast(Any, {"vol": export}), limits=Limits(inflight_bytes=64 * MiB))
    port = await server.listen_tcp("127.0.0.1", 0)
    try:
        reader, writer, rep = await _connect(port)
        assert rep == Rep.ACK
        payload = bytes(32 * MiB)
        for i in range(4):  # 128 MiB of writes, pipelined, replies unread
            writer.write(
                struct.pack(">IHHQQI", REQUEST_MAGIC, 0, Cmd.WRITE, i, i * 32 * MiB, 32 * MiB)
            )
            writer.write(payload)
        await _until(lambda: len(export.pending) == 2)
        await asyncio.sleep(0.2)  # the other two are sent; the server must not take them
        assert len(export.pending) == 2
        for reply in export.pending[:2]:
            reply(0, "")
        await _until(lambda: len(export.pending) == 4)
        for reply in export.pending[2:]:
            reply(0, "")
        handles = set()
        for _ in range(4):
            _magic, error, handle = struct.unpack(">IIQ", await reader.readexactly(16))
            assert error == 0
            handles.add(handle)
        assert handles == {0, 1, 2, 3}
        writer.close()
    finally:
        await server.stop(grace_s=1)


async def test_a_client_that_never_negotiates_is_closed() -> None:
    server = NbdServer(
        cast(Any, {"vol": HoldingExport()}), limits=Limits(negotiation_timeout_s=0.3)
    )
    port = await server.listen_tcp("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readexactly(18))[:8] == b"NBDMAGIC"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        # a client that did negotiate stays
        _r, w, rep = await _connect(port)
        await asyncio.sleep(0.5)
        assert rep == Rep.ACK and not w.is_closing() and server.per_export["vol"] == 1
        w.close()
    finally:
        await server.stop(grace_s=1)
