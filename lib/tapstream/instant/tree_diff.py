"""What changed in a filesystem between two checkpoints: both mounted read-only, walked, compared.

After an encryption alert the first question is "which files": the answer is the difference between
the last clean checkpoint and a later one. Metadata (type, size, modification time, link target)
decides by default; `content=True` also hashes files whose metadata is equal, for tools that restore
the old times after rewriting a file. Pure walking and comparing: no mounts here (filesystem.py).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    kind: str  # file | dir | link | other
    size: int
    mtime_ns: int
    target: str = ""  # a symlink's target


@dataclass(frozen=True)
class Change:
    path: str  # from the filesystem's root, starting with /
    what: str  # added | removed | changed
    before: Entry | None
    after: Entry | None


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def walk(root: Path, under: str = "/") -> dict[str, Entry]:
    """Every entry below `under` (never following symlinks), by its path from the root."""
    start = root / under.lstrip("/")
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            kind = _kind(st.st_mode)
            rel = "/" + full.relative_to(root).as_posix()
            target = os.readlink(full) if kind == "link" else ""
            out[rel] = Entry(kind, st.st_size if kind != "dir" else 0, st.st_mtime_ns, target)
    return out


def digest(path: Path, chunk: int = 1024 * 1024) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _meta_differs(a: Entry, b: Entry) -> bool:
    if a.kind != b.kind or a.target != b.target:
        return True
    if a.kind in ("dir", "link"):
        # A directory "changes" whenever an entry does (its entries say what); a link is its target.
        return False
    return a.size != b.size or a.mtime_ns != b.mtime_ns


def diff(
    before: dict[str, Entry],
    after: dict[str, Entry],
    same_content: Iterator[tuple[str, bool]] | None = None,
) -> list[Change]:
    """Added, removed and changed entries, by path. `same_content` (path, equal) pairs, for files
    whose metadata is equal, mark the ones whose bytes differ all the same."""
    changes = [Change(p, "removed", before[p], None) for p in before.keys() - after.keys()]
    changes += [Change(p, "added", None, after[p]) for p in after.keys() - before.keys()]
    for p in before.keys() & after.keys():
        if _meta_differs(before[p], after[p]):
            changes.append(Change(p, "changed", before[p], after[p]))
    for p, equal in same_content or ():
        if not equal:
            changes.append(Change(p, "changed", before[p], after[p]))
    return sorted(changes, key=lambda c: c.path)


def unchanged_files(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """Regular files present in both with equal metadata: the ones only their bytes can tell apart."""
    return sorted(
        p
        for p in before.keys() & after.keys()
        if before[p].kind == "file" and not _meta_differs(before[p], after[p])
    )


def compare_trees(a: Path, b: Path, under: str = "/", content: bool = False) -> list[Change]:
    """The changes from the tree mounted at `a` to the one at `b`."""
    before, after = walk(a, under), walk(b, under)
    pairs = None
    if content:
        candidates = unchanged_files(before, after)
        pairs = ((p, digest(a / p.lstrip("/")) == digest(b / p.lstrip("/"))) for p in candidates)
    return diff(before, after, pairs)
