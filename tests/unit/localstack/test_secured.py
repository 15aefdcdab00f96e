"""The secured node's configuration (pure): SASL_SSL for clients, mutual TLS for the controller,
the StandardAuthorizer with only the admin and the broker as super users, and the table's ACLs as
Admin API bindings."""

from pathlib import Path

from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from tapstream.core.acl import table
from tapstream.core.settings import TapstreamSettings
from tapstream.localstack.properties import (
    broker_properties,
    render,
    scram_format_args,
    secured_properties,
)
from tapstream.localstack.secured import acl_bindings, make_tls, passwords


def secured() -> dict[str, object]:
    return secured_properties(
        broker_properties(1, 39392, "/data"),
        ca_file="/tls/ca.crt",
        keystore_file="/tls/broker.pem",
        admin_password="pw",
        broker_principal="CN=tapstream-broker",
    )


def test_no_plaintext_listener_and_an_authorizer() -> None:
    props = secured()
    assert props["listeners"] == "SASL_SSL://127.0.0.1:39392,CONTROLLER://127.0.0.1:39393"
    assert "PLAINTEXT" not in str(props["advertised.listeners"])
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] is False
    assert props["super.users"] == "User:admin;User:CN=tapstream-broker"
    assert 'username="admin" password="pw"' in str(
        props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    )
    assert "allow.everyone.if.no.acl.found=false\n" in render(props)
    # The default node is untouched.
    assert broker_properties(1, 39392, "/data")["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    )


def test_scram_users_at_format() -> None:
    assert scram_format_args({"admin": "a b"}) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=a b]",
    ]


def test_bindings_are_the_table() -> None:
    analyzer = table(TapstreamSettings(_env_file=None))["analyzer"]  # type: ignore[call-arg]
    bindings = acl_bindings(analyzer, "protected")
    assert len(bindings) == sum(len(g.operations) for g in analyzer.grants["protected"])
    assert all(b.principal == "User:tapstream-analyzer" and b.host == "*" for b in bindings)
    control = [b for b in bindings if b.name == "tapstream.control"]
    assert [b.operation for b in control] == [AclOperation.DESCRIBE]
    assert any(
        b.restype == ResourceType.TOPIC
        and b.name == "tapstream.writes."
        and b.resource_pattern_type == ResourcePatternType.PREFIXED
        and b.operation == AclOperation.READ
        for b in bindings
    )
    cluster = [b for b in bindings if b.restype == ResourceType.BROKER]
    assert [(b.name, b.operation) for b in cluster] == [
        ("kafka-cluster", AclOperation.IDEMPOTENT_WRITE)
    ]
    assert acl_bindings(analyzer, "recovery") == []


def test_tls_material_and_passwords_are_private_and_made_once(tmp_path: Path) -> None:
    from cryptography import x509

    ca, keystore = make_tls(tmp_path / "tls")
    assert keystore.stat().st_mode & 0o077 == 0
    pem = keystore.read_bytes()
    assert b"BEGIN PRIVATE KEY" in pem  # unencrypted PKCS#8, as Kafka's PEM keystore reads it
    cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE") :])
    issuer = x509.load_pem_x509_certificate(ca.read_bytes())
    cert.verify_directly_issued_by(issuer)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert make_tls(tmp_path / "tls") == (ca, keystore) and keystore.read_bytes() == pem
    first = passwords(tmp_path, ["admin", "u"])
    assert passwords(tmp_path, ["admin", "u", "v"]).items() >= first.items()
    assert (tmp_path / "passwords.json").stat().st_mode & 0o077 == 0


def test_each_principal_gets_its_own_settings_file(tmp_path: Path) -> None:
    """`up --secure` leaves one env file per principal, 0600, naming that principal's user only."""
    import stat

    from tapstream.localstack.secured_stack import SecuredSites

    sites = SecuredSites(tmp_path, {"protected": 1, "recovery": 3}, {"protected": 5, "recovery": 6})
    folder = sites.write_env_files()
    sites.write_env_files()  # again: replaced, not appended
    assert {p.stem for p in folder.iterdir()} == set(sites.principals)
    for service in sites.principals:
        path = folder / f"{service}.env"
        text = path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert text.count("TAPSTREAM_KAFKA_SASL_USERNAME=") == 1
        assert f"TAPSTREAM_KAFKA_SASL_USERNAME={sites.user(service)}\n" in text
