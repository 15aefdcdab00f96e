"""The I/O edges of NBD TLS without a broker: settings, certificate reload, the private Unix socket,
and a real TLS upgrade through NbdConnection with Python's ssl as the client."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from tapstream.tapper.protocol.constants import IHAVEOPT, Opt, Rep
from tapstream.tapper.server import NbdServer, bind_unix, owner_ids
from tapstream.tapper.settings import TapperSettings
from tapstream.tapper.tls import TlsCredentials
from tests.integration.nbd_certs import client_dir_with_foreign_cert, make_pki


def test_settings_need_files_for_tls_and_a_ca_for_verify_peer(tmp_path: Path) -> None:
    assert TapperSettings().tapper_tls == "off"
    with pytest.raises(ValidationError, match="TAPSTREAM_TAPPER_TLS_CERT"):
        TapperSettings(tapper_tls="require")
    with pytest.raises(ValidationError, match="TAPSTREAM_TAPPER_TLS_CA"):
        TapperSettings(
            tapper_tls="on",
            tapper_tls_cert=tmp_path / "c",
            tapper_tls_key=tmp_path / "k",
            tapper_tls_verify_peer=True,
        )
    with pytest.raises(ValidationError):
        TapperSettings(tapper_tls="always")


@pytest.mark.parametrize("text", ["0600", "600", "0o600"])
def test_socket_mode_is_octal(text: str) -> None:
    assert TapperSettings(tapper_unix_socket_mode=text).tapper_unix_socket_mode == 0o600


def test_unix_socket_has_its_mode_and_owner_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "nbd.sock"
    path.write_text("a stale socket from a crash")
    owner = f"{os.getuid()}:{os.getgid()}"
    sock = bind_unix(str(path), 0o640, owner)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        assert os.listdir(tmp_path) == ["nbd.sock"]  # the private directory is gone
    finally:
        sock.close()
    assert owner_ids("") == (-1, -1) and owner_ids("root") == (0, -1) and owner_ids(":0") == (-1, 0)


def test_credentials_reload_after_renewal_and_keep_the_last_good_ones(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    creds = TlsCredentials(pki / "server-cert.pem", pki / "server-key.pem", pki / "ca-cert.pem")
    first = creds.context()
    assert creds.context() is first  # unchanged files: the same context
    make_pki(pki)  # renewed in place (a second later, whatever the file system's clock tick)
    later = (pki / "server-cert.pem").stat().st_mtime_ns + 10**9
    os.utime(pki / "server-cert.pem", ns=(later, later))
    renewed = creds.context()
    assert renewed is not first
    (pki / "server-key.pem").write_text("half written")
    assert creds.context() is renewed


class FakeExport:
    def __init__(self) -> None:
        self.name = "vol"
        self.volume = SimpleNamespace(size=1 << 20)
        self.spec = SimpleNamespace(mode="sync")
        self.gate = None

    def read(self, offset: int, length: int) -> bytes:
        return b"\x07" * length


async def _exchange(port: int, ctx: ssl.SSLContext | None) -> tuple[int, bytes]:
    """STARTTLS (if ctx), then NBD_OPT_GO and one READ; the GO reply type and the data."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readexactly(18))[:8] == b"NBDMAGIC"
    writer.write(struct.pack(">I", 3))
    if ctx is not None:
        writer.write(struct.pack(">QII", IHAVEOPT, Opt.STARTTLS, 0))
        _m, opt, rep, n = struct.unpack(">QIII", await reader.readexactly(20))
        assert (opt, rep, n) == (Opt.STARTTLS, Rep.ACK, 0)
        await writer.start_tls(ctx, server_hostname="localhost")
    name = b"vol"
    payload = struct.pack(">I", 3) + name + struct.pack(">H", 0)
    writer.write(struct.pack(">QII", IHAVEOPT, Opt.GO, len(payload)) + payload)
    while True:
        _m, opt, rep, n = struct.unpack(">QIII", await reader.readexactly(20))
        await reader.readexactly(n)
        if rep != Rep.INFO:
            break
    if rep != Rep.ACK:
        writer.close()
        return rep, b""
    writer.write(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 512))  # READ 512 at 0
    _magic, error, _handle = struct.unpack(">IIQ", await reader.readexactly(16))
    data = await reader.readexactly(512)
    writer.write(struct.pack(">IHHQQI", 0x25609513, 0, 2, 2, 0, 0))  # DISC
    writer.close()
    return error, data


async def test_starttls_upgrade_serves_over_tls_and_refuses_a_foreign_client_cert(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    foreign = client_dir_with_foreign_cert(tmp_path / "foreign", pki)
    creds = TlsCredentials(
        pki / "server-cert.pem", pki / "server-key.pem", pki / "ca-cert.pem", verify_peer=True
    )
    server = NbdServer(cast(Any, {"vol": FakeExport()}), "require", creds)
    port = await server.listen_tcp("127.0.0.1", 0)

    def client(certs: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki / "ca-cert.pem"))
        ctx.load_cert_chain(certs / "client-cert.pem", certs / "client-key.pem")
        return ctx

    try:
        assert await _exchange(port, client(pki)) == (0, b"\x07" * 512)
        assert (await _exchange(port, None))[0] == Rep.ERR_TLS_REQD
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _exchange(port, client(foreign))
        assert await _exchange(port, client(pki)) == (0, b"\x07" * 512)  # still serving
    finally:
        await server.stop(grace_s=5)
