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
