"""`tapstream analyze list|alerts|change-rate|run`: the analyzers on the protected write stream."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from tapstream.core.settings import TapstreamSettings, load

app = typer.Typer(
    no_args_is_help=True, help="Analyzers: encryption alerts, change rate, custom ones."
)
console = Console()


def _time(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}"


def parse_since(text: str, now_s: float | None = None) -> int:
    """'15m', '2h', '1d', '90s' ago, or an ISO time -> microseconds since the epoch."""
    now_s = time.time() if now_s is None else now_s
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return int((now_s - float(text[:-1]) * units[text[-1]]) * 1e6)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"not a duration or time: {text!r} (try 15m, 2h or 2026-01-01T12:00)"
        ) from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1e6)


def analyzers(s: TapstreamSettings, group: str | None = None) -> list[dict[str, Any]]:
    """Analyzer consumer groups (`<prefix>-analyzer.<name>.<group>`) on the protected cluster, with lag."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from tapstream.core.kafka import client_config, sync_consumer

    conf = client_config(s, s.protected_bootstrap)
    prefix = f"{s.topic_prefix}-analyzer."
    admin = AdminClient(conf)  # kept referenced until the result is in (else: _DESTROY)
    listing = admin.list_consumer_groups(request_timeout=10).result()
    out = []
    for g in sorted(listing.valid, key=lambda g: g.group_id):
        if not g.group_id.startswith(prefix):
            continue
        name, _, pg = g.group_id[len(prefix) :].partition(".")
        if not pg or (group and pg != group):
            continue
        topic = s.topic(f"writes.{pg}")
        c = sync_consumer(conf, group_id=g.group_id)
        try:
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
            lag: int | None = None
            if meta is not None and meta.error is None:
                lag = 0
                for tp in c.committed(
                    [TopicPartition(topic, p) for p in meta.partitions], timeout=10
                ):
                    high = c.get_watermark_offsets(tp, timeout=10)[1]
                    lag += high - max(tp.offset, 0)
        finally:
            c.close()
        state = str(getattr(g.state, "name", g.state)).lower()
        out.append(
            {
                "analyzer": name,
                "group": pg,
                "consumer_group": g.group_id,
                "state": state,
                "lag": lag,
            }
        )
    return out


