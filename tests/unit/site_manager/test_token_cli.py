"""The CLI against a real uvicorn serving the real API (site manager faked behind it): it sends the
token from TAPSTREAM_API_TOKEN or the token file, says what to do on 401/403, issues, lists and
revokes tokens, and verifies the server's HTTPS certificate (and presents its own for mTLS)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from tapstream.cli.main import app
from tapstream.core.ports import free_port
from tapstream.site_manager.auth import Role, TokenStore
from tapstream.site_manager.service import tls_options
from tapstream.site_manager.settings import SiteManagerSettings

from .fake_site_manager import FakeSiteManager, make_test_api


def serve(store: TokenStore, settings: SiteManagerSettings | None = None) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        make_test_api(FakeSiteManager(), store),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        **(tls_options(settings) if settings else {}),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"{'https' if settings else 'http'}://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


@pytest.fixture
def url(store: TokenStore) -> Iterator[str]:
    yield from serve(store)


def run(url: str, *args: str, **env: str) -> tuple[int, str, str]:
    base = {
        "TAPSTREAM_ENV_FILE": "",
        "TAPSTREAM_SITE_MANAGER_PROTECTED_URL": url,
        "TAPSTREAM_API_TOKEN_FILE": "/nonexistent/token",
        "COLUMNS": "200",
    }
    res = CliRunner().invoke(app, list(args), env={**base, **env})
    return res.exit_code, res.stdout, " ".join(res.stderr.split())


def test_without_a_token_the_cli_says_what_to_do(url: str, store: TokenStore) -> None:
    store.issue("root", Role.ADMIN)
    code, _, err = run(url, "group", "list")
    assert code == 1
    assert "refused (401)" in err
    assert "Set TAPSTREAM_API_TOKEN to a token of the protected site" in err
    assert "tapstream token issue NAME --role viewer|operator|admin --site protected" in err
    code, _, err = run(url, "group", "list", TAPSTREAM_API_TOKEN="wrong")
    assert (
        code == 1 and "not valid at the protected site" in err and "Sent TAPSTREAM_API_TOKEN" in err
    )


def test_a_role_too_low_says_ask_an_admin(url: str, store: TokenStore) -> None:
    viewer = store.issue("eve", Role.VIEWER)
    code, _, _ = run(url, "group", "list", TAPSTREAM_API_TOKEN=viewer)
    assert code == 0
    code, _, err = run(url, "group", "create", "g1", TAPSTREAM_API_TOKEN=viewer)
    assert code == 1 and "refused (403)" in err and "needs admin" in err
    assert "Ask an admin" in err


def test_issue_list_revoke_through_the_api(url: str, store: TokenStore, tmp_path: Path) -> None:
    admin = store.issue("root", Role.ADMIN)
    code, out, err = run(
        url, "token", "issue", "ci", "--role", "operator", TAPSTREAM_API_TOKEN=admin
    )
    assert code == 0, err
    token = out.strip().splitlines()[-1]  # (the in-process server logs to stdout too)
    assert store.authenticate(token) is not None and "shown only now" in err
    # The token file, when TAPSTREAM_API_TOKEN is unset.
    (tmp_path / "token").write_text(token + "\n")
    code, out, err = run(url, "token", "list", TAPSTREAM_API_TOKEN_FILE=str(tmp_path / "token"))
    assert code == 1 and "needs admin" in err  # an operator may not list tokens
    code, out, _ = run(url, "token", "list", "--json", TAPSTREAM_API_TOKEN=admin)
    assert code == 0 and {"ci", "root"} <= {t["name"] for t in json.loads(out[out.index("[") :])}
    code, _, _ = run(url, "token", "revoke", "ci", TAPSTREAM_API_TOKEN=admin)
    assert code == 0 and store.authenticate(token) is None
    code, _, err = run(url, "group", "list", TAPSTREAM_API_TOKEN_FILE=str(tmp_path / "token"))
    assert code == 1 and "refused (401)" in err and "Sent the token file" in err


# --- HTTPS and mTLS ----------------------------------------------------------------------------------
def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, ca: bool = False) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer or (name, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pki(d: Path, prefix: str) -> None:
    """<prefix>-ca.pem, <prefix>-server.pem/.key and <prefix>-client.pem/.key in `d`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{prefix} CA", ca_key, None, ca=True)
    for what in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"{prefix} {what}", key, (ca.subject, ca_key))
        (d / f"{prefix}-{what}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{prefix}-{what}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (d / f"{prefix}-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))


def test_https_with_mtls(store: TokenStore, tmp_path: Path) -> None:
    _pki(tmp_path, "ours")
    _pki(tmp_path, "other")
    admin = store.issue("root", Role.ADMIN)
    settings = SiteManagerSettings(
        _env_file=None,  # type: ignore[call-arg]
        site_manager_tls_certfile=tmp_path / "ours-server.pem",
        site_manager_tls_keyfile=tmp_path / "ours-server.key",
        site_manager_tls_client_ca=tmp_path / "ours-ca.pem",
    )
    for url in serve(store, settings):
        ok = {
            "TAPSTREAM_API_TOKEN": admin,
            "TAPSTREAM_API_CA_FILE": str(tmp_path / "ours-ca.pem"),
            "TAPSTREAM_API_CLIENT_CERT": str(tmp_path / "ours-client.pem"),
            "TAPSTREAM_API_CLIENT_KEY": str(tmp_path / "ours-client.key"),
        }
        code, out, err = run(url, "group", "list", "--json", **ok)
        assert code == 0 and out.strip() == "[]", err
        # The server's certificate is verified: another CA's trust store refuses it.
        code, _, err = run(url, "group", "list", **{**ok, "TAPSTREAM_API_CA_FILE": str(tmp_path / "other-ca.pem")})  # fmt: skip
        assert code == 2 and "TAPSTREAM_API_CA_FILE" in err
        # No client certificate, or one another CA signed: the handshake fails before any request.
        for cert in (None, "other"):
            env = {**ok}
            if cert is None:
                env.pop("TAPSTREAM_API_CLIENT_CERT"), env.pop("TAPSTREAM_API_CLIENT_KEY")
            else:
                env["TAPSTREAM_API_CLIENT_CERT"] = str(tmp_path / "other-client.pem")
                env["TAPSTREAM_API_CLIENT_KEY"] = str(tmp_path / "other-client.key")
            code, _, err = run(url, "group", "list", **env)
            assert code == 2 and "no answer from the protected site manager" in err, (cert, err)
        # The certificate alone is not enough: the token is still required.
        code, _, err = run(url, "group", "list", **{**ok, "TAPSTREAM_API_TOKEN": ""})
        assert code == 1 and "refused (401)" in err


def test_a_client_ca_without_a_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    settings = SiteManagerSettings(
        _env_file=None,  # type: ignore[call-arg]
        site_manager_tls_client_ca=tmp_path / "ca.pem",
    )
    with pytest.raises(ValueError, match="needs TAPSTREAM_SITE_MANAGER_TLS_CERTFILE"):
        tls_options(settings)


def test_the_event_trail_shows_who(url: str, store: TokenStore) -> None:
    admin = store.issue("root", Role.ADMIN)
    assert run(url, "group", "create", "g1", TAPSTREAM_API_TOKEN=admin)[0] == 0
    code, out, _ = run(url, "group", "events", "g1", TAPSTREAM_API_TOKEN=admin)
    assert code == 0 and "GroupCreated" in out and "root" in out
