"""Where a journal process sharing partitions stands against Postgres (positions.py): read from the
stored offset when a partition is assigned, a batch written only while the stored offsets are those
this process left, nothing expected of partitions it gave up."""

from __future__ import annotations

from aiokafka import TopicPartition

from tapstream.journal.positions import Positions

T = "protected.tapstream.writes.g1"


def test_an_assigned_partition_is_read_from_the_stored_offset_or_its_beginning() -> None:
    pos = Positions()
    start = pos.assign([TopicPartition(T, 0), TopicPartition(T, 1)], {0: 120, 2: 7})
    assert start == {(T, 0): 120, (T, 1): None}
    assert pos.owns(TopicPartition(T, 0)) and not pos.owns(TopicPartition(T, 2))


def test_a_batch_expects_what_this_process_last_read_or_wrote() -> None:
    pos = Positions()
    pos.assign([(T, 0), (T, 1)], {0: 120})
    assert pos.expect([(T, 0), (T, 1)]) == {(T, 0): 120, (T, 1): None}
    pos.wrote({(T, 0): 130, (T, 1): 5})
    assert pos.expect([(T, 0), (T, 1)]) == {(T, 0): 130, (T, 1): 5}


def test_a_revoked_partition_is_forgotten_and_read_afresh_when_it_comes_back() -> None:
    pos = Positions()
    pos.assign([(T, 0), (T, 1)], {0: 120, 1: 50})
    pos.revoke([TopicPartition(T, 1)])
    assert pos.owned == {(T, 0)}
    pos.wrote({(T, 1): 60})  # a late batch of a partition given up moves nothing
    assert pos.expect([(T, 1)]) == {(T, 1): None}
    # Another process indexed it meanwhile: back here, it starts where that process left it.
    pos.assign([(T, 1)], {0: 130, 1: 90})
    assert pos.expect([(T, 0), (T, 1)]) == {(T, 0): 120, (T, 1): 90}
