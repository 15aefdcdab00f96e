"""Group, VM and volume names become file names: the aggregates refuse '/' and '..' (Invalid, a 422)
in commands, and an event decided elsewhere that carries such a name adds nothing here."""

from __future__ import annotations

import pytest

from tapstream.site_manager.domain import Invalid, NotFound, ProtectionGroup
from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain import events as e

BAD = ["../../etc/x", "a/b", "..", "a..b", ".hidden", "", "x" * 129]


def created(name: str = "g1") -> ProtectionGroup:
    g = ProtectionGroup(name)
    for ev in g.decide(c.CreateGroup()):
        g.apply(ev)
    for ev in g.decide(c.AddVm("vm1")):
        g.apply(ev)
    return g


@pytest.mark.parametrize("bad", BAD)
def test_commands_with_a_path_like_name_are_invalid(bad: str) -> None:
    with pytest.raises(Invalid, match="name"):
        ProtectionGroup(bad).decide(c.CreateGroup())
    g = created()
    with pytest.raises(Invalid, match="VM name"):
        g.decide(c.AddVm(bad))
    with pytest.raises(Invalid, match="target VM name"):
        g.decide(c.AddVm("vm2", bad or "/"))
    with pytest.raises(Invalid, match="target VM name"):
        g.decide(c.PairTarget("vm1", bad))
    with pytest.raises(Invalid, match="volume name"):
        g.decide(c.AddVolume("vm1", bad, "/var/lib/libvirt/images/x.img"))
    with pytest.raises(Invalid, match="VM name"):
        g.decide(c.AddVolume(bad, "disk0", "/var/lib/libvirt/images/x.img"))


def test_events_from_elsewhere_with_path_like_names_add_nothing() -> None:
    g = ProtectionGroup("g1")
    for ev in (
        e.GroupCreated("g1"),
        e.VmAdded("vm1"),
        e.VmAdded("../evil"),
        e.VolumeAdded("vm1", "../../etc/x", "/etc/shadow"),
        e.VolumeAdded("../evil", "disk9", "/var/lib/libvirt/images/d9.img"),
        e.VolumeAdded("vm1", "disk0", "/var/lib/libvirt/images/d0.img"),
    ):
        g.apply(ev)
    assert g.version == 6, "the versions still move: both sites agree on what follows"
    assert list(g.vms) == ["vm1"] and list(g.volumes()) == ["disk0"]


def test_a_group_created_elsewhere_with_a_path_like_name_is_never_live() -> None:
    g = ProtectionGroup("../../etc")
    g.apply(e.GroupCreated("../../etc"))
    assert g.status == a.DELETED
    with pytest.raises(NotFound):
        g.decide(c.AddVm("vm1"))
