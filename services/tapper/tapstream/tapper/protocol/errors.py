"""How the tapper answers a transmission request: the `Reply` callback and the NBD error for a
failed local operation (the protocol's errno subset)."""

from __future__ import annotations

import errno
from collections.abc import Callable

from tapstream.tapper.protocol.constants import Err

Reply = Callable[[int, str], None]  # (NBD error, message): 0 means success


def os_error(exc: BaseException) -> int:
    """The NBD error for a failed local operation: ENOSPC for a full disk or quota, else EIO."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return Err.ENOSPC
    return Err.EIO
