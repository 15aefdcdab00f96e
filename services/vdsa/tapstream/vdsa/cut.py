"""The checkpoint agreement's decision logic, without I/O (see DESIGN §5).

Round: PREPARE sent -> every live tapper of the group answers PREPARED (it now holds completions)
-> COMMIT with one cut time. Any tapper missing at the deadline -> ABORT.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LiveTappers:
    """Tappers seen by their ANNOUNCE commands, per group, with the time of the last one."""

    window_us: int
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> sender -> ts
    volumes: dict[str, dict[str, list[str]]] = field(
        default_factory=dict
    )  # group -> sender -> volumes

    def announce(self, group: str, sender: str, ts: int, volumes: list[str]) -> None:
        self.seen.setdefault(group, {})[sender] = ts
        self.volumes.setdefault(group, {})[sender] = volumes

    def live(self, group: str, now_us: int) -> set[str]:
        return {s for s, ts in self.seen.get(group, {}).items() if now_us - ts <= self.window_us}


@dataclass
class Round:
    checkpoint_id: str
    group: str
    expected: frozenset[str]
    prepared: set[str] = field(default_factory=set)

    def on_prepared(self, sender: str) -> None:
        if sender in self.expected:
            self.prepared.add(sender)

    @property
    def complete(self) -> bool:
        return bool(self.expected) and self.prepared >= self.expected

    def missing(self) -> set[str]:
        return set(self.expected - self.prepared)
