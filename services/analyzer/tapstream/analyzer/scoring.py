"""Entropy and compressibility of written blocks, and what a block held before (pure, no I/O).

A volume is seen in 4 KiB blocks (ext4's block size), each cut into eight 512-byte sectors. A
sector is *high* when its byte entropy is near that of random bytes (512 random bytes measure
7.4-7.7 bits/byte; text and source 3.5-5.5; JPEG 6.3-7.6). A block remembers which of its sectors
were high (one byte, `mask`), so an overwrite can be judged against what the block held before:

* low sectors turned high (text -> ciphertext, also when only part of the block is encrypted):
  evidence of encryption, unless the block starts with the magic bytes of a compressed format;
* high -> high (a compressed file rewritten, or encrypted again): no evidence;
* a block never seen, or zero before (a fresh allocation): no evidence by itself, since writing new
  .gz/.zst/.png/.jpg files looks exactly like that; counted apart as `fresh_high`.

A fully high block must also be incompressible (zstd level 1 saves < 2%), which drops
high-entropy-looking but structured data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import zstandard

BLOCK = 4096
SECTOR = 512
SECTORS = BLOCK // SECTOR
FULL = (1 << SECTORS) - 1

# Sector byte counts go up to 512: n*log2(n) looked up instead of computed per sector.
_NLOGN = np.zeros(SECTOR + 1)
_NLOGN[1:] = np.arange(1, SECTOR + 1) * np.log2(np.arange(1, SECTOR + 1))

# File formats whose content is compressed already: a block that starts with one is a file start
# (ext4 starts file data on a block boundary). Encryption leaves no such header behind.
MAGIC: tuple[bytes, ...] = (
    b"\x1f\x8b",  # gzip
    b"\x28\xb5\x2f\xfd",  # zstd
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"PK\x03\x04",  # zip, jar, wheel, docx
    b"\xfd7zXZ\x00",  # xz
    b"BZh",  # bzip2
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"\x04\x22\x4d\x18",  # lz4 frame
    b"RIFF",  # webp, avi, wav
    b"OggS",  # ogg
    b"fLaC",  # flac
    b"ID3",  # mp3
    b"%PDF",  # PDF (compressed streams)
    b"\x00\x00\x00\x18ftyp",  # mp4/heic (box size 24)
    b"\x00\x00\x00\x1cftyp",
    b"\x00\x00\x00\x20ftyp",
)


class Prior(IntEnum):
    """What the analyzer knows about a block before a write."""

    UNKNOWN = 0  # never seen in the stream
    ZERO = 1  # zeroed, trimmed, or written with zeroes
    DATA = 2  # written with data; its high-sector mask is kept


@dataclass(frozen=True, slots=True)
class Thresholds:
    high_sector_entropy: float = 7.2
    incompressible_ratio: float = 0.98
    min_turned_sectors: int = 2


@dataclass(frozen=True, slots=True)
class BlockScore:
    """One written 4 KiB block: its high-sector mask, and whether it is zero / a format start."""

    index: int  # block number in the volume
    mask: int  # bit i set: sector i is high-entropy
    zero: bool
    magic: bool
    incompressible: bool


class Verdict(IntEnum):
    """How one block write reads against what the block held before."""

    ZERO = 0  # zeroes written: benign (delete, trim)
    PLAIN = 1  # data, no evidence
    FRESH_HIGH = 2  # high entropy into a block never seen or zero: not evidence alone
    SUSPICIOUS = 3  # low sectors turned high: looks encrypted


_ZSTD = zstandard.ZstdCompressor(level=1)
_ZERO_BLOCK = bytes(BLOCK)


def sector_entropies(data: bytes) -> np.ndarray:
    """Shannon entropy (bits/byte) of each 512-byte sector of `data` (len a multiple of 512)."""
    a = np.frombuffer(data, dtype=np.uint8).reshape(-1, SECTOR)
    rows = a.shape[0]
    # One bincount for all sectors: sector r's byte b lands in bin r*256+b.
    idx = (np.arange(rows, dtype=np.int32)[:, None] * 256 + a).ravel()
    counts = np.bincount(idx, minlength=rows * 256)
    return np.log2(SECTOR) - _NLOGN[counts].reshape(rows, 256).sum(axis=1) / SECTOR


def entropy(data: bytes) -> float:
    """Shannon entropy of `data` in bits per byte (0 for empty data)."""
    if not data:
        return 0.0
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum())


def compress_ratio(data: bytes) -> float:
    """zstd level-1 size over input size: about 1.0 for random or compressed data, < 0.6 for text."""
    return len(_ZSTD.compress(data)) / len(data) if data else 1.0


def score_write(offset: int, data: bytes, t: Thresholds = Thresholds()) -> list[BlockScore]:
    """Score every whole 4 KiB block that a write covers (partial blocks at the edges are skipped:
    their other bytes are unknown here)."""
    first = -(-offset // BLOCK)
    start = first * BLOCK - offset
    whole = (len(data) - start) // BLOCK if len(data) > start else 0
    if whole <= 0:
        return []
    view = data[start : start + whole * BLOCK]
    high = sector_entropies(view) >= t.high_sector_entropy
    masks = np.packbits(high.reshape(whole, SECTORS), axis=1, bitorder="little")[:, 0]
    out = []
    for i in range(whole):
        block = view[i * BLOCK : (i + 1) * BLOCK]
        mask = int(masks[i])
        zero = mask == 0 and block == _ZERO_BLOCK
        out.append(
            BlockScore(
                index=first + i,
                mask=mask,
                zero=zero,
                magic=mask != 0 and block.startswith(MAGIC),
                incompressible=mask == FULL and compress_ratio(block) >= t.incompressible_ratio,
            )
        )
    return out


def judge(
    score: BlockScore, prior: Prior, prior_mask: int, t: Thresholds = Thresholds()
) -> Verdict:
    """The verdict on one block write, given what the block held before."""
    if score.zero:
        return Verdict.ZERO
    if score.mask == 0 or score.magic:
        return Verdict.PLAIN
    if score.mask == FULL and not score.incompressible:
        return Verdict.PLAIN
    if prior != Prior.DATA:
        return Verdict.FRESH_HIGH if score.mask == FULL else Verdict.PLAIN
    turned = bin(score.mask & ~prior_mask & FULL).count("1")
    return Verdict.SUSPICIOUS if turned >= t.min_turned_sectors else Verdict.PLAIN
