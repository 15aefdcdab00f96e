"""The write fence of a protection group (DESIGN §6 "Fencing"): what PAUSE/RESUME do, and its file.

A PAUSE with writes=refuse fences the group for its owner (args "owner", an operation id; else the
command's id). A RESUME lifts it only if it names no owner (an operator's explicit command) or one
of the fence's owners; another operation's RESUME is ignored, so an aborting operation cannot
reopen a side that a later one stopped. The state is saved per group with the control-topic offset
it reflects, so a restarted tapper is fenced before it serves and knows where to read on from.
No Kafka and no asyncio here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Fence:
    group: str
    owners: frozenset[str] = frozenset()  # empty: writes allowed
    command: str = ""  # id of the command that set this state
    ts: int = 0  # that command's ts (µs)
    # Next tapstream.control offset to read, per partition: this state holds all before it.
    offsets: dict[int, int] = field(default_factory=dict)

    @property
    def fenced(self) -> bool:
        return bool(self.owners)

    @property
    def reason(self) -> str | None:
        """Why writes are refused (the NBD error message), None if they are allowed."""
        if not self.owners:
            return None
        return (
            f"writes to group {self.group} are stopped by the site manager "
            f"(operation {', '.join(sorted(self.owners))})"
        )


@dataclass(frozen=True)
class Decision:
    fence: Fence
    changed: bool
    warning: str | None = field(default=None)


def decide(fence: Fence, cmd: dict[str, Any]) -> Decision:
    """The fence after `cmd` (any command of any kind; others leave it as it is)."""
    kind, args = cmd.get("kind"), cmd.get("args") or {}
    if cmd.get("group") != fence.group or kind not in ("PAUSE", "RESUME"):
        return Decision(fence, False)
    cid, ts = str(cmd.get("id", "")), int(cmd.get("ts") or 0)
    if kind == "PAUSE":
        if args.get("writes") != "refuse":
            return Decision(fence, False)  # a pause that keeps writes says nothing about the fence
        owner = args.get("owner") or cid
        return Decision(replace(fence, owners=fence.owners | {owner}, command=cid, ts=ts), True)
    if not fence.owners:
        return Decision(fence, False)
    owner = args.get("owner")
    if owner is None:
        return Decision(replace(fence, owners=frozenset(), command=cid, ts=ts), True)
    if owner not in fence.owners:
        return Decision(
            fence,
            False,
            f"RESUME by operation {owner} ignored: the fence belongs to "
            f"{', '.join(sorted(fence.owners))}",
        )
    return Decision(replace(fence, owners=fence.owners - {owner}, command=cid, ts=ts), True)


class FenceFile:
    """`<state dir>/fence.<group>.json`, replaced atomically and durably (a crash keeps old or new)."""

    def __init__(self, state_dir: Path, group: str) -> None:
        self.group = group
        self.path = state_dir / f"fence.{group}.json"

    def read(self) -> Fence:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Fence(self.group)
        except ValueError as exc:
            # Refuse to start rather than guess: a lost fence is a split brain.
            raise ValueError(f"{self.path} is corrupt ({exc}); fix or remove it") from None
        try:
            return Fence(
                self.group,
                frozenset(str(o) for o in raw["owners"]),
                str(raw.get("command", "")),
                int(raw.get("ts", 0)),
                {int(p): int(o) for p, o in raw.get("offsets", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path} is corrupt ({exc!r}); fix or remove it") from None

    def write(self, fence: Fence) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = {
            "group": fence.group,
            "fenced": fence.fenced,
            "owners": sorted(fence.owners),
            "command": fence.command,
            "ts": fence.ts,
            "offsets": {str(p): o for p, o in sorted(fence.offsets.items())},
        }
        with open(tmp, "w") as f:
            f.write(json.dumps(body))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the rename itself must survive a host crash
        finally:
            os.close(fd)
