"""What a site manager does at its site: keep the right services running for each group (the
reconciler), take checkpoints, and run the long-running recovery operations.

Which site runs what: failover test, failover and move run at the group's recovery site (it holds
the journal and the replicas, and serves the result); reverse and failback run at the original site
(it receives the recovery site's writes and serves the volumes again). Each operation is an
`Operation` aggregate whose progress events are its trail.

Failover test: each volume is materialised at the checkpoint by the journal's restore (replica copy
plus the journal's events up to the checkpoint) into a scratch image, then served by `qemu-nbd` over
a qcow2 overlay backed by it. Reads see the checkpoint, writes land in the overlay, and stopping the
test deletes both. Chosen over our tapper in a non-publishing mode because qemu-nbd is the reference
NBD server every client is tested against, and over a live journal-over-replica view because the
replica keeps changing while replication continues (the copy is taken under the replica's lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapstream.core.codec import make_codec
from tapstream.core.control_auth import Keyring, sign
from tapstream.core.kafka import (
    AsyncProducer,
    TopicSpec,
    client_config,
    ensure_topics,
    producer_config,
)
from tapstream.core.logging import get_logger
from tapstream.core.ports import free_port
from tapstream.core.replica import Replica
from tapstream.core.settings import TapstreamSettings
from tapstream.site_manager import delta, metrics, paths
from tapstream.site_manager.domain import DomainError, Invalid, ProtectionGroup
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain.services import (
    APPLY,
    CHECKPOINTS,
    JOURNAL,
    REVERSE,
    TAPPER,
    desired_roles,
)
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.journal_reader import JournalReader
from tapstream.site_manager.reverse import ReverseApplier
from tapstream.site_manager.supervisor import Supervisor

if TYPE_CHECKING:
    from tapstream.site_manager.service import SiteManager

log = get_logger("tapstream.site_manager.operations")
RECOVERY_KINDS = ("failover-test", "failover", "move")


class Operations:
    def __init__(self, sm: SiteManager) -> None:
        self.sm = sm
        self.s = sm.s
        self.site = sm.site
        self.dir = self.s.site_manager_state_dir.resolve()
        self.supervisor = Supervisor(self.dir / "services", self.s.site_manager_stop_timeout_s)
        self.reverse: dict[str, ReverseApplier] = {}
        self._ports_file = self.dir / "ports.json"
        self._ports: dict[str, int] = (
            json.loads(self._ports_file.read_text()) if self._ports_file.exists() else {}
        )
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._busy: set[str] = set()  # groups whose services an operation of ours is changing
        self._pending: set[str] = set()  # being reconciled now
        self._producers: dict[str, AsyncProducer] = {}
        self.journal = JournalReader(self.s.database_url)

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.supervisor.adopt()
        await self._fail_interrupted()
        self._dirty = {g.id for g in self.sm.ledger.all("group")}
        self._task = asyncio.create_task(self._reconcile_loop())
        self._wake.set()

    async def stop(self) -> None:
        for t in [*self._running.values(), *([self._task] if self._task else [])]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for applier in self.reverse.values():
            await applier.stop()
        if self.s.site_manager_stop_services:
            await self.supervisor.stop_all()
        else:
            log.info(
                "leaving this site's services running for the next site manager",
                children=sorted(self.supervisor.children),
            )
        for p in self._producers.values():
            await p.stop()
        with contextlib.suppress(Exception):
            await self.journal.stop()

    async def _fail_interrupted(self) -> None:
        """Operations this site was running when its manager stopped: fail them, release the group."""
        for agg in self.sm.ledger.all("operation"):
            op = agg.state()
            if op["status"] != a.RUNNING or op["id"] in self._running:
                continue
            if not self.acts_for(op["group"]):
                continue  # another site manager's group (it fails its own)
            g = self.group(op["group"])
            runs_at = g.target_site if op["kind"] in RECOVERY_KINDS else g.source_site
            if runs_at != self.site:
                continue
            error = (
                "the site manager stopped while this operation ran; check the group and retry it"
            )
            log.warning(
                "failing an interrupted operation", operation=op["id"], kind=op["kind"], group=g.id
            )
            await self._abort(op["id"], op["kind"], g, error)
            await self.sm.execute("operation", op["id"], c.FailOperation(error))

    async def _abort(self, op: str, kind: str, g: ProtectionGroup, error: str) -> None:
        """Give the group back: end its failover state, let the side whose writes we stopped write again."""
        if g.operation != op:
            return
        with contextlib.suppress(Exception):
            await self.sm.execute("group", g.id, c.AbortFailover(op, error))
        if kind in ("move", "failback"):
            fenced = g.source_site if kind == "move" else g.target_site
            with contextlib.suppress(Exception):
                await self.control(g.id, "RESUME", {"writes": "allow", "owner": op}, site=fenced)

    def changed(self, aggregate_type: str, aggregate_id: str) -> None:
        if aggregate_type == "group":
            self._dirty.add(aggregate_id)
            self._wake.set()

    # --- helpers ---------------------------------------------------------------------------------
    def acts_for(self, group: str) -> bool:
        """Whether this site manager runs services and recovers operations of `group`."""
        only = self.s.site_manager_only_groups
        return not only or group in only

    def settings_for(self, site: str) -> TapstreamSettings:
        return self.s.model_copy(update={"site": site})

    def group(self, name: str) -> ProtectionGroup:
        g = self.sm.ledger.get("group", name)
        assert isinstance(g, ProtectionGroup)
        return g

    def port(self, key: str) -> int:
        if key not in self._ports:
            self._ports[key] = free_port()
            self._ports_file.parent.mkdir(parents=True, exist_ok=True)
            self._ports_file.write_text(json.dumps(self._ports))
        return self._ports[key]

    # Both sites see every group event (mirrored), and the other site may have other roots or be
    # compromised: a path is checked against this site's roots right before this site acts on it.
    def volume_path(self, vol: a.Volume) -> Path:
        """The original volume at this site (served, copied, written back): under its roots."""
        try:
            return paths.volume_path(vol.path, self.s.volume_roots)
        except Invalid as exc:
            raise OperationFailed(str(exc)) from None

    def promoted_path(self, g: ProtectionGroup, vol: a.Volume) -> Path:
        if not vol.target_path:
            return self.dir / "volumes" / g.id / f"{vol.name}.img"
        try:
            return paths.target_path(vol.target_path, self.s.target_roots)
        except Invalid as exc:
            raise OperationFailed(str(exc)) from None

    def serving_paths(self, g: ProtectionGroup) -> dict[str, Path]:
        """The volumes this site serves for `g` when it is the active site."""
        if self.site == g.source_site:
            return {v.name: self.volume_path(v) for v in g.volumes().values()}
        return {v.name: self.promoted_path(g, v) for v in g.volumes().values()}

    def serving_roots(self, g: ProtectionGroup) -> list[Path]:
        """Where the volumes this site serves for `g` may live (the roots serving_paths checked)."""
        if self.site == g.source_site:
            return list(self.s.volume_roots)
        return [*self.s.target_roots, self.dir / "volumes"]

    def exports(self, g: ProtectionGroup) -> dict[str, str]:
        port = self.port(f"tapper-{g.id}")
        return {v: f"nbd://{self.s.site_manager_nbd_host}:{port}/{v}" for v in g.volumes()}

    def tapper_state(self, g: ProtectionGroup) -> Path:
        return self.dir / "tapper" / g.id

    async def control(
        self, group: str, kind: str, args: dict[str, str] | None = None, site: str | None = None
    ) -> None:
        """One Command to the tappers and VDSAs of `group` on tapstream.control of `site`."""
        g = self.group(group)
        site = site or g.active_site
        settings = self.settings_for(site)
        p = self._producers.get(site)
        if p is None:
            await ensure_topics(
                client_config(settings), [TopicSpec(settings.topic("control"), partitions=1)]
            )
            p = self._producers[site] = AsyncProducer(producer_config(settings, linger_ms=0))
            await p.start()
        command = {
            "id": str(uuid.uuid4()),
            "group": group,
            "kind": kind,
            "sender": f"site-manager@{self.site}",
            "ts": time.time_ns() // 1000,
            "checkpoint_id": None,
            "tag": None,
            "volumes": [],
            "args": args or {},
        }
        value = make_codec(settings).encode(
            "Command", sign(command, Keyring.from_settings(settings))
        )
        await p.produce(settings.topic("control"), value, key=group.encode())
        opts = args or {}
        if (kind == "PAUSE" and opts.get("writes") == "refuse") or kind == "RESUME":
            # The fence lives in the tappers; the group's trail says who set or lifted it, and when.
            try:
                await self.sm.execute(
                    "group", group, c.RecordFence(site, opts.get("owner", ""), kind == "PAUSE")
                )
            except DomainError as exc:
                log.warning("fence not recorded in the group", group=group, error=str(exc))

    async def checkpoint(self, group: str, tag: str | None, site: str | None = None) -> str:
        from tapstream.vdsa.coordinator import CheckpointFailed, create_checkpoint

        g = self.group(group)
        site = site or g.active_site
        try:
            cp = await create_checkpoint(self.settings_for(site), group, tag)
        except CheckpointFailed as exc:
            raise DomainError(f"checkpoint of {group!r} failed: {exc}") from None
        await self.record_checkpoint(group, cp, tag or "", site)
        return cp

    async def record_checkpoint(self, group: str, cp: str, tag: str, site: str) -> None:
        """In this site manager's own checkpoint log of the group: one writer, never a conflict."""
        log_id = a.CheckpointLog.id_of(group, self.site)
        await self.sm.execute("checkpoints", log_id, c.RecordCheckpoint(cp, tag, site))

    def recorded_checkpoints(self, group: str) -> list[dict[str, Any]]:
        """The checkpoints both site managers took of `group` through their APIs and operations."""
        logs = [self.sm.ledger.get("checkpoints", i) for i in a.CheckpointLog.ids_of(group)]
        return [cp for log in logs for cp in log.state()["checkpoints"]]

    async def checkpoints(self, group: str) -> list[dict[str, Any]]:
        """The journal's checkpoints (recovery site); elsewhere the ones taken through a site manager."""
        if self.site != self.group(group).target_site:
            return self.recorded_checkpoints(group)
        return await self.journal.checkpoints(group)

    async def status(self, state: dict[str, Any]) -> dict[str, Any]:
        name = state["name"]
        g = self.group(name)
        converged = name not in self._dirty and name not in self._busy and name not in self._pending
        out: dict[str, Any] = {
            "group": state,
            "site": self.site,
            "converged": converged,
            "services": {
                n: self.supervisor.running(n)
                for n in self.supervisor.children
                if n.endswith(f"-{name}") or f"-{name}-" in n
            },
            "pids": {
                n: self.supervisor.pid(n)
                for n in self.supervisor.children
                if n.endswith(f"-{name}") or f"-{name}-" in n
            },
        }
        if name in self.reverse:
            out["reverse"] = self.reverse[name].status()
        if self.site == g.target_site:
            out["replicas"] = {
                v: Replica(self.s.replica_dir, name, v).position().seq for v in g.volumes()
            }
        if self.site == g.active_site and g.status in (
            a.PROTECTING,
            a.PAUSED,
            a.FAILED_OVER,
            a.REVERSE_PROTECTING,
        ):
            out["exports"] = self.exports(g)
        return out

    # --- reconciler ------------------------------------------------------------------------------
    async def _reconcile_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            self._pending = set(dirty)
            for name in sorted(dirty):
                if name in self._busy:
                    self._dirty.add(name)
                    continue
                try:
                    await self.reconcile(self.group(name))
                except OperationFailed as exc:
                    # Needs the operator (a missing volume): retried at the group's next change.
                    log.error("group's services not started", group=name, error=str(exc))
                except Exception as exc:
                    log.error(
                        "could not bring the group's services to its state; retrying",
                        group=name,
                        error=repr(exc),
                    )
                    self._dirty.add(name)
                finally:
                    self._pending.discard(name)
            if self._dirty:
                await asyncio.sleep(1)
                self._wake.set()

    async def reconcile(self, g: ProtectionGroup) -> None:
        """Run exactly the services this site owes `g` in its current state."""
        if not self.s.site_manager_run_services or g.version == 0:
            return
        if not self.acts_for(g.id):
            return
        roles = desired_roles(g, self.site)
        if roles is None:
            return  # the operation's site changes the services step by step
        wanted: set[str] = set()
        if TAPPER in roles:
            wanted.add(f"tapper-{g.id}")
            await self.ensure_tapper(g)
        if CHECKPOINTS in roles:
            wanted.add(f"vdsa-protected-{g.id}")
            # The VDSA's checkpoint role is called "protected"; after a failover it runs at the
            # recovery site, so that role is pointed at this site's cluster.
            await self.supervisor.python(
                f"vdsa-protected-{g.id}",
                "tapstream.vdsa",
                {
                    "TAPSTREAM_SITE": "protected",
                    "TAPSTREAM_PROTECTED_BOOTSTRAP": self.s.bootstrap,
                    "TAPSTREAM_VDSA_GROUPS": json.dumps([g.id]),
                    "TAPSTREAM_VDSA_CHECKPOINT_INTERVAL_S": str(g.checkpoint_interval_s),
                },
            )
        if JOURNAL in roles or APPLY in roles:
            wanted |= {f"journal-{g.id}", f"vdsa-recovery-{g.id}"}
            await self.ensure_recovery_services(g)
        if REVERSE in roles and g.id not in self.reverse:
            await self.start_reverse(g)
        if REVERSE not in roles and g.id in self.reverse:
            await self.reverse.pop(g.id).stop()
        for name in list(self.supervisor.children):
            role_group = (
                name.split("-", 1)[1]
                if name.startswith(("tapper-", "journal-"))
                else name.removeprefix("vdsa-protected-").removeprefix("vdsa-recovery-")
            )
            if role_group == g.id and name not in wanted and not name.startswith("test-"):
                await self.supervisor.stop(name)

    async def ensure_tapper(self, g: ProtectionGroup) -> None:
        port = self.port(f"tapper-{g.id}")
        paths = self.serving_paths(g)
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise OperationFailed(f"volumes of {g.id} not found at this site: {', '.join(missing)}")
        # At the original site a fresh stream sends the volume (INITIAL sync); the promoted and the
        # failed-back volumes are already at the other site: only marked regions and new writes go.
        initial = self.site == g.source_site and g.status in (a.PROTECTING, a.PAUSED)
        await self.supervisor.python(
            f"tapper-{g.id}",
            "tapstream.tapper",
            {
                "TAPSTREAM_SITE": self.site,
                "TAPSTREAM_TAPPER_VOLUMES": json.dumps(
                    [
                        {
                            "name": n,
                            "path": str(p),
                            "group": g.id,
                            "mode": g.mode,
                            "initial_sync": initial,
                        }
                        for n, p in sorted(paths.items())
                    ]
                ),
                "TAPSTREAM_TAPPER_LISTEN_HOST": self.s.site_manager_nbd_host,
                "TAPSTREAM_TAPPER_LISTEN_PORT": str(port),
                "TAPSTREAM_TAPPER_STATE_DIR": str(self.tapper_state(g)),
                # The tapper checks the paths again: it serves nothing outside this site's roots.
                "TAPSTREAM_TAPPER_VOLUME_ROOTS": json.dumps(
                    [str(r) for r in self.serving_roots(g)]
                ),
                "TAPSTREAM_TAPPER_HOST_ID": f"{self.site}-tapper",
            },
            ready_port=port,
        )

    async def ensure_recovery_services(self, g: ProtectionGroup) -> None:
        groups = json.dumps([g.id])
        history = self.s.site_manager_apply_delay_s or g.journal_history_s
        replica_dir = str(self.s.replica_dir.resolve())
        await self.supervisor.python(
            f"journal-{g.id}",
            "tapstream.journal",
            {
                "TAPSTREAM_SITE": self.site,
                "TAPSTREAM_JOURNAL_GROUPS": groups,
                "TAPSTREAM_REPLICA_DIR": replica_dir,
            },
        )
        await self.supervisor.python(
            f"vdsa-recovery-{g.id}",
            "tapstream.vdsa",
            {
                "TAPSTREAM_SITE": "recovery",
                "TAPSTREAM_VDSA_GROUPS": groups,
                "TAPSTREAM_REPLICA_DIR": replica_dir,
                "TAPSTREAM_VDSA_JOURNAL_HISTORY_S": str(history),
                "TAPSTREAM_VDSA_PROGRESS_INTERVAL_S": "0.5",
            },
        )

    async def start_reverse(self, g: ProtectionGroup) -> ReverseApplier:
        applier = ReverseApplier(
            self.s,
            g.id,
            {v.name: self.volume_path(v) for v in g.volumes().values()},
            self.dir / "reverse" / f"{g.id}.json",
            self.tapper_state(g),
            delta.GRANULE,
        )
        await applier.start()
        self.reverse[g.id] = applier
        return applier

    # --- operations ------------------------------------------------------------------------------
    async def begin(self, kind: str, state: dict[str, Any], checkpoint: str) -> dict[str, Any]:
        g = self.group(state["name"])
        runs_at = g.target_site if kind in RECOVERY_KINDS else g.source_site
        if self.site != runs_at:
            raise DomainError(
                f"{kind} of {g.id!r} runs at the {runs_at} site; ask its site manager "
                f"(`tapstream --site {runs_at} ...`)"
            )
        op = str(uuid.uuid4())
        # The group's rules first: a refused operation leaves no trace.
        if kind == "failover-test":
            g.decide(c.StartFailoverTest(op, checkpoint))
        elif kind == "reverse":
            g.decide(c.StartReverse(op))
        else:
            g.decide(c.BeginFailover(op, "failback" if kind == "failback" else kind))
        await self.sm.execute(
            "operation", op, c.StartOperation(kind, g.id, {"checkpoint": checkpoint})
        )
        self._running[op] = asyncio.create_task(self._run(op, kind, g.id, checkpoint))
        return self.sm.ledger.get("operation", op).state()

    async def stop_test(self, state: dict[str, Any]) -> dict[str, Any]:
        g = self.group(state["name"])
        if self.site != g.target_site:
            raise DomainError(
                f"the failover test of {g.id!r} runs at the {g.target_site} site; ask its site manager"
            )
        g.decide(c.StopFailoverTest())
        op = str(uuid.uuid4())
        await self.sm.execute(
            "operation", op, c.StartOperation("failover-test", g.id, {"action": "stop"})
        )
        self._running[op] = asyncio.create_task(self._run(op, "failover-test-stop", g.id, ""))
        return self.sm.ledger.get("operation", op).state()

    async def progress(
        self, op: str, step: str, done: int = 0, total: int = 0, message: str = ""
    ) -> None:
        log.info("operation step", operation=op, step=step, done=done, total=total, message=message)
        await self.sm.execute("operation", op, c.ReportProgress(step, done, total, message))

    async def _run(self, op: str, kind: str, group: str, checkpoint: str) -> None:
        self._busy.add(group)
        try:
            result = await getattr(self, "_" + kind.replace("-", "_"))(op, group, checkpoint)
            await self.sm.execute("operation", op, c.SucceedOperation(result))
            metrics.OPERATIONS.labels(kind, "succeeded").inc()
        except Exception as exc:
            log.error("operation failed", operation=op, kind=kind, group=group, error=repr(exc))
            metrics.OPERATIONS.labels(kind, "failed").inc()
            await self._abort(op, kind, self.group(group), str(exc))
            with contextlib.suppress(Exception):
                await self.sm.execute("operation", op, c.FailOperation(str(exc) or repr(exc)))
        finally:
            self._busy.discard(group)
            self._running.pop(op, None)
            self.changed("group", group)

    async def _resolve(self, group: str, ref: str) -> str:
        return await self.journal.resolve(group, list(self.group(group).volumes()), ref)

    async def _wait_indexed(self, op: str, group: str, cp: str, within_s: float = 120) -> None:
        """Until the journal holds checkpoint `cp` of every volume and every event before it (what a
        restore at `cp` needs)."""
        vols = sorted(self.group(group).volumes())
        deadline = time.monotonic() + within_s
        while True:
            have, complete = await self.journal.indexed(
                group, vols, cp, lambda v: Replica(self.s.replica_dir, group, v).position().seq
            )
            if complete:
                return
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"checkpoint {cp} reached the journal for {have} of {vols} within "
                    f"{within_s:.0f}s: is MirrorMaker 2 running (`make status`)?"
                )
            await self.progress(op, "waiting for the journal", len(have), len(vols), cp)
            await asyncio.sleep(0.5)

    async def _restore_all(
        self, op: str, group: str, cp: str, out_dir: Path | None
    ) -> dict[str, Path]:
        from tapstream.journal.restore import RestoreError, restore

        g = self.group(group)
        out: dict[str, Path] = {}
        vols = sorted(g.volumes().values(), key=lambda v: v.name)
        for i, v in enumerate(vols):
            path = (out_dir / f"{v.name}.img") if out_dir else self.promoted_path(g, v)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".restoring")
            tmp.unlink(missing_ok=True)
            try:
                await restore(self.s, group, v.name, cp, tmp)
            except RestoreError as exc:
                raise OperationFailed(f"restore of {group}/{v.name} at {cp}: {exc}") from None
            tmp.replace(path)
            out[v.name] = path
            await self.progress(op, "restored", i + 1, len(vols), v.name)
        return out

    # failover test -------------------------------------------------------------------------------
    async def _failover_test(self, op: str, group: str, ref: str) -> dict[str, str]:
        cp = await self._resolve(group, ref)
        await self.progress(op, "checkpoint chosen", message=cp)
        work = self.dir / "failover-test" / group
        shutil.rmtree(work, ignore_errors=True)
        images = await self._restore_all(op, group, cp, work)
        exports: dict[str, str] = {}
        for vol, image in images.items():
            overlay = image.with_suffix(".overlay.qcow2")
            proc = await asyncio.create_subprocess_exec(
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(image),
                "-F",
                "raw",
                str(overlay),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise OperationFailed(
                    f"qemu-img create overlay failed: {out.decode(errors='replace')}"
                )
            port = self.port(f"test-{group}-{vol}")
            name = f"test-{group}-{vol}"
            await self.supervisor.ensure(
                name,
                [
                    "qemu-nbd",
                    "-f",
                    "qcow2",
                    "-x",
                    vol,
                    "-b",
                    self.s.site_manager_nbd_host,
                    "-p",
                    str(port),
                    "-t",
                    "--shared=8",
                    "--cache=writeback",
                    str(overlay),
                ],
                {},
                ready_port=port,
            )
            exports[vol] = f"nbd://{self.s.site_manager_nbd_host}:{port}/{vol}"
        await self.sm.execute("group", group, c.StartFailoverTest(op, cp, exports))
        return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}}

    async def _failover_test_stop(self, op: str, group: str, _: str) -> dict[str, str]:
        await self.supervisor.stop_all(f"test-{group}-")
        shutil.rmtree(self.dir / "failover-test" / group, ignore_errors=True)
        await self.progress(op, "exports stopped, overlays and scratch images deleted")
        await self.sm.execute("group", group, c.StopFailoverTest())
        return {}

    # failover / move -----------------------------------------------------------------------------
    async def _fence_source(self, op: str, group: str) -> None:
        """Unplanned failover: fence the protected site's tappers (persisted there, so a tapper that
        comes back later still refuses writes: no split brain) if its Kafka answers now."""
        g = self.group(group)
        try:
            await asyncio.wait_for(
                self.control(group, "PAUSE", {"writes": "refuse", "owner": op}, site=g.source_site),
                15,
            )
            await self.progress(op, "writes fenced at the protected site")
        except Exception as exc:
            log.warning(
                "could not fence the protected site: its tappers may take writes when they come "
                "back; stop them before they do",
                group=group,
                error=repr(exc),
            )
            await self.progress(op, "protected site unreachable: not fenced", message=repr(exc))

    async def _failover(
        self, op: str, group: str, ref: str, kind: str = "failover"
    ) -> dict[str, str]:
        if kind == "failover":
            await self.sm.execute("group", group, c.BeginFailover(op, "failover"))
            await self._fence_source(op, group)
        cp = await self._resolve(group, ref)
        await self.progress(op, "checkpoint chosen", message=cp)
        # The replica must not move while it is promoted: stop applying first.
        await self.supervisor.stop(f"vdsa-recovery-{group}")
        await self.supervisor.stop(f"journal-{group}")
        await self._restore_all(op, group, cp, None)
        g = self.group(group)
        await self.progress(op, "starting the recovery tapper")
        # A failback fenced this site's tapper; the promoted volume takes writes again.
        await self.control(group, "RESUME", {"writes": "allow"}, site=self.site)
        # The tapper's checks read the group's state: serve as the failed-over group will be.
        await self.ensure_tapper_as(g, a.FAILED_OVER)
        exports = self.exports(g)
        await self.sm.execute("group", group, c.CompleteFailover(op, cp, exports))
        return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}}

    async def ensure_tapper_as(self, g: ProtectionGroup, status: str) -> None:
        saved = (g.status, g.active_site)
        g.status = status
        g.active_site = self.site
        try:
            await self.ensure_tapper(g)
        finally:
            g.status, g.active_site = saved

    async def _move(self, op: str, group: str, _: str) -> dict[str, str]:
        await self.sm.execute("group", group, c.BeginFailover(op, "move"))
        g = self.group(group)
        await self.control(group, "PAUSE", {"writes": "refuse", "owner": op}, site=g.source_site)
        await self.progress(op, "writes stopped at the protected site")
        cp = await self._final_checkpoint(group, f"move-{op[:8]}", g.source_site)
        await self.progress(op, "final checkpoint", message=cp)
        await self._wait_indexed(op, group, cp)
        await self.progress(op, "final checkpoint indexed at the recovery site", message=cp)
        return await self._failover(op, group, cp, kind="move")

    async def _final_checkpoint(self, group: str, tag: str, site: str, within_s: float = 60) -> str:
        from tapstream.vdsa.coordinator import CheckpointFailed, create_checkpoint

        deadline = time.monotonic() + within_s
        while True:
            try:
                cp = await create_checkpoint(self.settings_for(site), group, tag)
                await self.record_checkpoint(group, cp, tag, site)
                return cp
            except CheckpointFailed as exc:
                if time.monotonic() > deadline:
                    raise OperationFailed(
                        f"no final checkpoint at the {site} site: {exc}"
                    ) from None
                await asyncio.sleep(0.5)

    # reverse / failback --------------------------------------------------------------------------
    async def _reverse(self, op: str, group: str, _: str) -> dict[str, str]:
        g = self.group(group)
        cp = (g.last_failover or {}).get("checkpoint_id", "")
        await self.supervisor.stop(f"tapper-{group}")
        await self.supervisor.stop(f"vdsa-protected-{group}")
        # What this site wrote after the promoted checkpoint (an unplanned failover leaves some; a
        # move none) must be undone: the recovery site sends those regions again from its volumes.
        changed = await asyncio.to_thread(self._written_after, g, cp)
        delta_bytes = sum(b - a for ranges in changed.values() for a, b in ranges)
        await self.progress(
            op,
            "regions written here after the checkpoint",
            delta_bytes,
            message=json.dumps({v: len(r) for v, r in changed.items()}),
        )
        applier = await self.start_reverse(g)
        await self.progress(
            op, "applying the recovery site's writes to the original volumes", message=applier.topic
        )
        if delta_bytes:
            await self.control(group, "RESYNC", delta.resync_args(changed), site=g.target_site)
        await self.sm.execute("group", group, c.StartReverse(op, delta_bytes))
        return {"topic": applier.topic, "delta_bytes": str(delta_bytes)}

    def _written_after(self, g: ProtectionGroup, cp: str) -> dict[str, list[tuple[int, int]]]:
        """Per volume, the byte ranges this site's stream changed after checkpoint `cp`'s marker, plus
        what its tapper's dirty bitmap holds (written here, never published), in granules."""
        from tapstream.core.replay import read_stream
        from tapstream.tapper.dirty_bitmap import DirtyBitmap

        settings = self.settings_for(g.source_site)
        records = (
            rec
            for _p, _o, rec in read_stream(
                client_config(settings), settings.topic(f"writes.{g.id}"), make_codec(settings)
            )
        )
        granules, missing = delta.written_after(records, cp, g.volumes())
        if missing:
            raise OperationFailed(
                f"checkpoint {cp} is not in this site's stream for {missing}: cannot tell what "
                "changed here after it; copy the volumes back with `tapstream restore` instead"
            )
        for vol, v in g.volumes().items():
            path = self.tapper_state(g) / f"{vol}.dirty"
            if path.exists():
                size = self.volume_path(v).stat().st_size
                bitmap = DirtyBitmap(path, size, delta.GRANULE)
                for start, end in bitmap.dirty_ranges():
                    delta.mark(granules[vol], start, end)
                bitmap.close()
        return {
            vol: delta.to_ranges(gs, self.volume_path(g.volumes()[vol]).stat().st_size)
            for vol, gs in granules.items()
        }

    async def _failback(self, op: str, group: str, _: str) -> dict[str, str]:
        await self.sm.execute("group", group, c.BeginFailover(op, "failback"))
        g = self.group(group)
        await self.control(group, "PAUSE", {"writes": "refuse", "owner": op}, site=g.target_site)
        await self.progress(op, "writes stopped at the recovery site")
        cp = await self._final_checkpoint(group, f"failback-{op[:8]}", g.target_site)
        await self.progress(op, "final checkpoint at the recovery site", message=cp)
        applier = self.reverse.get(group) or await self.start_reverse(g)
        deadline = time.monotonic() + 120
        while not applier.seen(cp):
            if applier.error is not None:
                raise OperationFailed(f"reverse replication failed: {applier.error!r}")
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"the final checkpoint {cp} did not arrive here within 120s: is MirrorMaker 2 "
                    "mirroring recovery -> protected (`make status`)?"
                )
            await asyncio.sleep(0.2)
        await self.progress(
            op,
            "final checkpoint applied to the original volumes",
            message=json.dumps(applier.status()),
        )
        await applier.stop()
        self.reverse.pop(group, None)
        # The move (or failover) fenced the original tapper; it is the writer again.
        await self.control(group, "RESUME", {"writes": "allow"}, site=g.source_site)
        await self.ensure_tapper_as(g, a.PROTECTING)
        exports = self.exports(g)
        await self.sm.execute("group", group, c.CompleteFailover(op, cp, exports))
        return {"checkpoint": cp, **{f"export.{k}": v for k, v in exports.items()}}
