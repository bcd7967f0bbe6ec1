"""What the walk found, as columns: per directory its names, decisions and signatures
(:class:`DirScan`, and the stat cache's :class:`DirMemo`), and for the whole tree the sorted
:class:`Columns` a push builds its manifest from. Pure data, no I/O."""

from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from operator import gt
from typing import overload

from snapsync.core.hashing import ID_SIZE
from snapsync.core.manifest import DIR, FILE, SYMLINK


def normal_mode(st_mode: int) -> int:
    """Git-like file mode: 0755 when the owner may execute, else 0644.

    A file that neither group nor others may access is "owner only" and keeps that: 0700 or
    0600, so a private file (a key, a .netrc) stays private on the worker (format.md §4).
    """
    owner_only = not st_mode & 0o077
    if st_mode & stat.S_IXUSR:
        return 0o700 if owner_only else 0o755
    return 0o600 if owner_only else 0o644


@dataclass(slots=True)
class LocalEntry:
    """One entry found by the walk. ``path`` is relative posix text."""

    path: str
    kind: str
    mode: int
    size: int
    sig: tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, st_mode
    target: bytes = b""


# What the walk decided about each name of a directory, one byte per name in listing order.
# The stat cache keeps these per directory: when a directory lists the same names under the
# same rules, the decisions are taken from there instead of matching the rules again.
KEEP_FILE, KEEP_LINK, KEEP_DIR = ord("f"), ord("l"), ord("d")
IGNORED_FILE, IGNORED_DIR, OWN_DIR, STAGING, OTHER = (ord(c) for c in "ijesx")



class DirMemo:
    """What the last push saw in one directory: the stat cache's row for it.

    ``names``: the listed names, NUL-joined bytes; ``flags``: one decision per name;
    ``sigs``: five ints (size, mtime, ctime, inode, mode) per kept file or link, the bytes of
    a signed 64-bit array (a racy file's mtime is stored as -1, so it never matches);
    ``nchunks``/``ids``: chunk counts (uint32 array bytes) and the concatenated ids of the kept
    names (0 for links); ``lint``: the directory drew a name warning (it is linted again).
    """

    __slots__ = ("flags", "ids", "lint", "names", "nchunks", "sigs")

    def __init__(self, names: bytes, flags: bytes, sigs: bytes, nchunks: bytes, ids: bytes,
                 lint: bool) -> None:
        self.names, self.flags, self.sigs = names, flags, sigs
        self.nchunks, self.ids, self.lint = nchunks, ids, lint


class DirScan:
    """One directory as the walk found it: its names, decisions and kept signatures."""

    __slots__ = (
        "clean",
        "filled",
        "flags",
        "key",
        "lint",
        "memo",
        "names",
        "old",
        "parent",
        "rel",
        "sigs",
        "subdirs",
        "targets",
    )

    def __init__(self, rel: str, parent: int) -> None:
        self.rel = rel  # "" for the root, else "a/b"
        self.parent = parent  # index of the parent's DirScan (-1 for the root)
        self.names: list[str] = []
        self.flags = b""
        self.sigs = array("q")  # 5 per kept name, in listing order
        self.targets: dict[int, bytes] = {}  # kept position -> link target
        self.clean = False  # names, decisions and every signature equal the memo's
        self.memo: DirMemo | None = None  # the memo row whose decisions were reused
        self.old: DirMemo | None = None  # the memo row of this directory, if any
        self.lint = False  # a name drew a warning
        self.filled = False  # holds a kept file, link or listed directory
        self.subdirs: list[str] = []  # the names of kept subdirectories, to walk next
        self.key: bytes | None = None  # names_key(), kept by Listing.compact

    def names_key(self) -> bytes:
        """The listed names as the stat cache stores them: NUL-joined file system bytes."""
        if self.key is not None:
            return self.key
        return "\0".join(self.names).encode("utf-8", "surrogateescape")

    def kept(self) -> int:
        """How many of the names are kept files and links (entries of the tree)."""
        return self.flags.count(KEEP_FILE) + self.flags.count(KEEP_LINK)


