"""One small runner for every service: configure logs and metrics, start, wait for SIGTERM, stop.

A service is any object with `async start()` and `async stop()` and, optionally, `async wait()` that
returns when the service ends on its own (a fatal error). No work happens in constructors.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from tapstream.core import logging as tlog
from tapstream.core import metrics
from tapstream.core.settings import SettingsError, TapstreamSettings


class Service(Protocol):
    """What the runner drives."""

    async def start(self) -> None:
        """Acquire resources and begin work; return once the service is ready."""

    async def stop(self) -> None:
        """Drain in-flight work, flush, release resources. Called once."""


async def _run(service: Service, name: str) -> int:
    log = tlog.get_logger(name)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await service.start()
    log.info("started")
    waiters = [asyncio.ensure_future(stopping.wait())]
    own_end = getattr(service, "wait", None)
    if own_end is not None:
        waiters.append(asyncio.ensure_future(own_end()))
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    code = 0
    for task in done:
        if task is not waiters[0] and task.exception() is not None:
            log.error("service failed", error=repr(task.exception()))
            code = 1
    log.info("stopping", reason="signal" if stopping.is_set() else "service ended")
    await service.stop()
    log.info("stopped")
    return code


def run(service_factory: type | object, settings_cls: type[TapstreamSettings], name: str) -> None:
    """Entry point body of `python -m tapstream.<service>`: load settings, then run until SIGTERM."""
    from tapstream.core.settings import load

    try:
        settings = load(settings_cls)
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    tlog.configure(settings.log_level, settings.log_format, service=name)
    metrics.serve(settings.metrics_port, settings.metrics_host)
    service = service_factory(settings)  # type: ignore[operator]
    runner: Callable[[Coroutine[Any, Any, int]], int]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable without it
        runner = asyncio.run
    raise SystemExit(runner(_run(service, name)))
