"""Which services each site runs for a group in each state (the reconciler's pure decision)."""

from __future__ import annotations

from tapstream.site_manager.domain import ProtectionGroup
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain.services import desired_roles


def group(*cmds: c.Command) -> ProtectionGroup:
    g = ProtectionGroup("g1")
    for cmd in (c.CreateGroup(), c.AddVm("vm1"), c.AddVolume("vm1", "d0", "/v/d0.img"), *cmds):
        for ev in g.decide(cmd):
            g.apply(ev)
    return g


def roles(g: ProtectionGroup) -> tuple[set[str] | None, set[str] | None]:
    p, r = desired_roles(g, "protected"), desired_roles(g, "recovery")
    return (None if p is None else set(p)), (None if r is None else set(r))


def test_roles_through_the_cycle() -> None:
    assert roles(ProtectionGroup("g1")) == (set(), set())
    empty = ProtectionGroup("g1")
    empty.apply(empty.decide(c.CreateGroup())[0])
    assert roles(empty) == (set(), set()), "nothing to run without volumes"
    assert roles(group()) == ({"tapper", "checkpoints"}, {"journal", "apply"})
    assert roles(group(c.PauseProtection())) == ({"tapper"}, {"journal", "apply"})
    assert roles(group(c.BeginFailover("op", "move"))) == (None, None)
    moved = (c.BeginFailover("op", "move"), c.CompleteFailover("op", "cp"))
    assert roles(group(*moved)) == (set(), {"tapper", "checkpoints"})
    assert roles(group(*moved, c.StartReverse("op2"))) == ({"reverse"}, {"tapper", "checkpoints"})
    assert roles(group(*moved, c.StartReverse("op2"), c.BeginFailover("op3", "failback"))) == (
        None,
        None,
    )
    back = group(
        *moved,
        c.StartReverse("op2"),
        c.BeginFailover("op3", "failback"),
        c.CompleteFailover("op3", "cp2"),
    )
    assert roles(back) == ({"tapper", "checkpoints"}, {"journal", "apply"})
    assert roles(group(c.DeleteGroup())) == (set(), set())
