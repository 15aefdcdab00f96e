"""check_request: the NBD error a transmission request earns before it touches the disk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from tapstream.tapper.protocol.transmission import check_request

MiB = 1 << 20
SIZE = 16 * MiB
BLOCKS = BlockSizes(512, 4096, 32 * MiB)


def check(typ: int, offset: int, length: int, flags: int = 0, aligned: bool = False) -> int:
    return check_request(Request(flags, typ, 1, offset, length), SIZE, aligned, BLOCKS)


@pytest.mark.parametrize(
    ("typ", "offset", "length", "flags", "aligned", "error"),
    [
        (Cmd.READ, 0, 4096, 0, True, 0),
        (Cmd.WRITE, SIZE - 512, 512, CMD_FLAG_FUA, True, 0),
        (Cmd.WRITE_ZEROES, 0, SIZE, CMD_FLAG_NO_HOLE | CMD_FLAG_FUA, False, 0),
        (Cmd.TRIM, 4096, 100, 0, True, 0),  # alignment is asked of READ and WRITE only
        (Cmd.FLUSH, 0, 0, CMD_FLAG_FUA, False, 0),  # FUA is accepted on any command
        (Cmd.FLUSH, 0, 512, 0, False, Err.EINVAL),
        (Cmd.FLUSH, 512, 0, 0, False, Err.EINVAL),
        (Cmd.CACHE, 0, 512, 0, False, Err.EINVAL),  # not offered
        (Cmd.BLOCK_STATUS, 0, 512, 0, False, Err.EINVAL),
        (42, 0, 512, 0, False, Err.EINVAL),
        (Cmd.WRITE, 0, 512, CMD_FLAG_NO_HOLE, False, Err.EINVAL),  # WRITE_ZEROES only
        (Cmd.READ, 0, 512, CMD_FLAG_DF, False, Err.EINVAL),  # not advertised
        (Cmd.READ, 0, 512, CMD_FLAG_REQ_ONE, False, Err.EINVAL),
        (Cmd.WRITE_ZEROES, 0, 512, CMD_FLAG_FAST_ZERO, False, Err.EINVAL),
        (Cmd.WRITE, 0, 512, 1 << 9, False, Err.EINVAL),  # an unknown flag
        (Cmd.READ, 0, 32 * MiB + 1, 0, False, Err.EOVERFLOW),
        (Cmd.WRITE, 0, 32 * MiB + 1, 0, False, Err.EINVAL),  # its payload is skipped
        (Cmd.READ, 0, 0, 0, False, Err.EINVAL),
        (Cmd.WRITE_ZEROES, 512, 0, 0, False, Err.EINVAL),
        (Cmd.READ, 3, 100, 0, True, Err.EINVAL),
        (Cmd.WRITE, 512, 100, 0, True, Err.EINVAL),
        (Cmd.READ, 3, 100, 0, False, 0),  # the client did not learn our block sizes
        (Cmd.READ, SIZE - 512, 1024, 0, False, Err.EINVAL),
        (Cmd.TRIM, SIZE, 512, 0, False, Err.EINVAL),
        (Cmd.WRITE, SIZE - 512, 1024, 0, False, Err.ENOSPC),
        (Cmd.WRITE_ZEROES, SIZE, 512, 0, False, Err.ENOSPC),
        (Cmd.WRITE, 2**64 - 512, 1024, 0, False, Err.ENOSPC),  # no wrap-around
    ],
)
def test_check_request(
    typ: int, offset: int, length: int, flags: int, aligned: bool, error: int
) -> None:
    assert check(typ, offset, length, flags, aligned) == error


REQUESTS = st.builds(
    Request,
    st.integers(0, 0xFFFF),
    st.integers(0, 12),
    st.integers(0, 2**64 - 1),
    st.one_of(st.integers(0, SIZE), st.integers(0, 2**64 - 1)),
    st.integers(0, 2**32 - 1),
)


@given(REQUESTS, st.booleans())
def test_an_accepted_request_is_served_and_inside_the_volume(req: Request, aligned: bool) -> None:
    """Whatever a client sends: the answer is 0 or an NBD error, and 0 only for a served command
    with known flags that lies inside the volume (FLUSH: none) and fits the maximum payload."""
    error = check_request(req, SIZE, aligned, BLOCKS)
    assert error in (0, Err.EINVAL, Err.ENOSPC, Err.EOVERFLOW)
    if error:
        return
    assert req.type in (Cmd.READ, Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.WRITE_ZEROES)
    assert not req.flags & ~(CMD_FLAG_FUA | CMD_FLAG_NO_HOLE)
    if req.type == Cmd.FLUSH:
        assert req.offset == req.length == 0
    else:
        assert 0 < req.length and req.offset + req.length <= SIZE
    if req.type in (Cmd.READ, Cmd.WRITE):
        assert req.length <= BLOCKS.maximum
        assert not aligned or (req.offset % 512 == 0 and req.length % 512 == 0)
