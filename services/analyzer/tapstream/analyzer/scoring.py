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
high-entropy-looking but structured data, and its byte histogram must pass a chi-square test of
uniformity (ciphertext does; JPEG and a share of deflate/zstd blocks do not).

Two more block features (issue 16), read from the block's byte histogram:

* *encoded*: low entropy at sector level, printable bytes only, and nearly uniform over the few
  symbols it uses (base64 or hex of ciphertext: entropy within 0.3 bits of log2(symbols); text and
  source sit 1.3-1.8 bits below it). Text turned encoded in place is evidence like low -> high.
* a fully high block that starts with a compressed or encrypted *container* format's header
  (`MAGIC`) opens a run: the blocks right after it are the same file's body (ext4 allocates a
  file's blocks contiguously), so they are not evidence either (window.py keeps the runs).
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
    b"age-encryption.org/v1",  # age-encrypted file (backups)
    b"-----BEGIN PGP MESSAGE",  # armored OpenPGP
    b"LUKS\xba\xbe",  # LUKS container (disk encryption set up in a file)
    b"QFI\xfb",  # qcow2 (compressed clusters)
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
    uniform_chi2: float = 330.0  # df 255: random bytes exceed it with p ~ 0.001
    encoded_gap_bits: float = 0.3  # log2(symbols) - entropy below this: uniform over its alphabet


@dataclass(frozen=True, slots=True)
class BlockScore:
    """One written 4 KiB block: its high-sector mask, and whether it is zero / a format start."""

    index: int  # block number in the volume
    mask: int  # bit i set: sector i is high-entropy
    zero: bool
    magic: bool
    incompressible: bool
    encoded: bool = False  # printable, nearly uniform over a small alphabet (base64/hex)
    uniform: bool = True  # byte histogram passes chi-square for random bytes (full-high only)
    # A file's last block: ciphertext-like in every sector that is not all zeroes (the tail of a
    # small file padded with zeroes), at least `min_turned_sectors` of them
    padded_high: bool = False


class Verdict(IntEnum):
    """How one block write reads against what the block held before."""

    ZERO = 0  # zeroes written: benign (delete, trim)
    PLAIN = 1  # data, no evidence
    FRESH_HIGH = 2  # high entropy into a block never seen or zero: weak evidence (new files)
    SUSPICIOUS = 3  # low sectors turned high, or text turned encoded: looks encrypted
    FORMAT = 4  # a compressed/encrypted container's header: opens a run of its body


_ZSTD = zstandard.ZstdCompressor(level=1)
_ZERO_BLOCK = bytes(BLOCK)


# Bytes that never occur in base64, hex or text: any of them rules out a text-safe encoding.
_TEXT_BYTES = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_NOT_TEXT = np.array([b not in _TEXT_BYTES for b in range(256)])
_NLOGN_BLOCK = np.zeros(BLOCK + 1)
_NLOGN_BLOCK[1:] = np.arange(1, BLOCK + 1) * np.log2(np.arange(1, BLOCK + 1))


def _sector_counts(data: bytes) -> np.ndarray:
    """Byte histogram of each 512-byte sector, shape (sectors, 256)."""
    a = np.frombuffer(data, dtype=np.uint8).reshape(-1, SECTOR)
    rows = a.shape[0]
    # One bincount for all sectors: sector r's byte b lands in bin r*256+b.
    idx = (np.arange(rows, dtype=np.int32)[:, None] * 256 + a).ravel()
    return np.bincount(idx, minlength=rows * 256).reshape(rows, 256)


def _entropies(counts: np.ndarray, n: int) -> np.ndarray:
    """Shannon entropy (bits/byte) of each row of byte `counts` that sums to `n`."""
    table = _NLOGN if n == SECTOR else _NLOGN_BLOCK
    return np.log2(n) - table[counts].sum(axis=1) / n


def sector_entropies(data: bytes) -> np.ndarray:
    """Shannon entropy (bits/byte) of each 512-byte sector of `data` (len a multiple of 512)."""
    return _entropies(_sector_counts(data), SECTOR)


def _sectors(block: bytes, mask: int) -> bytes:
    return b"".join(block[i * SECTOR : (i + 1) * SECTOR] for i in range(SECTORS) if mask >> i & 1)


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
    sector_counts = _sector_counts(view)
    high = _entropies(sector_counts, SECTOR) >= t.high_sector_entropy
    masks = np.packbits(high.reshape(whole, SECTORS), axis=1, bitorder="little")[:, 0]
    counts = sector_counts.reshape(whole, SECTORS, 256).sum(axis=1)  # per block
    chi2 = ((counts - BLOCK / 256) ** 2).sum(axis=1) / (BLOCK / 256)
    symbols = (counts > 0).sum(axis=1)
    gap = np.log2(np.maximum(symbols, 1)) - _entropies(counts, BLOCK)
    printable = counts[:, _NOT_TEXT].sum(axis=1) == 0
    encoded = printable & (symbols >= 16) & (symbols <= 70) & (gap < t.encoded_gap_bits)
    zero_sectors = np.packbits(
        (sector_counts[:, 0] == SECTOR).reshape(whole, SECTORS), axis=1, bitorder="little"
    )[:, 0]
    out = []
    for i in range(whole):
        block = view[i * BLOCK : (i + 1) * BLOCK]
        mask = int(masks[i])
        zero = mask == 0 and block == _ZERO_BLOCK
        padded = (
            mask != FULL
            and mask | int(zero_sectors[i]) == FULL
            and bin(mask).count("1") >= t.min_turned_sectors
            and compress_ratio(_sectors(block, mask)) >= t.incompressible_ratio
        )
        out.append(
            BlockScore(
                index=first + i,
                mask=mask,
                zero=zero,
                magic=not zero and block.startswith(MAGIC),
                incompressible=mask == FULL and compress_ratio(block) >= t.incompressible_ratio,
                encoded=mask == 0 and bool(encoded[i]),
                uniform=bool(chi2[i] < t.uniform_chi2),
                padded_high=padded,
            )
        )
    return out


def judge(
    score: BlockScore,
    prior: Prior,
    prior_mask: int,
    t: Thresholds = Thresholds(),
    prior_encoded: bool = False,
) -> Verdict:
    """The verdict on one block write, given what the block held before (the window decides
    whether a high block continues a container's run)."""
    if score.zero:
        return Verdict.ZERO
    if score.magic:
        return Verdict.FORMAT
    if score.encoded:
        # Ciphertext in base64/hex over text (not over what was encoded already) is evidence.
        if prior == Prior.DATA and prior_mask == 0 and not prior_encoded:
            return Verdict.SUSPICIOUS
        return Verdict.PLAIN
    if score.mask == 0:
        return Verdict.PLAIN
    if score.mask == FULL and not (score.incompressible and score.uniform):
        return Verdict.PLAIN
    if prior != Prior.DATA:
        fresh = score.mask == FULL or score.padded_high
        return Verdict.FRESH_HIGH if fresh else Verdict.PLAIN
    turned = bin(score.mask & ~prior_mask & FULL).count("1")
    return Verdict.SUSPICIOUS if turned >= t.min_turned_sectors else Verdict.PLAIN
