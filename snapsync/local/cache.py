"""Local caches: verified raw chunks in segment files, and manifests by their immutable id.

The chunk cache is the worker's friend: every flow run pulls into a fresh folder, and with a
warm cache that pull downloads nothing and decodes nothing. Chunks are kept **raw** (decoded
and verified once, when they enter the cache) in a few large *segment* files, each chunk
starting on a 4 KiB boundary; an SQLite index (WAL mode, safe for concurrent pulls) maps a
chunk id to (segment, offset). A pull copies a file's chunks from the segments into the
target with ``copy_file_range`` (the kernel copies, or clones on file systems that share
blocks), so a warm pull costs about what ``cp -r`` does (docs/design.md, "Where the time
goes in a pull"). One segment per a few thousand small chunks, instead of one cache file per
chunk, because creating a file costs more than copying a small one.

Trust (docs/format.md §7): a segment is written once, by one pull, and published only when
complete, in one transaction with its stat signature (size, mtime, ctime, inode) and its
chunks' rows; it is created read-only. Before a segment is copied from, and again after the
copies, its open descriptor is ``fstat``-ed against that signature: a segment changed behind
the cache's back is dropped (with its chunks, which are fetched again) and never copied from.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from snapsync.errors import CacheError, LocalFileError
from snapsync.local.atomic import atomic_write

SEGMENT_BYTES = 64 << 20  # a segment is sealed past this: the unit of eviction
ALIGN = 4096  # chunk starts: page and block aligned, so copy_file_range can clone
OFFSET_BITS = 40  # a chunk's place is one int: segment << 40 | offset
ORPHAN_AGE = 3600  # unpublished segment files older than this (a killed pull's) are removed
QUERY = 500  # ids per SQLite query
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
_DAMAGED = ("not a database", "malformed", "no such column", "no such table")


def _index_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """SQLite's errors on the index (locked, full disk, read-only) as :class:`CacheError`,
    naming the index, instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(self: ChunkCache, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise CacheError(f"the chunk cache index {self.path}: {exc} (pull with "
                             "--no-cache to do without it)") from None
    return wrapper


class ChunkCache:
    """Chunk id -> raw bytes in a segment, bounded by ``max_bytes`` (least recently used
    segments go first)."""

    def __init__(self, root: Path, max_bytes: int = 4 << 30,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.dir = root / "chunks"
        self.path = self.dir / "index.sqlite"
        self.max_bytes = max_bytes
        self.warn = on_warning if on_warning is not None else (lambda _msg: None)
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in ("chunks.sqlite", "chunks.sqlite-wal", "chunks.sqlite-shm"):
            with contextlib.suppress(OSError):  # the compressed-blob cache of earlier versions
                os.unlink(root / old)
        self._local = threading.local()
        try:
            self._create()
        except sqlite3.DatabaseError as exc:
            if not any(w in str(exc).lower() for w in _DAMAGED):
                # Locked past the timeout, read-only, a full disk: the index is fine, and
                # other pulls may be using it; never wipe it for that.
                raise CacheError(f"the chunk cache index {self.path}: {exc} (pull with "
                                 "--no-cache to do without it)") from None
            # Not a database (or a damaged one): the cache only saves work, so start afresh.
            self.warn(f"the chunk cache {self.path} is not usable ({exc}); replaced it "
                      "with an empty one")
            self._local = threading.local()
            for name in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            self._create()

    def _create(self) -> None:
        db = self._conn()
        # AUTOINCREMENT: a segment number is never reused, so a pull holding a number from
        # before another pull's trim cannot open a newer segment under it.
        db.execute("CREATE TABLE IF NOT EXISTS segs (seg INTEGER PRIMARY KEY AUTOINCREMENT, "
                   "name TEXT "
                   "UNIQUE, size INTEGER, mtime INTEGER, ctime INTEGER, ino INTEGER, "
                   "used INTEGER)")
        # len: a chunk id (xxh3) does not commit to a length; the manifest's is checked.
        db.execute("CREATE TABLE IF NOT EXISTS loc (id BLOB PRIMARY KEY, place INTEGER, "
                   "len INTEGER) "
                   "WITHOUT ROWID")
        db.execute("SELECT seg, name, size, mtime, ctime, ino, used FROM segs LIMIT 1")
        db.execute("SELECT id, place, len FROM loc LIMIT 1").fetchall()

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @_index_errors
    def where(self, ids: Iterable[bytes], size_of: Callable[[bytes], int]
              ) -> dict[bytes, int]:
        """Where the cached ones of ``ids`` are: id -> packed place (:func:`seg_of`). Only
        chunks stored with the length ``size_of(id)`` (the manifest's) count: another length
        means another chunk, or a manifest lying about this one."""
        ids = list(ids)
        out: dict[bytes, int] = {}
        db = self._conn()
        for i in range(0, len(ids), QUERY):
            part = ids[i:i + QUERY]
            q = f"SELECT id, place, len FROM loc WHERE id IN ({','.join('?' * len(part))})"
            for cid, place, n in db.execute(q, part):
                if isinstance(cid, bytes) and type(place) is int and n == size_of(cid):
                    out[cid] = place
        return out

    @_index_errors
    def open_segments(self, segs: Iterable[int]) -> Segments:
        """Open ``segs`` for reading; any whose file is gone, is not a regular file or does
        not match its recorded signature is dropped (with a warning when it was changed,
        not merely evicted by another pull) and left out of the result."""
        segs = sorted(set(segs))
        rows: dict[int, tuple[str, Sig]] = {}
        db = self._conn()
        for i in range(0, len(segs), QUERY):
            part = segs[i:i + QUERY]
            q = (f"SELECT seg, name, size, mtime, ctime, ino FROM segs WHERE seg IN "
                 f"({','.join('?' * len(part))})")
            for seg, name, *sig in db.execute(q, part):
                rows[seg] = (name, tuple(sig))  # type: ignore[assignment]
        out = Segments(self)
        bad: list[int] = []
        for seg in segs:
            row = rows.get(seg)
            if row is None:
                continue  # evicted by another pull since the lookup: fetched again
            name, sig = row
            if not _SEGMENT_NAME.fullmatch(str(name)):
                bad.append(seg)  # a damaged index: not a name this cache wrote
                continue
            try:
                fd = os.open(self.dir / name, os.O_RDONLY | NOFOLLOW)
            except OSError:
                bad.append(seg)  # gone (a concurrent trim, or deleted by hand)
                continue
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or _sig(st) != sig:
                os.close(fd)
                self.warn(f"the chunk cache segment {self.dir / name} changed after it was "
                          "written; it is dropped and its chunks fetched again")
                bad.append(seg)
                continue
            out.fds[seg] = (fd, sig, name)
        if bad:
            self.drop_segments(bad)
        return out

    def writer(self, placed: dict[bytes, int] | None = None) -> SegmentWriter:
        """A new segment (or several) for chunks this pull adds; ``placed`` (id -> packed
        place) gains each chunk once its segment is published."""
        return SegmentWriter(self, placed)

    @_index_errors
    def _publish(self, name: str, sig: Sig, rows: list[tuple[bytes, int, int]]) -> int:
        """Make a complete segment visible: its row and its chunks' rows in one transaction."""
        db = self._conn()
        with _tx(db):
            cur = db.execute("INSERT INTO segs (name, size, mtime, ctime, ino, used) "
                             "VALUES (?,?,?,?,?,?)", (name, *sig, int(time.time())))
            seg = cur.lastrowid
            assert seg is not None
            base = seg << OFFSET_BITS
            db.executemany("INSERT OR REPLACE INTO loc VALUES (?,?,?)",
                           ((cid, base | off, n) for cid, off, n in rows))
        return seg

    @_index_errors
    def drop_segments(self, segs: Iterable[int]) -> None:
        """Forget segments (changed, missing, or evicted): their rows, then their files."""
        segs = list(segs)
        if not segs:
            return
        db = self._conn()
        names = []
        with _tx(db):
            for seg in segs:
                row = db.execute("SELECT name FROM segs WHERE seg=?", (seg,)).fetchone()
                if row is not None and _SEGMENT_NAME.fullmatch(str(row[0])):
                    names.append(row[0])  # only our own names: never a path out of the cache
                db.execute("DELETE FROM segs WHERE seg=?", (seg,))
            # One pass over the chunk rows (no index on place: lookups are by id only).
            for i in range(0, len(segs), QUERY):
                part = segs[i:i + QUERY]
                db.execute(f"DELETE FROM loc WHERE (place >> {OFFSET_BITS}) IN "
                           f"({','.join('?' * len(part))})", part)
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(self.dir / name)

    @_index_errors
    def touch(self, segs: Iterable[int]) -> None:
        """Mark segments as used now (least recently used ones are evicted first)."""
        now = int(time.time())
        db = self._conn()
        with _tx(db):
            db.executemany("UPDATE segs SET used=? WHERE seg=?", ((now, s) for s in segs))

    def size(self) -> int:
        return int(self._conn().execute("SELECT COALESCE(SUM(size),0) FROM segs").fetchone()[0])

    @_index_errors
    def trim(self) -> None:
        """Evict least recently used segments beyond ``max_bytes``; remove files of pulls
        killed before they published their segment."""
        db = self._conn()
        total = self.size()
        if total > self.max_bytes:
            drop = []
            for seg, size in db.execute("SELECT seg, size FROM segs ORDER BY used, seg"
                                        ).fetchall():
                drop.append(seg)
                total -= size
                if total <= self.max_bytes:
                    break
            self.drop_segments(drop)
        known = {r[0] for r in db.execute("SELECT name FROM segs")}
        old = time.time() - ORPHAN_AGE
        with contextlib.suppress(OSError), os.scandir(self.dir) as it:
            for de in it:
                if de.name.endswith(".seg") and de.name not in known:
                    with contextlib.suppress(OSError):
                        if de.stat(follow_symlinks=False).st_mtime < old:
                            os.unlink(de.path)


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
        copy_range(fd, place & ((1 << OFFSET_BITS) - 1), length, out_fd, out_off)

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

    def __init__(self, cache: ChunkCache, placed: dict[bytes, int] | None = None) -> None:
        self.cache = cache
        self.placed: dict[bytes, int] = {} if placed is None else placed
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
        self._name = f"{secrets.token_hex(12)}.seg"
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


@contextlib.contextmanager
def _tx(db: sqlite3.Connection):  # type: ignore[no-untyped-def]
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class ManifestCache:
    """Compressed manifests by snapshot id; safe because ids name immutable content."""

    def __init__(self, root: Path) -> None:
        self.root = root / "manifests"

    def get(self, sid: str) -> bytes | None:
        try:
            return (self.root / sid[:2] / sid).read_bytes()
        except OSError:
            return None

    def put(self, sid: str, data: bytes) -> None:
        with contextlib.suppress(OSError):
            atomic_write(self.root / sid[:2] / sid, data)

    def drop(self, sid: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.root / sid[:2] / sid)
