"""Stat caches, like git's index: a push's per directory (:class:`TreeCache`), a pull's per path.

A push reads only files whose signature changed since the last push of that folder to that
store; a pull trusts the target files it wrote last time while their signature holds.
"""

from __future__ import annotations

import os
import shutil
import time
from array import array
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import msgpack

from snapsync.core.hashing import ID_SIZE
from snapsync.local.atomic import atomic_write, unlink_quietly, write_temp
from snapsync.local.listing import KEEP_FILE, KEEP_LINK, Columns, DirMemo, Listing


def _read(path: Path | None) -> bytes | None:
    """A cache file's bytes, or ``None`` when there is none yet or it cannot be read."""
    try:
        return path.read_bytes() if path is not None else None
    except OSError:
        return None


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
        raw = _read(self.path)
        if raw is None:
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
        head = (pk.pack_array_header(4) + pk.pack(self.VERSION) + pk.pack(cutoff)
                + pk.pack_array_header(n))
        try:
            atomic_write(self.path, [head, body, pk.pack(self.meta)])  # body is not copied
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


_NO_SIG = (0, -1, 0, 0, 0)  # an mtime of -1 never matches: read again
_FLUSH = 1 << 20  # packed rows written out at a time


class PackedRows:
    """A :class:`TreeCache`'s rows, packed and parked in a temporary file beside the cache
    (out of memory while push builds its manifest), waiting to be written with the meta
    map. :meth:`discard` drops them (a push that failed)."""

    __slots__ = ("key", "tmp")

    def __init__(self, key: str, tmp: str | None) -> None:
        self.key, self.tmp = key, tmp

    def discard(self) -> None:
        if self.tmp is not None:
            unlink_quietly(self.tmp)
            self.tmp = None


