"""Local caches: verified chunks (one SQLite file) and manifests by their immutable id.

The chunk cache is the worker's friend: every flow run pulls into a fresh folder, and with a
warm cache that pull downloads nothing. SQLite (stdlib) instead of one file per chunk, because
creating thousands of small files costs more than the pull itself (docs/design.md, "Bounds"),
and because it takes concurrent pulls on one machine safely (WAL mode, busy timeout).
Chunks are stored in their encoded (usually compressed) form and verified again when read.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from snapsync.local.atomic import atomic_write


class ChunkCache:
    """id -> stored blob, bounded by ``max_bytes`` (least recently used goes first)."""

    def __init__(self, root: Path, max_bytes: int = 4 << 30,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.path = root / "chunks.sqlite"
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._create()
        except sqlite3.DatabaseError as exc:
            # Not a database (or a damaged one): the cache only saves work, so start afresh.
            if on_warning is not None:
                on_warning(f"the chunk cache {self.path} is not usable ({exc}); replaced it "
                           "with an empty one")
            self._local = threading.local()
            for name in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            self._create()

    def _create(self) -> None:
        with self._conn() as db:
            db.execute("CREATE TABLE IF NOT EXISTS chunks (id BLOB PRIMARY KEY, blob BLOB, "
                       "raw INTEGER, used INTEGER)")
            db.execute("SELECT id, blob FROM chunks LIMIT 1").fetchall()

    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                 check_same_thread=False)
            # A value stored as text (not by snapsync) comes back as bytes and fails
            # verification like any bad blob, instead of failing to decode.
            db.text_factory = bytes
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def has(self, ids: Iterable[bytes]) -> set[bytes]:
        """Which of ``ids`` are cached."""
        ids = list(ids)
        found: set[bytes] = set()
        db = self._conn()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            q = f"SELECT id FROM chunks WHERE id IN ({','.join('?' * len(part))})"
            found.update(row[0] for row in db.execute(q, part))
        return found

    def get(self, cid: bytes) -> bytes | None:
        row = self._conn().execute("SELECT blob FROM chunks WHERE id=?", (cid,)).fetchone()
        return row[0] if row else None

    def get_many(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """The cached blobs of ``ids`` (missing ones are left out), in few queries."""
        out: dict[bytes, bytes] = {}
        db = self._conn()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            q = f"SELECT id, blob FROM chunks WHERE id IN ({','.join('?' * len(part))})"
            out.update(db.execute(q, part))
        return out

    def put_many(self, items: Iterable[tuple[bytes, bytes, int]]) -> None:
        """Store ``(id, blob, raw size)`` rows in one transaction."""
        now = int(time.time())
        db = self._conn()
        with _tx(db):
            db.executemany("INSERT OR REPLACE INTO chunks VALUES (?,?,?,?)",
                           ((cid, blob, raw, now) for cid, blob, raw in items))

    def drop(self, ids: Iterable[bytes]) -> None:
        """Forget ``ids`` (blobs that failed verification: the store has the real ones)."""
        db = self._conn()
        with _tx(db):
            db.executemany("DELETE FROM chunks WHERE id=?", ((c,) for c in ids))

    def touch(self, ids: Iterable[bytes]) -> None:
        now = int(time.time())
        db = self._conn()
        with _tx(db):
            db.executemany("UPDATE chunks SET used=? WHERE id=?", ((now, c) for c in ids))

    def trim(self) -> None:
        """Evict least recently used chunks beyond ``max_bytes``."""
        db = self._conn()
        total = db.execute("SELECT COALESCE(SUM(LENGTH(blob)),0) FROM chunks").fetchone()[0]
        if total <= self.max_bytes:
            return
        excess = total - self.max_bytes
        with _tx(db):
            for cid, size in db.execute(
                    "SELECT id, LENGTH(blob) FROM chunks ORDER BY used").fetchall():
                db.execute("DELETE FROM chunks WHERE id=?", (cid,))
                excess -= size
                if excess <= 0:
                    break


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
