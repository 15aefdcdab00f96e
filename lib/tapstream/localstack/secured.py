"""A secured local Kafka node: SASL_SSL + SCRAM-SHA-512 for clients, mutual TLS for the controller,
the StandardAuthorizer, one SCRAM user per principal of the ACL table and exactly its ACLs.

The CA and the broker's certificate are made here with `cryptography` (a dev dependency), the
passwords at random; all of it stays in the node's home (files 0600). Nothing of the default stack
changes: this node has its own home and ports.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tapstream.core.acl import Principal, table
from tapstream.core.settings import Site, TapstreamSettings
from tapstream.localstack.kafka_node import KafkaNode
from tapstream.localstack.properties import scram_format_args, secured_properties
from tapstream.localstack.readiness import QUIET

ADMIN = "admin"
BROKER_CN = "tapstream-broker"
CLUSTER_RESOURCE = "kafka-cluster"


def make_tls(directory: Path) -> tuple[Path, Path]:
    """A CA (ca.crt) and a broker certificate for 127.0.0.1/localhost signed by it, with its
    unencrypted PKCS#8 key, in one PEM file (broker.pem). Made once; returns (ca, keystore)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_file, keystore = directory / "ca.crt", directory / "broker.pem"
    if ca_file.exists() and keystore.exists():
        return ca_file, keystore
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tapstream local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        # The controller listener authenticates the broker by this same certificate.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file.write_bytes(ca.public_bytes(pem))
    keystore.touch(mode=0o600)
    keystore.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(pem)
    )
    return ca_file, keystore


def passwords(home: Path, users: list[str]) -> dict[str, str]:
    """Random SCRAM passwords, made once per user and kept in <home>/passwords.json (0600)."""
    path = home / "passwords.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for user in users:
        known.setdefault(user, secrets.token_urlsafe(18))
    home.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(known, indent=1))
    return known


def acl_bindings(principal: Principal, cluster: Site) -> list[Any]:
    """The principal's grants on `cluster` as confluent_kafka AclBindings (one per operation)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "cluster": ResourceType.BROKER,
        "transactionalId": ResourceType.TRANSACTIONAL_ID,
    }
    out = []
    for g in principal.grants.get(cluster, ()):
        for op in g.operations:
            # "DescribeConfigs" -> DESCRIBE_CONFIGS
            name = "".join(f"_{c}" if c.isupper() else c.upper() for c in op).lstrip("_")
            out.append(
                AclBinding(
                    kinds[g.resource],
                    CLUSTER_RESOURCE if g.resource == "cluster" else g.name,
                    ResourcePatternType.PREFIXED
                    if g.pattern == "prefix"
                    else ResourcePatternType.LITERAL,
                    f"User:{principal.user}",
                    "*",
                    AclOperation[name],
                    AclPermissionType.ALLOW,
                )
            )
    return out


@dataclass
class SecuredKafka:
    """One secured KRaft node standing for `cluster` (its ACLs are the table's for that cluster)."""

    home: Path
    port: int
    cluster: Site = "protected"
    heap: str = "384m"
    # Where the CA, the broker certificate and the passwords are kept (default: home). The nodes
    # of a two-site stack share them: one CA, and one password per principal on both clusters.
    shared: Path | None = None

    def __post_init__(self) -> None:
        keep = self.shared or self.home
        self.ca_file, self.keystore = make_tls(keep / "tls")
        self.principals = table(self.settings())
        users = [ADMIN, *(p.user for p in self.principals.values())]
        self.passwords = passwords(keep, users)
        self.node = KafkaNode(
            self.cluster,
            self.port,
            self.home / "kafka" / self.cluster,  # its pid file: <home>/kafka-<cluster>.pid
            self.home / "kafka.log",
            secure=partial(
                secured_properties,
                ca_file=str(self.ca_file),
                keystore_file=str(self.keystore),
                admin_password=self.passwords[ADMIN],
                broker_principal=f"CN={BROKER_CN}",
                admin=ADMIN,
            ),
            format_args=tuple(scram_format_args({ADMIN: self.passwords[ADMIN]})),
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, user: str | None = None, **overrides: Any) -> TapstreamSettings:
        """Client settings logging in as `user` (a table principal's user, or the admin)."""
        values: dict[str, Any] = {
            "protected_bootstrap": self.bootstrap,
            "recovery_bootstrap": self.bootstrap,
            "site": self.cluster,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_ssl_cafile": self.ca_file,
        }
        if user is not None:
            values |= {"kafka_sasl_username": user, "kafka_sasl_password": self.passwords[user]}
        return TapstreamSettings(_env_file=None, **(values | overrides))

    def start(self, classpath: str, timeout_s: float = 120) -> None:
        """Start the node, wait until the admin can log in, then create the users and their ACLs."""
        self.launch(classpath)
        self.configure(timeout_s)

    def launch(self, classpath: str) -> None:
        """Start the JVM (formatting its storage the first time); returns at once."""
        self.node.start(classpath, self.heap)

    def configure(self, timeout_s: float = 120) -> None:
        """Wait until the admin can log in, then create the users and their ACLs (idempotent: a
        restarted node gets the same passwords and bindings again)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialAlteration,
            UserScramCredentialUpsertion,
        )

        from tapstream.core.kafka import client_config

        # librdkafka logs every refused connection while the broker boots: expected, kept quiet.
        admin = AdminClient(client_config(self.settings(ADMIN)), logger=QUIET)
        deadline = time.monotonic() + timeout_s
        while True:  # a broker starting up: ask again until it answers
            try:
                admin.list_topics(timeout=5)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"secured kafka at {self.bootstrap} did not answer"
                    ) from None
                if self.node.pid() is None:
                    raise RuntimeError(
                        f"secured kafka exited while starting; see {self.node.log}"
                    ) from None
                time.sleep(0.5)
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(p.user, info, self.passwords[p.user].encode())
            for p in self.principals.values()
        ]
        for fut in admin.alter_user_scram_credentials(upserts).values():
            fut.result(30)
        bindings = [b for p in self.principals.values() for b in acl_bindings(p, self.cluster)]
        for fut in admin.create_acls(bindings, request_timeout=30).values():
            fut.result(30)

    def stop(self) -> None:
        self.node.stop()
