"""Split bytes into chunks: whole small files, FastCDC 2020 for large ones.

Pure: works on any buffer (bytes, memoryview, mmap); the caller owns the I/O. The parameters
live in the store config (``ChunkerParams.to_dict``), never as scattered constants, so a store
keeps chunking the way it was created even when the defaults change.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from snapsync.errors import FormatError

CHUNKER_NAME = "fastcdc2020"
MAX_THRESHOLD = 64 << 20  # a whole file below it is one chunk, and chunks are at most 64 MiB


@dataclass(frozen=True)
class ChunkerParams:
    """How files are cut. Files up to ``threshold`` bytes are one chunk.

    pyfastcdc's mean chunk is about ``avg + min`` (docs/design.md, "Bounds"), so the defaults
    give chunks of roughly 1 MiB on average, between 256 KiB and 4 MiB.
    """

    threshold: int = 1 << 20
    min_size: int = 256 << 10
    avg_size: int = 768 << 10
    max_size: int = 4 << 20
    normalization: int = 1
    name: str = CHUNKER_NAME

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "store config") -> ChunkerParams:
        """Parse the config's ``chunker`` object; anything FastCDC cannot use is refused."""
        if not isinstance(data, dict):
            raise FormatError(f"{where}: chunker must be a JSON object, got "
                              f"{type(data).__name__}")
        if data.get("name") != CHUNKER_NAME:
            raise FormatError(f"{where}: unknown chunker {data.get('name')!r} (this snapsync "
                              f"knows {CHUNKER_NAME!r})")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise FormatError(f"{where}: unknown chunker parameter(s) {', '.join(unknown)}")
        for key in ("threshold", "min_size", "avg_size", "max_size", "normalization"):
            v = data.get(key, getattr(cls, key))
            if type(v) is not int:
                raise FormatError(f"{where}: chunker {key} must be an integer, got {v!r}")
        params = cls(**data)
        if not 0 <= params.normalization <= 3:
            raise FormatError(f"{where}: chunker normalization must be 0 to 3, got "
                              f"{params.normalization}")
        if not 1 <= params.threshold <= MAX_THRESHOLD:
            raise FormatError(f"{where}: chunker threshold must be 1 to {MAX_THRESHOLD} bytes, "
                              f"got {params.threshold}")
        if not params.min_size <= params.avg_size <= params.max_size:
            raise FormatError(f"{where}: chunker sizes must satisfy min_size <= avg_size <= "
                              f"max_size, got {params.min_size}, {params.avg_size}, "
                              f"{params.max_size}")
        if params == cls(name=params.name):
            return params  # the defaults: usable, and no pyfastcdc import (~14 ms) to say so
        from pyfastcdc import FastCDC

        try:  # FastCDC's own ranges (min 64 B..1 MiB, avg 256 B..4 MiB, max 1 KiB..16 MiB)
            FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size,
                    normalized_chunking=params.normalization)
        except (ValueError, TypeError, OverflowError) as exc:
            raise FormatError(f"{where}: chunker parameters unusable: {exc}") from None
        return params


class Chunker:
    """Reusable cutter for one parameter set. Not thread-safe: use one per thread."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params
        self._cdc_: Any = None
        self._buf: mmap.mmap | None = None  # cut_readinto's window, made at its first use

    @property
    def _cdc(self) -> Any:
        # Built at the first large file: a push or pull of small files never imports
        # pyfastcdc (~14 ms of start-up).
        if self._cdc_ is None:
            from pyfastcdc import FastCDC

            self._cdc_ = FastCDC(
                self.params.avg_size,
                min_size=self.params.min_size,
                max_size=self.params.max_size,
                normalized_chunking=self.params.normalization,
            )
        return self._cdc_

    def cut(self, buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Yield the chunks of ``buf`` as zero-copy memoryviews, in order."""
        view = memoryview(buf)
        if len(view) <= self.params.threshold:
            if len(view):
                yield view
            return
        for chunk in self._cdc.cut_buf(view):
            yield chunk.data

    def cut_stream(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Yield the chunks of a large file object with FastCDC, whatever its size.

        Each view is only valid until the next one is produced (pyfastcdc reuses its buffer
        with ``readinto``); memory stays at a few ``max_size`` buffers for any file size.
        """
        for chunk in self._cdc.cut_stream(stream):
            yield chunk.data

    def release(self) -> None:
        """Drop :meth:`cut_readinto`'s window (made again if needed)."""
        self._buf = None

    def cut_readinto(self, readinto: Callable[[memoryview], int]) -> Iterator[memoryview]:
        """Yield the chunks of a large file with FastCDC, reading it through ``readinto``.

        The same cut points as :meth:`cut_stream` (a cut depends only on the bytes from its
        chunk's start, so only a chunk that ends where the data read so far ends is cut
        again once more is read), read into one window kept by this chunker for every file:
        an anonymous ``mmap`` of ``max_size + 1 MiB``, so no per-file buffer (pyfastcdc's
        stream makes a fresh ``2 x max_size`` bytearray per file) churns through the heap.
        ``readinto(view)`` fills some of ``view`` and returns the count, 0 at the end. Each
        view is only valid until the next one is produced.
        """
        if self._buf is None:
            self._buf = mmap.mmap(-1, self.params.max_size + (1 << 20))
        win = self._buf
        view = memoryview(win)
        cap = len(win)
        filled, eof = 0, False
        while True:
            while not eof and filled < cap:
                got = readinto(view[filled:])
                if got == 0:
                    eof = True
                filled += got
            start = 0
            chunk = data = None
            for chunk in self._cdc.cut_buf(view[:filled]):
                data = chunk.data
                end = start + len(data)
                if end == filled and not eof:
                    break  # it may grow with the next bytes: cut again after a refill
                yield data
                start = end
            del chunk, data
            if eof:
                return
            win.move(0, start, filled - start)
            filled -= start
