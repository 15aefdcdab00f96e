"""What the console's pages show, computed from the API's data: pure functions, no I/O, so the pages'
logic is unit-tested without a browser, a broker or a database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tapstream.core.records import ProgressSource
from tapstream.site_manager.runner import RECOVERY_KINDS

HOUR_S = 3600.0
REPLICATOR = ProgressSource.REPLICATOR


# --- numbers a person reads -----------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    """`1.2 s`, `4 min 05 s`, `3 h 20 min`; an em dash when unknown."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(int(seconds), 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(int(seconds) // 60, 60)
    return f"{h} h {m:02d} min"


def size(n: int | None) -> str:
    if not n:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop returns


def clock(ts_us: int | float | None) -> str:
    """A timestamp (µs since the epoch) as UTC time of day and date."""
    if not ts_us:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts_us / 1e6))


def ago(ts_us: int | float | None, now_s: float) -> str:
    if not ts_us:
        return "—"
    return f"{duration(max(0.0, now_s - ts_us / 1e6))} ago"


# --- RPO --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rpo:
    """A group's recovery point objective as measured now, against its target."""

    seconds: float | None  # None: no fresh report (nothing replicating, or the reporters are down)
    target_s: float
    as_of_us: int  # when the newest report was made (0: never)

    @property
    def level(self) -> str:
        """`ok`, `over` (red) or `unknown`: the class the pages colour it with."""
        if self.seconds is None:
            return "unknown"
        return "over" if self.seconds > self.target_s else "ok"

    @property
    def text(self) -> str:
        return duration(self.seconds)


def live_rpo(
    reports: list[dict[str, Any]], target_s: float, now_s: float, fresh_s: float = 30.0
) -> Rpo:
    """The group's RPO from the replicator's newest Progress report (the age of the oldest write
    not yet on the recovery cluster), as `tapstream status` shows it. The applying VDSA's own
    `rpo_seconds` is left out: it holds writes back for the journal history, so its figure is that
    delay, not the RPO. A report older than `fresh_s` says nothing about now: unknown, never a
    stale 'ok'."""
    reports = [r for r in reports if r.get("source") == REPLICATOR]
    fresh = [r for r in reports if now_s - r["ts"] / 1e6 <= fresh_s]
    newest = max((int(r["ts"]) for r in reports), default=0)
    if not fresh:
        return Rpo(None, target_s, newest)
    return Rpo(max(float(r["rpo_seconds"]) for r in fresh), target_s, newest)


@dataclass(frozen=True)
class Chart:
    """An inline SVG line chart: polyline points in a `width` x `height` box, and its labels."""

    width: int
    height: int
    points: str  # "x,y x,y ..." ('' when there is nothing to draw)
    target_y: float | None  # the target's horizontal line (None: off the top)
    y_max_s: float
    over: bool  # any sample above the target
    ticks: list[tuple[float, str]]  # x, label (minutes ago)


WINDOWS = {"1h": HOUR_S, "10m": 600.0}  # the group page's choices


def rpo_chart(
    samples: list[tuple[float, float]],
    target_s: float,
    now_s: float,
    window_s: float = HOUR_S,
    width: int = 640,
    height: int = 160,
) -> Chart:
    """The RPO of the last `window_s` seconds: `samples` are (unix seconds, RPO seconds). The y
    axis goes a little above the larger of the worst sample and the target, so both show."""
    start = now_s - window_s
    inside = sorted((t, v) for t, v in samples if start <= t <= now_s)
    y_max = max([target_s * 1.25, *(v * 1.1 for _, v in inside)]) or 1.0

    def x(t: float) -> float:
        return round((t - start) / window_s * width, 1)

    def y(v: float) -> float:
        return round(height - min(v, y_max) / y_max * height, 1)

    points = " ".join(f"{x(t)},{y(v)}" for t, v in inside)
    ticks = [
        (x(now_s - k * window_s / 4), f"-{k * window_s / 240:g} min" if k else "now")
        for k in range(4, -1, -1)
    ]
    return Chart(
        width,
        height,
        points,
        y(target_s) if target_s <= y_max else None,
        y_max,
        any(v > target_s for _, v in inside),
        ticks,
    )


# --- checkpoints --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    id: str
    label: str
    kind: str  # auto, tagged, kept, clean (the analyzer's last clean one)
    x_pct: float  # position on the timeline, 0 (oldest of the window) .. 100 (now)
    when: str


def checkpoint_kind(cp: dict[str, Any], last_clean: str | None) -> str:
    if last_clean and cp["id"] == last_clean:
        return "clean"
    if cp.get("kept"):
        return "kept"
    if cp.get("tag") or cp.get("tags"):
        return "tagged"
    return "auto"


