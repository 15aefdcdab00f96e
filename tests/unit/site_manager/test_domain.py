"""The site manager's aggregates, ledger and application layer, without I/O."""

from __future__ import annotations

import asyncio
import json

import pytest

from tapstream.site_manager.application import Application
from tapstream.site_manager.domain import (
    CheckpointLog,
    ConcurrencyError,
    DomainError,
    Ledger,
    NotFound,
    Operation,
    Outcome,
    ProtectionGroup,
    Recorded,
)
from tapstream.site_manager.domain import commands as c
from tapstream.site_manager.domain import events as e


def run(agg, *cmds):
    """Decide and apply each command in turn; returns every event."""
    out = []
    for cmd in cmds:
        evs = agg.decide(cmd)
        for ev in evs:
            agg.apply(ev)
        out += evs
    return out


def group(name: str = "g1") -> ProtectionGroup:
    g = ProtectionGroup(name)
    run(
        g,
        c.CreateGroup(),
        c.AddVm("vm1", "vm1-dr"),
        c.AddVolume("vm1", "disk0", "/v/disk0.img", 1024),
    )
    return g


def test_create_and_membership() -> None:
    g = group()
    assert g.version == 4 - 1  # created, vm, volume
    assert g.status == "protecting" and g.volumes()["disk0"].path == "/v/disk0.img"
    assert g.vms["vm1"].target_vm == "vm1-dr"
    assert run(g, c.PairTarget("vm1", "vm1-dr")) == []  # unchanged: no event
    assert run(g, c.PairTarget("vm1", "other")) == [e.TargetPaired("vm1", "other")]
    with pytest.raises(DomainError, match="already in group"):
        g.decide(c.AddVolume("vm1", "disk0", "/x"))
    with pytest.raises(DomainError, match="add-vm"):
        g.decide(c.AddVolume("vm9", "disk1", "/x"))
    with pytest.raises(DomainError, match="exists"):
        g.decide(c.CreateGroup())
    with pytest.raises(DomainError, match="Kafka key"):
        ProtectionGroup("bad name").decide(c.CreateGroup())
    with pytest.raises(DomainError, match="> 0"):
        ProtectionGroup("g").decide(c.CreateGroup(rpo_target_s=0))
    evs = run(g, c.RemoveVm("vm1"))
    assert evs == [e.VolumeRemoved("vm1", "disk0"), e.VmRemoved("vm1")] and not g.volumes()


def test_unknown_group_names_the_create_command() -> None:
    with pytest.raises(NotFound, match="tapstream group create nope"):
        ProtectionGroup("nope").decide(c.PauseProtection())


def test_pause_resume() -> None:
    g = group()
    with pytest.raises(DomainError, match="not paused"):
        g.decide(c.ResumeProtection())
    run(g, c.PauseProtection("maintenance"))
    assert g.status == "paused"
    with pytest.raises(DomainError, match="not protecting"):
        g.decide(c.PauseProtection())
    run(g, c.ResumeProtection())
    assert g.status == "protecting"


def test_failover_test_is_exclusive_and_blocks_failover() -> None:
    g = group()
    run(g, c.StartFailoverTest("op1", "cp1", {"disk0": "nbd://h:1/disk0"}))
    assert g.test and g.test["checkpoint_id"] == "cp1"
    with pytest.raises(DomainError, match="failover-test stop g1"):
        g.decide(c.StartFailoverTest("op2", "cp1"))
    with pytest.raises(DomainError, match="stop it first"):
        g.decide(c.BeginFailover("op3", "move"))
    with pytest.raises(DomainError, match="stop it first"):
        g.decide(c.AddVm("vm2"))
    run(g, c.StopFailoverTest())
    assert g.test is None