class TreeCache:
    """Push's stat cache for one (folder, store): per directory, what the last push saw.

    One row per directory (:class:`~snapsync.local.tree.DirMemo`): the names it listed, what
    the walk decided about each, the stat signatures of the kept ones and their chunk ids.
    Loaded with one read and no object per file; the walk compares each directory's listing
    and signatures with its row as bytes. ``key`` names the rules and exclusions the
    decisions were made under: under others they are made again (the chunk ids still serve).
    The racy rule is applied when saving: a file modified within the timestamp granularity
    of the save (see :class:`StatCache`) is stored with an impossible mtime, so it is read
    again next time.
    """

    VERSION = 4

    def __init__(self, path: Path | None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.key = ""
        self.dirs: dict[str, DirMemo] = {}
        # What the last push published from this folder: snapshot id, totals, chunk count...
        self.meta: dict[str, Any] = {}
        if path is not None:
            self._load(on_warning)

    def _load(self, warn: Callable[[str], None] | None) -> None:
        raw = _read(self.path)
        if raw is None:
            return  # none yet (or unreadable): everything is read once
        try:
            parts = msgpack.unpackb(raw, raw=False, use_list=False)
            if not isinstance(parts, tuple) or not parts or parts[0] != self.VERSION:
                return  # another version's cache: rebuilt, nothing wrong
            _, key, meta, rows = parts
            if not isinstance(key, str) or not isinstance(meta, dict) or \
                    not isinstance(rows, tuple):
                raise ValueError("not a stat cache")
            dirs = {}
            for row in rows:
                rel, names, flags, sigs, nchunks, ids, lint = row
                if not all(isinstance(v, bytes) for v in (rel, names, flags, sigs, nchunks,
                                                          ids)):
                    raise ValueError("a row of the wrong shape")
                # The columns must line up: a decision per name, a signature and a chunk
                # count per kept name, and the ids those counts add up to.
                kept = flags.count(b"f") + flags.count(b"l")
                counts = array("I")
                counts.frombytes(nchunks[:len(nchunks) - len(nchunks) % 4])
                if (len(flags) != (names.count(b"\0") + 1 if names else 0)
                        or len(sigs) != 40 * kept or len(nchunks) != 4 * kept
                        or sum(counts) * ID_SIZE != len(ids)):
                    raise ValueError("a row whose columns do not line up")
                dirs[rel.decode("utf-8", "surrogateescape")] = DirMemo(
                    names, flags, sigs, nchunks, ids, bool(lint))
        except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
            # A broken cache only costs a re-read, but it should not go unnoticed.
            if warn is not None:
                warn(f"ignored the stat cache {self.path}: it does not decode ({exc}); "
                     "files are read again")
            return
        self.key, self.meta, self.dirs = key, dict(meta), dirs

    def memo(self) -> dict[str, DirMemo]:
        return self.dirs

    def save(self, key: str, listing: Listing, cols: Columns, nchunks: array[int],
             ids: bytes | bytearray, unread: Collection[int] = ()) -> None:
        """Record a push: ``nchunks``/``ids`` are the chunk ids of ``cols``' entries in order.

        ``unread``: entries (indexes into ``cols``) that could not be read: never trusted.
        """
        self.save_rows_of(self.rows_of(key, listing, cols, nchunks, ids, unread))

    def rows_of(self, key: str, listing: Listing, cols: Columns, nchunks: array[int],
                ids: bytes | bytearray, unread: Collection[int] = ()) -> PackedRows | None:
        """The rows :meth:`save` would write, packed: the listing and columns can go before
        the cache is written (push builds its manifest meanwhile). The racy cutoff is taken
        now, which only marks more files racy than taking it later would."""
        if self.path is None:
            return None
        offsets = array("q", [0]) * (len(cols) + 1)
        total = 0
        for i, n in enumerate(nchunks):
            offsets[i] = total
            total += n
        offsets[len(cols)] = total
        # Each directory's entries as indexes into ``cols`` (by position among its kept
        # names): one flat array, not an object per file. Signatures come from the columns
        # (what push read), not the listing (which push compacts: Listing.compact).
        starts = array("q", [0]) * (len(listing.dirs) + 1)
        for d_i, d in enumerate(listing.dirs):
            starts[d_i + 1] = starts[d_i] + d.kept()
        where = array("q", [-1]) * starts[len(listing.dirs)]
        for i, src in enumerate(cols.src):
            if src >= 0:
                where[starts[src >> 32] + (src & 0xFFFFFFFF)] = i
        col_sigs = cols.sigs
        fine = any(col_sigs[j] % 1_000_000_000 for j in range(1, len(col_sigs), 5))
        cutoff = time.time_ns() - (StatCache.FINE_NS if fine else StatCache.COARSE_NS)
        # Streamed row by row into the temporary file, through a small buffer: the same
        # bytes as packing the whole list ``[VERSION, key, meta, rows]``, without the rows
        # existing all at once, in memory or packed (~7 MB at 100k files).
        pk = msgpack.Packer(use_bin_type=True, autoreset=True)
        out = bytearray(pk.pack_array_header(len(listing.dirs)))
        try:
            tmp = write_temp(self.path, b"")
        except OSError:
            return None  # the cache is an optimisation: not saved this time
        try:
            with open(tmp, "ab") as f:
                self._pack_rows(f, pk, out, listing, starts, where, offsets, ids, cutoff,
                                unread, col_sigs)
        except BaseException as exc:
            unlink_quietly(tmp)
            if isinstance(exc, OSError):
                return None
            raise
        return PackedRows(key, tmp)

    @staticmethod
    def _pack_rows(f: Any, pk: msgpack.Packer, out: bytearray, listing: Listing,
                   starts: array[int], where: array[int], offsets: array[int],
                   ids: bytes | bytearray, cutoff: int, unread: Collection[int],
                   col_sigs: array[int]) -> None:
        empty = b""
        for d_i, d in enumerate(listing.dirs):
            sigs = array("q")
            kept = [fl for fl in d.flags if fl in (KEEP_FILE, KEEP_LINK)]
            counts = array("I")
            ids_parts = []
            for k, fl in enumerate(kept):
                i = where[starts[d_i] + k]
                if i < 0:  # not in the columns (never, for a listing's own columns)
                    sigs.extend(_NO_SIG)
                    counts.append(0)
                    ids_parts.append(empty)
                    continue
                sigs.extend(col_sigs[5 * i:5 * i + 5])
                # A link's target is read on every walk; a file's bytes only when its
                # signature changed, or when it is racy (or was unread): never matched.
                if fl == KEEP_FILE and (sigs[5 * k + 1] >= cutoff or i in unread):
                    sigs[5 * k + 1] = -1
                a, b = offsets[i], offsets[i + 1]
                counts.append(b - a)
                ids_parts.append(ids[a * ID_SIZE:b * ID_SIZE])
            out += pk.pack((d.rel.encode("utf-8", "surrogateescape"), d.names_key(),
                            d.flags, sigs.tobytes(), counts.tobytes(), b"".join(ids_parts),
                            d.lint))
            if len(out) >= _FLUSH:
                f.write(out)
                out.clear()
        f.write(out)

    def save_rows_of(self, rows: PackedRows | None) -> None:
        """Write rows from :meth:`rows_of` with the current ``meta``: the same bytes as
        packing ``[VERSION, key, meta, rows]`` at once."""
        if self.path is None or rows is None or rows.tmp is None:
            return
        pk = msgpack.Packer(use_bin_type=True)
        head = pk.pack_array_header(4) + pk.pack(self.VERSION) + pk.pack(rows.key) + \
            pk.pack(self.meta)
        try:
            tmp = write_temp(self.path, head)
            try:
                with open(rows.tmp, "rb") as src, open(tmp, "ab") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(tmp, self.path)
            except BaseException:
                unlink_quietly(tmp)
                raise
        except OSError:
            pass  # the cache is an optimisation; failing to save it must not fail the push
        finally:
            rows.discard()

    def save_meta(self) -> None:
        """Rewrite only the meta map (a no-op push whose default-ignore note changed)."""
        if self.path is None or not self.key:
            return
        rows = [(rel.encode("utf-8", "surrogateescape"), m.names, m.flags, m.sigs, m.nchunks,
                 m.ids, m.lint) for rel, m in self.dirs.items()]
        data = msgpack.packb([self.VERSION, self.key, self.meta, rows], use_bin_type=True)
        try:
            atomic_write(self.path, data)
        except OSError:
            pass
