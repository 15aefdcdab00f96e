"""Tests against a secured Kafka node of their own (SASL_SSL + SCRAM-SHA-512, StandardAuthorizer,
the ACL table's users and ACLs; lib/tapstream/localstack/secured.py). Marked `secured` and run only
when asked for (`pytest -m secured tests/integration/secured`, `make secured`): the node's start
takes 30 s to 2 min on a busy machine, too long for every `make test`."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "secured: starts a secured Kafka node of its own; `make secured`"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselected, not skipped, unless selected with -m secured."""
    if "secured" in (config.option.markexpr or ""):
        return
    chosen = [item for item in items if item.get_closest_marker("secured")]
    if chosen:
        config.hook.pytest_deselected(items=chosen)
        items[:] = [item for item in items if not item.get_closest_marker("secured")]
