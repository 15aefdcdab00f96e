"""What a workflow step is given: the parts of the site manager it uses, nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tapstream.core.logging import get_logger
from tapstream.site_manager.application import Execute
from tapstream.site_manager.control import Control
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.journal_reader import JournalReader
from tapstream.site_manager.layout import Layout
from tapstream.site_manager.reconciler import Reconciler
from tapstream.site_manager.supervisor import Supervisor
from tapstream.site_manager.vms.driver import NoVms, VmDriver

log = get_logger("tapstream.site_manager.operations")


class Trail:
    """Report an operation's steps on its trail (the Operation aggregate's progress events)."""

    def __init__(self, execute: Execute) -> None:
        self.execute = execute

    async def __call__(
        self, op: str, step: str, done: int = 0, total: int = 0, message: str = ""
    ) -> None:
        log.info("operation step", operation=op, step=step, done=done, total=total, message=message)
        await self.execute("operation", op, c.ReportProgress(step, done, total, message))


@dataclass(frozen=True)
class Context:
    layout: Layout
    execute: Execute
    progress: Trail
    control: Control
    journal: JournalReader
    reconciler: Reconciler
    supervisor: Supervisor
    vms: VmDriver = field(default_factory=NoVms)  # brings the group's VMs up (vms/)

    async def restore_all(
        self, op: str, group: str, cp: str, out_dir: Path | None
    ) -> dict[str, Path]:
        """Every volume of `group` at checkpoint `cp`, restored into `out_dir` (a scratch copy) or,
        without it, onto the promoted volumes: each written aside, then renamed into place."""
        from tapstream.journal.restore import RestoreError, restore

        g = self.layout.group(group)
        out: dict[str, Path] = {}
        vols = sorted(g.volumes().values(), key=lambda v: v.name)
        for i, v in enumerate(vols):
            path = (out_dir / f"{v.name}.img") if out_dir else self.layout.promoted_path(g, v)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".restoring")
            tmp.unlink(missing_ok=True)
            try:
                await restore(self.layout.s, group, v.name, cp, tmp)
            except RestoreError as exc:
                raise OperationFailed(f"restore of {group}/{v.name} at {cp}: {exc}") from None
            tmp.replace(path)
            out[v.name] = path
            await self.progress(op, "restored", i + 1, len(vols), v.name)
        return out
