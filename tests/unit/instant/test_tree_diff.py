"""The files that changed between two checkpoints: added, removed, rewritten (by metadata, and by
content when a tool put the old times back), never a directory just because an entry in it moved."""

from __future__ import annotations

import os
from pathlib import Path

from tapstream.instant.tree_diff import compare_trees, walk


def tree(root: Path) -> Path:
    (root / "docs" / "old").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "b.txt").write_text("bravo\n")
    (root / "docs" / "old" / "c.txt").write_text("charlie\n")
    (root / "docs" / "link").symlink_to("a.txt")
    return root


def copy_times(src: Path, dst: Path) -> None:
    for p in src.rglob("*"):
        q = dst / p.relative_to(src)
        if q.exists() and not q.is_symlink():
            st = p.stat()
            os.utime(q, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_walk_names_every_entry_from_the_root(tmp_path: Path) -> None:
    w = walk(tree(tmp_path / "a"))
    assert set(w) == {"/docs", "/docs/old", "/docs/a.txt", "/docs/b.txt", "/docs/old/c.txt",
                      "/docs/link"}  # fmt: skip
    assert w["/docs/link"].kind == "link" and w["/docs/link"].target == "a.txt"
    assert w["/docs/a.txt"].size == 6
    assert set(walk(tmp_path / "a", "/docs/old")) == {"/docs/old/c.txt"}


def test_added_removed_and_changed_files(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    copy_times(a, b)
    assert compare_trees(a, b) == []
    (b / "docs" / "a.txt").write_bytes(os.urandom(64))  # encrypted in place
    (b / "docs" / "b.txt").unlink()
    (b / "docs" / "b.txt.locked").write_bytes(os.urandom(64))
    (b / "docs" / "link").unlink()
    (b / "docs" / "link").symlink_to("old/c.txt")
    got = {(c.path, c.what) for c in compare_trees(a, b)}
    assert got == {
        ("/docs/a.txt", "changed"),
        ("/docs/b.txt", "removed"),
        ("/docs/b.txt.locked", "added"),
        ("/docs/link", "changed"),
    }


def test_content_catches_a_rewrite_that_kept_size_and_times(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    (b / "docs" / "old" / "c.txt").write_text("CHARLIE\n")  # same size
    copy_times(a, b)
    assert compare_trees(a, b) == []  # metadata alone cannot see it
    (change,) = compare_trees(a, b, content=True)
    assert (change.path, change.what) == ("/docs/old/c.txt", "changed")
