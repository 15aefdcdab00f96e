"""This site's infrastructure as the overview shows it: Kafka's brokers answering, Postgres answering,
and MirrorMaker 2 flowing in from the other site (the age of the newest heartbeat it mirrored here:
it emits one a second, so an old one means that direction stopped, whatever the topics hold).

Probed in a thread every few seconds (pages show the latest); a probe never raises, it reports what failed. /health
carries the summary too (counts and ages only, no addresses: /health needs no token), so each
site's console shows the other's."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tapstream.core.kafka.config import client_config
from tapstream.core.settings import Site, TapstreamSettings
from tapstream.localstack.readiness import QUIET, newest_timestamp_ms, postgres_answers

FRESH_S = 10.0  # a heartbeat mirrored within this is a flowing direction
STALE_S = 60.0  # older than this: stopped (between the two: behind)


def mirror_state(age_s: float | None) -> str:
    if age_s is None or age_s > STALE_S:
        return "bad"
    return "ok" if age_s <= FRESH_S else "warn"


def summarize(
    brokers: int,
    kafka_error: str,
    pg_error: str,
    newest_heartbeat_ms: int | None,
    now_ms: int,
    source: str,
) -> dict[str, Any]:
    """The overview's three facts, each with a state (ok, warn, bad) and what went wrong."""
    age = None if newest_heartbeat_ms is None else max(0.0, (now_ms - newest_heartbeat_ms) / 1000)
    return {
        "kafka": {
            "state": "ok" if brokers and not kafka_error else "bad",
            "brokers": brokers,
            "error": kafka_error,
        },
        "postgres": {"state": "bad" if pg_error else "ok", "error": pg_error},
        "mirror": {
            "state": mirror_state(age),
            "from": source,
            "age_s": None if age is None else round(age, 1),
            "error": "" if age is not None else f"no heartbeat mirrored from the {source} site",
        },
    }


class InfraProbe:
    """Probes in a background thread every `every_s`; pages read `latest` and never wait for Kafka."""

    def __init__(self, settings: TapstreamSettings, every_s: float = 5.0) -> None:
        self.s = settings
        self.every_s = every_s
        self.latest: dict[str, Any] = {}  # empty until the first probe ends

    async def run(self) -> None:
        while True:
            self.latest = await asyncio.to_thread(self.probe)
            await asyncio.sleep(self.every_s)

    def probe(self) -> dict[str, Any]:
        s = self.s
        conf = client_config(s)
        brokers, kafka_error = 0, ""
        try:
            brokers = len(AdminClient(conf, logger=QUIET).list_topics(timeout=2).brokers)
        except KafkaException as exc:
            kafka_error = str(exc.args[0]) if exc.args else repr(exc)
        pg_error = ""
        try:
            if not postgres_answers(s.database_url):
                pg_error = "select 1 did not answer 1"
        except Exception as exc:  # any failure to connect is the answer
            pg_error = str(exc) or type(exc).__name__
        source: Site = "recovery" if s.site == "protected" else "protected"
        newest = None
        if brokers:
            rest = {k: v for k, v in conf.items() if k != "bootstrap.servers"}
            newest = newest_timestamp_ms(s.bootstrap, s.mirrored("heartbeats", source), rest)
        return summarize(brokers, kafka_error, pg_error, newest, int(time.time() * 1000), source)
