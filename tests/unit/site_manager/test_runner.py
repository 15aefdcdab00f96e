"""The runner dispatches by a table: every operation kind a site manager runs has its workflow."""

from __future__ import annotations

from tapstream.site_manager.domain import aggregates as a
from tapstream.site_manager.runner import RECOVERY_KINDS, WORKFLOWS
from tapstream.site_manager.workflows import failback, failover, failover_test


def test_every_kind_the_api_starts_has_its_workflow() -> None:
    runs = set(a.KINDS) - {"checkpoint"}  # a checkpoint is recorded, not run as a workflow
    assert set(WORKFLOWS) == runs | {"failover-test-stop"}
    assert set(RECOVERY_KINDS) < runs
    assert WORKFLOWS["move"] is failover.move and WORKFLOWS["failback"] is failback.failback
    assert WORKFLOWS["failover-test-stop"] is failover_test.stop
