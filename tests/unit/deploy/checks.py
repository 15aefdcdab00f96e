"""Offline checks of the deployment files: schemas, settings names and values, metric names.

Pure functions returning lists of problems (empty = fine), so tests can also prove that each check
catches a broken manifest.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import kubernetes_validate
from prometheus_client import REGISTRY
from pydantic import BaseModel

from tapstream.core.settings import ENV_PREFIX, TapstreamSettings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = {"protected": K8S / "overlays" / "protected", "recovery": K8S / "overlays" / "recovery"}
STRIMZI_SCHEMAS = K8S / "schemas" / "strimzi"
KUBERNETES_VERSION = "1.32"
# Env names that are not settings fields but read by tapstream all the same.
NON_FIELD_VARIABLES = {f"{ENV_PREFIX}ENV_FILE"}
# Kinds of the Prometheus Operator: no schema vendored, checked by hand below.
MONITORING = {"ServiceMonitor", "PrometheusRule"}

Obj = dict[str, Any]


def load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("tapstream_deploy_render", K8S / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def services_with_main() -> set[str]:
    """Every `python -m tapstream.<name>` that exists in the tree."""
    return {p.parent.name for p in ROOT.glob("services/*/tapstream/*/__main__.py")}


def settings_class(module: str) -> type[TapstreamSettings]:
    """The settings model of `tapstream.<service>` (the TapstreamSettings subclass in its settings.py)."""
    mod = importlib.import_module(f"{module}.settings")
    found = [
        c
        for c in vars(mod).values()
        if isinstance(c, type)
        and issubclass(c, TapstreamSettings)
        and c is not TapstreamSettings
        and c.__module__ == mod.__name__
    ]
    if len(found) != 1:
        raise LookupError(
            f"{module}.settings: expected one TapstreamSettings subclass, found {found}"
        )
    return found[0]


def service_module(command: list[str]) -> str | None:
    """`tapstream.vdsa` for [python, -m, tapstream.vdsa, ...]; None for anything else."""
    if len(command) >= 3 and command[1] == "-m" and command[2].startswith("tapstream."):
        return command[2]
    return None


def check_settings(module: str, env: dict[str, str], where: str) -> list[str]:
    """Every TAPSTREAM_* name is a field of the service's model, and the values load."""
    cls = settings_class(module)
    fields = {f"{ENV_PREFIX}{name}".upper() for name in cls.model_fields}
    problems = [
        f"{where}: {name} is not a setting of {cls.__name__} ({module})"
        for name in sorted(env)
        if name.startswith(ENV_PREFIX) and name not in fields and name not in NON_FIELD_VARIABLES
    ]
    ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    # The model reads the process environment: give it exactly this container's.
    with mock.patch.dict(os.environ, ours, clear=True):
        try:
            cls(_env_file=None)  # type: ignore[call-arg]
        except Exception as exc:  # any failure to load is the finding
            problems.append(f"{where}: {cls.__name__} rejects the values: {exc}")
    return problems


# --- Kubernetes -----------------------------------------------------------------------------------


def container_env(
    container: Obj, objects: list[Obj], namespace: str | None
) -> tuple[dict[str, str], list[str]]:
    """The environment a container gets; secret and field references become placeholders."""
    maps = {
        o["metadata"]["name"]: o.get("data", {})
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"].get("namespace") == namespace
    }
    env: dict[str, str] = {}
    problems = []
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None:
            problems.append(f"envFrom {source}: only configMapRef is checked")
        elif ref["name"] in maps:
            env.update(maps[ref["name"]])
        elif not ref.get("optional"):
            problems.append(f"envFrom: ConfigMap {ref['name']} is not in the rendering")
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            cm = ref["configMapKeyRef"]
            if cm["key"] not in maps.get(cm["name"], {}):
                problems.append(f"{item['name']}: ConfigMap {cm['name']} has no key {cm['key']}")
            else:
                env[item["name"]] = maps[cm["name"]][cm["key"]]
        elif "secretKeyRef" in ref:
            env[item["name"]] = (
                "postgresql://user:secret@db:5432/db" if "URL" in item["name"] else "secret"
            )
        elif "fieldRef" in ref:
            env[item["name"]] = "node-1"
        else:
            problems.append(f"{item['name']}: unchecked valueFrom {ref}")
    return env, problems


def pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def check_k8s_settings(objects: list[Obj]) -> list[str]:
    problems = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            env, found = container_env(container, objects, obj["metadata"].get("namespace"))
            problems += [f"{where}: {p}" for p in found]
            module = service_module(container.get("command", []))
            if module is not None:
                problems += check_settings(module, env, where)
            elif any(k.startswith(ENV_PREFIX) for k in env):
                problems.append(
                    f"{where}: TAPSTREAM_* settings but no `python -m tapstream.<service>` command"
                )
    return problems


@cache
def strimzi_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    group, _, version = api_version.partition("/")
    path = STRIMZI_SCHEMAS / f"{kind}-{group}-{version}.json"
    if not path.is_file():
        raise LookupError(f"no vendored schema for {kind} {api_version} ({path.name})")
    schema = json.loads(path.read_text())
    return jsonschema.Draft7Validator(schema)


def check_schema(obj: Obj) -> list[str]:
    """Kubernetes objects against Kubernetes' schemas, Strimzi's against its CRDs' openAPIV3Schema."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    group = obj["apiVersion"].rpartition("/")[0]
    if group == "kafka.strimzi.io":
        try:
            validator = strimzi_validator(obj["kind"], obj["apiVersion"])
        except LookupError as exc:
            return [f"{name}: {exc}"]
        return [
            f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
    if group == "monitoring.coreos.com":
        return check_monitoring(obj)
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: no Kubernetes schema ({exc})"]
    return []


def check_monitoring(obj: Obj) -> list[str]:
    """ServiceMonitor and PrometheusRule: the fields Prometheus Operator requires, by hand."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    spec = obj.get("spec", {})
    if obj["kind"] == "ServiceMonitor":
        ok = isinstance(spec.get("selector"), dict) and all(
            "port" in e for e in spec.get("endpoints", [None]) if e
        )
        return (
            []
            if ok and spec.get("endpoints")
            else [f"{name}: needs selector and endpoints with a port"]
        )
    if obj["kind"] == "PrometheusRule":
        bad = [
            r
            for g in spec.get("groups", [])
            for r in g.get("rules", [])
            if not r.get("expr") or not (r.get("alert") or r.get("record"))
        ]
        return [f"{name}: rule without expr or alert/record: {r}" for r in bad] or (
            [] if spec.get("groups") else [f"{name}: no groups"]
        )
    return [f"{name}: unknown monitoring kind"]


# --- metrics --------------------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Names Prometheus scrapes from tapstream (with _total, _bucket, ... suffixes)."""
    for module in ROOT.glob("services/*/tapstream/*/metrics.py"):
        importlib.import_module(f"tapstream.{module.parent.name}.metrics")
    names = set()
    for metric in REGISTRY.collect():
        if metric.name.startswith("tapstream_"):
            suffixes = {
                "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_sum", "_count", "_created"],
                "summary": ["_sum", "_count", "_created"],
            }.get(metric.type, [""])
            names.update(metric.name + s for s in suffixes)
    return names


METRIC = re.compile(r"\btapstream_[a-z0-9_]+")


def check_metric_names(exprs: list[str], where: str) -> list[str]:
    known = exported_metric_names()
    return [
        f"{where}: {m} is not a metric any service exports"
        for e in exprs
        for m in METRIC.findall(e)
        if m not in known
    ]


# --- Kafka users and credentials (the ACL table) ---------------------------------------------------

