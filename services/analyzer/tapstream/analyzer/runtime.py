"""Runs an SDK Analyzer as a faust-streaming app: its own consumer group on tapstream.writes.<group>.

One app per (analyzer, protection group): app id and consumer group `<prefix>-analyzer.<name>.<group>`
(outside the `tapstream.` prefix that MirrorMaker 2 mirrors, so changelogs stay local). Per-volume
state lives in the faust table `volumes` (JSON) and the analyzer's own raw tables, all backed by
compacted changelog topics and co-partitioned with the write topic (the key of every update is the
volume, or starts with it). Processing is at-least-once; an event redelivered after a restart has a
seq the restored table already holds and is skipped, so no hook runs twice and no alert repeats.
SIGTERM stops the worker cleanly (mode's Worker): the agent finishes its event, offsets are committed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import faust

from tapstream.analyzer import metrics
from tapstream.analyzer.next_steps import next_steps
from tapstream.analyzer.sdk import AlertRequest, Analyzer, Dispatcher, Event, VolumeMeta
from tapstream.analyzer.settings import AnalyzerSettings
from tapstream.core import logging as tlog
from tapstream.core.clock import now_us
from tapstream.core.codec import make_codec
from tapstream.core.dlq import DeadLetters, Poison, PoisonReason, classify
from tapstream.core.kafka import TopicSpec, client_config, ensure_topics

log = tlog.get_logger("tapstream.analyzer")
ALERT_NS = uuid.UUID("5b0a3f0e-8f55-4b7e-9d59-5f1d4f6a7c21")


def app_id(settings: AnalyzerSettings, name: str) -> str:
    return (
        settings.analyzer_app_id
        or f"{settings.topic_prefix}-analyzer.{name}.{settings.analyzer_group}"
    )


def topic_partitions(settings: AnalyzerSettings, topic: str) -> int:
    """Partitions of `topic`, waiting for it to exist (the tapper creates write topics)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    deadline = (
        time.monotonic() + settings.analyzer_topic_wait_s
        if settings.analyzer_topic_wait_s
        else None
    )
    said = False
    while True:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            return len(meta.partitions)
        if deadline is not None and time.monotonic() > deadline:
            raise SystemExit(
                f"analyzer: topic {topic} did not appear in {settings.analyzer_topic_wait_s}s"
            )
        if not said:
            log.info("waiting for the write topic", topic=topic)
            said = True
        time.sleep(0.5)


def _faust_credentials(settings: AnalyzerSettings) -> Any:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    import ssl

    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(ctx)
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username or "",
        password=password,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=ctx if settings.kafka_security_protocol == "SASL_SSL" else None,
    )