def test_full_cycle_states() -> None:
    g = group()
    with pytest.raises(DomainError, match="fail over or move it first"):
        g.decide(c.BeginFailover("op0", "failback"))
    with pytest.raises(DomainError, match="follows a failover"):
        g.decide(c.StartReverse("op0"))
    run(g, c.BeginFailover("op1", "move"))
    assert g.status == "failing_over" and g.operation == "op1"
    with pytest.raises(DomainError, match="is running"):
        g.decide(c.BeginFailover("op2", "failover"))
    with pytest.raises(DomainError, match="not the one running"):
        g.decide(c.CompleteFailover("op2", "cp"))
    run(g, c.CompleteFailover("op1", "cp9", {"disk0": "nbd://r/disk0"}))
    assert (g.status, g.active_site, g.operation) == ("failed_over", "recovery", None)
    assert g.last_failover == {"operation": "op1", "kind": "move", "checkpoint_id": "cp9"}
    with pytest.raises(DomainError, match="reverse g1"):
        g.decide(c.BeginFailover("op3", "failback"))
    with pytest.raises(DomainError, match="fail back first"):
        g.decide(c.AddVm("vm2"))
    with pytest.raises(DomainError, match="fail back before deleting"):
        g.decide(c.DeleteGroup())
    run(g, c.StartReverse("op4", 4096))
    assert g.status == "reverse_protecting"
    run(g, c.BeginFailover("op5", "failback"))
    assert g.status == "failing_back"
    run(g, c.CompleteFailover("op5", "cp10", {"disk0": "nbd://p/disk0"}))
    assert (g.status, g.active_site) == ("protecting", "protected")
    run(g, c.DeleteGroup())
    with pytest.raises(NotFound):
        g.decide(c.PauseProtection())
    with pytest.raises(DomainError, match="deleted"):
        g.decide(c.CreateGroup())


def test_aborted_failover_returns_to_protecting() -> None:
    g = group()
    run(g, c.BeginFailover("op1", "failover"), c.AbortFailover("op1", "restore failed"))
    assert g.status == "protecting" and g.operation is None


def test_operation_lifecycle() -> None:
    op = Operation("op1")
    with pytest.raises(NotFound):
        op.decide(c.ReportProgress("x"))
    run(
        op,
        c.StartOperation("move", "g1", {"checkpoint": "latest"}),
        c.ReportProgress("final checkpoint", 1, 4),
        c.SucceedOperation({"checkpoint": "cp"}),
    )
    assert op.status == "succeeded" and op.steps[0]["total"] == 4
    with pytest.raises(DomainError, match="already succeeded"):
        op.decide(c.FailOperation("late"))
    with pytest.raises(DomainError, match="unknown operation kind"):
        Operation("op2").decide(c.StartOperation("teleport", "g1"))


def test_event_payload_roundtrip_and_upcast() -> None:
    ev = e.FailedOver("op", "move", "cp", {"disk0": "nbd://x"})
    rec = Recorded("id1", "group", "g1", 3, 123, "recovery", ev)
    back = Recorded.from_record(rec.to_record())
    assert back == rec
    # An old payload lacking a field gets its default; a newer one's extra field is dropped.
    old = e.from_payload(
        "VolumeAdded", json.dumps({"vm": "v", "volume": "d", "path": "/p", "future": 1})
    )
    assert old == e.VolumeAdded("v", "d", "/p", 0, "")
    with pytest.raises(e.UnknownEvent, match="upgrade"):
        e.from_payload("Teleported", "{}")


def records(agg_id: str, site: str, *evs: e.Event, start: int = 1) -> list[Recorded]:
    return [
        Recorded(f"{site}-{agg_id}-{start + i}", "group", agg_id, start + i, i, site, ev)
        for i, ev in enumerate(evs)
    ]


