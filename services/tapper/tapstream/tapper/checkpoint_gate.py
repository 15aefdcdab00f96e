"""Holding NBD completions for a checkpoint cut (see DESIGN §5).

While a group's gate is held, requests of its volumes still execute and publish, but their replies
wait. A write whose reply was sent before the hold is therefore in the stream before the marker;
a write issued after a held reply cannot exist, so no checkpoint holds W2 without W1.
"""

from __future__ import annotations

import asyncio


class GroupGate:
    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.holder: str | None = None

    @property
    def held(self) -> bool:
        return not self._open.is_set()

    def hold(self, checkpoint_id: str) -> bool:
        """Hold completions for `checkpoint_id`; False if another checkpoint holds the gate."""
        if self.held:
            return self.holder == checkpoint_id
        self.holder = checkpoint_id
        self._open.clear()
        return True

    def release(self, checkpoint_id: str | None = None) -> None:
        if checkpoint_id is None or checkpoint_id == self.holder:
            self.holder = None
            self._open.set()

    async def passed(self) -> None:
        """Return once completions may be sent."""
        if not self._open.is_set():
            await self._open.wait()
