"""What a rebalance of the recovery VDSA's consumer group does to the state it keeps per volume.

Several VDSA processes share the partitions of a group's write topic through the consumer group
`tapstream-vdsa-apply`. A volume's records all go to one partition (its key), so whoever owns the
partition applies the volume. The replica's saved position is the authority, never what a process
remembers: a process that loses a partition first persists what it applied (the group's committed
offset is never past a saved position), then forgets every volume read from it (descriptor,
cursor, hold, resume timers); a process that gains one loads each of its volumes from the saved
position when its first record arrives, and the records at or below that position that the
partition delivers again are skipped by the cursor. A kept checkpoint holds again by itself: the
offset committed for a held partition is its marker's, so the new owner reads the marker again.

Pure: this module decides, apply.py does the I/O. A partition is (topic, partition), which is what
aiokafka's TopicPartition (a named tuple) compares equal to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

Part = tuple[str, int]  # (topic, partition)
Key = tuple[str, str]  # (group, volume)


def part(topic: str, partition: int) -> Part | None:
    """The partition a saved position names; None when it names none (nothing applied yet)."""
    return (topic, partition) if partition >= 0 else None


@dataclass(frozen=True)
class Released:
    """A volume this process let go at a revocation, with what its own gauges still say of it: if
    its partition goes to another process, they go to 0 here (the new owner sets them)."""

    part: Part | None
    halt_reason: str | None = None
    held: bool = False
    io_failing: bool = False


@dataclass(frozen=True)
class Revocation:
    release: frozenset[Key]  # flush, then forget
    held: dict[Part, set[Key]]  # the held partitions that stay
    cancel: frozenset[Part]  # resume timers that must not fire


@dataclass(frozen=True)
class Assignment:
    release: frozenset[Key]  # loaded, but another process owns their partition
    load: frozenset[Key]  # halted replicas to load now (known before any record of theirs)
    gone: frozenset[Key]  # let go and not ours again: this process's gauges for them go to 0


def on_revoke(
    where: Mapping[Key, Part | None],
    held: Mapping[Part, Set[Key]],
    timers: Iterable[Part],
    revoked: Iterable[Part],
) -> Revocation:
    """`where`: the partition each loaded volume is read from (None: not known yet, e.g. a halted
    replica saved by an older version); `held`: the partitions paused for a kept checkpoint."""
    gone = {tuple(p) for p in revoked}
    return Revocation(
        release=frozenset(k for k, p in where.items() if p is not None and p in gone),
        held={p: set(keys) for p, keys in held.items() if p not in gone},
        cancel=frozenset(p for p in timers if p in gone),
    )


def on_assign(
    where: Mapping[Key, Part | None],
    released: Mapping[Key, Released],
    halted_on_disk: Mapping[Key, Part | None],
    assigned: Iterable[Part],
) -> Assignment:
    """`released`: what earlier revocations let go; `halted_on_disk`: every halted replica of our
    groups with the partition its saved position names. A halted replica whose partition is not
    known is loaded by every process (as a single one always did): its gauge and resync requests
    then come from each, never from none."""
    mine = {tuple(p) for p in assigned}
    release = frozenset(k for k, p in where.items() if p is not None and p not in mine)
    load = frozenset(
        k for k, p in halted_on_disk.items() if (p is None or p in mine) and k not in where
    )
    gone = {k for k, r in released.items() if r.part is not None and r.part not in mine}
    return Assignment(release=release, load=load, gone=frozenset(gone | release))
