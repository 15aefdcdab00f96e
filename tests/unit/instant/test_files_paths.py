"""`tapstream files` never reads outside the checkpoint's filesystem: a guest's symlink to an absolute
path (or ..) would otherwise copy a file of the host that mounted it."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from tapstream.cli.files import _inside


def test_paths_inside_the_filesystem_resolve(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("a")
    (root / "docs" / "rel").symlink_to("a.txt")
    assert _inside(root, "/docs/a.txt") == (root / "docs" / "a.txt").resolve()
    assert _inside(root, "docs/rel") == (root / "docs" / "a.txt").resolve()
    assert _inside(root, "/") == root.resolve()


@pytest.mark.parametrize("path", ["/../secret", "docs/../../secret", "/docs/host", "/docs/up"])
def test_paths_leading_out_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "fs"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "secret").write_text("host")
    (root / "docs" / "host").symlink_to(tmp_path / "secret")  # absolute, as a guest could write
    (root / "docs" / "up").symlink_to("../../secret")
    with pytest.raises(typer.BadParameter):
        _inside(root, path)


def test_views_of_killed_files_commands_are_closed_and_others_kept(tmp_path: Path) -> None:
    """A SIGKILLed `tapstream files` cannot close its preserve session; the next one does, or the
    VDSA would keep every overwritten extent of the replica for it forever."""
    from tapstream.core.settings import TapstreamSettings
    from tapstream.instant.view import close_orphaned_files_views, files_owner_pid

    assert files_owner_pid("files-123-2-abcdef") == 123
    assert files_owner_pid("files-123-abcdef") == 123  # named before one process could hold two
    assert files_owner_pid("test-g1-abcdef") is None  # a failover test's: never ours to close
    views = tmp_path / "g1" / "disk0.views"
    for name in ("files-111-1-aa", "files-222-1-bb", "test-g1-cc"):
        (views / name).mkdir(parents=True)
    (tmp_path / "g1" / "disk0.img").write_bytes(b"")
    s = TapstreamSettings(replica_dir=tmp_path)
    ended = close_orphaned_files_views(s, "g1", alive=lambda pid: pid == 222)
    assert ended == ["files-111-1-aa"]
    assert sorted(p.name for p in views.iterdir()) == ["files-222-1-bb", "test-g1-cc"]
