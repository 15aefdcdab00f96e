"""An analyzer for the registry test: one Alert per volume, on its first write."""

from __future__ import annotations

from typing import ClassVar

from tapstream.analyzer import AlertRequest, Analyzer, Context, Event


class FirstWrite(Analyzer):
    name: ClassVar[str] = "first-write"

    def on_write(self, ev: Event, ctx: Context) -> None:
        if ctx.state.get("alerted"):
            return
        ctx.state["alerted"] = True
        ctx.alert(
            AlertRequest(
                kind="first-write",
                volume=ev.volume,
                message=f"{ev.volume}: first write seen (seq {ev.seq})",
                onset_ts=ev.ts,
                detected_ts=ev.ts,
                severity="INFO",
                details={"seq": str(ev.seq), "offset": str(ev.disk_offset)},
                dedupe_key=f"first-write/{ev.volume}",
            )
        )
