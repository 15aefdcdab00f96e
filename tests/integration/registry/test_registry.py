"""tapstream against a real schema registry (Apicurio Registry, its Confluent-compatible API).

1. Subjects are checked for BACKWARD compatibility: our schemas' own history registers in order, an
   incompatible change is refused at registration.
2. Services started with TAPSTREAM_SCHEMA_REGISTRY_URL (both site managers and every service they
   run for a group, and an analyzer) register and resolve our schemas, and `kcat -C -s value=avro
   -r <registry>` decodes every record of the writes, events and alerts topics on both sites,
   mirrored topics included, into the JSON of the values the codec reads.

The services use a topic prefix of their own (`tapstream.r<hex>`: MirrorMaker 2 mirrors it like
every `tapstream.*` topic), so the stack's usual topics never receive Confluent-format records.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema

from tapstream.core.codec import RegistryError, make_codec
from tapstream.core.codec.confluent import RegistryClient
from tapstream.core.codec.schemas import NAMESPACE, current, schema_dir
from tapstream.core.kafka import client_config
from tapstream.localstack.registry import RegistryNode

from ..services_harness import stop, wait_until
from ..site_manager_harness import cli_env, start_site_manager, tapstream, tapstream_json
from ..tapper_harness import run

pytestmark = pytest.mark.integration
SIZE = 16 * 1024 * 1024


def test_subjects_are_backward_compatible(registry: RegistryNode, unique_name: str) -> None:
    client = RegistryClient(registry.url)
    # What every service does at its first record: register the current schemas.
    ids = {n: client.register(f"{NAMESPACE}.{n}", s.json) for n, s in current().items()}
    assert len(set(ids.values())) == len(ids)
    assert httpx.get(registry.url + "/config").json()["compatibilityLevel"] == "BACKWARD"
    for name in ids:
        level = httpx.get(f"{registry.url}/config/{NAMESPACE}.{name}?defaultToGlobal=true").json()
        assert level["compatibilityLevel"] == "BACKWARD", (name, level)

    # Our schemas evolved compatibly: each one's history, then today's, registers in order.
    for path in sorted((schema_dir() / "history").glob("*.avsc")):
        name = path.name.split(".")[0]
        subject = f"{unique_name}.{path.stem}"
        client.register(subject, path.read_text())
        client.register(subject, current()[name].json)

    # An incompatible change (a new field without a default: old records cannot be read) is refused.
    raw = json.loads(current()["DiskEvent"].json)
    raw["fields"].append({"name": "site", "type": "string"})
    subject = f"{NAMESPACE}.DiskEvent"
    before = httpx.get(f"{registry.url}/subjects/{subject}/versions").json()
    with pytest.raises(RegistryError, match="409"):
        client.register(subject, json.dumps(raw))
    assert httpx.get(f"{registry.url}/subjects/{subject}/versions").json() == before
    # ... and the same field with a default is accepted (on a subject of this test's own).
    subject = f"{unique_name}.DiskEvent"
    client.register(subject, current()["DiskEvent"].json)
    raw["fields"][-1]["default"] = ""
    client.register(subject, json.dumps(raw))
    assert httpx.get(f"{registry.url}/subjects/{subject}/versions").json() == [1, 2]


def own_databases(stack: Any, name: str) -> dict[str, str]:
    """A database of this test's own on each site's Postgres. Its site managers keep their
    projection there: in the one the other tests' managers share, their events (on this test's
    own topic prefix) would be rows that a rebuild from the tapstream.* topics cannot find again,
    which failed test_site_manager_rebuild."""
    out = {}
    for site in ("protected", "recovery"):
        url = getattr(stack, f"{site}_database_url")

        async def create(url: str = url) -> None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'create database "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        own = urlsplit(url)._replace(path=f"/{name}")
        out[f"TAPSTREAM_{site.upper()}_DATABASE_URL"] = urlunsplit(own)
    return out


def test_kcat_decodes_the_services_records_on_both_sites(
    stack, registry: RegistryNode, kcat: Path, tmp_path: Path, unique_name: str
) -> None:
    group, volume = unique_name, f"{unique_name}-d0"
    prefix = f"tapstream.r{uuid.uuid4().hex[:6]}"
    env = {
        "TAPSTREAM_SCHEMA_REGISTRY_URL": registry.url,
        "TAPSTREAM_TOPIC_PREFIX": prefix,
        **own_databases(stack, prefix.replace("tapstream.", "tapstream_")),
    }
    settings = stack.settings.model_copy(
        update={"schema_registry_url": registry.url, "topic_prefix": prefix}
    )
    disk = tmp_path / "disk0.img"
    with open(disk, "wb") as f:
        f.truncate(SIZE)
    pm = start_site_manager(stack, tmp_path, "protected", [group], env)
    rm = start_site_manager(stack, tmp_path, "recovery", [group], env)
    cli = {**cli_env(stack, pm, rm, tmp_path), **env}
    analyzer = subprocess.Popen(
        [sys.executable, "-m", "tapstream.analyzer", "run",
         "tests.integration.registry.first_write:FirstWrite", "--group", group],
        env={**stack.env, **env, "TAPSTREAM_LOG_FORMAT": "console"},
        stdout=open(tmp_path / "analyzer.log", "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        tapstream(cli, "group", "create", group, "--journal-history", "60",
                  "--checkpoint-interval", "2")  # fmt: skip
        tapstream(cli, "group", "add-vm", group, "vm0")
        tapstream(cli, "group", "add-volume", group, "vm0", volume, str(disk))
        export = wait_until(
            "the protected tapper serving",
            lambda: (
                (s := tapstream_json(cli, "group", "status", group))["converged"]
                and all(s["services"].values())
                and s.get("exports")
            ),
            timeout=90,
        )[volume]
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", export])
        cp = tapstream(cli, "group", "checkpoint", group, "--tag", "registry").stdout.strip()
        # The journal read the Confluent-format writes through the registry (it indexed them) ...
        wait_until(
            "the checkpoint in the journal",
            lambda: any(c["id"] == cp for c in tapstream_json(cli, "group", "checkpoints", group)),
            timeout=60,
        )
        # ... and so did the analyzer.
        alerts_topic = settings.topic("alerts")
        wait_until("the analyzer's alert", lambda: records(settings, "protected", alerts_topic))

        topics = [settings.topic(f"writes.{group}"), settings.topic("events"), alerts_topic]
        for site, names in (
            ("protected", topics),
            ("recovery", [settings.mirrored(t) for t in topics]),
        ):
            for topic in names:
                want = wait_until(
                    f"{topic} at {site}",
                    lambda s=site, t=topic: records(settings, s, t),  # type: ignore[misc]
                    timeout=60,
                )
                assert isinstance(want, dict)
                got = kcat_json(kcat, stack_bootstrap(stack, site), topic, registry.url)
                assert set(got) >= set(want), f"{topic} at {site}: kcat read fewer records"
                for at, value in want.items():
                    assert got[at] == value, f"{topic} at {site} {at}"
        wrote = [
            v for v in kcat_json(kcat, stack.recovery_bootstrap, settings.mirrored(topics[0]),
                                 registry.url).values()
            if "Write" in v["body"]
        ]  # fmt: skip
        assert any(
            w["body"]["Write"]["offset"] == 1 << 20 and w["body"]["Write"]["data"] == "Z" * 65536
            for w in wrote
        )
    finally:
        stop(analyzer)
        pm.stop()
        rm.stop()


def stack_bootstrap(stack, site: str) -> str:
    return stack.protected_bootstrap if site == "protected" else stack.recovery_bootstrap


def records(settings, site: str, topic: str) -> dict[tuple[int, int], Any]:
    """Every record of `topic` at `site` as (partition, offset) -> the Avro JSON of what the codec
    decodes (every one of them in the Confluent format)."""
    bootstrap = settings.protected_bootstrap if site == "protected" else settings.recovery_bootstrap
    conf = client_config(settings, bootstrap)
    consumer = Consumer({**conf, "group.id": f"registry-test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return {}
        ends = {}
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return {}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        codec = make_codec(settings)
        out: dict[tuple[int, int], Any] = {}
        while any(o < ends[p] - 1 for p, o in _last(out, ends).items()):
            msg = consumer.poll(10)
            assert msg is not None, f"{topic}: no record within 10 s"
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value[:1] == b"\0", f"{topic}: a record not in the Confluent wire format"
            name, record = codec.decode(value)
            out[(msg.partition(), msg.offset())] = avro_json(record, _parsed(name))
        return out
    finally:
        consumer.close()


def _last(out: dict[tuple[int, int], Any], ends: dict[int, int]) -> dict[int, int]:
    return {p: max((o for q, o in out if q == p), default=-1) for p in ends}


def kcat_json(kcat: Path, bootstrap: str, topic: str, url: str) -> dict[tuple[int, int], Any]:
    """`kcat -C -s value=avro -r <registry>` over the whole topic: (partition, offset) -> value."""
    res = run([str(kcat), "-b", bootstrap, "-C", "-t", topic, "-s", "value=avro", "-r", url,
               "-o", "beginning", "-e", "-q", "-f", "%p\t%o\t%s\n"], timeout=60)  # fmt: skip
    out = {}
    for line in res.stdout.splitlines():
        p, o, value = line.split("\t", 2)
        out[(int(p), int(o))] = json.loads(value)
    return out


def _parsed(name: str) -> Any:
    return parse_schema(current()[name].raw, named_schemas={})


def avro_json(value: Any, schema: Any) -> Any:
    """`value` (as the codec decodes it) in Avro's JSON encoding, as kcat prints it (avro-c: union
    branches named by their short name; bytes as one character per byte, cut at the first NUL)."""
    if isinstance(schema, list):  # a union
        if value is None:
            return None
        if isinstance(value, tuple):  # a record branch, as (short name, fields)
            branch = next(
                s for s in schema if isinstance(s, dict) and s["name"].endswith("." + value[0])
            )
            return {value[0]: avro_json(value[1], branch)}
        for s in schema:
            t = s if isinstance(s, str) else s["type"]
            if t != "null" and _fits(value, t):
                return {t: avro_json(value, s)}
        raise AssertionError(f"no branch of {schema} for {value!r}")
    t = schema if isinstance(schema, str) else schema["type"]
    if t == "record":
        return {f["name"]: avro_json(value[f["name"]], f["type"]) for f in schema["fields"]}
    if t == "map":
        return {k: avro_json(v, schema["values"]) for k, v in value.items()}
    if t == "array":
        return [avro_json(v, schema["items"]) for v in value]
    if t == "bytes":
        return value.split(b"\0", 1)[0].decode("latin-1")
    return value


def _fits(value: Any, t: str) -> bool:
    kinds = {"string": str, "long": int, "int": int, "double": float, "boolean": bool,
             "bytes": bytes}  # fmt: skip
    return isinstance(value, kinds.get(t, object))
