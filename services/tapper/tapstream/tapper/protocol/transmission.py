"""Which NBD error a transmission request earns before it touches the disk (pure).

Follows the protocol document's error rules: ENOSPC for writes past the end, EINVAL for reads and
trims past the end, for misaligned requests when the client learnt our block sizes, for unknown
commands and for flags not valid on the command; EOVERFLOW for a payload-less request longer than
the advertised maximum payload (a READ); EINVAL for an oversize WRITE (its payload is skipped so the
stream stays in step).
"""

from __future__ import annotations

from tapstream.tapper.protocol.constants import (
    CMD_FLAG_DF,
    CMD_FLAG_FAST_ZERO,
    CMD_FLAG_FUA,
    CMD_FLAG_NO_HOLE,
    CMD_FLAG_REQ_ONE,
    Cmd,
    Err,
)
from tapstream.tapper.protocol.frames import Request
from tapstream.tapper.protocol.handshake import BlockSizes

SERVED = frozenset((Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.WRITE_ZEROES))
KNOWN_FLAGS = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO


DEFAULT_BLOCKS = BlockSizes()


def check_request(
    req: Request, size: int, aligned: bool, blocks: BlockSizes = DEFAULT_BLOCKS
) -> int:
    """0 if the request may run, else the NBD error to answer it with (DISC is not checked here)."""
    typ, flags, offset, length = req.type, req.flags, req.offset, req.length
    if typ not in SERVED:
        return (
            Err.EINVAL
        )  # unknown, or not offered (CACHE, BLOCK_STATUS without a metadata context)
    # FUA is accepted on every command (clients are known to send it on any); the others only where
    # they mean something and were negotiated. We advertise neither DF nor FAST_ZERO.
    if flags & ~KNOWN_FLAGS or flags & (CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO):
        return Err.EINVAL
    if flags & CMD_FLAG_NO_HOLE and typ != Cmd.WRITE_ZEROES:
        return Err.EINVAL
    if typ == Cmd.FLUSH:
        return Err.EINVAL if offset or length else 0
    if typ == Cmd.READ and length > blocks.maximum:
        return Err.EOVERFLOW
    if typ == Cmd.WRITE and length > blocks.maximum:
        return Err.EINVAL
    if length == 0:
        return Err.EINVAL
    if (
        aligned
        and typ in (Cmd.READ, Cmd.WRITE)
        and (offset % blocks.minimum or length % blocks.minimum)
    ):
        return Err.EINVAL
    if offset + length > size:
        return Err.ENOSPC if typ in (Cmd.WRITE, Cmd.WRITE_ZEROES) else Err.EINVAL
    return 0
