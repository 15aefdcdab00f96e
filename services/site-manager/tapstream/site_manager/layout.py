"""Where things are at this site: its settings, its state directory, the volumes it serves for a
group (checked against this site's own roots), the ports it listens on, and the tapper it runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tapstream.core.ports import free_port
from tapstream.core.settings import TapstreamSettings
from tapstream.site_manager import paths
from tapstream.site_manager.domain import Invalid, Ledger, ProtectionGroup
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.settings import SiteManagerSettings


@dataclass(frozen=True)
class TapperSpec:
    """The tapper this site runs for a group: what it serves, where, and how its streams start."""

    group: str
    mode: str
    volumes: dict[str, Path]
    initial_sync: bool
    roots: list[Path]
    host: str
    port: int
    state_dir: Path


class Layout:
    def __init__(self, settings: SiteManagerSettings, ledger: Ledger) -> None:
        self.s = settings
        self.site = settings.site
        self.ledger = ledger
        self.dir = settings.site_manager_state_dir.resolve()
        self._ports_file = self.dir / "ports.json"
        self._ports: dict[str, int] = (
            json.loads(self._ports_file.read_text()) if self._ports_file.exists() else {}
        )

    def acts_for(self, group: str) -> bool:
        """Whether this site manager runs services and recovers operations of `group`."""
        only = self.s.site_manager_only_groups
        return not only or group in only

    def settings_for(self, site: str) -> TapstreamSettings:
        return self.s.model_copy(update={"site": site})

    def group(self, name: str) -> ProtectionGroup:
        g = self.ledger.get("group", name)
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

    def tapper_spec(self, g: ProtectionGroup, status: str) -> TapperSpec:
        """This site's tapper for `g` as the group is, or will be, in `status` (an operation starts
        it before the group records the status): the group itself is only read."""
        port = self.port(f"tapper-{g.id}")
        # At the original site a fresh stream sends the volume (INITIAL sync); the promoted and the
        # failed-back volumes are already at the other site: only marked regions and new writes go.
        return TapperSpec(
            group=g.id,
            mode=g.mode,
            volumes=self.serving_paths(g),
            initial_sync=self.site == g.source_site and status in (a.PROTECTING, a.PAUSED),
            roots=self.serving_roots(g),
            host=self.s.site_manager_nbd_host,
            port=port,
            state_dir=self.tapper_state(g),
        )
