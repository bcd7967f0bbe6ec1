"""The chunk cache's segment files: reading chunks out of them, writing new ones.

A segment holds verified raw chunks, each starting on a 4 KiB boundary, so that
``copy_file_range`` can clone them. A :class:`SegmentWriter` creates one read-only under a
random name and has :class:`~snapsync.local.cache.ChunkCache` publish it (signature and rows in
one transaction) only once it is sealed; :class:`Segments` are the open, signature-checked
segments a pull copies from (docs/format.md §7).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING

from snapsync.errors import LocalFileError

if TYPE_CHECKING:
    from snapsync.local.cache import ChunkCache

SEGMENT_BYTES = 64 << 20  # a segment is sealed past this: the unit of eviction
ALIGN = 4096  # chunk starts: page and block aligned, so copy_file_range can clone
OFFSET_BITS = 40  # a chunk's place is one int: segment << 40 | offset
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_ZEROS = memoryview(bytes(ALIGN))  # padding up to the next chunk start

Sig = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def _sig(st: os.stat_result) -> Sig:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def seg_of(place: int) -> int:
    """The segment of a packed chunk place."""
    return place >> OFFSET_BITS


# Segment files are named by SegmentWriter: 24 hex digits and ".seg".
_SEGMENT_NAME = re.compile(r"[0-9a-f]{24}\.seg")
# What SQLite says of an index that is not one (or of an older layout): start afresh.

class Segments:
    """Open, checked segments of one pull: copy chunks out of them, check them again."""

    def __init__(self, cache: ChunkCache) -> None:
        self.cache = cache
        self.fds: dict[int, tuple[int, Sig, str]] = {}

    def __contains__(self, seg: int) -> bool:
        return seg in self.fds

    def update(self, other: Segments) -> None:
        self.fds.update(other.fds)
        other.fds = {}

    def copy(self, place: int, length: int, out_fd: int, out_off: int) -> None:
        """Copy a chunk into ``out_fd`` at ``out_off``, kernel-side where possible."""
        fd = self.fds[place >> OFFSET_BITS][0]
        off = place & ((1 << OFFSET_BITS) - 1)
        if _CFR[0]:  # the common case in one call; copy_range sorts out the rest
            with contextlib.suppress(OSError):
                if os.copy_file_range(fd, out_fd, length, off, out_off) == length:
                    return
        copy_range(fd, off, length, out_fd, out_off)

    def read(self, place: int, length: int) -> bytes:
        """A chunk's bytes (for callers that verify what they read: tamper-evident mode)."""
        fd = self.fds[place >> OFFSET_BITS][0]
        data = os.pread(fd, length, place & ((1 << OFFSET_BITS) - 1))
        if len(data) != length:
            raise OSError(errno.EIO, "short read from a chunk cache segment")
        return data

    def changed(self) -> list[int]:
        """Segments whose open file no longer matches its signature (written to since the
        check at open): what was copied from them cannot be trusted."""
        bad = []
        for seg, (fd, sig, _name) in self.fds.items():
            st = os.fstat(fd)
            # An eviction by a concurrent pull unlinks the file (ctime and nlink change) but
            # cannot change its bytes: only content-changing differences count.
            if (st.st_size, st.st_mtime_ns, st.st_ino) != (sig[0], sig[1], sig[3]) or (
                    st.st_nlink and st.st_ctime_ns != sig[2]):
                bad.append(seg)
        return bad

    def close(self) -> None:
        for fd, _sig, _name in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = {}


