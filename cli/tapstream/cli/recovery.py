"""`tapstream checkpoint create|list|keep|release`, `tapstream restore`, `tapstream status`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tapstream.core.settings import TapstreamSettings, load

checkpoint_app = typer.Typer(
    no_args_is_help=True, help="Crash-consistent checkpoints of a protection group."
)
console = Console()


def _time(us: int | None) -> str:
    return (
        datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if us else "-"
    )


@checkpoint_app.command("create")
def checkpoint_create(
    group: str,
    tag: Annotated[str | None, typer.Option(help="e.g. before-upgrade")] = None,
    site: Annotated[str, typer.Option(help="the site manager to ask")] = "protected",
) -> None:
    """The same as `tapstream group checkpoint`: the site manager agrees a crash-consistent cut
    across every tapper of GROUP and records it in the group's history."""
    from tapstream.cli.groups import checkpoint

    checkpoint(group, tag=tag, site=site, as_json=False)


@checkpoint_app.command("list")
def checkpoint_list(group: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Checkpoints of GROUP known to the recovery site's journal, oldest first."""
    from tapstream.journal.store import JournalStore

    async def fetch() -> list[dict]:
        s = load(TapstreamSettings)
        store = JournalStore(s.recovery_database_url.get_secret_value())
        await store.start()
        try:
            return await store.checkpoints(group)
        finally:
            await store.stop()

    rows = asyncio.run(fetch())
    if as_json:
        print(
            json.dumps(
                [{k: v for k, v in r.items() if k != "cut"} for r in rows], default=str, indent=2
            )
        )
        return
    table = Table(
        "time (UTC)", "tag", "id", "volumes", "kept", "restorable", title=f"checkpoints of {group}"
    )
    for r in rows:
        tags = ", ".join(t for t in [r["tag"], *r["tags"]] if t)
        # Kept but already applied: the keep came too late to hold the replica there.
        kept = ("[yellow]kept[/]" if r["restorable"] else "[red]too late[/]") if r["kept"] else ""
        table.add_row(
            _time(r["ts"]),
            tags,
            r["id"],
            ", ".join(r["volumes"]),
            kept,
            "[green]yes[/]" if r["restorable"] else "[red]no (replica applied past it)[/]",
        )
    console.print(table)


def _resolve(group: str, ref: str) -> str:
    """Checkpoint id of `ref` (id, tag or latest) from the recovery site's journal; an id the journal has
    not indexed yet is taken as given."""
    from tapstream.journal.store import JournalStore

    async def q() -> str | None:
        s = load(TapstreamSettings)
        store = JournalStore(s.recovery_database_url.get_secret_value())
        await store.start()
        try:
            return await store.resolve(group, ref)
        finally:
            await store.stop()

    found = asyncio.run(q())
    if found:
        return found
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        console.print(
            f"[red]no checkpoint {ref!r} in {group}[/]; list them with `tapstream checkpoint list {group}`"
        )
        raise typer.Exit(1) from None


def _send_tag(group: str, checkpoint: str, tag: str | None, keep: bool, reason: str) -> None:
    from tapstream.vdsa.holds import send_tag

    cp = _resolve(group, checkpoint)
    asyncio.run(
        send_tag(load(TapstreamSettings), group, cp, tag, keep, sender="cli", reason=reason)
    )
    what = (
        f"keep {cp}" + (f" tagged {tag}" if tag else "")
        if keep
        else f"release {cp}" + (f" ({tag})" if tag else "")
    )
    console.print(
        f"asked to {what} (CHECKPOINT_TAG on tapstream.control); the journal and the recovery VDSA "
        "follow it through MirrorMaker 2"
    )


@checkpoint_app.command("keep")
def checkpoint_keep(
    group: str,
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint id, tag, or latest.")],
    tag: Annotated[
        str, typer.Option(help="Tag to add (the checkpoint's own tag is never changed).")
    ] = "kept",
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "operator",
) -> None:
    """Tag CHECKPOINT of GROUP and keep it: the recovery VDSA holds the replicas there until released."""
    _send_tag(group, checkpoint, tag, True, reason)


@checkpoint_app.command("release")
def checkpoint_release(
    group: str,
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint id, tag, or latest.")],
    tag: Annotated[
        str | None, typer.Option(help="Release only this tag's keep (default: every tag).")
    ] = None,
) -> None:
    """Stop keeping CHECKPOINT of GROUP (its tags stay): the replicas move on past it."""
    _send_tag(group, checkpoint, tag, False, "released")


def restore(
    group: str,
    volume: str,
    out: Annotated[Path, typer.Option("--out", help="Image file to write (raw).")],
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="Checkpoint id, tag, or latest.")
    ] = "latest",
) -> None:
    """Materialise VOLUME of GROUP at a checkpoint into --out, from the replica plus the journal."""
    from tapstream.journal.restore import RestoreError
    from tapstream.journal.restore import restore as do_restore

    if out.exists():
        raise typer.BadParameter(f"{out} exists; restore never overwrites, choose another --out")
    t0 = time.monotonic()
    with Progress(
        TextColumn("restoring {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"{group}/{volume}", total=None)
        try:
            res = asyncio.run(
                do_restore(
                    load(TapstreamSettings),
                    group,
                    volume,
                    checkpoint,
                    out,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
            )
        except RestoreError as exc:
            console.print(f"[red]restore failed:[/] {exc}")
            raise typer.Exit(1) from None
        except OSError as exc:
            console.print(f"[red]restore failed:[/] {exc} (nothing was left at {out})")
            raise typer.Exit(1) from None
    secs = time.monotonic() - t0
    console.print(
        f"restored {group}/{volume} at checkpoint {res.checkpoint_id}"
        f"{f' ({res.tag})' if res.tag else ''} to {out}: {res.size} bytes, replica seq {res.replica_seq}, "
        f"{res.events_applied}/{res.events_in_window} journal events applied, "
        f"{res.bytes_from_journal} bytes from the journal, {secs:.2f}s; every chunk's CRC-32C verified"
    )


def _latest_progress(
    s: TapstreamSettings, lookback: int = 2000
) -> dict[tuple[str, str, str], dict]:
    """Newest Progress record per (source, group, volume) from the recovery cluster's progress topic."""
    from confluent_kafka import TopicPartition

    from tapstream.core.codec import DecodeError, make_codec
    from tapstream.core.kafka import sync_consumer

    codec = make_codec(s)
    topic = s.topic("progress")
    c = sync_consumer(
        s,
        group_id="tapstream-status",
        bootstrap=s.recovery_bootstrap,
        options={"enable.partition.eof": True},
    )
    latest: dict[tuple[str, str, str], dict] = {}
    try:
        meta = c.list_topics(topic, timeout=5).topics.get(topic)
        if meta is None or meta.error is not None:
            return latest
        pending = 0
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            if high > low:
                c.assign([TopicPartition(topic, p, max(low, high - lookback))])
                pending = 1
                while pending:
                    msg = c.poll(5)
                    if msg is None or ((err := msg.error()) and err.code() == -191):
                        pending = 0
                        continue
                    if msg.error() or msg.value() is None:
                        continue
                    try:
                        _, rec = codec.decode(cast(bytes, msg.value()))
                    except DecodeError:
                        continue
                    latest[(rec["source"], rec["group"], rec["volume"])] = rec
    finally:
        c.close()
    return latest


def _vms(groups: list[str]) -> dict[str, dict[str, Any]]:
    """Each group's VMs per site, as a site manager reports them (both sites' VM logs are mirrored
    to each; the recovery site's first, as it knows its VMs' state now); {} for a group no site
    manager answers for. One client for all: building one per request costs a TLS context each."""
    import httpx

    from tapstream.cli.groups import _settings, client_options

    s = _settings()
    out: dict[str, dict[str, Any]] = {g: {} for g in groups}
    with httpx.Client(**{**client_options(s), "timeout": 5}) as client:
        for site in ("recovery", "protected"):
            for g in [g for g in groups if not out[g]]:
                try:
                    r = client.get(f"{s.url(site)}/groups/{g}/status")
                except httpx.HTTPError:
                    break  # that site manager does not answer: the other one may
                if r.status_code == 200:
                    out[g] = dict(r.json().get("vms") or {})
    return out


def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per group: volumes, last checkpoint, RPO, journal window, applied position (recovery site)."""
    from tapstream.cli import analyze
    from tapstream.journal.store import JournalStore

    async def gather() -> list[dict]:
        s = load(TapstreamSettings)
        progress = await asyncio.to_thread(_latest_progress, s)
        analyzers = await asyncio.to_thread(analyze.analyzers, s)
        store = JournalStore(s.recovery_database_url.get_secret_value())
        await store.start()
        try:
            assert store.pool
            groups = [
                r["group_name"]
                for r in await store.pool.fetch(
                    "select distinct group_name from journal_checkpoints union select distinct group_name from journal_events"
                )
            ]
            out = []
            vms = await asyncio.to_thread(_vms, sorted(groups))
            for g in sorted(groups):
                cps = await store.checkpoints(g)
                stats = await store.stats(g)
                applied = await store.pool.fetch(
                    "select volume, seq from journal_applied where group_name=$1", g
                )
                now = time.time_ns() // 1000
                repl = progress.get(("replicator", g, "*"))
                out.append(
                    {
                        "group": g,
                        "volumes": sorted({v for c in cps for v in c["volumes"]}),
                        "last_checkpoint": {
                            "id": cps[-1]["id"],
                            "tag": cps[-1]["tag"],
                            "time": _time(cps[-1]["ts"]),
                        }
                        if cps
                        else None,
                        "checkpoints": len(cps),
                        "rpo_s": round(repl["rpo_seconds"], 3) if repl else None,
                        "replication_lag_records": repl["lag_records"] if repl else None,
                        "last_checkpoint_age_s": round((now - cps[-1]["ts"]) / 1e6, 1)
                        if cps
                        else None,
                        "journal_events": stats.get("events"),
                        "journal_window": [
                            _time(stats.get("oldest_ts")),
                            _time(stats.get("newest_ts")),
                        ],
                        "applied_seq": {r["volume"]: r["seq"] for r in applied},
                        "halted": {
                            vol: {
                                "reason": rec["halted"],
                                "heal": f"tapstream volume resync {g} {vol}",
                            }
                            for (src, grp, vol), rec in progress.items()
                            if src == "vdsa" and grp == g and rec.get("halted")
                        },
                        "analyzers": {
                            a["analyzer"]: a["lag"] for a in analyzers if a["group"] == g
                        },
                        "vms": vms.get(g, {}),
                    }
                )
            return out
        finally:
            await store.stop()

    groups = asyncio.run(gather())
    if as_json:
        print(json.dumps(groups, indent=2, default=str))
        return
    table = Table(
        "group",
        "volumes",
        "last checkpoint",
        "age s",
        "RPO s",
        "lag",
        "journal events",
        "journal window",
        "applied seq",
        "analyzers (lag)",
        "halted (heal with)",
        "VMs (site: state)",
    )
    for g in groups:
        lc = g["last_checkpoint"]
        table.add_row(
            g["group"],
            ", ".join(g["volumes"]),
            f"{lc['time']} {lc['tag'] or ''}" if lc else "-",
            str(g["last_checkpoint_age_s"]),
            str(g["rpo_s"] if g["rpo_s"] is not None else "-"),
            str(g["replication_lag_records"] if g["replication_lag_records"] is not None else "-"),
            str(g["journal_events"]),
            " .. ".join(g["journal_window"]),
            ", ".join(f"{v}={s}" for v, s in g["applied_seq"].items()) or "-",
            ", ".join(f"{a}={lag}" for a, lag in g["analyzers"].items()) or "-",
            "\n".join(f"[red]{v}: {h['reason']}[/] ({h['heal']})" for v, h in g["halted"].items())
            or "-",
            "\n".join(
                f"{site}: {d} {v.get('live') or v.get('state')}"
                for site, doms in g["vms"].items()
                for d, v in doms.items()
            )
            or "-",
        )
    console.print(table)
