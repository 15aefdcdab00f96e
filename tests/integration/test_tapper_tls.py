"""NBD over TLS (NBD_OPT_STARTTLS, X.509) with the real clients: qemu-io/qemu-img with
tls-creds-x509, nbdinfo/nbdcopy/fio with libnbd's nbds:// URIs. TLS writes land in the volume and in
Kafka like plain ones; `require` refuses plain clients with NBD_REP_ERR_TLS_REQD; with verify-peer a
client certificate from another CA is refused; `on` serves both; the Unix socket is 0600."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from .nbd_certs import client_dir_with_foreign_cert, make_pki
from .tapper_harness import TapperProcess, images_equal, replay, run, start_tapper

pytestmark = pytest.mark.integration
SIZE = 32 * 1024 * 1024


def new_volume(tmp: Path, name: str = "vol") -> Path:
    path = tmp / f"{name}.img"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


def tls_env(pki: Path, mode: str, verify_peer: bool) -> dict[str, str]:
    return {
        "TAPSTREAM_TAPPER_TLS": mode,
        "TAPSTREAM_TAPPER_TLS_CERT": str(pki / "server-cert.pem"),
        "TAPSTREAM_TAPPER_TLS_KEY": str(pki / "server-key.pem"),
        "TAPSTREAM_TAPPER_TLS_CA": str(pki / "ca-cert.pem"),
        "TAPSTREAM_TAPPER_TLS_VERIFY_PEER": "true" if verify_peer else "false",
    }


def qemu_tls(tapper: TapperProcess, certs: Path, export: str = "vol") -> list[str]:
    """qemu-io/qemu-img arguments that open `export` over TLS with the client files in `certs`."""
    return [
        "--object",
        f"tls-creds-x509,id=tls0,dir={certs},endpoint=client",
        "--image-opts",
        f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={tapper.port},"
        f"export={export},tls-creds=tls0",
    ]


def nbds(tapper: TapperProcess, certs: Path, export: str = "vol") -> str:
    return f"nbds://127.0.0.1:{tapper.port}/{export}?tls-certificates={certs}"


def fails(cmd: list[str], env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    assert res.returncode != 0, f"{cmd[0]} succeeded:\n{res.stdout}"
    return res.stdout + res.stderr


def check_replay(stack, tmp: Path, group: str, volume: str, path: Path) -> None:
    replica = tmp / f"{volume}.replayed.img"
    result = replay(stack, group, volume, replica, SIZE)
    images_equal(path, replica)
    assert result.events > 0


def test_require_with_verify_peer(stack, tmp_path: Path, unique_name: str) -> None:
    pki = make_pki(tmp_path / "pki")
    foreign = client_dir_with_foreign_cert(tmp_path / "foreign", pki)
    vol = new_volume(tmp_path)
    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.truncate(SIZE)
        f.seek(3 << 20)
        f.write(os.urandom(2 << 20))
    tapper = start_tapper(
        stack, tmp_path, unique_name, {"vol": vol}, extra_env=tls_env(pki, "require", True)
    )
    try:
        # TLS writes through qemu-io, nbdcopy and fio (libnbd's nbds://), reads back through both.
        run(
            [
                "qemu-io",
                *qemu_tls(tapper, pki),
                "-c",
                "write -P 0xab 8M 1M",
                "-c",
                "write -z 9M 64k",
                "-c",
                "discard 10M 128k",
                "-c",
                "flush",
            ]
        )
        out = run(["qemu-io", *qemu_tls(tapper, pki), "-c", "read -P 0xab 8M 1M"]).stdout
        assert "Pattern verification failed" not in out and "read 1048576/1048576" in out
        info = run(["qemu-img", "info", *qemu_tls(tapper, pki)]).stdout
        assert str(SIZE) in info
        run(["nbdcopy", "--allocated", str(src), nbds(tapper, pki)])
        with open(vol, "rb") as f:
            f.seek(3 << 20)
            assert f.read(2 << 20) == src.read_bytes()[3 << 20 : 5 << 20]
        info = run(["nbdinfo", "--json", nbds(tapper, pki)]).stdout
        assert f'"export-size": {SIZE}' in info
        # A plain client is refused: qemu-img gets NBD_REP_ERR_TLS_REQD, so does nbdinfo.
        plain = f"nbd://127.0.0.1:{tapper.port}/vol"
        out = fails(["qemu-img", "info", "-f", "raw", plain])
        assert "TLS negotiation required" in out, out
        out = fails(["nbdinfo", plain], {"LIBNBD_DEBUG": "1"})
        assert "this server requires TLS" in out, out[-3000:]
        # NBD_OPT_EXPORT_NAME without TLS (old clients) closes the connection.
        with socket.create_connection(("127.0.0.1", tapper.port), timeout=10) as s:
            assert s.recv(18, socket.MSG_WAITALL)[:8] == b"NBDMAGIC"
            s.sendall(struct.pack(">I", 1) + struct.pack(">QII", 0x49484156454F5054, 1, 3) + b"vol")
            assert s.recv(1) == b""

        # A certificate signed by another CA is refused during the TLS handshake.
        out = fails(["qemu-img", "info", *qemu_tls(tapper, foreign)])
        assert "TLS" in out or "certificate" in out.lower(), out
        fails(["nbdinfo", nbds(tapper, foreign)])
        # ... and no client certificate at all, too (libnbd without tls-certificates).
        fails(["nbdinfo", f"nbds://127.0.0.1:{tapper.port}/vol?tls-verify-peer=false"])

        # Still serving after the refusals.
        run(["qemu-io", *qemu_tls(tapper, pki), "-c", "write -P 0x5a 12M 64k"])
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-3000:]
    log = tapper.log.read_text()
    assert "TLS handshake failed" in log
    check_replay(stack, tmp_path, unique_name, "vol", vol)


def test_on_serves_plain_and_tls_clients_and_unix_socket_is_private(
    stack, tmp_path: Path, unique_name: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    vol = new_volume(tmp_path)
    sock = tmp_path / "nbd.sock"
    env = {**tls_env(pki, "on", False), "TAPSTREAM_TAPPER_UNIX_SOCKET": str(sock)}
    tapper = start_tapper(stack, tmp_path, unique_name, {"vol": vol}, extra_env=env)
    try:
        run(["qemu-io", *qemu_tls(tapper, pki), "-c", "write -P 0x11 0 1M"])
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 1M 1M", tapper.uri("vol")])
        # verify-peer off: a TLS client without a certificate is served (encryption only)
        info = run(
            ["nbdinfo", "--json", f"nbds://127.0.0.1:{tapper.port}/vol?tls-verify-peer=false"]
        ).stdout
        assert f'"export-size": {SIZE}' in info
        # fio's nbd engine over TLS, without a client certificate: libnbd refuses a certificate
        # directory in a URI unless the program allows local files (fio does not), and as root it
        # looks only in /etc/pki/libnbd. nbds:// makes TLS mandatory for libnbd.
        run(
            [
                "fio",
                "--name=tls",
                "--ioengine=nbd",
                f"--uri=nbds://127.0.0.1:{tapper.port}/vol?tls-verify-peer=false",
                "--rw=randwrite",
                "--bs=4k",
                "--size=8M",
                "--offset=16M",
                "--iodepth=8",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",
            ]
        )
        mode = os.stat(sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert os.stat(sock).st_uid == os.getuid()
        # the Unix socket serves plain NBD whatever TAPSTREAM_TAPPER_TLS says
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 2M 1M", f"nbd+unix:///vol?socket={sock}"])
    finally:
        assert tapper.stop() == 0, tapper.log.read_text()[-3000:]
    with open(vol, "rb") as f:
        assert f.read(3 << 20) == b"\x11" * (1 << 20) + b"\x22" * (1 << 20) + b"\x33" * (1 << 20)
    check_replay(stack, tmp_path, unique_name, "vol", vol)
