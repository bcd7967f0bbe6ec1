"""Chunk ids: xxh3-128 of the uncompressed bytes, as 16 raw bytes (hex for display).

Pure: no I/O. xxh3-128 detects accidents, not attackers (see README, "Trust model").
"""

from __future__ import annotations

import xxhash

HASH_NAME = "xxh3-128"
ID_SIZE = 16

_digest = xxhash.xxh3_128_digest


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """Return the 16-byte id of ``data``."""
    return _digest(data)


def hasher() -> xxhash.xxh3_128:
    """An incremental xxh3-128 hasher, for digests of streams of records."""
    return xxhash.xxh3_128()


def hex_id(raw: bytes) -> str:
    """Render a 16-byte id as 32 hex characters."""
    return raw.hex()


def parse_id(text: str) -> bytes:
    """Parse a 32-hex-character id; raise ``ValueError`` otherwise."""
    if len(text) != 2 * ID_SIZE:
        raise ValueError(f"an id has {2 * ID_SIZE} hex characters, got {len(text)}: {text!r}")
    return bytes.fromhex(text)
