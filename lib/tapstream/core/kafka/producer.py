"""An asyncio face on confluent-kafka's producer: `await produce(...)` resolves when Kafka acked.

librdkafka batches and compresses in its own threads; a small poll thread serves delivery reports
and hands them to the event loop that awaits them, one wake-up per batch of reports (a wake-up per
record costs a syscall and a loop iteration each, which shows at thousands of records a second).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from tapstream.core.kafka.exceptions import PublishError


class AsyncProducer:
    """Idempotent acks=all producer; build its config with `producer_config()`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # (what to call in the loop, the error or None): in delivery order
        self._reports: list[tuple[Callable[[KafkaError | None], None], KafkaError | None]] = []
        self._reports_lock = threading.Lock()

    async def start(self) -> None:
        self.start_now()

    def start_now(self) -> None:
        """start() from synchronous code running in the event loop."""
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        assert self._producer is not None
        while self._running:
            self._producer.poll(0.05)
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand the delivery reports gathered so far to the event loop in one call."""
        with self._reports_lock:
            reports, self._reports = self._reports, []
        if reports and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle_all, reports)

    def produce_nowait(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Message]:
        """Queue a record; the returned future resolves on Kafka's ack or fails with PublishError."""
        assert self._producer is not None and self._loop is not None, "start() first"
        fut: asyncio.Future[Message] = self._loop.create_future()
        lock = self._reports_lock

        def delivered(err: KafkaError | None, msg: Message) -> None:
            with lock:
                self._reports.append((partial(_settle_future, fut, msg), err))

        extra: dict[str, Any] = {}
        if partition is not None:
            extra["partition"] = partition
        if headers:
            extra["headers"] = headers
        self._enqueue(topic, value, key, delivered, extra)
        return fut

    def produce_then(
        self, topic: str, value: bytes, key: bytes, then: Callable[[KafkaError | None], None]
    ) -> None:
        """Queue a record; `then(None)` on Kafka's ack, `then(error)` on failure, in the event loop
        and in delivery order. The hot path's form of `produce_nowait`: no future, no loop handle
        per record (a done future schedules each of its callbacks as one)."""
        assert self._producer is not None, "start() first"
        lock = self._reports_lock

        def delivered(err: KafkaError | None, msg: Message) -> None:
            with lock:
                self._reports.append((then, err))

        self._enqueue(topic, value, key, delivered)

    def _enqueue(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
        extra: dict[str, Any] | None = None,
    ) -> None:
        assert self._producer is not None
        while True:
            try:
                if extra:
                    self._producer.produce(
                        topic, value=value, key=key, on_delivery=on_delivery, **extra
                    )
                else:
                    self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:
                # Local queue full: let librdkafka drain a little, then retry (back-pressure).
                self._producer.poll(0.01)
                self._dispatch()

    async def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> Message:
        return await self.produce_nowait(topic, value, key, partition)

    async def flush(self, timeout: float = 30.0) -> int:
        """Wait until every queued record is acked or failed; returns how many are still queued."""
        assert self._producer is not None
        left = await asyncio.to_thread(self._producer.flush, timeout)
        self._dispatch()
        return int(left)

    async def stop(self, timeout: float = 30.0) -> None:
        if self._producer is None:
            return
        await self.flush(timeout)
        self._running = False
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        self._producer = None


def _settle_all(
    reports: list[tuple[Callable[[KafkaError | None], None], KafkaError | None]],
) -> None:
    for then, err in reports:
        then(err)


def _settle_future(fut: asyncio.Future[Message], msg: Message, err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(publish_error(err))
    else:
        fut.set_result(msg)


def publish_error(err: KafkaError) -> PublishError:
    return PublishError(f"{err.name()}: {err.str()}")
