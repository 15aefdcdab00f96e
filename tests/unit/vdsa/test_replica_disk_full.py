"""A full replica disk at the recovery VDSA (issue 10, item 7): saving the kept checkpoints fails
without stopping the control-topic follower, is said once, and is retried until it works. The real
full filesystem, with the applier: tests/integration/test_disk_full.py."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tapstream.core.keep import TagRequest
from tapstream.vdsa import holds
from tapstream.vdsa.holds import HoldFollower
from tapstream.vdsa.settings import VdsaSettings


def test_kept_json_on_a_full_disk_is_retried_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = HoldFollower(VdsaSettings(), ["g1"], lambda req, kept: None, tmp_path)
    assert follower.keeps.apply(TagRequest("g1", "cp1", "gold", True, "", 1, "test"))
    real = holds.atomic_write_json

    def full(path: Path, obj: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(holds, "atomic_write_json", full)
    with capture_logs() as logs:
        follower._save("g1")
        follower._save("g1")
    assert [e["log_level"] for e in logs] == ["error"]
    assert logs[0]["file"] == str(tmp_path / "g1" / "kept.json")
    assert follower._unsaved == {"g1"}
    monkeypatch.setattr(holds, "atomic_write_json", real)
    with capture_logs() as logs:
        follower._save("g1")
    assert [e["event"] for e in logs] == ["kept checkpoints saved again"]
    assert follower._unsaved == set()
    assert "cp1" in json.loads((tmp_path / "g1" / "kept.json").read_text())
