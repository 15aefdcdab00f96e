"""Statuses are StrEnums whose values are on the wire and in Postgres: they must not change."""

from __future__ import annotations

import json

from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.domain import commands as c


def test_group_and_operation_status_values_are_the_stored_strings() -> None:
    assert [s.value for s in a.GroupStatus] == [
        "protecting",
        "paused",
        "failing_over",
        "failed_over",
        "reverse_protecting",
        "failing_back",
        "deleted",
    ]
    assert [s.value for s in a.OperationStatus] == ["running", "succeeded", "failed"]


def test_a_status_serialises_and_compares_as_its_string() -> None:
    op = a.Operation("op1")
    for event in op.decide(c.StartOperation("failover", "g1", {})):
        op.apply(event)
    state = json.loads(json.dumps(op.state()))
    assert state["status"] == "running" == a.OperationStatus.RUNNING
    assert f"{op.status}" == "running" and type(state["status"]) is str