def test_ledger_order_independent_duplicates_and_conflicts() -> None:
    recs = records(
        "g1", "protected", e.GroupCreated("g1"), e.VmAdded("vm1"), e.VolumeAdded("vm1", "d", "/p")
    )
    a, b = Ledger(), Ledger()
    for r in recs:
        a.accept(r)
    # Reversed arrival: later versions wait for their predecessor.
    assert b.check(recs[2]) is Outcome.WAITING
    assert b.accept(recs[1]) == []
    assert [r.version for r in b.accept(recs[0])] == [1, 2, 3]
    assert a.get("group", "g1").state() == b.get("group", "g1").state()
    assert a.check(recs[1]) is Outcome.DUPLICATE and a.get("group", "g1").version == 3
    # Another site decided version 4 too: the second one is a conflict, kept aside, not applied.
    mine = records("g1", "protected", e.ProtectionPaused("x"), start=4)[0]
    theirs = records("g1", "recovery", e.VmAdded("vm2"), start=4)[0]
    assert a.accept(mine) == [mine]
    assert a.accept(theirs) == [] and a.conflicts == [theirs]
    assert "vm2" not in a.get("group", "g1").vms  # type: ignore[attr-defined]


def test_application_optimistic_concurrency() -> None:
    sunk: list[Recorded] = []

    async def sink(recs: list[Recorded]) -> None:
        await asyncio.sleep(0)
        sunk.extend(recs)

    async def scenario() -> None:
        app = Application("protected", Ledger(), sink)
        g = await app.execute("group", "g1", c.CreateGroup())
        assert g.version == 1
        await app.execute("group", "g1", c.AddVm("vm1"), expected_version=1)
        with pytest.raises(ConcurrencyError, match="reload it and retry"):
            await app.execute("group", "g1", c.AddVm("vm2"), expected_version=1)
        # Two concurrent writers that both read version 2: exactly one wins.
        results = await asyncio.gather(
            app.execute("group", "g1", c.AddVm("a"), expected_version=2),
            app.execute("group", "g1", c.AddVm("b"), expected_version=2),
            return_exceptions=True,
        )
        assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
        assert [r.version for r in sunk] == [1, 2, 3]

    asyncio.run(scenario())


def test_application_detects_a_remote_event_taking_the_version() -> None:
    ledger = Ledger()

    async def sink(recs: list[Recorded]) -> None:
        # While ours travels, the other site's version 2 arrives through MirrorMaker 2.
        ledger.accept(records("g1", "recovery", e.VmAdded("theirs"), start=2)[0])

    async def scenario() -> None:
        app = Application("protected", ledger, sink)
        ledger.accept(records("g1", "protected", e.GroupCreated("g1"))[0])
        with pytest.raises(ConcurrencyError, match="concurrently at another site"):
            await app.execute("group", "g1", c.AddVm("mine"))
        assert set(ledger.get("group", "g1").vms) == {"theirs"}  # type: ignore[attr-defined]
        assert len(ledger.conflicts) == 1

    asyncio.run(scenario())


def test_application_accepts_its_own_event_read_back_first() -> None:
    ledger = Ledger()

    async def sink(recs: list[Recorded]) -> None:
        for r in recs:  # the consumer of our own topic was quicker than the caller
            ledger.accept(r)

    async def scenario() -> None:
        g = await Application("protected", ledger, sink).execute("group", "g1", c.CreateGroup())
        assert g.version == 1 and not ledger.conflicts

    asyncio.run(scenario())


def test_a_command_returns_only_once_the_projection_holds_its_events_read_back_first() -> None:
    """The topic's reader applies our own event first and saves it slowly: the caller (an API
    request, then a redirect to the new operation's page) must not see the command done before
    the projection has it. It failed the console's browser test once: "no operation <id>"."""
    ledger = Ledger()
    saved: list[str] = []
    app: Application

    async def reader(recs: list[Recorded]) -> None:  # what the service's `_on_reads` does
        async with app.apply_lock:
            for r in recs:
                ledger.accept(r)
            await asyncio.sleep(0.05)  # a slow projection write
            saved.extend(r.id for r in recs)

    async def sink(recs: list[Recorded]) -> None:
        task = asyncio.create_task(reader(recs))  # the consumer of our own topic was quicker
        await asyncio.sleep(0)  # it takes the lock before the produce call returns
        assert not task.done()

    async def scenario() -> None:
        nonlocal app
        app = Application("protected", ledger, sink)
        await app.execute("group", "g1", c.CreateGroup())
        assert saved == ledger.entries[("group", "g1")].ids

    asyncio.run(scenario())