@app.command("list")
def list_(
    group: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Analyzers running (or that ran) on each group's write topic: consumer group, state, lag."""
    rows = analyzers(load(TapstreamSettings), group)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("group", "analyzer", "consumer group", "state", "lag (records)")
    for r in rows:
        table.add_row(r["group"], r["analyzer"], r["consumer_group"], r["state"], str(r["lag"]))
    console.print(table)


@app.command("alerts")
def alerts(
    group: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alerts on tapstream.alerts, oldest first, with the restore command for the last clean checkpoint."""
    from tapstream.analyzer.next_steps import next_steps
    from tapstream.analyzer.published import read_topic

    s = load(TapstreamSettings)
    rows = read_topic(s, s.topic("alerts"), "Alert", lambda r: group is None or r["group"] == group)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(
        "detected (UTC)",
        "onset (UTC)",
        "group/volume",
        "kind",
        "share",
        "last clean checkpoint",
        "message",
    )
    for r in rows:
        table.add_row(
            _time(r["detected_ts"]),
            _time(r["onset_ts"]),
            f"{r['group']}/{r['volume']}",
            r["kind"],
            f"{r['encrypted_share']:.0%}",
            r["last_clean_checkpoint"] or "-",
            r["message"],
        )
    console.print(table)
    for r in rows:
        if r["last_clean_checkpoint"]:
            # The alert's own details name them (older alerts: built here the same way).
            steps = {**next_steps(r["group"], r["volume"], r["last_clean_checkpoint"]),
                     **(r.get("details") or {})}  # fmt: skip
            console.print(f"restore: {steps['restore_command']}")
            console.print(f"files changed since: {steps['changed_files_command']}")


def change_rate_rows(s: TapstreamSettings, group: str, since_us: int, window_s: float) -> list[Any]:
    """Read the group's write topic from `since_us` on and account it (change_rate.ChangeRate)."""
    from confluent_kafka import TopicPartition

    from tapstream.analyzer.change_rate import ChangeRate
    from tapstream.core.codec import DecodeError, make_codec
    from tapstream.core.kafka import sync_consumer

    codec = make_codec(s)
    rate = ChangeRate(window_s)
    topic = s.topic(f"writes.{group}")
    c = sync_consumer(
        s,
        group_id="tapstream-change-rate-cli",
        bootstrap=s.protected_bootstrap,
        options={"enable.partition.eof": True, "fetch.message.max.bytes": 16 << 20},
    )
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise typer.BadParameter(f"no topic {topic}: is {group!r} protected?")
        starts = c.offsets_for_times(
            [TopicPartition(topic, p, since_us // 1000) for p in meta.partitions], timeout=10
        )
        for tp in starts:
            high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
            if tp.offset < 0 or tp.offset >= high:
                continue
            c.assign([tp])
            while True:
                msg = c.poll(10)
                if msg is None or ((err := msg.error()) and err.code() == -191):
                    break
                if msg.error():
                    continue
                try:
                    _, rec = codec.decode(cast(bytes, msg.value()))  # no tombstones in our topics
                except DecodeError:
                    continue
                kind, body = rec["body"]
                if kind in ("Write", "SyncBlock"):
                    rate.add_write(rec["volume"], rec["ts"], body["offset"], body["length"])
                elif kind == "Zero":
                    rate.add_zero(rec["volume"], rec["ts"], body["offset"], body["length"])
    finally:
        c.close()
    return rate.rows()


@app.command("change-rate")
def change_rate(
    group: str,
    since: Annotated[str, typer.Option(help="How far back: 15m, 2h, 1d, or an ISO time.")] = "1h",
    window: Annotated[float, typer.Option(help="Window in seconds.")] = 10.0,
    rpo: Annotated[
        list[float], typer.Option(help="RPO(s) in seconds to size the WAN link for.")
    ] = [5.0, 30.0, 300.0],  # noqa: B006
    plot: Annotated[
        Path | None, typer.Option(help="Draw bytes written per window and the links to this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Bytes and blocks changed per volume per window, unique vs rewritten, and the WAN bandwidth
    GROUP needs to keep each RPO (MirrorMaker 2 ships every write, rewrites included)."""
    from tapstream.analyzer.change_rate import group_series, wan_bandwidth

    s = load(TapstreamSettings)
    rows = change_rate_rows(s, group, parse_since(since), window)
    width_us = int(window * 1e6)
    series = group_series(rows, width_us)
    needs = {r: wan_bandwidth(series, window, r) for r in rpo}
    total = sum(r.bytes_written for r in rows)
    span = len(series) * window
    if as_json:
        print(
            json.dumps(
                {
                    "group": group,
                    "window_s": window,
                    "rows": [r.__dict__ for r in rows],
                    "bytes_written": total,
                    "average_bytes_per_s": total / span if span else 0,
                    "wan_bytes_per_s": {str(k): v for k, v in needs.items()},
                },
                indent=2,
            )
        )
    else:
        table = Table(
            "window (UTC)",
            "volume",
            "MB written",
            "MB/s",
            "unique blocks",
            "rewritten blocks",
            "MB zeroed",
            title=f"change rate of {group} ({window:g} s windows)",
        )
        for r in rows:
            table.add_row(
                _time(r.start),
                r.volume,
                _mb(r.bytes_written),
                _mb(r.bytes_written / window),
                f"{r.unique_blocks:,}",
                f"{r.rewritten_blocks:,}",
                _mb(r.zeroed_bytes),
            )
        console.print(table)
        peak = max((b for _, b in series), default=0) / window
        console.print(
            f"{_mb(total)} MB written in {span:g} s: average {_mb(total / span if span else 0)} MB/s, "
            f"peak window {_mb(peak)} MB/s"
        )
        for r, b in needs.items():
            console.print(
                f"RPO {r:g} s needs a WAN link of at least {_mb(b)} MB/s ({b * 8 / 1e6:,.1f} Mbit/s) "
                "before compression and Kafka framing"
            )
    if plot is not None and series:
        _plot(series, window, needs, plot, group)
        if not as_json:
            console.print(f"chart: {plot}")


def _plot(
    series: list[tuple[int, int]], window: float, needs: dict[float, float], out: Path, group: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = series[0][0]
    xs = [(t - t0) / 1e6 for t, _ in series]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.step(
        xs, [b / window / 1e6 for _, b in series], where="post", label="written (MB/s per window)"
    )
    for r, b in needs.items():
        ax.axhline(
            b / 1e6, linestyle="--", linewidth=1, label=f"WAN for RPO {r:g} s: {b / 1e6:.2f} MB/s"
        )
    ax.set_xlabel(f"seconds since {_time(t0)} UTC")
    ax.set_ylabel("MB/s")
    ax.set_title(f"change rate of {group}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


@app.command("run")
def run(
    analyzer: Annotated[
        str, typer.Argument(help="encryption, change-rate, or module:Class of your own")
    ],
    group: Annotated[str, typer.Option(help="Protection group to analyse.")],
) -> None:
    """Run an analyzer as its own consumer group on GROUP's write stream (until Ctrl-C / SIGTERM)."""
    args = [sys.executable, "-m", "tapstream.analyzer"]
    args += ([analyzer] if ":" not in analyzer else ["run", analyzer]) + ["--group", group]
    os.execv(sys.executable, args)
