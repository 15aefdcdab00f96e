"""Block scoring against what the block held before: pure, milliseconds."""

from __future__ import annotations

import gzip
import os
import random

from tapstream.analyzer.block_memory import Region, region_of, zero_range
from tapstream.analyzer.scoring import (
    BLOCK,
    FULL,
    Prior,
    Verdict,
    compress_ratio,
    entropy,
    judge,
    score_write,
    sector_entropies,
)

TEXT = (b"def f(x):\n    return x * 2  # a comment about the code\n" * 200)[: 4 * BLOCK]


def aes_like(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def test_entropy_of_text_random_and_zero() -> None:
    assert entropy(bytes(4096)) == 0.0
    assert entropy(TEXT[:4096]) < 5
    assert entropy(os.urandom(4096)) > 7.9
    sectors = sector_entropies(os.urandom(BLOCK) + TEXT[:BLOCK])
    assert all(s > 7.2 for s in sectors[:8]) and all(s < 5 for s in sectors[8:])


def test_compressibility_separates_text_from_random() -> None:
    assert compress_ratio(TEXT[:BLOCK]) < 0.3
    assert compress_ratio(os.urandom(BLOCK)) > 0.98


def test_score_write_covers_only_whole_blocks() -> None:
    scores = score_write(100, os.urandom(3 * BLOCK))  # blocks 1 and 2 whole, 0 and 3 partial
    assert [s.index for s in scores] == [1, 2]
    assert all(s.mask == FULL and s.incompressible for s in scores)
    assert score_write(0, bytes(BLOCK))[0].zero


def test_text_overwritten_with_ciphertext_is_suspicious() -> None:
    (s,) = score_write(0, aes_like(BLOCK))
    assert judge(s, Prior.DATA, 0) == Verdict.SUSPICIOUS


def test_high_over_high_is_not_evidence() -> None:
    (s,) = score_write(0, aes_like(BLOCK))
    assert judge(s, Prior.DATA, FULL) == Verdict.PLAIN


def test_first_seen_and_zero_blocks_are_fresh_not_suspicious() -> None:
    (s,) = score_write(0, aes_like(BLOCK))
    assert judge(s, Prior.UNKNOWN, 0) == Verdict.FRESH_HIGH
    assert judge(s, Prior.ZERO, 0) == Verdict.FRESH_HIGH


def test_compressed_file_start_is_a_format_header_even_over_text() -> None:
    gz = gzip.compress(os.urandom(2 * BLOCK))[:BLOCK]
    (s,) = score_write(0, gz)
    assert s.magic and judge(s, Prior.DATA, 0) == Verdict.FORMAT


def test_base64_and_hex_of_ciphertext_over_text_are_suspicious_not_over_themselves() -> None:
    import base64
    import binascii

    for encode in (base64.encodebytes, binascii.hexlify):
        (s,) = score_write(0, encode(aes_like(4 * BLOCK))[:BLOCK])
        assert s.encoded and s.mask == 0
        assert judge(s, Prior.DATA, 0) == Verdict.SUSPICIOUS
        assert judge(s, Prior.DATA, 0, prior_encoded=True) == Verdict.PLAIN
        assert judge(s, Prior.ZERO, 0) == Verdict.PLAIN  # a new base64 file: attachments, keys
    for text in (TEXT[:BLOCK], (b"2026-12-02 GET /api/v1/items 200 12ms user=42\n" * 100)[:BLOCK]):
        (t,) = score_write(0, text)
        assert not t.encoded and judge(t, Prior.DATA, 0) == Verdict.PLAIN


def test_a_non_uniform_histogram_is_not_ciphertext() -> None:
    """JPEG-like data: high entropy per sector and incompressible, but far from uniform bytes."""
    rnd = random.Random(7)
    skewed = bytes(min(255, int(rnd.expovariate(1 / 90))) for _ in range(BLOCK))
    (s,) = score_write(0, skewed)
    (r,) = score_write(0, aes_like(BLOCK))
    assert r.uniform and not s.uniform
    assert judge(s, Prior.DATA, 0) == Verdict.PLAIN or s.mask != FULL


def test_partial_block_encryption_turns_sectors() -> None:
    block = aes_like(1024) + TEXT[1024:BLOCK]  # the first 1 KiB of the file encrypted
    (s,) = score_write(0, block)
    assert s.mask == 0b11 and judge(s, Prior.DATA, 0) == Verdict.SUSPICIOUS
    one = aes_like(512) + TEXT[512:BLOCK]
    (s1,) = score_write(0, one)
    assert judge(s1, Prior.DATA, 0) == Verdict.PLAIN  # below min_turned_sectors


def test_text_rewritten_with_text_is_plain_and_zeroes_are_zero() -> None:
    (s,) = score_write(0, TEXT[BLOCK : 2 * BLOCK])
    assert judge(s, Prior.DATA, 0) == Verdict.PLAIN
    (z,) = score_write(0, bytes(BLOCK))
    assert judge(z, Prior.DATA, 0) == Verdict.ZERO


def test_region_memory_round_trips() -> None:
    r = Region()
    assert r.get(5) == (Prior.UNKNOWN, 0)
    r.set_data(5, 0b1010)
    r.set_data(6, 0, encoded=True)
    r.set_zero(300)  # block 300 is block 44 of region 1; same cell math
    again = Region(r.packed())
    assert again.get(5) == (Prior.DATA, 0b1010) and again.get(300) == (Prior.ZERO, 0)
    assert again.get(6) == (Prior.DATA, 0) and again.encoded(6) and not again.encoded(5)
    assert region_of(255) == 0 and region_of(256) == 1
    assert list(zero_range(100, 3 * BLOCK)) == [1, 2]
