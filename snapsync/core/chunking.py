"""Split bytes into chunks: whole small files, FastCDC 2020 for large ones.

Pure: works on any buffer (bytes, memoryview, mmap); the caller owns the I/O. The parameters
live in the store config (``ChunkerParams.to_dict``), never as scattered constants, so a store
keeps chunking the way it was created even when the defaults change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from pyfastcdc import FastCDC

from snapsync.errors import FormatError

CHUNKER_NAME = "fastcdc2020"


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
    def from_dict(cls, data: dict[str, Any]) -> ChunkerParams:
        if data.get("name") != CHUNKER_NAME:
            raise FormatError(f"unknown chunker {data.get('name')!r} (this snapsync knows "
                              f"{CHUNKER_NAME!r})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise FormatError(f"bad chunker parameters {data!r}: {exc}") from None


class Chunker:
    """Reusable cutter for one parameter set. Not thread-safe: use one per thread."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,
        )

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