def timeline(
    checkpoints: list[dict[str, Any]],
    now_s: float,
    last_clean: str | None = None,
    window_s: float = HOUR_S,
    limit: int = 200,
) -> list[Mark]:
    """The checkpoints of the last `window_s` as marks on a line, newest last. Automatic ones beyond
    `limit` are dropped first (a checkpoint every few seconds would paint the line solid); tagged,
    kept and the last clean one always show."""
    start = now_s - window_s
    inside = [cp for cp in checkpoints if cp.get("ts") and cp["ts"] / 1e6 >= start]
    marks = [
        Mark(
            cp["id"],
            cp.get("tag") or ", ".join(cp.get("tags") or []) or cp["id"][:8],
            checkpoint_kind(cp, last_clean),
            round(min(100.0, (cp["ts"] / 1e6 - start) / window_s * 100), 2),
            clock(cp["ts"]),
        )
        for cp in inside
    ]
    special = [m for m in marks if m.kind != "auto"]
    auto = [m for m in marks if m.kind == "auto"]
    step = max(1, -(-len(auto) // max(1, limit - len(special))))
    kept = special + auto[::-1][::step][::-1]
    return sorted(kept, key=lambda m: m.x_pct)


def checkpoint_rows(
    checkpoints: list[dict[str, Any]], last_clean: str | None = None, newest: int = 6
) -> list[dict[str, Any]]:
    """The checkpoints the group page lists, newest first: the latest `newest`, and every tagged,
    kept or last clean one however old (those are the ones a person recovers to)."""
    keep = {cp["id"] for cp in checkpoints[-newest:]} if newest else set()
    keep |= {cp["id"] for cp in checkpoints if checkpoint_kind(cp, last_clean) != "auto"}
    return [cp for cp in checkpoints[::-1] if cp["id"] in keep]


def journal_window(checkpoints: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """(oldest restorable, newest) checkpoint time in µs: how far back this group can be recovered.
    A checkpoint without the `restorable` flag (one a site manager recorded) counts as restorable."""
    ok = [cp["ts"] for cp in checkpoints if cp.get("ts") and cp.get("restorable", True)]
    newest = max((cp["ts"] for cp in checkpoints if cp.get("ts")), default=None)
    return (min(ok) if ok else None, newest)


# --- operations --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    kind: str  # the operation (also the API's path segment)
    label: str
    runs_at: str  # the site whose manager runs it
    method: str  # the API's method for it (role check)
    danger: bool = False  # asks for a confirmation naming the checkpoint
    needs_checkpoint: bool = False


def runs_at(kind: str, group: dict[str, Any]) -> str:
    """The site whose manager runs `kind` on `group` (as the runner decides)."""
    base = kind.removesuffix("-stop")
    return str(group["target_site"] if base in RECOVERY_KINDS else group["source_site"])


def actions(group: dict[str, Any]) -> list[Action]:
    """What can be done with the group in its state (the domain decides again when asked)."""
    status = group["status"]
    out: list[Action] = []

    def add(kind: str, label: str, method: str = "POST", **kw: bool) -> None:
        out.append(Action(kind, label, runs_at(kind, group), method, **kw))

    if status in ("protecting", "paused"):
        if group.get("failover_test"):
            add("failover-test-stop", "Stop failover test", "DELETE")
        else:
            add("failover-test", "Start failover test", needs_checkpoint=True)
        add("move", "Move (planned, no data loss)")
        add("failover", "Failover", danger=True, needs_checkpoint=True)
    elif status == "failed_over":
        add("reverse", "Reverse protection")
    elif status == "reverse_protecting":
        add("failback", "Failback")
    return out


def api_route(kind: str) -> tuple[str, str]:
    """The API route (method, path template) an action is: the console asks the same role of it."""
    if kind == "failover-test-stop":
        return "DELETE", "/groups/{name}/failover-test"
    return "POST", f"/groups/{{name}}/{kind}"


CONSEQUENCES = {
    "failover": (
        "The recovery site promotes every volume of the group to the checkpoint shown and serves "
        "it; writes made at the protected site after that checkpoint are not in the result. The "
        "protected site's volumes are no longer replicated: run Reverse protection afterwards, then "
        "Failback to return."
    ),
    "move": (
        "The protected site stops taking writes, a final checkpoint holds every write made so far, "
        "and the recovery site serves the volumes: no data is lost. The VMs must be started at the "
        "recovery site on the exports shown when it ends."
    ),
    "failover-test": (
        "The recovery site serves the checkpoint as writable NBD exports on an overlay; replication "
        "and protection go on, and stopping the test deletes the overlay."
    ),
}


def next_steps(op: dict[str, Any]) -> str:
    """What the operator does after an operation ended: the error's own advice comes first."""
    kind, status = op.get("kind", ""), op.get("status", "")
    if status == "running":
        return "Running: this page follows its steps."
    if status == "failed":
        return (
            f"{op.get('error') or 'The operation failed.'} The group was given back as it was "
            "before; check its services on the Group page, fix what the error names, and start the "
            "operation again."
        )
    if kind == "failover-test" and (op.get("params") or {}).get("action") == "stop":
        return "The test's exports are gone and its overlays deleted; protection continues."
    return {
        "failover-test": "Read or boot the test exports below; stop the test when done.",
        "failover": "Start the VMs on the exports below, then start Reverse protection.",
        "move": "Start the VMs on the exports below, then start Reverse protection.",
        "reverse": "The original site now receives the recovery site's writes: Failback when ready.",
        "failback": "The protected site serves the volumes again and protection runs forward.",
    }.get(kind, "Done.")


def exports_of(result: dict[str, Any]) -> dict[str, str]:
    """The NBD URIs an operation's result names (`export.<volume>`)."""
    return {k.removeprefix("export."): v for k, v in result.items() if k.startswith("export.")}


# --- alerts ------------------------------------------------------------------------------------
def alert_rows(alerts: list[dict[str, Any]], groups: set[str]) -> list[dict[str, Any]]:
    """The alerts of the groups this site knows, newest first, with what a person reads."""
    rows = [
        {
            **a,
            "onset": clock(a.get("onset_ts")),
            "detected": clock(a.get("detected_ts")),
            "share_pct": f"{100 * float(a.get('encrypted_share') or 0):.0f} %",
        }
        for a in alerts
        if a.get("group") in groups
    ]
    return sorted(rows, key=lambda a: a.get("detected_ts") or 0, reverse=True)


def last_clean(alerts: list[dict[str, Any]], group: str) -> str | None:
    """The last clean checkpoint the newest alert of `group` names (None: no alert names one)."""
    for a in sorted(alerts, key=lambda a: a.get("detected_ts") or 0, reverse=True):
        if a.get("group") == group and a.get("last_clean_checkpoint"):
            return str(a["last_clean_checkpoint"])
    return None
