"""Pack objects: many stored chunks in one object, with a trailer that lists them.

Pure: no I/O. Layout (docs/format.md §3):

    blob_0 blob_1 ... blob_n-1  trailer  u32le(len(trailer))  b"SNAPPACK"
    trailer = msgpack([1, ids: bin, offsets, lengths, raw_sizes])

Every pack describes itself, so the store can be checked and rebuilt from packs alone. The pack
id is xxh3-128 of all its bytes.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable

from snapsync.core.hashing import ID_SIZE, chunk_id, hasher
from snapsync.core.manifest import (
    INDEX_ENTRY_MIN_BYTES,
    MAX_CHUNK_SIZE,
    Location,
    decode_json_like,
    encode_json_like,
)
from snapsync.errors import FormatError

PACK_MAGIC = b"SNAPPACK"
PACK_VERSION = 1
_TAIL = struct.Struct("<I8s")
TAIL_SIZE = _TAIL.size  # u32 trailer length + magic, at the very end of every pack


class PackBuilder:
    """Accumulates stored chunk blobs, in place in one buffer, until the pack is big enough.

    The blobs are copied once, into ``buffer`` (an anonymous ``mmap``: pages never written
    cost no memory, so it can be sized for the worst case), and :meth:`seal` hands out a view
    of it: no list of parts and no joined copy. A buffer can be reused for a later pack once
    the view of this one is no longer read (``PackWriter`` recycles them after the upload).
    """

    def __init__(self, buffer: mmap.mmap | None = None,
                 sink: Callable[[memoryview], None] | None = None) -> None:
        self._buf = buffer
        # Streamed (``sink``): the bytes go out in order through ``buffer`` used as a small
        # staging area, hashed on the way; only the trailer's columns stay (seal_streamed).
        self._sink = sink
        self._fill = 0
        self._hash = hasher() if sink is not None else None
        self._ids: list[bytes] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._raws: list[int] = []
        self.size = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def buffer(self) -> mmap.mmap | None:
        """The buffer the pack is built in (the one given, or a bigger one it outgrew)."""
        return self._buf

    def add(self, cid: bytes, blob: bytes | memoryview, raw_size: int, tag: bytes = b"") -> None:
        """Append a stored blob: ``tag + blob`` (given apart, so the payload is copied once)."""
        start, t = self.size, len(tag)
        n = t + len(blob)
        self._write(start, tag, blob)
        self._ids.append(cid)
        self._offsets.append(start)
        self._lengths.append(n)
        self._raws.append(raw_size)
        self.size = start + n

    def seal(self) -> tuple[bytes, memoryview, dict[bytes, Location]]:
        """Return ``(pack id, view of the pack's bytes, locations of its chunks)``.

        The view reads this builder's buffer: it is valid until the buffer is reused.
        """
        pid, data = self.seal_bytes()
        return pid, data, self.locations(pid)

    def seal_bytes(self) -> tuple[bytes, memoryview]:
        """Write the trailer; return ``(pack id, view of the pack's bytes)`` (as :meth:`seal`)."""
        trailer = encode_json_like(
            [PACK_VERSION, b"".join(self._ids), self._offsets, self._lengths, self._raws])
        end = self.size + len(trailer) + _TAIL.size
        self._write(self.size, trailer, _TAIL.pack(len(trailer), PACK_MAGIC))
        assert self._buf is not None
        data = memoryview(self._buf)[:end]
        return chunk_id(data), data

    def locations(self, pid: bytes) -> dict[bytes, Location]:
        """The chunks added so far as locations in pack ``pid``."""
        return {
            cid: Location(pid, off, ln, raw)
            for cid, off, ln, raw in zip(self._ids, self._offsets, self._lengths, self._raws,
                                         strict=True)
        }

    def finish(self) -> tuple[bytes, bytes, dict[bytes, Location]]:
        """Like :meth:`seal`, with the pack's bytes copied out (the buffer can be reused)."""
        pid, data, locs = self.seal()
        return pid, bytes(data), locs

    def seal_streamed(self) -> tuple[bytes, int]:
        """Streamed builders: send the trailer and the rest; return ``(pack id, size)``."""
        assert self._hash is not None
        trailer = encode_json_like(
            [PACK_VERSION, b"".join(self._ids), self._offsets, self._lengths, self._raws])
        self._write(self.size, trailer, _TAIL.pack(len(trailer), PACK_MAGIC))
        self._flush()
        return self._hash.digest(), self.size + len(trailer) + _TAIL.size

    def _flush(self) -> None:
        if self._fill:
            assert self._buf is not None and self._sink is not None and self._hash is not None
            view = memoryview(self._buf)[:self._fill]
            self._hash.update(view)
            self._sink(view)
            view.release()
            self._fill = 0

    def _stream(self, a: bytes | memoryview, b: bytes | memoryview) -> None:
        assert self._buf is not None and self._sink is not None and self._hash is not None
        room = len(self._buf)
        for part in (a, b):
            n = len(part)
            if not n:
                continue
            if self._fill + n > room:
                self._flush()
            if n >= room:  # larger than the staging area: straight through
                self._hash.update(part)
                self._sink(memoryview(part))
            else:
                self._buf[self._fill:self._fill + n] = part
                self._fill += n

    def _write(self, at: int, a: bytes | memoryview, b: bytes | memoryview) -> None:
        if self._sink is not None:  # appended in order: ``at`` is always the end so far
            buf, fill = self._buf, self._fill
            la, n = len(a), len(a) + len(b)
            if buf is not None and fill + n <= len(buf):  # the common case: fits the stage
                if la:
                    buf[fill:fill + la] = a
                buf[fill + la:fill + n] = b
                self._fill = fill + n
                return
            self._stream(a, b)
            return
        la, end = len(a), at + len(a) + len(b)
        buf = self._buf
        if buf is None or len(buf) < end:  # outgrown: move to a bigger buffer (rare)
            bigger = new_buffer(max(end + (end >> 2), 1 << 20))
            if buf is not None and at:
                bigger[:at] = memoryview(buf)[:at]
            self._buf = buf = bigger
        if la:
            buf[at:at + la] = a
        buf[at + la:end] = b


def new_buffer(size: int) -> mmap.mmap:
    """An anonymous, private ``mmap`` of ``size`` bytes for building packs in.

    Its pages cost memory only once written, and it is unmapped when the last reference
    goes, so the allocator's heap (and its fragmentation) never sees pack-size blocks.
    """
    return mmap.mmap(-1, max(1, size))


def trailer_span(tail: bytes, what: str) -> int:
    """Given the last 12 bytes of a pack, return the trailer's length."""
    if len(tail) != _TAIL.size:
        raise FormatError(f"{what}: truncated pack")
    length, magic = _TAIL.unpack(tail)
    if magic != PACK_MAGIC:
        raise FormatError(f"{what}: not a snapsync pack (bad magic)")
    return length


def parse_pack(data: bytes, what: str = "pack", pack_id: bytes | None = None
               ) -> dict[bytes, Location]:
    """List a whole pack's chunks from its trailer, checking that the layout is consistent.

    ``pack_id``: the id the caller already checked the bytes against (saves hashing them).
    """
    if len(data) < _TAIL.size:
        raise FormatError(f"{what}: truncated pack ({len(data)} bytes)")
    tlen = trailer_span(data[-_TAIL.size:], what)
    body_end = len(data) - _TAIL.size - tlen
    if body_end < 0:
        raise FormatError(f"{what}: trailer length {tlen} exceeds the pack")
    pid = pack_id if pack_id is not None else chunk_id(data)
    return parse_trailer(data[body_end:len(data) - _TAIL.size], body_end, pid, what)


def parse_trailer(trailer: bytes, body_end: int, pack_id: bytes,
                  what: str) -> dict[bytes, Location]:
    # Column headers are checked against the trailer's size before any list is built.
    parts = decode_json_like(trailer, what, INDEX_ENTRY_MIN_BYTES)
    if not (isinstance(parts, list) and len(parts) == 5 and parts[0] == PACK_VERSION):
        raise FormatError(f"{what}: unsupported or malformed pack trailer")
    _, ids, offsets, lengths, raws = parts
    if not isinstance(ids, bytes) or len(ids) % ID_SIZE:
        raise FormatError(f"{what}: bad id column in trailer")
    n = len(ids) // ID_SIZE
    cols = (offsets, lengths, raws)
    if not all(isinstance(c, list) and len(c) == n for c in cols):
        raise FormatError(f"{what}: trailer columns do not line up")
    out: dict[bytes, Location] = {}
    for i in range(n):
        off, ln, raw = offsets[i], lengths[i], raws[i]
        if not all(type(v) is int and v >= 0 for v in (off, ln, raw)) or \
                off + ln > body_end or raw > MAX_CHUNK_SIZE:
            raise FormatError(f"{what}: chunk {i} lies outside the pack or is too large")
        out[ids[i * ID_SIZE:(i + 1) * ID_SIZE]] = Location(pack_id, off, ln, raw)
    return out
