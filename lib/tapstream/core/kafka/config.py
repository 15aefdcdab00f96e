"""Pure translation of settings into client configuration (no I/O, testable without a broker)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tapstream.core.settings import TapstreamSettings


def client_config(settings: TapstreamSettings, bootstrap: str | None = None) -> dict[str, Any]:
    """librdkafka configuration common to producers, consumers and admin clients."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap or settings.bootstrap,
        "security.protocol": settings.kafka_security_protocol,
        "client.id": f"tapstream-{settings.site}",
    }
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username or ""
        if settings.kafka_sasl_password is not None:
            conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        conf["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return conf


def consumer_config(
    source: TapstreamSettings | Mapping[str, Any],
    *,
    group_id: str,
    bootstrap: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A synchronous (confluent-kafka) consumer's configuration: the client settings of `source`
    (settings, or a `client_config` already built), a group that commits only when told to, then
    `options` (librdkafka keys) on top."""
    if isinstance(source, TapstreamSettings):
        conf = client_config(source, bootstrap)
    else:
        conf = dict(source)
        if bootstrap is not None:
            conf["bootstrap.servers"] = bootstrap
    conf.update({"group.id": group_id, "enable.auto.commit": False})
    conf.update(options or {})
    return conf


def producer_config(
    settings: TapstreamSettings,
    bootstrap: str | None = None,
    *,
    linger_ms: float = 2.0,
    compression: str = "lz4",
    delivery_timeout_ms: int = 30_000,
    max_message_bytes: int = 8 * 1024 * 1024,
) -> dict[str, Any]:
    """An idempotent, acks=all producer: no acknowledged record is lost or duplicated by retries."""
    conf = client_config(settings, bootstrap)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": compression,
            # Bounds how long a record may wait for the cluster before its future fails.
            "delivery.timeout.ms": delivery_timeout_ms,
            "message.max.bytes": max_message_bytes + 64 * 1024,
            "batch.size": min(max_message_bytes, 4 * 1024 * 1024),
            "queue.buffering.max.kbytes": 512 * 1024,
        }
    )
    return conf


def aiokafka_config(settings: TapstreamSettings, bootstrap: str | None = None) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap or settings.bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        from aiokafka.helpers import create_ssl_context

        kwargs["ssl_context"] = create_ssl_context(cafile=str(settings.kafka_ssl_cafile))
    return kwargs
