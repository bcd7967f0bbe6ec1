"""Chunk codec: a one-byte header, then the payload (raw or zstd).

Pure: no I/O. Compressors are reused per thread because building one costs ~10x a small
compress call (docs/design.md, "Bounds"). A chunk that zstd does not shrink is stored raw.
"""

from __future__ import annotations

import threading
from typing import Any

import zstandard

from snapsync.core.hashing import chunk_id
from snapsync.errors import IntegrityError, UsageError

CODEC_NAME = "zstd"
MIN_LEVEL, MAX_LEVEL = -7, 22
RAW = 0
ZSTD = 1
RAW_TAG = bytes([RAW])  # a stored blob is one of these tags, then the payload
ZSTD_TAG = bytes([ZSTD])


class Codec:
    """Encode and decode stored chunk blobs at one zstd level; safe to share between threads."""

    def __init__(self, level: int = 3) -> None:
        if type(level) is not int or not MIN_LEVEL <= level <= MAX_LEVEL:
            raise UsageError(f"zstd level must be an integer from {MIN_LEVEL} to {MAX_LEVEL}, "
                             f"got {level!r} (--level)")
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

    def encode_many(self, chunks: list[Any], copy: bool = True) -> list[tuple[bytes, Any]]:
        """:meth:`encode` for a batch, as ``(tag, payload)`` pairs (a blob is their join).

        One call into libzstd for the batch: the GIL is released once for it instead of once
        per chunk, so a thread compressing many small chunks does not make the reading thread
        wait for the GIL at each of its system calls. A raw payload is the chunk itself (not
        copied). ``copy=False``: compressed payloads are views of the batch's one output
        buffer (alive while any view is), for a caller that copies them at once.
        """
        comp = self._compressor()
        multi = getattr(comp, "multi_compress_to_buffer", None)  # the C backend's
        if multi is None or len(chunks) < 2:
            out = []
            for c in chunks:
                packed = comp.compress(c)
                out.append((ZSTD_TAG, packed) if len(packed) < len(c) else (RAW_TAG, c))
            return out
        result = multi(chunks, threads=1)
        pairs: list[tuple[bytes, Any]] = []
        for i, data in enumerate(chunks):
            seg = result[i]
            # Copied out unless asked not to: the batch's output buffer is sized for the worst
            # case (about the input's size), so views kept for long would keep ~4x the
            # compressed bytes alive (push copies them into its pack at once).
            if len(seg) < len(data):
                pairs.append((ZSTD_TAG, seg.tobytes() if copy else memoryview(seg)))
            else:
                pairs.append((RAW_TAG, data))
        return pairs

    def decode(self, blob: bytes | memoryview, raw_size: int, expect_id: bytes,
               copy: bool = True) -> bytes | memoryview:
        """Decode a stored blob and check it is ``raw_size`` bytes hashing to ``expect_id``.

        ``raw_size`` bounds the allocation, so a hostile blob cannot ask for unbounded memory.
        ``copy=False``: a chunk stored raw comes back as a view of ``blob`` (for a caller that
        writes it out at once, while ``blob``'s immutable buffer is alive) instead of a copy.
        """
        view = memoryview(blob)
        if not len(view):
            raise IntegrityError(f"chunk {expect_id.hex()}: empty blob")
        tag = view[0]
        if tag == RAW:
            if len(view) - 1 != raw_size:  # checked before the copy
                raise IntegrityError(f"chunk {expect_id.hex()}: {len(view) - 1} bytes where "
                                     f"{raw_size} were recorded")
            data = bytes(view[1:]) if copy else view[1:]
        elif tag == ZSTD:
            data = self._inflate(view[1:], raw_size, f"chunk {expect_id.hex()}", exact=True)
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
        """Inverse of :meth:`compress_blob`; ``what`` names the object in errors.

        At most ``limit`` bytes come out, however the frame is built: a declared content
        size above it is refused before anything is allocated, and a frame that declares none
        is decoded as a stream that stops past the limit. Only the first frame is read.
        """
        return self._inflate(memoryview(data), limit, what, exact=False)

    def _inflate(self, payload: memoryview, limit: int, what: str, exact: bool) -> bytes:
        """Decompress one zstd frame into at most ``limit`` bytes (exactly ``limit`` if ``exact``).

        python-zstandard's ``decompress(max_output_size=N)`` ignores N when the frame header
        states a content size and allocates what the header asks for, so the header is read
        first: a 40 KB object must not be able to ask for GiBs.
        """
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: zstd data is corrupt ({exc})") from None
        if exact and declared >= 0 and declared != limit:
            raise IntegrityError(f"{what}: zstd frame declares {declared} bytes where {limit} "
                                 "were recorded")
        if declared > limit:
            raise IntegrityError(f"{what}: zstd frame declares {declared} bytes, more than the "
                                 f"{limit} this object may hold")
        dctx = self._decompressor()
        try:
            if declared >= 0:  # one bounded allocation; a truncated frame is an error
                return dctx.decompress(payload, max_output_size=limit)
            # No declared size (a streamed frame): first decode as a stream that stops once
            # the output passes the bound, keeping nothing; then decode for real, knowing the
            # output fits (the stream reader cannot tell a truncated frame from a whole one).
            total = 0
            with dctx.stream_reader(payload, read_size=1 << 16,
                                    read_across_frames=False) as reader:
                while piece := reader.read(min(1 << 20, limit + 1 - total)):
                    total += len(piece)
                    if total > limit:
                        raise IntegrityError(f"{what}: zstd data inflates past the {limit} "
                                             "bytes this object may hold")
            obj = dctx.decompressobj()
            data = obj.decompress(payload)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: zstd data is corrupt ({exc})") from None
        if not obj.eof or len(data) > limit:
            raise IntegrityError(f"{what}: zstd data is corrupt (truncated frame)")
        return data