def copy_range(src: int, src_off: int, length: int, dst: int, dst_off: int) -> None:
    """Copy ``length`` bytes between descriptors: ``copy_file_range`` (a clone or an in-kernel
    copy), else ``pread``/``pwrite`` (another file system type, an old kernel)."""
    done = 0
    if _CFR[0]:
        try:
            while done < length:
                n = os.copy_file_range(src, dst, length - done, src_off + done, dst_off + done)
                if n <= 0:
                    break
                done += n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                 errno.EPERM, errno.EBADF):
                raise
            if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
                _CFR[0] = False
    while done < length:
        buf = os.pread(src, min(length - done, 1 << 20), src_off + done)
        if not buf:
            raise OSError(errno.EIO, "short read from a chunk cache segment")
        view = memoryview(buf)
        while view:
            n = os.pwrite(dst, view, dst_off + done)
            done += n
            view = view[n:]


_CFR = [hasattr(os, "copy_file_range")]


class SegmentWriter:
    """Appends verified raw chunks to new segment files; :meth:`finish` publishes them.

    Not thread-safe: one writer per producer. A segment is created read-only under a random
    name, filled, and published (signature and rows in one transaction) only when sealed, so
    no pull ever sees a part-written segment; a killed pull leaves an unpublished file that
    :meth:`ChunkCache.trim` removes later.
    """

    def __init__(self, cache: ChunkCache, placed: MutableMapping[bytes, int] | None = None
                 ) -> None:
        self.cache = cache
        self.placed: MutableMapping[bytes, int] = {} if placed is None else placed
        self.segs: list[int] = []
        self._segs: set[int] = set()
        self._fd = -1
        self._name = ""
        self._pos = 0
        self._rows: list[tuple[bytes, int, int]] = []  # id, offset, length
        self._pending: set[bytes] = set()
        # Full segments that reserved writes may still be filling: sealed by :meth:`seal`.
        self._retired: list[tuple[int, str, list[tuple[bytes, int, int]]]] = []

    def __contains__(self, cid: bytes) -> bool:
        return cid in self._pending or self.placed.get(cid, -1) >> OFFSET_BITS in self._segs

    def add(self, cid: bytes, data: bytes | memoryview) -> None:
        """Append one chunk (already verified against ``cid``)."""
        self.add_many([(cid, data)])

    def add_many(self, items: Iterable[tuple[bytes, bytes | memoryview]]) -> None:
        """Append chunks (already verified against their ids), one ``pwritev`` per run."""
        try:
            self._add(items)
        except OSError as exc:
            raise LocalFileError(f"cannot write the chunk cache {self.cache.dir}: "
                                 f"{exc.strerror or exc} (--cache-dir elsewhere, or "
                                 "--no-cache)") from None

    def _add(self, items: Iterable[tuple[bytes, bytes | memoryview]]) -> None:
        bufs: list[bytes | memoryview] = []
        start = self._pos
        for cid, data in items:
            if cid in self:
                continue
            if self._fd < 0:
                self._open()
                start = 0
            n = len(data)
            self._rows.append((cid, self._pos, n))
            self._pending.add(cid)
            bufs.append(data)
            end = (self._pos + n + ALIGN - 1) // ALIGN * ALIGN
            if end - self._pos - n:
                bufs.append(_ZEROS[:end - self._pos - n])
            self._pos = end
            if len(bufs) >= 512 or self._pos >= SEGMENT_BYTES:
                self._write(bufs, start)
                bufs, start = [], self._pos
                if self._pos >= SEGMENT_BYTES:
                    self._seal_current()
                    start = 0
        if bufs:
            self._write(bufs, start)

    def _open(self) -> None:
        self._name = f"{os.urandom(12).hex()}.seg"  # not secrets: it imports hashlib
        self._fd = os.open(self.cache.dir / self._name,
                           os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o444)
        self._pos = 0

    # ---- reserved writes: other threads fill places this (the producer's) thread assigns ----
    def reserve(self, items: Iterable[tuple[bytes, int]]) -> list[tuple[int, int, list[int]]]:
        """Places for chunks of known lengths (``(id, length)``, in order), to be filled by
        :meth:`write` on any thread; returns runs ``(fd, offset, [item index...])`` of
        consecutive places. Chunks the writer already has get none. Their rows are recorded
        now, so every reserved place must be written before :meth:`seal` (or :meth:`abort`
        instead: a failed pull publishes nothing it reserved)."""
        try:
            runs: list[tuple[int, int, list[int]]] = []
            for i, (cid, n) in enumerate(items):
                if cid in self:
                    continue
                if self._fd < 0:
                    self._open()
                if not runs or runs[-1][0] != self._fd:
                    runs.append((self._fd, self._pos, []))
                runs[-1][2].append(i)
                self._rows.append((cid, self._pos, n))
                self._pending.add(cid)
                self._pos = (self._pos + n + ALIGN - 1) // ALIGN * ALIGN
                if self._pos >= SEGMENT_BYTES:  # full: sealed with the next seal()
                    self._retired.append((self._fd, self._name, self._rows))
                    self._fd, self._rows = -1, []
            return runs
        except OSError as exc:
            raise LocalFileError(f"cannot write the chunk cache {self.cache.dir}: "
                                 f"{exc.strerror or exc} (--cache-dir elsewhere, or "
                                 "--no-cache)") from None

    def write(self, runs: list[tuple[int, int, list[int]]],
              datas: list[bytes | memoryview]) -> None:
        """Fill places :meth:`reserve` returned (``datas``: the items' verified bytes, in
        its order). Thread-safe: each place is written once, by one caller."""
        try:
            for fd, pos, idx in runs:
                bufs: list[bytes | memoryview] = []
                for k, i in enumerate(idx):
                    data = datas[i]
                    bufs.append(data)
                    pad = -len(data) % ALIGN
                    if pad and k + 1 < len(idx):  # the gap before the next chunk
                        bufs.append(_ZEROS[:pad])
                self._write(bufs, pos, fd)
        except OSError as exc:
            raise LocalFileError(f"cannot write the chunk cache {self.cache.dir}: "
                                 f"{exc.strerror or exc} (--cache-dir elsewhere, or "
                                 "--no-cache)") from None

    def _write(self, bufs: list[bytes | memoryview], pos: int, fd: int = -1) -> None:
        fd = self._fd if fd < 0 else fd
        views = [memoryview(b) for b in bufs]
        while views:
            n = os.pwritev(fd, views, pos)
            pos += n
            while views and n >= len(views[0]):  # drop what was written, keep the rest
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]

    def _seal(self) -> None:
        while self._retired:
            self._seal_one(*self._retired.pop(0))
        self._seal_current()

    def _seal_current(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        rows, self._rows = self._rows, []
        self._seal_one(fd, self._name, rows)

    def _seal_one(self, fd: int, name: str, rows: list[tuple[bytes, int, int]]) -> None:
        try:
            sig = _sig(os.fstat(fd))  # after the last write: mtime and ctime are final
        finally:
            os.close(fd)
        seg = self.cache._publish(name, sig, rows)
        base = seg << OFFSET_BITS
        for cid, off, _n in rows:
            self.placed[cid] = base | off
            self._pending.discard(cid)
        self.segs.append(seg)
        self._segs.add(seg)

    def seal(self) -> None:
        """Publish the current segment now (after each download batch: a pull killed later
        leaves what it verified to the next one)."""
        try:
            self._seal()
        except OSError as exc:
            raise LocalFileError(f"cannot write the chunk cache {self.cache.dir}: "
                                 f"{exc.strerror or exc}") from None

    def finish(self) -> list[int]:
        """Publish what was added; return the segments written (their chunks are in
        ``placed``)."""
        self.seal()
        return self.segs

    def abort(self) -> None:
        """Remove the unpublished segments (an error stopped the pull, or a reserved place
        may be unwritten); no :meth:`write` may be running."""
        left = self._retired
        if self._fd >= 0:
            left.append((self._fd, self._name, self._rows))
        for fd, name, rows in left:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.cache.dir / name)
            self._pending.difference_update(cid for cid, _off, _n in rows)
        self._fd, self._rows, self._retired = -1, [], []