# The principal each service runs as, by `python -m` module and TAPSTREAM_SITE.
PRINCIPAL_OF = {
    "tapstream.tapper": lambda site: "tapper",
    "tapstream.vdsa": lambda site: f"vdsa-{site}",
    "tapstream.journal": lambda site: "journal",
    "tapstream.replicator": lambda site: "replicator",
    "tapstream.analyzer": lambda site: "analyzer",
    "tapstream.site_manager": lambda site: f"site-manager-{site}",
}
OWN_CA = "tapstream-cluster-ca-cert"


def check_kafka_users(objects: list[Obj], cluster: str) -> list[str]:
    """The site's KafkaUsers are exactly what the ACL table generates for its cluster."""
    from tapstream.core.acl_strimzi import kafka_users

    want = {u["metadata"]["name"]: u for _p, u in kafka_users(table_settings(), cluster)}  # type: ignore[arg-type]
    have = {o["metadata"]["name"]: o for o in objects if o["kind"] == "KafkaUser"}
    problems = [
        f"KafkaUser/{n}: in the ACL table, not deployed" for n in sorted(want.keys() - have.keys())
    ]
    problems += [
        f"KafkaUser/{n}: deployed, not in the ACL table" for n in sorted(have.keys() - want.keys())
    ]
    for name in sorted(want.keys() & have.keys()):
        for part in ("authentication", "authorization"):
            if have[name]["spec"].get(part) != want[name]["spec"][part]:
                problems.append(f"KafkaUser/{name}: spec.{part} differs from the ACL table")
    return problems


def table_settings() -> TapstreamSettings:
    """Settings the manifests' names follow (no environment: the ConfigMap keeps the defaults)."""
    with mock.patch.dict(os.environ, {}, clear=True):
        return TapstreamSettings(_env_file=None)  # type: ignore[call-arg]


def check_kafka_credentials(objects: list[Obj], cluster: str) -> list[str]:
    """Each service logs in as its principal, with the password where that principal keeps it,
    and a principal that reaches both clusters trusts both cluster CAs."""
    from tapstream.core.acl import table
    from tapstream.core.acl_strimzi import password_secret

    principals = table(table_settings())
    problems = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec["containers"]:
            module = service_module(c.get("command", []))
            if module is None or module not in PRINCIPAL_OF:
                continue
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            env = {e["name"]: e for e in c.get("env", [])}
            site = env.get("TAPSTREAM_SITE", {}).get("value", "protected")
            p = principals[PRINCIPAL_OF[module](site)]
            user = env.get("TAPSTREAM_KAFKA_SASL_USERNAME", {}).get("value")
            if user != p.user:
                problems.append(f"{where}: Kafka user {user!r}, the ACL table says {p.user!r}")
            if not p.grants.get(cluster):  # type: ignore[call-overload]
                problems.append(f"{where}: {p.user} has no ACLs on the {cluster} cluster")
            ref = env.get("TAPSTREAM_KAFKA_SASL_PASSWORD", {}).get("valueFrom", {})
            secret = ref.get("secretKeyRef", {}).get("name")
            if secret != (password_secret(p) or p.user):
                problems.append(
                    f"{where}: password from Secret {secret!r}, expected "
                    f"{password_secret(p) or p.user!r}"
                    + (" (created at both sites)" if p.crosses_sites else " (Strimzi's)")
                )
            if p.crosses_sites and len(ca_secrets(spec)) < 2:
                problems.append(
                    f"{where}: {p.user} reaches both clusters but its CA file holds "
                    f"{sorted(ca_secrets(spec))} (bundle both sites' cluster CAs in an init container)"
                )
    return problems


def ca_secrets(spec: Obj) -> set[str]:
    """The cluster CA Secrets a pod's Kafka CA file is made of."""
    secrets = {
        v["name"]: v["secret"]["secretName"]
        for v in spec.get("volumes", [])
        if "secret" in v and v["secret"]["secretName"].endswith("cluster-ca-cert")
    }
    used = {
        m["name"]
        for c in spec.get("initContainers", []) + spec["containers"]
        for m in c.get("volumeMounts", [])
    }
    return {s for name, s in secrets.items() if name in used}


# --- volume mounts against the settings' paths -----------------------------------------------------

