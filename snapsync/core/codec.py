"""Chunk codec: a one-byte header, then the payload (raw or zstd).

Pure: no I/O. Compressors are reused per thread because building one costs ~10x a small
compress call (docs/design.md, "Bounds"). A chunk that zstd does not shrink is stored raw.
"""

from __future__ import annotations

import threading

import zstandard

from snapsync.core.hashing import chunk_id
from snapsync.errors import IntegrityError

CODEC_NAME = "zstd"
RAW = 0
ZSTD = 1
RAW_TAG = bytes([RAW])  # a stored blob is one of these tags, then the payload
ZSTD_TAG = bytes([ZSTD])


class Codec:
    """Encode and decode stored chunk blobs at one zstd level; safe to share between threads."""

    def __init__(self, level: int = 3) -> None:
        if not -7 <= level <= 22:
            raise ValueError(f"zstd level must be between -7 and 22, got {level}")
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "c", None)
        if comp is None:
            comp = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "d", None)
        if dec is None:
            dec = self._local.d = zstandard.ZstdDecompressor()
        return dec

    def encode(self, data: bytes | memoryview) -> bytes:
        """Return the stored form of ``data``: header byte plus zstd or raw payload."""
        packed = self._compressor().compress(data)
        if len(packed) < len(data):
            return ZSTD_TAG + packed
        return RAW_TAG + bytes(data)

    def decode(self, blob: bytes | memoryview, raw_size: int, expect_id: bytes) -> bytes:
        """Decode a stored blob and check it is ``raw_size`` bytes hashing to ``expect_id``.

        ``raw_size`` bounds the allocation, so a hostile blob cannot ask for unbounded memory.
        """
        view = memoryview(blob)
        if not len(view):
            raise IntegrityError(f"chunk {expect_id.hex()}: empty blob")
        tag = view[0]
        if tag == RAW:
            data = bytes(view[1:])
        elif tag == ZSTD:
            try:
                data = self._decompressor().decompress(view[1:], max_output_size=raw_size)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"chunk {expect_id.hex()}: zstd data is corrupt ({exc})")\
                    from None
        else:
            raise IntegrityError(f"chunk {expect_id.hex()}: unknown codec tag {tag}")
        if len(data) != raw_size:
            raise IntegrityError(
                f"chunk {expect_id.hex()}: {len(data)} bytes where {raw_size} were recorded")
        if chunk_id(data) != expect_id:
            raise IntegrityError(f"chunk {expect_id.hex()}: content does not match its id")
        return data

    def compress_blob(self, data: bytes, level: int | None = None) -> bytes:
        """Plain zstd compression for manifests and other metadata objects."""
        if level is None or level == self.level:
            return self._compressor().compress(data)
        return zstandard.ZstdCompressor(level=level).compress(data)

    def decompress_blob(self, data: bytes, what: str, limit: int = 1 << 31) -> bytes:
        """Inverse of :meth:`compress_blob`; ``what`` names the object in errors."""
        try:
            return self._decompressor().decompress(data, max_output_size=limit)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: zstd data is corrupt ({exc})") from None