class PathColumn(Sequence[bytes]):
    """Paths as one ``bytes`` and the end offset of each: no object per path.

    A path held as its own ``bytes`` costs ~33 bytes of header besides its text (100k
    files: ~6 MB of objects, alive from the walk to the manifest); here each is 8 bytes of
    offset, and made on access (``paths[i]``, a slice is a list, iteration).
    """

    __slots__ = ("blob", "ends")

    def __init__(self, paths: Iterable[bytes]) -> None:
        parts = paths if isinstance(paths, list) else list(paths)
        self.blob = b"".join(parts)
        self.ends = array("Q", accumulate(map(len, parts)))

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        ends = self.ends
        if type(i) is int and 0 < i < len(ends):  # the common case first
            return self.blob[ends[i - 1]:ends[i]]
        if isinstance(i, slice):
            start, stop, step = i.indices(len(ends))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            blob, out = self.blob, []
            a = ends[start - 1] if start else 0
            for b in ends[start:stop]:
                out.append(blob[a:b])
                a = b
            return out
        if i < 0:
            i += len(ends)
        if not 0 <= i < len(ends):
            raise IndexError("path index out of range")
        return self.blob[ends[i - 1] if i else 0:ends[i]]

    def __iter__(self) -> Iterator[bytes]:
        blob, a = self.blob, 0
        for b in self.ends:
            yield blob[a:b]
            a = b

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PathColumn):
            return self.blob == other.blob and self.ends == other.ends
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(map(bytes.__eq__, self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PathColumn({list(self)!r})"


@dataclass
class Columns:
    """A walk's entries sorted by path bytes, one column per field (no object per entry).

    ``sigs`` has five ints per entry (zeros for empty directories); ``cached`` is the memo's
    concatenated chunk ids of a file whose signature matched, else None; ``src`` locates each
    entry in the walk (directory index << 32 | position among its kept names; -1: an empty
    directory), for the stat cache.
    """

    paths: PathColumn
    kinds: bytearray
    sigs: array[int]
    targets: dict[int, bytes]
    cached: list[bytes | None]
    src: array[int]

    def __len__(self) -> int:
        return len(self.paths)


class Listing:
    """What a walk found: one :class:`DirScan` per directory listed, parents first.

    ``unchanged``: a memo was given, every directory matched it (same names, decisions and
    stat signatures, none racy) and the memo holds no other directory, so the tree is exactly
    the one it recorded. Per-entry columns are built only on request (:meth:`columns`).
    """

    def __init__(self, dirs: list[DirScan], unchanged: bool) -> None:
        self.dirs = dirs
        self.unchanged = unchanged
        self.compacted = False

    def counts(self) -> tuple[int, int, int, int]:
        """(files, empty directories, symlinks, file bytes)."""
        files = links = size = 0
        for d in self.dirs:
            k = 0
            for fl in d.flags:
                if fl == KEEP_FILE:
                    files += 1
                    size += d.sigs[5 * k]
                    k += 1
                elif fl == KEEP_LINK:
                    links += 1
                    k += 1
        empty = sum(1 for i, d in enumerate(self.dirs) if i and not d.filled)
        return files, empty, links, size

    def columns(self) -> Columns:
        """The entries (files, links, empty directories) sorted by path bytes."""
        if self.compacted:
            raise RuntimeError("Listing.columns after compact()")
        paths: list[bytes] = []
        kinds = bytearray()
        sigs = array("q")
        targets: dict[int, bytes] = {}
        cached: list[bytes | None] = []
        src = array("q")
        zeros = (0, 0, 0, 0, 0)
        for d_i, d in enumerate(self.dirs):
            prefix = d.rel + "/" if d.rel else ""
            prefix_b = len(prefix.encode("utf-8", "surrogateescape"))
            old = d.old
            old_sigs = array("q")
            old_ids: list[bytes] = []
            at: dict[bytes, int] | None = None  # name -> the memo's position, if names differ
            if old is not None:
                old_sigs.frombytes(old.sigs)
                old_ids = _split_ids(old.nchunks, old.ids)
                if d.memo is None:
                    at = _kept_positions(old)
            k = 0
            for name, fl in zip(d.names, d.flags, strict=False):
                if fl != KEEP_FILE and fl != KEEP_LINK:
                    continue
                paths.append((prefix + name).encode("utf-8", "surrogateescape"))
                sig = d.sigs[5 * k:5 * k + 5]
                sigs.extend(sig)
                if fl == KEEP_LINK:
                    kinds.append(_LINK)
                    targets[len(paths) - 1] = d.targets[k]
                    cached.append(None)
                else:
                    kinds.append(_FILE)
                    hit = None
                    if old is not None:
                        j = k if at is None else at.get(paths[-1][prefix_b:], -1)
                        if j >= 0 and old_sigs[5 * j:5 * j + 5] == sig:
                            hit = old_ids[j]
                    cached.append(hit)
                src.append(d_i << 32 | k)
                k += 1
            if d_i and not d.filled:  # an empty directory
                paths.append(d.rel.encode("utf-8", "surrogateescape"))
                kinds.append(_DIR)
                sigs.extend(zeros)
                cached.append(None)
                src.append(-1)
        # The walk's order is nearly sorted ("a/b" vs "a.txt"): check before building an order,
        # and build no list or dict per entry beyond it (100k files: ~10 MB less at the peak).
        if all(map(gt, islice(paths, 1, None), paths)):
            return Columns(PathColumn(paths), kinds, sigs, targets, cached, src)
        order = array("q", sorted(range(len(paths)), key=paths.__getitem__))
        o_sigs = array("q")
        for i in order:
            o_sigs.extend(sigs[5 * i:5 * i + 5])
        new_pos = array("q", bytes(8 * len(order)))
        for new, old in enumerate(order):
            new_pos[old] = new
        return Columns(PathColumn([paths[i] for i in order]), bytearray(kinds[i] for i in order),
                       o_sigs,
                       {new_pos[i]: t for i, t in targets.items()},
                       [cached[i] for i in order], array("q", (src[i] for i in order)))

    def compact(self) -> None:
        """Keep only what the stat cache's rows need once :meth:`columns` was taken: each
        directory's names as one ``bytes`` (no ``str`` per file) and its decisions.

        The signatures and link targets then live in the columns alone (push's read phase
        holds ~9 MB less at 100k files); :meth:`columns` and :meth:`counts` no longer apply.
        """
        for d in self.dirs:
            d.key = d.names_key()
            d.names, d.subdirs, d.targets = [], [], {}
            d.sigs = array("q")
            d.old = d.memo = None
        self.compacted = True

    def entries(self) -> list[LocalEntry]:
        """The entries as :class:`LocalEntry` objects (one each: for small trees and tests)."""
        cols = self.columns()
        out = []
        for i, path in enumerate(cols.paths):
            sig = tuple(cols.sigs[5 * i:5 * i + 5])
            kind = _KIND_OF[cols.kinds[i]]
            if kind == FILE:
                out.append(LocalEntry(os.fsdecode(path), FILE, normal_mode(sig[4]), sig[0],
                                      sig))  # type: ignore[arg-type]
            elif kind == SYMLINK:
                out.append(LocalEntry(os.fsdecode(path), SYMLINK, 0o777, 0, sig,  # type: ignore
                                      cols.targets[i]))
            else:
                out.append(LocalEntry(os.fsdecode(path), DIR, 0o755, 0, sig))  # type: ignore
        return out


_FILE, _LINK, _DIR = ord(FILE), ord(SYMLINK), ord(DIR)
_KIND_OF = {_FILE: FILE, _LINK: SYMLINK, _DIR: DIR}


def _kept_positions(row: DirMemo) -> dict[bytes, int]:
    """A memo row's kept names (bytes) -> their position among its kept names."""
    out = {}
    k = 0
    for name, fl in zip(row.names.split(b"\0"), row.flags, strict=False):
        if fl in (KEEP_FILE, KEEP_LINK):
            out[name] = k
            k += 1
    return out


def _split_ids(nchunks: bytes, ids: bytes) -> list[bytes]:
    counts = array("I")
    counts.frombytes(nchunks)
    out, pos = [], 0
    for n in counts:
        end = pos + n * ID_SIZE
        out.append(ids[pos:end])
        pos = end
    return out
