"""`tapstream volume resync`: heal a halted replica by asking its tapper for the whole volume."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from tapstream.core.settings import TapstreamSettings, load

app = typer.Typer(no_args_is_help=True, help="Protected volumes and their replicas.")
console = Console()


@app.command("resync")
def resync(
    group: str,
    volume: str,
    reason: str = typer.Option("operator", help="Logged by the tapper."),
) -> None:
    """Ask the protected site's tappers of GROUP to send all of VOLUME again (a DELTA sync of every
    region). A replica halted on a gap, a bad checksum or an undecodable record heals from it."""
    from tapstream.core.codec import make_codec
    from tapstream.core.control_auth import Keyring, sign
    from tapstream.core.kafka import AsyncProducer, PublishError, producer_config
    from tapstream.core.names import valid_name
    from tapstream.vdsa.halts import resync_command

    if not (valid_name(group) and valid_name(volume)):
        console.print(f"[red]not a group or volume name:[/] {group!r} {volume!r}")
        raise typer.Exit(2)
    s = load(TapstreamSettings)

    async def send() -> None:
        p = AsyncProducer(producer_config(s, s.protected_bootstrap, linger_ms=0))
        await p.start()
        try:
            command = resync_command(group, volume, "tapstream-cli", reason)
            value = make_codec(s).encode("Command", sign(command, Keyring.from_settings(s)))
            await asyncio.wait_for(p.produce(s.topic("control"), value, key=group.encode()), 30)
        finally:
            await p.stop(timeout=5)

    try:
        asyncio.run(send())
    except (PublishError, TimeoutError) as exc:
        console.print(
            f"[red]the protected site's Kafka ({s.protected_bootstrap}) did not take the request:[/] "
            f"{exc!r}. Check it is up (`make status`) and try again."
        )
        raise typer.Exit(1) from None
    console.print(
        f"resync of {group}/{volume} requested; the replica heals once the sync has crossed "
        "(`tapstream status` shows it)"
    )