def test_ledger_never_continues_a_history_it_does_not_hold() -> None:
    """Site B decided version 2 on its own, then version 3 on top of it: at site A, which holds its own
    version 2, B's version 3 is next in number but built on another history, so it is a conflict too."""
    a1 = Recorded("a1", "group", "g1", 1, 1, "protected", e.GroupCreated("g1"))
    a2 = Recorded("a2", "group", "g1", 2, 2, "protected", e.VmAdded("mine"), prev="a1")
    b2 = Recorded("b2", "group", "g1", 2, 2, "recovery", e.VmAdded("theirs"), prev="a1")
    b3 = Recorded("b3", "group", "g1", 3, 3, "recovery", e.VmAdded("theirs-too"), prev="b2")
    ledger = Ledger()
    for r in (a1, a2):
        ledger.accept(r)
    assert ledger.check(b2) is Outcome.CONFLICT and ledger.check(b3) is Outcome.CONFLICT
    assert set(ledger.get("group", "g1").vms) == {"mine"}  # type: ignore[attr-defined]
    assert [r.id for r in ledger.conflicts] == ["b2", "b3"]
    # Arriving before its predecessor and released by it: checked all the same.
    other = Ledger()
    assert other.check(b3) is Outcome.WAITING
    assert [r.id for r in other.accept(a1) + other.accept(a2)] == ["a1", "a2"]
    assert other.get("group", "g1").version == 2 and [r.id for r in other.conflicts] == ["b3"]
    # Our own events carry their predecessor, and survive the Avro record both ways.
    assert Recorded.from_record(b3.to_record()).prev == "b2"


def test_application_chains_prev_ids() -> None:
    sunk: list[Recorded] = []

    async def sink(recs: list[Recorded]) -> None:
        sunk.extend(recs)

    async def scenario() -> None:
        app = Application("protected", Ledger(), sink)
        await app.execute("group", "g1", c.CreateGroup())
        await app.execute("group", "g1", c.AddVm("vm1"))
        await app.execute("group", "g1", c.AddVolume("vm1", "d0", "/p"))
        await app.execute("group", "g1", c.RemoveVm("vm1"))  # two events at once

    asyncio.run(scenario())
    assert [r.prev for r in sunk] == ["", sunk[0].id, sunk[1].id, sunk[2].id, sunk[3].id]


def test_checkpoints_taken_at_one_site_never_race_the_other_sites_change_of_the_group() -> None:
    """The protected site records a checkpoint while the recovery site starts a failover test: each
    lands in its own aggregate (one writer each), so both sites hold both, in either arrival order."""
    sunk: dict[str, list[Recorded]] = {"protected": [], "recovery": []}

    async def decide(site: str, agg_type: str, agg_id: str, cmd: c.Command, ledger: Ledger) -> None:
        async def sink(recs: list[Recorded]) -> None:
            sunk[site].extend(recs)

        app = Application(site, ledger, sink)
        await app.execute(agg_type, agg_id, cmd)

    base = records(
        "g1", "protected", e.GroupCreated("g1"), e.VmAdded("vm1"), e.VolumeAdded("vm1", "d", "/p")
    )
    ledgers = {"protected": Ledger(), "recovery": Ledger()}
    for ledger in ledgers.values():
        for r in base:
            ledger.accept(r)
    log_id = CheckpointLog.id_of("g1", "protected")
    asyncio.run(
        decide("protected", "checkpoints", log_id, c.RecordCheckpoint("cp1", "step2", "protected"),
               ledgers["protected"])
    )  # fmt: skip
    asyncio.run(
        decide("recovery", "group", "g1", c.StartFailoverTest("op1", "cp0"), ledgers["recovery"])
    )
    # Each site reads the other's event (mirrored) after its own: no conflict anywhere.
    for site, other in (("protected", "recovery"), ("recovery", "protected")):
        for r in sunk[other]:
            ledgers[site].accept(r)
        assert ledgers[site].conflicts == []
        assert ledgers[site].get("group", "g1").test["checkpoint_id"] == "cp0"  # type: ignore[attr-defined]
        assert ledgers[site].get("checkpoints", log_id).state()["checkpoints"] == [
            {"id": "cp1", "tag": "step2", "site": "protected"}
        ]
    assert (
        ledgers["protected"].get("group", "g1").state()
        == ledgers["recovery"].get("group", "g1").state()
    )
    with pytest.raises(DomainError, match="does not take"):
        CheckpointLog(log_id).decide(c.PauseProtection("x"))