# Paths a service writes at a site: they must be set (a relative default lands in the read-only
# image) and on a writable mount.
WRITES_PATHS = {
    ("tapstream.tapper", "protected"): ["tapper_state_dir"],
    ("tapstream.vdsa", "recovery"): ["replica_dir"],
    ("tapstream.site_manager", "protected"): ["site_manager_state_dir"],
    ("tapstream.site_manager", "recovery"): ["site_manager_state_dir", "replica_dir"],
}


def _paths(value: Any, at: str) -> list[tuple[str, Path]]:
    """Every Path inside a settings value (nested models and lists too)."""
    if isinstance(value, Path):
        return [(at, value)]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _paths(v, f"{at}[{i}]")]
    if isinstance(value, BaseModel):
        return [p for f in type(value).model_fields for p in _paths(getattr(value, f), f"{at}.{f}")]
    return []


def _mount_of(path: Path, mounts: list[Obj]) -> Obj | None:
    best = None
    for m in mounts:
        if path.is_relative_to(m["mountPath"]) and (
            best is None or len(m["mountPath"]) > len(best["mountPath"])
        ):
            best = m
    return best


def check_path_mounts(objects: list[Obj]) -> list[str]:
    """Each absolute path a service's settings name lies on one of its container's mounts; the
    paths it writes are set and writable; every pod sharing the replicas mounts the same claim."""
    problems = []
    claims: dict[str, set[str]] = {}
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            module = service_module(c.get("command", []))
            if module is None:
                continue
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            env, _ = container_env(c, objects, obj["metadata"].get("namespace"))
            ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
            with mock.patch.dict(os.environ, ours, clear=True):
                try:
                    settings = settings_class(module)(_env_file=None)  # type: ignore[call-arg]
                except Exception:
                    continue  # check_k8s_settings reports it
            mounts = c.get("volumeMounts", [])
            site = ours.get(f"{ENV_PREFIX}SITE", "protected")
            for field in WRITES_PATHS.get((module, site), []):
                if f"{ENV_PREFIX}{field}".upper() not in ours:
                    problems.append(f"{where}: {ENV_PREFIX}{field.upper()} is not set")
            for at, path in _paths(settings, "settings"):
                field = at.split(".")[1].split("[")[0]
                if not path.is_absolute():
                    continue  # a default nobody set: flagged above where the service writes it
                mount = _mount_of(path, mounts)
                if mount is None:
                    problems.append(f"{where}: {at} = {path} is on no volume mount")
                    continue
                written = field in WRITES_PATHS.get((module, site), []) or field == "tapper_volumes"
                if written and mount.get("readOnly"):
                    problems.append(f"{where}: {at} = {path} is on a read-only mount")
                if field == "replica_dir":
                    volume = volumes.get(mount["name"], {})
                    claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                    claims.setdefault(str(claim), set()).add(where)
    if len(claims) > 1:
        problems.append(f"the replicas are on different volumes: {claims}")
    return problems


# --- secrets ---------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|PRIVATE|DATABASE_URL", re.IGNORECASE)


def check_secrets_in_secrets(objects: list[Obj]) -> list[str]:
    """Passwords, tokens, keys and database URLs come from Secrets: never a literal in a manifest
    or a ConfigMap (both are readable by anyone who may read the namespace's configuration)."""
    problems = []
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            problems += [
                f"ConfigMap/{obj['metadata']['name']}: {k} looks secret; put it in a Secret"
                for k in obj.get("data", {})
                if SECRET_NAME.search(k)
            ]
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec.get("initContainers", []) + spec["containers"]:
            for item in c.get("env", []):
                # A path names a file (a key from a Secret volume), not the secret itself.
                if str(item.get("value", "")).startswith("/"):
                    continue
                if SECRET_NAME.search(item["name"]) and "secretKeyRef" not in item.get(
                    "valueFrom", {}
                ):
                    problems.append(
                        f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}: {item['name']} "
                        "is not from a Secret"
                    )
    return problems
