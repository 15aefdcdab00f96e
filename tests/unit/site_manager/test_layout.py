"""The site that acts on a volume checks its path against its own roots right before it acts: the
other site (which decided the event) may have other roots, or lie."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapstream.site_manager.domain import Ledger, ProtectionGroup
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import events as e
from tapstream.site_manager.errors import OperationFailed
from tapstream.site_manager.layout import Layout
from tapstream.site_manager.settings import SiteManagerSettings


def layout(tmp_path: Path, site: str) -> Layout:
    s = SiteManagerSettings(
        site=site,
        site_manager_state_dir=tmp_path / "sm",
        site_manager_volume_roots=[tmp_path / "images"],
        site_manager_target_roots=[tmp_path / "targets"],
    )
    return Layout(s, Ledger())


def group(path: Path, target: Path | str = "") -> ProtectionGroup:
    """A group as events decided elsewhere made it (no rule of ours ran on them)."""
    g = ProtectionGroup("g1")
    for ev in (
        e.GroupCreated("g1"),
        e.VmAdded("vm1"),
        e.VolumeAdded("vm1", "disk0", str(path), 0, str(target)),
    ):
        g.apply(ev)
    return g


def test_the_protected_site_serves_only_volumes_under_its_roots(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    here = layout(tmp_path, "protected")
    inside = tmp_path / "images" / "d0.img"
    assert here.serving_paths(group(inside)) == {"disk0": inside}
    for path in (Path("/etc/shadow"), tmp_path / "images" / ".." / "x.img"):
        with pytest.raises(OperationFailed, match="SITE_MANAGER_VOLUME_ROOTS"):
            here.serving_paths(group(path))
    (tmp_path / "images" / "evil.img").symlink_to("/etc/shadow")
    with pytest.raises(OperationFailed, match="resolves to /etc/shadow"):
        here.serving_paths(group(tmp_path / "images" / "evil.img"))
    with pytest.raises(OperationFailed, match="images"):
        here.volume_path(group(Path("/etc/shadow")).volumes()["disk0"])


def test_the_recovery_site_promotes_only_into_its_target_roots(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    here = layout(tmp_path, "recovery")
    disk = Path("/anywhere/else/d0.img")  # the protected site's path: not ours to judge
    g = group(disk, tmp_path / "targets" / "d0.img")
    assert here.serving_paths(g) == {"disk0": tmp_path / "targets" / "d0.img"}
    default = group(disk)
    assert (
        here.promoted_path(default, default.volumes()["disk0"])
        == (tmp_path / "sm" / "volumes" / "g1" / "disk0.img").resolve()
    )
    (tmp_path / "targets" / "link.img").symlink_to(tmp_path / "images" / "d0.img")
    for target in ("/etc/cron.d/x", tmp_path / "targets" / "link.img", "relative.img"):
        bad = group(disk, target)
        with pytest.raises(OperationFailed, match="SITE_MANAGER_TARGET_ROOTS"):
            here.promoted_path(bad, bad.volumes()["disk0"])


@pytest.mark.parametrize("site", ["protected", "recovery"])
def test_the_tapper_it_starts_accepts_exactly_what_it_checked(tmp_path: Path, site: str) -> None:
    from tapstream.tapper.settings import TapperSettings

    for d in ("images", "targets"):
        (tmp_path / d).mkdir()
    here = layout(tmp_path, site)
    for target in ("", tmp_path / "targets" / "d0.img"):
        g = group(tmp_path / "images" / "d0.img", target)
        served = here.serving_paths(g)
        tapper = TapperSettings(
            tapper_volumes=[{"name": n, "path": str(p), "group": "g1"} for n, p in served.items()],
            tapper_volume_roots=here.serving_roots(g),
        )
        assert {v.name: v.path for v in tapper.tapper_volumes} == served
    with pytest.raises(ValueError, match="TAPPER_VOLUME_ROOTS"):
        TapperSettings(
            tapper_volumes=[{"name": "d0", "path": "/etc/shadow", "group": "g1"}],
            tapper_volume_roots=here.serving_roots(g),
        )


def test_the_tapper_spec_is_the_wanted_status_and_leaves_the_group_alone(tmp_path: Path) -> None:
    """An operation starts the tapper for the status the group records just after: the spec is
    given that status; the live group is only read (an event applied meanwhile is not undone)."""
    for d in ("images", "targets"):
        (tmp_path / d).mkdir()
    g = group(tmp_path / "images" / "d0.img")
    before = (g.status, g.active_site, g.version)
    protected, recovery = layout(tmp_path, "protected"), layout(tmp_path, "recovery")
    assert protected.tapper_spec(g, a.PROTECTING).initial_sync
    assert not protected.tapper_spec(g, a.REVERSE_PROTECTING).initial_sync
    spec = recovery.tapper_spec(g, a.FAILED_OVER)
    assert not spec.initial_sync
    assert spec.volumes == {"disk0": (tmp_path / "sm" / "volumes" / "g1" / "disk0.img").resolve()}
    assert spec.port == recovery.port("tapper-g1") and spec.state_dir == recovery.tapper_state(g)
    assert (g.status, g.active_site, g.version) == before