def test_concurrent_decisions_converge_to_one_winner_in_any_arrival_order() -> None:
    """Both sites decided version 2 on the same version 1 (a failover test at one, a pause at the
    other), and the later one built a version 3 on its own. Whatever order each site reads them in,
    both hold the same winner (the earlier decision) and the same state; the loser and what was built
    on it are rolled back and kept aside."""
    import itertools

    a1 = Recorded("a1", "group", "g1", 1, 1, "protected", e.GroupCreated("g1"))
    early = Recorded("x2", "group", "g1", 2, 5, "recovery", e.VmAdded("early"), prev="a1")
    late = Recorded("b2", "group", "g1", 2, 7, "protected", e.VmAdded("late"), prev="a1")
    late3 = Recorded("b3", "group", "g1", 3, 8, "protected", e.VmAdded("on-late"), prev="b2")
    states, conflicts = set(), set()
    # Each site reads its own stream in order; the other's may come before, between or after.
    for order in itertools.permutations([early, late, late3]):
        if order.index(late) > order.index(late3):
            continue  # one site's events stay in order (one partition per aggregate)
        ledger = Ledger()
        ledger.accept(a1)
        for r in order:
            ledger.accept(r)
        g = ledger.get("group", "g1")
        states.add(json.dumps(g.state(), sort_keys=True))
        conflicts.add(tuple(sorted(r.id for r in ledger.conflicts)))
        assert ledger.holds(early) and not ledger.holds(late) and g.version == 2
        assert set(g.vms) == {"early"}  # type: ignore[attr-defined]
    assert len(states) == 1 and conflicts == {("b2", "b3")}


def test_a_late_winner_rolls_back_what_was_applied() -> None:
    a1 = Recorded("a1", "group", "g1", 1, 1, "protected", e.GroupCreated("g1"))
    mine = Recorded("m2", "group", "g1", 2, 9, "protected", e.VmAdded("mine"), prev="a1")
    theirs = Recorded("t2", "group", "g1", 2, 3, "recovery", e.VmAdded("theirs"), prev="a1")
    ledger = Ledger()
    ledger.accept(a1)
    ledger.accept(mine)
    assert ledger.check(theirs) is Outcome.SUPERSEDES
    assert ledger.accept(theirs) == [theirs]
    assert ledger.superseded == [mine] and [r.id for r in ledger.conflicts] == ["m2"]
    assert set(ledger.get("group", "g1").vms) == {"theirs"}  # type: ignore[attr-defined]
    assert ledger.check(mine) is Outcome.CONFLICT  # read again later: still the loser


def test_fences_are_recorded_and_lifted_only_by_their_owner() -> None:
    g = ProtectionGroup("g1")
    g.apply(e.GroupCreated("g1"))
    for ev in g.decide(c.RecordFence("protected", "op1", True)):
        g.apply(ev)
    assert g.state()["fenced"] == {"protected": "op1"}
    assert g.decide(c.RecordFence("protected", "op1", True)) == []  # idempotent
    assert g.decide(c.RecordFence("protected", "op2", False)) == []  # not its owner
    for ev in g.decide(c.RecordFence("protected", "", False)):  # an operator lifts any
        g.apply(ev)
    assert g.state()["fenced"] == {}
