"""Where a journal process stands in the partitions it indexes, against Postgres, the authority.

Several journal processes may share a group's partitions (`TAPSTREAM_JOURNAL_SHARE_PARTITIONS`:
the consumer group tapstream-journal-index assigns them). Postgres holds each partition's next
offset, written in the transaction that writes its rows, so the index holds each event once. A
process writes a batch only if the stored offset of each of its partitions is still the one it last
read or wrote (optimistic concurrency, store.write's `expect`): if another process moved it (that
process owns the partition now, and this one missed the revocation, say after a long stall), the
whole batch is rolled back and this process reads again from what is stored, if it still owns the
partition. Pure: no Kafka, no Postgres.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Part = tuple[str, int]  # (topic, partition)


class Positions:
    """The stored next offset this process expects for each partition it owns (None: no row yet,
    the partition is read from its beginning)."""

    def __init__(self) -> None:
        self._expected: dict[Part, int | None] = {}

    def assign(self, parts: Iterable[Part], stored: Mapping[int, int]) -> dict[Part, int | None]:
        """Partitions assigned, with Postgres's offsets of their topic (by partition): where each
        is to be read from (None: its beginning)."""
        for topic, p in parts:
            self._expected[(topic, p)] = stored.get(p)
        return dict(self._expected)

    def revoke(self, parts: Iterable[Part]) -> None:
        for part in parts:
            self._expected.pop((part[0], part[1]), None)

    def owns(self, part: Part) -> bool:
        return (part[0], part[1]) in self._expected

    @property
    def owned(self) -> set[Part]:
        return set(self._expected)

    def expect(self, parts: Iterable[Part]) -> dict[Part, int | None]:
        """What the stored offsets must still be for a batch of these partitions to be written."""
        return {(t, p): self._expected.get((t, p)) for t, p in parts}

    def wrote(self, offsets: Mapping[Part, int]) -> None:
        """A batch committed: these are the stored offsets now."""
        for part, offset in offsets.items():
            if part in self._expected:
                self._expected[part] = offset
