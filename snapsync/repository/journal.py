"""The upload journal: lets a push resume after a crash without re-sending what landed.

A push learns what the store holds only from the ref heads' manifests, so packs that a killed
push uploaded are invisible to the next one. Each pack is therefore recorded in a local
journal (under the cache directory, per store) just before its upload starts. The next push to the
same store reads the journal, confirms with one listing per pack prefix that those packs still
exist with the recorded size, and treats their chunks as present. Entries are forgotten once a
push has published a manifest that names them.

Only packs uploaded less than ``MAX_AGE`` ago are reused: ``gc`` deletes unreferenced packs
older than its grace period, so that period must exceed the longest push plus ``MAX_AGE``
(docs/format.md, "GC and concurrency").
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from snapsync.core.manifest import Location
from snapsync.local.atomic import atomic_write
from snapsync.store import Layout
from snapsync.store.layout import PACK

if TYPE_CHECKING:
    from snapsync.repository.repo import Repository

MAX_AGE = 3600.0
VERSION = 1


class UploadJournal:
    """Packs this machine uploaded to one store that no published manifest names yet."""

    def __init__(self, cache_root: Path, store_url: str) -> None:
        key = hashlib.sha256(store_url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.dir = cache_root / "journal" / key
        self.mine: set[bytes] = set()
        self.resumed: set[bytes] = set()

    def record(self, pid: bytes, size: int, locs: dict[bytes, Location]) -> None:
        """Note one pack about to be uploaded (the resume checks that it landed)."""
        rows = [[cid, loc.offset, loc.length, loc.raw_size] for cid, loc in locs.items()]
        data = msgpack.packb([VERSION, time.time(), pid, size, rows], use_bin_type=True)
        with contextlib.suppress(OSError):  # the journal only saves work
            atomic_write(self.dir / f"{pid.hex()}.jpack", data)
        self.mine.add(pid)

    def resume(self, repo: Repository) -> dict[bytes, Location]:
        """Chunk locations of journaled packs that are recent and still in the store."""
        found: dict[bytes, tuple[int, list[list[int]]]] = {}
        now = time.time()
        try:
            names = os.listdir(self.dir)
        except OSError:
            return {}
        for name in names:
            if not name.endswith(".jpack"):
                continue
            path = self.dir / name
            try:
                ver, when, pid, size, rows = msgpack.unpackb(path.read_bytes(), raw=False)
            except (OSError, ValueError, TypeError, msgpack.UnpackException):
                ver = None
            if ver != VERSION or now - when > MAX_AGE:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found[pid] = (size, rows)
        if not found:
            return {}
        prefixes = sorted({Layout.pack_prefix(p) for p in found})
        listed: dict[bytes, int] = {}
        for prefix in prefixes if len(prefixes) <= 16 else [Layout.PACKS]:
            objs, _ = repo.objects(prefix)
            listed.update((o.raw_id, o.size) for o in objs if o.kind == PACK)
        out: dict[bytes, Location] = {}
        for pid, (size, rows) in found.items():
            if listed.get(pid) != size:
                self._drop(pid)  # gone (collected) or not what we wrote: send again
                continue
            self.resumed.add(pid)
            for cid, off, ln, raw in rows:
                out[cid] = Location(pid, off, ln, raw)
        return out

    def forget(self) -> None:
        """After a published manifest names them: drop this push's and the resumed entries."""
        for pid in self.mine | self.resumed:
            self._drop(pid)

    def _drop(self, pid: bytes) -> None:
        with contextlib.suppress(OSError):
            (self.dir / f"{pid.hex()}.jpack").unlink()