class BytesTable(MutableMapping[str, bytes]):
    """bytes values over a faust table. Recovery from the changelog decodes with the table's own
    serializer (JSON), whatever schema was used to send, so values travel as base64 text."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> bytes:
        value = self.table[key]
        if value is None:
            raise KeyError(key)
        return base64.b64decode(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[key] = base64.b64encode(value).decode()

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


async def ask_to_keep(
    send: Callable[[], Awaitable[object]], analyzer: str, group: str, checkpoint: str
) -> bool:
    """Send a CHECKPOINT_TAG request. A secured cluster refuses it (the ACL table gives analyzers no
    Write on tapstream.control: user code must not command tappers and VDSAs); the refusal is
    logged and counted, never a crash of the agent: the alert already names the checkpoint."""
    from aiokafka.errors import TopicAuthorizationFailedError

    try:
        await send()
        return True
    except TopicAuthorizationFailedError as exc:
        metrics.COMMANDS_REFUSED.labels(analyzer, group).inc()
        log.warning(
            "not allowed to write tapstream.control: checkpoint not kept; the alert names it, "
            "keep it with `tapstream checkpoint keep`",
            group=group,
            checkpoint=checkpoint,
            error=repr(exc),
        )
        return False


def build_app(analyzer: Analyzer, settings: AnalyzerSettings, partitions: int) -> faust.App:
    """The faust app; not started. Separate from run() so tests can look at its wiring."""
    name = analyzer.name
    group = settings.analyzer_group
    codec = make_codec(settings)
    app = faust.App(
        app_id(settings, name),
        broker=[f"kafka://{b}" for b in settings.protected_bootstrap.split(",")],
        broker_credentials=_faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        topic_partitions=partitions,
        topic_replication_factor=settings.analyzer_replication_factor,
        broker_commit_interval=settings.analyzer_commit_interval_s,
        consumer_max_fetch_size=16 * 1024 * 1024,
        producer_max_request_size=2 * 1024 * 1024,
        table_standby_replicas=0,
        stream_wait_empty=False,
    )
    source = app.topic(
        settings.topic(f"writes.{group}"),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    alerts = app.topic(settings.topic("alerts"), key_serializer="raw", value_serializer="raw")
    control = app.topic(settings.topic("control"), key_serializer="raw", value_serializer="raw")
    volumes = app.Table("volumes", default=None, partitions=partitions)
    tables = {
        t: BytesTable(app.Table(t, default=None, partitions=partitions)) for t in analyzer.tables
    }
    dispatcher = Dispatcher(analyzer)
    # On the cluster the analyzer reads, whatever TAPSTREAM_SITE says.
    dead = DeadLetters(settings, f"analyzer.{name}", settings.protected_bootstrap)

    async def publish(req: AlertRequest) -> None:
        alert_id = str(uuid.uuid5(ALERT_NS, f"{name}:{group}:{req.dedupe_key or req.onset_ts}"))
        cp = req.last_clean_checkpoint
        record = {
            "id": alert_id,
            "kind": req.kind,
            "group": group,
            "volume": req.volume,
            "onset_ts": req.onset_ts,
            "detected_ts": req.detected_ts,
            "severity": req.severity,
            "score": float(req.score),
            "encrypted_share": float(req.encrypted_share),
            "last_clean_checkpoint": cp.id if cp else None,
            "message": req.message,
            "details": {
                **req.details,
                "analyzer": name,
                "published_ts": str(now_us()),
                **(next_steps(group, req.volume, cp.id) if cp else {}),
            },
        }
        await alerts.send(key=req.volume.encode(), value=codec.encode("Alert", record))
        metrics.ALERTS.labels(name, group, req.volume, req.kind).inc()
        log.warning(
            "alert",
            kind=req.kind,
            group=group,
            volume=req.volume,
            alert=alert_id,
            last_clean_checkpoint=cp.id if cp else None,
            share=round(req.encrypted_share, 3),
        )
        if req.tag_checkpoint and cp is not None:
            # Ask for the checkpoint to be tagged and kept (schemas/README.md: "Kept checkpoints").
            command = {
                "id": str(uuid.uuid5(ALERT_NS, f"tag:{alert_id}")),
                "group": group,
                "kind": "CHECKPOINT_TAG",
                "sender": f"analyzer.{name}",
                "ts": now_us(),
                "checkpoint_id": cp.id,
                "tag": settings.analyzer_last_clean_tag,
                "volumes": [req.volume],
                "args": {
                    "alert_id": alert_id,
                    "reason": req.kind,
                    "keep": "true",
                    "onset_ts": str(req.onset_ts),
                },
            }
            await ask_to_keep(
                lambda: control.send(key=group.encode(), value=codec.encode("Command", command)),
                name,
                group,
                cp.id,
            )

    @app.agent(source, name=f"analyze-{name}")
    async def analyze(stream: Any) -> None:
        # The dead-letter producer lives as long as the agent (the app's only consumer).
        await dead.start()
        try:
            async for event in stream.events():
                await handle(event)
        finally:
            await dead.stop()

    async def handle(event: Any) -> None:
        msg = event.message
        rec, poison = classify(msg.value, codec, "DiskEvent")
        if rec is not None and rec["group"] != group:
            why = f"group {rec['group']!r} in the write topic of group {group!r}"
            rec, poison = None, Poison(PoisonReason.INVALID, why)
        if rec is None:
            assert poison is not None
            dead.send(msg.topic, msg.partition, msg.offset, msg.key, msg.value, poison)
            metrics.EVENTS.labels(name, group, "?", poison.reason).inc()
            return
        branch, body = rec["body"]
        ev = Event(
            group=rec["group"],
            volume=rec["volume"],
            seq=rec["seq"],
            ts=rec["ts"],
            host=rec["host"],
            kind=branch,
            body=body,
            partition=event.message.partition,
            offset=event.message.offset,
        )
        meta = VolumeMeta.from_dict(volumes.get(ev.volume))
        requests: list[AlertRequest] = []
        result = dispatcher.handle(ev, meta, tables, requests.append)  # type: ignore[arg-type]
        metrics.EVENTS.labels(name, group, ev.volume, result).inc()
        if result == "skipped":
            return
        if result == "gap":
            log.warning("seq gap: events missing from the stream", volume=ev.volume, seq=ev.seq)
        volumes[ev.volume] = meta.to_dict()
        metrics.SEQ.labels(name, group, ev.volume).set(ev.seq)
        for req in requests:
            await publish(req)

    return app


def run(analyzer: Analyzer, settings: AnalyzerSettings) -> None:
    """Run until SIGTERM/SIGINT; offsets are committed on the way out."""
    from tapstream.core.metrics import serve

    tlog.configure(settings.log_level, settings.log_format, service=f"analyzer.{analyzer.name}")
    serve(settings.metrics_port, settings.metrics_host)
    topic = settings.topic(f"writes.{settings.analyzer_group}")
    partitions = topic_partitions(settings, topic)
    asyncio.run(
        ensure_topics(
            client_config(settings),
            [
                TopicSpec(settings.topic("alerts"), partitions=1),
                TopicSpec(settings.topic("control"), partitions=1),
            ],
        )
    )
    # Changelogs made up front, co-partitioned, and waited for: faust crashes (PartitionsMismatch)
    # when a changelog it just created shows no partitions yet in the metadata.
    changelogs = [
        f"{app_id(settings, analyzer.name)}-{t}-changelog" for t in ("volumes", *analyzer.tables)
    ]
    asyncio.run(
        ensure_topics(
            client_config(settings),
            [
                TopicSpec(
                    c,
                    partitions=partitions,
                    replication_factor=settings.analyzer_replication_factor,
                    config={"cleanup.policy": "compact"},
                )
                for c in changelogs
            ],
        )
    )
    for c in changelogs:
        topic_partitions(settings, c)
    app = build_app(analyzer, settings, partitions)
    log.info("starting", app_id=app.conf.id, topic=topic, partitions=partitions)
    # uvloop is what the other services use; faust's Worker creates the loop itself.
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    worker = faust.Worker(
        app, loglevel=settings.log_level, override_logging=False, quiet=True, redirect_stdouts=False
    )
    worker.execute_from_commandline()
