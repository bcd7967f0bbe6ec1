"""The stat cache: path -> (stat signature, chunk ids), like git's index, and the listing digest.

A push reads only files whose signature changed since the last push of that folder to that
store; a pull trusts the target files it wrote last time while their signature holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgpack

from snapsync.core.hashing import ID_SIZE, hasher
from snapsync.local.atomic import atomic_write
from snapsync.local.tree import LocalEntry


class StatCache:
    """Path -> (stat signature, chunk ids), like git's index, for one (root, store) pair.

    A file whose mtime is not older than the last cache write, less the timestamp granularity,
    is "racy": it may have changed again within the same tick, so it is re-read next time.
    The granularity is guessed from the mtimes themselves: 20 ms when any has a sub-second
    part (ext4, APFS, NTFS), else 2 s (FAT, HFS+, some network file systems).
    """

    FINE_NS = 20_000_000
    COARSE_NS = 2_000_000_000
    VERSION = 3

    def __init__(self, path: Path | None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.entries: dict[str, tuple[tuple[int, ...], tuple[bytes, ...]]] = {}
        self._cutoff_ns = 0
        # What the last push published from this folder: {"snapshot": id, "listing": digest}.
        self.meta: dict[str, str] = {}
        if path is not None:
            self._load(on_warning)

    def _load(self, warn: Callable[[str], None] | None) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except OSError:
            return  # none yet (or unreadable): everything is read once
        try:
            ver, written, rows, meta = msgpack.unpackb(raw, raw=False, use_list=False)
            if ver != self.VERSION:
                return  # another version's cache: rebuilt, nothing wrong
            entries = _decode_rows(written, rows, meta)
        except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
            # A broken cache only costs a re-read, but it should not go unnoticed.
            if warn is not None:
                warn(f"ignored the stat cache {self.path}: it does not decode ({exc}); "
                     "files are read again")
            return
        self._cutoff_ns = written
        self.meta = meta
        self.entries = entries

    def lookup(self, path: str, sig: tuple[int, ...]) -> tuple[bytes, ...] | None:
        hit = self.entries.get(path)
        if hit is None or hit[0] != sig:
            return None
        if sig[1] >= self._cutoff_ns:
            return None
        return hit[1]

    def replace(self, rows: dict[str, tuple[tuple[int, ...], tuple[bytes, ...]]]) -> None:
        self.entries = rows

    def save(self) -> None:
        if self.path is None:
            return
        rows = [(p.encode("utf-8", "surrogateescape"), list(sig), b"".join(ids))
                for p, (sig, ids) in self.entries.items()]
        fine = any(sig[1] % 1_000_000_000 for sig, _ in self.entries.values())
        cutoff = time.time_ns() - (self.FINE_NS if fine else self.COARSE_NS)
        data = msgpack.packb([self.VERSION, cutoff, rows, self.meta], use_bin_type=True)
        try:
            atomic_write(self.path, data)
        except OSError:
            pass  # the cache is an optimisation; failing to save it must not fail the push


    def save_rows(self, count: int,
                  rows: Iterable[tuple[bytes, tuple[int, ...], bytes]]) -> None:
        """Write ``count`` rows of ``(path, signature, joined chunk ids)`` as :meth:`save`
        would, streamed into one buffer: no dict or list of rows is built (a pull target's
        100k files)."""
        if self.path is None:
            return
        pk = msgpack.Packer(use_bin_type=True, autoreset=True)
        body = bytearray()
        n = fine = 0
        for path, sig, ids in rows:
            if n == count:
                break
            body += pk.pack((path, sig, ids))
            n += 1
            fine |= sig[1] % 1_000_000_000
        cutoff = time.time_ns() - (self.FINE_NS if fine else self.COARSE_NS)
        out = bytearray(pk.pack_array_header(4) + pk.pack(self.VERSION) + pk.pack(cutoff)
                        + pk.pack_array_header(n))
        out += body
        del body
        out += pk.pack(self.meta)
        try:
            atomic_write(self.path, out)
        except OSError:
            pass  # an optimisation: failing to save it must not fail the pull


def _decode_rows(written: Any, rows: Any, meta: Any
                 ) -> dict[str, tuple[tuple[int, ...], tuple[bytes, ...]]]:
    """The entries of a decoded cache; ``ValueError`` when any part has the wrong shape."""
    if not isinstance(written, int) or not isinstance(meta, dict) or not isinstance(
            rows, list | tuple):
        raise ValueError("not a stat cache")
    out = {}
    for path, sig, ids in rows:
        if not (isinstance(path, bytes) and isinstance(ids, bytes) and len(ids) % ID_SIZE == 0
                and isinstance(sig, list | tuple) and all(type(v) is int for v in sig)):
            raise ValueError("a row of the wrong shape")
        # Paths are stored as bytes: non-UTF-8 names must round-trip too.
        out[path.decode("utf-8", "surrogateescape")] = (
            tuple(sig), tuple(ids[i:i + ID_SIZE] for i in range(0, len(ids), ID_SIZE)))
    return out


def listing_digest(entries: list[LocalEntry]) -> str:
    """A digest of what the walk found (paths, kinds, modes, link targets), not of content.

    With every file's stat signature matching the stat cache, an equal digest means the tree
    is the one the last push published, so a no-op push can stop before any manifest work.
    """
    h = hasher()
    for e in entries:
        h.update(e.path.encode("utf-8", "surrogateescape"))
        h.update(f"\0{e.kind}\0{e.mode}\0".encode())
        h.update(e.target)
        h.update(b"\n")
    return h.hexdigest()
