"""Strimzi `KafkaUser`s of one cluster, generated from the ACL table (pure, apart from `main`).

    python -m tapstream.core.acl_strimzi protected > deploy/k8s/overlays/protected/users.yaml

Users that reach both clusters (`Principal.crosses_sites`) take their password from a Secret you
create at both sites (`<user>-password`, key `password`); Strimzi makes the others' passwords and
writes each to a Secret named like the user.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from tapstream.core.acl import Grant, Principal, table
from tapstream.core.settings import Site, TapstreamSettings, load

Obj = dict[str, Any]


def password_secret(p: Principal) -> str | None:
    """The Secret holding a cross-site user's password (None: Strimzi generates one)."""
    return f"{p.user}-password" if p.crosses_sites else None


def _acl(g: Grant) -> Obj:
    resource: Obj = {"type": g.resource}
    if g.resource != "cluster":
        resource |= {"name": g.name, "patternType": g.pattern}
    return {"resource": resource, "operations": list(g.operations), "host": "*"}


def kafka_user(p: Principal, cluster: Site, strimzi_cluster: str = "tapstream") -> Obj:
    auth: Obj = {"type": "scram-sha-512"}
    secret = password_secret(p)
    if secret:
        auth["password"] = {"valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": p.user, "labels": {"strimzi.io/cluster": strimzi_cluster}},
        "spec": {
            "authentication": auth,
            "authorization": {"type": "simple", "acls": [_acl(g) for g in p.grants[cluster]]},
        },
    }


def kafka_users(settings: TapstreamSettings, cluster: Site) -> list[tuple[Principal, Obj]]:
    """Every principal with grants on `cluster`, with its KafkaUser."""
    return [(p, kafka_user(p, cluster)) for p in table(settings).values() if p.grants.get(cluster)]


def users_yaml(settings: TapstreamSettings, cluster: Site) -> str:
    """The committed users.yaml of a site: a header, then each user under its one-line summary."""
    out = [
        f"# KafkaUsers of the {cluster} cluster, generated from lib/tapstream/core/acl.py; do not edit:\n"
        f"#   python -m tapstream.core.acl_strimzi {cluster} > deploy/k8s/overlays/{cluster}/users.yaml\n"
        "# SCRAM-SHA-512 over TLS. Users that reach both clusters take their password from a Secret\n"
        "# you create at both sites (<user>-password, key password); Strimzi makes the others'.\n"
    ]
    for p, user in kafka_users(settings, cluster):
        cross = " Same password on both clusters." if p.crosses_sites else ""
        out.append(f"---\n# {p.service}: {p.summary}{cross}\n")
        out.append(yaml.safe_dump(user, sort_keys=False, default_flow_style=False))
    return "".join(out)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in ("protected", "recovery"):
        raise SystemExit("usage: python -m tapstream.core.acl_strimzi protected|recovery")
    sys.stdout.write(users_yaml(load(TapstreamSettings), argv[0]))  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1:])
