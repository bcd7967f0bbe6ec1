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
import functools
import os
import sqlite3
import stat
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from snapsync.core.hashing import ID_SIZE, chunk_id
from snapsync.errors import CacheError
from snapsync.local.atomic import atomic_write, keep_newest
from snapsync.local.segments import (
    _SEGMENT_NAME,
    NOFOLLOW,
    OFFSET_BITS,
    Segments,
    SegmentWriter,
    Sig,
    _sig,
)

PLACES_KEPT = 64  # saved snapshot place maps (one per snapshot a worker pulls)
ORPHAN_AGE = 3600  # unpublished segment files older than this (a killed pull's) are removed
QUERY = 500  # ids per SQLite query


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
    def where(self, ids: Iterable[bytes], size_of: Callable[[bytes], int],
              out: MutableMapping[bytes, int] | None = None) -> MutableMapping[bytes, int]:
        """Where the cached ones of ``ids`` are: id -> packed place (:func:`seg_of`), added
        to ``out`` (default: a new dict). Only chunks stored with the length ``size_of(id)``
        (the manifest's) count: another length means another chunk, or a manifest lying
        about this one."""
        ids = list(ids)
        if out is None:
            out = {}
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

    # ---- a snapshot's places, saved: a warm pull of it asks SQLite nothing -------------------
    def load_places(self, key: str, rows: int) -> array[int] | None:
        """The places :meth:`save_places` kept under ``key`` for an index of ``rows`` chunks
        (``-1``: not cached), or ``None`` (none kept, or not whole: its checksum fails).

        Each place is as trusted as an index row (this cache wrote both); the caller still
        opens every segment they name against its signature and falls back to :meth:`where`
        when one is gone."""
        try:
            data = (self.dir / "places" / f"{key}.bin").read_bytes()
        except OSError:
            return None
        body, digest = data[:-ID_SIZE], data[-ID_SIZE:]
        if len(body) != 8 * rows or chunk_id(body) != digest:
            return None
        vals = array("q")
        vals.frombytes(body)
        if sys.byteorder != "little":  # the file is little-endian wherever it was written
            vals.byteswap()
        return vals

    def save_places(self, key: str, vals: array[int]) -> None:
        """Keep a pull's places (one per index row) for the next warm pull of the snapshot;
        at most :data:`PLACES_KEPT` are kept (the oldest go)."""
        folder = self.dir / "places"
        if sys.byteorder != "little":
            vals = array("q", vals)
            vals.byteswap()
        body = vals.tobytes()
        with contextlib.suppress(OSError):  # an optimisation only
            atomic_write(folder / f"{key}.bin", [body, chunk_id(body)])
        keep_newest(folder, ".bin", PLACES_KEPT)

    def writer(self, placed: MutableMapping[bytes, int] | None = None) -> SegmentWriter:
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
