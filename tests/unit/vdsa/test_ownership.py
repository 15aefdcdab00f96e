"""What a rebalance of the recovery VDSA's consumer group drops and loads (ownership.py): several
VDSA processes share a group's partitions; the replica's saved position is the authority."""

from __future__ import annotations

from aiokafka import TopicPartition

from tapstream.vdsa.ownership import Released, on_assign, on_revoke, part

T = "protected.tapstream.writes.g1"
P0, P1, P2 = (T, 0), (T, 1), (T, 2)
A, B, C = ("g1", "a"), ("g1", "b"), ("g1", "c")


def test_a_saved_position_names_a_partition_once_something_was_applied() -> None:
    assert part(T, 3) == (T, 3)
    assert part(T, -1) is None
    assert TopicPartition(T, 3) == part(T, 3)  # aiokafka's partitions compare as the pairs


def test_revoking_forgets_the_volumes_holds_and_timers_of_those_partitions_only() -> None:
    plan = on_revoke(
        where={A: P0, B: P1, C: None},
        held={TopicPartition(*P0): {A}, TopicPartition(*P1): {B}},
        timers=[TopicPartition(*P0), TopicPartition(*P2)],
        revoked=[TopicPartition(*P0)],
    )
    assert plan.release == {A}  # c's partition is unknown: nothing says it moves
    assert plan.held == {P1: {B}}
    assert plan.cancel == {P0}  # p0's resume timer must not resume it after the rebalance


def test_an_eager_rebalance_revokes_everything_and_gives_back_a_share() -> None:
    where = {A: P0, B: P1}
    revoked = on_revoke(where, {}, [], [P0, P1])
    assert revoked.release == {A, B}
    released = {A: Released(P0, halt_reason="gap"), B: Released(P1, held=True)}
    assigned = on_assign({}, released, halted_on_disk={A: P0}, assigned=[P0])
    # a is this process's again: its halted replica is loaded now (gauge, status, resync) and its
    # gauges stay; b went to another process, whose gauges now speak for it.
    assert assigned.load == {A}
    assert assigned.gone == {B}
    assert assigned.release == set()


def test_halted_replicas_loaded_at_start_are_let_go_when_their_partition_is_elsewhere() -> None:
    loaded_at_start = {A: P0, B: P1, C: None}
    plan = on_assign(loaded_at_start, {}, {A: P0, B: P1, C: None}, assigned=[P0])
    assert plan.release == {B}
    assert plan.gone == {B}
    assert plan.load == set()  # a and c are loaded already


def test_a_halted_replica_of_unknown_partition_is_loaded_by_every_process() -> None:
    """Saved by a version that wrote no partition for a volume halted at its first event: each
    process reports it rather than none."""
    plan = on_assign({}, {}, {C: None, A: P1}, assigned=[P0])
    assert plan.load == {C}


def test_one_process_owning_everything_keeps_everything() -> None:
    where = {A: P0, B: P1, C: None}
    plan = on_assign(where, {}, {A: P0}, assigned=[P0, P1, P2])
    assert (plan.release, plan.load, plan.gone) == (set(), set(), set())
