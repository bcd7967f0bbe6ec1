"""Tree diff and path safety: pure functions over manifest entries and local observations.

``check_paths`` is the gate every manifest passes before a pull writes anything: paths must be
relative posix without ``.``/``..``/empty components, unique (also by case where the target
file system ignores case), and never pass through a symlink or file the same manifest creates.
``plan_pull`` compares a snapshot with what the target holds; ``diff_trees`` compares two
snapshots.
"""

from __future__ import annotations

import sys
import unicodedata
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import gt

from snapsync.core.manifest import (
    DIR,
    DIR_B,
    FILE,
    FILE_B,
    LINK_B,
    SYMLINK,
    Entry,
    Index,
    Location,
    Manifest,
    TreeColumns,
    as_tree,
    path_text,
)
from snapsync.errors import UnsafePathError


def _fold(path: bytes) -> bytes:
    """A path as a case-insensitive file system (APFS, HFS+, NTFS) compares it: case folded
    and Unicode-normalised, so "A" and "a", or "é" composed and decomposed, are one name."""
    text = path.decode("utf-8", "surrogateescape")
    return unicodedata.normalize("NFD", text).casefold().encode("utf-8", "surrogateescape")


def check_paths(entries: Manifest | TreeColumns | Iterable[Entry],
                case_insensitive: bool | None = None, windows: bool | None = None) -> None:
    """Raise ``UnsafePathError`` naming the first path that could escape or collide."""
    if case_insensitive is None:
        case_insensitive = sys.platform in ("darwin", "win32")
    if windows is None:
        windows = sys.platform == "win32"
    tree = as_tree(entries)
    paths, kinds = tree.paths, tree.kinds
    # A decoded tree is sorted and unique (checked there): then no set of every path is
    # needed to find a repeat, and a folder is looked up by bisection in the paths
    # themselves instead of in a dict of every leaf (~12 MB less at 100k entries).
    ordered = not case_insensitive and all(map(gt, islice(paths, 1, None), paths))
    leaves: dict[bytes, int] = {}
    folded: dict[bytes, bytes] = {}
    folds: list[bytes] = []  # each path as compared where case does not count
    seen: set[bytes] = set()
    for i, p in enumerate(paths):
        # Names are decoded for messages only: this runs once per entry of every pull.
        if not p or p[:1] == b"/" or b"\x00" in p:
            raise UnsafePathError(f"manifest path {path_text(p)!r} is empty, absolute or has a NUL "
                                  "byte")
        if windows and (b"\\" in p or b":" in p):
            raise UnsafePathError(f"manifest path {path_text(p)!r} is not safe on Windows")
        q = b"/" + p + b"/"
        if b"//" in q or b"/./" in q or b"/../" in q:
            raise UnsafePathError(f"manifest path {path_text(p)!r} has an empty, '.' or '..' "
                                  "component")
        if ordered:
            continue
        if p in seen:
            raise UnsafePathError(f"manifest path {path_text(p)!r} appears twice")
        seen.add(p)
        if case_insensitive:
            low = _fold(p)
            folds.append(low)
            if low in folded:
                raise UnsafePathError(f"manifest paths {path_text(p)!r} and {folded[low]!r} differ "
                                      "only in case; this file system cannot hold both")
            folded[low] = p
        k = kinds[i]
        if k != DIR_B:
            # Where case does not count, "A/x" passes through a link named "a".
            leaves[low if case_insensitive else p] = k
    del seen

    def leaf_kind(d: bytes) -> int | None:
        if not ordered:
            return leaves.get(d)
        j = bisect_left(paths, d)
        if j < len(paths) and paths[j] == d and kinds[j] != DIR_B:
            return kinds[j]
        return None

    # No entry may live under a symlink or a file of the same manifest. Each folder is
    # looked up once, however many entries it holds.
    dirs_ok: set[bytes] = set()
    for p, key in zip(paths, folds if case_insensitive else paths, strict=True):
        d = key.rpartition(b"/")[0]
        while d and d not in dirs_ok:
            kind = leaf_kind(d)
            if kind is not None:
                what = "a symlink" if kind == LINK_B else "a file"
                raise UnsafePathError(f"manifest path {path_text(p)!r} passes through "
                                      f"{d.decode('utf-8', 'replace')!r}, "
                                      f"which is {what} in the same snapshot")
            dirs_ok.add(d)
            d = d.rpartition(b"/")[0]


@dataclass(frozen=True, slots=True)
class Seen:
    """What the target holds at a manifest path (``chunks`` only for files, when known)."""

    kind: str  # FILE, SYMLINK, DIR, or "" for missing / not reachable safely
    mode: int = 0
    size: int = 0
    chunks: tuple[bytes, ...] | None = None
    target: bytes = b""


class Rows(Sequence[Entry]):
    """Some entries of a tree, by index (``idx``): :class:`Entry` objects made on demand.

    A plan holds these instead of an entry (and a tuple of chunk ids) per file: four bytes
    an entry. With the manifest as ``source``, chunk ids come out as the index's own id
    objects (no new bytes per chunk).
    """

    __slots__ = ("idx", "source", "tree")

    def __init__(self, tree: TreeColumns, idx: array[int] | None = None,
                 source: Manifest | None = None) -> None:
        self.tree = tree
        self.idx = idx if idx is not None else array("I")
        self.source = source

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, n):  # type: ignore[no-untyped-def,override]
        if isinstance(n, slice):
            return [self.tree.entry(i) for i in self.idx[n]]
        return self.tree.entry(self.idx[n])

    def __iter__(self) -> Iterator[Entry]:
        return map(self.tree.entry, self.idx)

    def paths(self) -> Iterator[bytes]:
        return map(self.tree.paths.__getitem__, self.idx)

    def size(self) -> int:
        """The entries' total size in bytes."""
        return sum(map(self.tree.sizes.__getitem__, self.idx))

    def files(self) -> Rows:
        """The regular files among these rows."""
        kinds = self.tree.kinds
        return Rows(self.tree, array("I", [i for i in self.idx if kinds[i] == FILE_B]),
                    self.source)

    def chunk_ids(self) -> set[bytes]:
        """The chunk ids of these rows' files."""
        t, m = self.tree, self.source
        s, kinds = t.starts, t.kinds
        out: set[bytes] = set()
        if m is not None:
            cids, refs = m.index.cids, m.refs
            for i in self.idx:
                if kinds[i] == FILE_B and s[i + 1] > s[i]:
                    out.update(map(cids.__getitem__, refs[s[i]:s[i + 1]]))
        else:
            for i in self.idx:
                if kinds[i] == FILE_B:
                    out.update(t.chunks(i))
        return out


@dataclass
class PullPlan:
    """What a pull must do to make the target equal to the snapshot (rows of its tree)."""

    write: Rows  # files and symlinks to (re)create
    chmod: Rows  # same content, different mode
    mkdir: Rows  # empty directories to create
    delete: list[tuple[bytes, bool]] = field(default_factory=list)  # (path, is_dir), deepest first
    unchanged: int = 0

    @property
    def files(self) -> Rows:
        """The regular files to write."""
        return self.write.files()

    @property
    def needed(self) -> set[bytes]:
        """Chunk ids the files to write are made of."""
        return self.write.chunk_ids()


_ABSENT = Seen("")


def plan_pull(entries: Manifest | TreeColumns | Iterable[Entry],
              seen: dict[bytes, Seen]) -> PullPlan:
    """Compare the snapshot (a manifest, best: its chunk ids are shared) with ``seen``."""
    tree = as_tree(entries)
    src = entries if isinstance(entries, Manifest) else None
    write, chmod, mkdir = array("I"), array("I"), array("I")
    unchanged = 0
    paths, kinds, modes, sizes = tree.paths, tree.kinds, tree.modes, tree.sizes
    if not seen:  # an empty target: everything is written
        for i, k in enumerate(kinds):
            (mkdir if k == DIR_B else write).append(i)
    else:
        for i, k in enumerate(kinds):
            s = seen.get(paths[i]) or _ABSENT
            if k == DIR_B:
                if s.kind == DIR:
                    unchanged += 1
                else:
                    mkdir.append(i)
            elif k == LINK_B:
                if s.kind == SYMLINK and s.target == tree.targets[i]:
                    unchanged += 1
                else:
                    write.append(i)
            elif s.kind == FILE and s.size == sizes[i] and s.chunks == tree.chunks(i):
                if s.mode == modes[i]:
                    unchanged += 1
                else:
                    chmod.append(i)
            else:
                write.append(i)
    return PullPlan(Rows(tree, write, src), Rows(tree, chmod, src), Rows(tree, mkdir, src),
                    unchanged=unchanged)


def plan_deletes(entries: Manifest | TreeColumns | Iterable[Entry],
                 found: Iterable[tuple[bytes, bool]],
                 held: set[bytes]) -> list[tuple[bytes, bool]]:
    """Target entries the snapshot does not hold, deepest first (``found``: ``(path,
    is_dir)`` from a walk that skipped protected paths; ``held``: folders holding those).

    A folder goes only when nothing of the snapshot lies below it and no protected entry does.
    """
    tree = as_tree(entries)
    keep: set[bytes] = set(tree.paths)
    leaves: set[bytes] = set()
    keep_dirs = {b""}
    kinds = tree.kinds
    for i, path in enumerate(tree.paths):
        if kinds[i] != DIR_B:
            leaves.add(path)
        parts = path.split(b"/")
        for j in range(1, len(parts)):
            keep_dirs.add(b"/".join(parts[:j]))
        if kinds[i] == DIR_B:
            keep_dirs.add(path)
    protected = set()
    for h in held:  # a folder holding protected entries keeps its ancestors too
        parts = h.split(b"/") if h else []
        for i in range(1, len(parts) + 1):
            protected.add(b"/".join(parts[:i]))
    out = []
    for path, is_dir in found:
        # The commit itself replaces whatever sits at a snapshot path, or below one of its
        # files and symlinks; only the rest is stale.
        if path in keep or path in keep_dirs or _under(path, leaves):
            continue
        if not is_dir or path not in protected:
            out.append((path, is_dir))
    # Deepest first, files before their folder; the order is stable for equal depth.
    out.sort(key=lambda pd: (-pd[0].count(b"/"), pd[1], pd[0]))
    return out


def _under(path: bytes, leaves: set[bytes]) -> bool:
    i = path.find(b"/")
    while i != -1:
        if path[:i] in leaves:
            return True
        i = path.find(b"/", i + 1)
    return False


@dataclass
class TreeDiff:
    """Paths added, removed and modified (content, mode, kind or link target)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified}


def diff_trees(old: Iterable[Entry], new: Iterable[Entry]) -> TreeDiff:
    a = {e.path: e for e in old}
    b = {e.path: e for e in new}
    d = TreeDiff()
    for p in sorted(a.keys() | b.keys()):
        if p not in a:
            d.added.append(b[p].name)
        elif p not in b:
            d.removed.append(a[p].name)
        elif a[p] != b[p]:
            d.modified.append(b[p].name)
    return d


# Ranged reads (docs/design.md, "Bounds"): ranges closer than MAX_GAP are merged, since one
# request beats two; a merged range stays under MAX_RANGE; a batch of concurrent requests
# holds at most FETCH_BATCH_BYTES, which bounds a pull's download memory.
MAX_GAP = 256 << 10
MAX_RANGE = 4 << 20
FETCH_BATCH_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class Fetch:
    """One ranged read: ``[start, end)`` of ``pack``, holding ``chunks`` (ids)."""

    pack: bytes
    start: int
    end: int
    chunks: tuple[bytes, ...]


def plan_fetch(locations: Mapping[bytes, Location], ids: Iterable[bytes], max_bytes: int,
               max_count: int) -> list[list[Fetch]]:
    """Group chunks by pack, merge nearby ranges, and split the reads into batches bounded
    in count and bytes. Deterministic: packs and offsets in order."""
    reads: list[Fetch] = []
    cur: list[bytes] = []
    pack, start, end = b"", 0, 0
    for p, off, ln, cid in _in_pack_order(locations, ids):
        if cur and (p != pack or off - end > MAX_GAP or off + ln - start > MAX_RANGE):
            reads.append(Fetch(pack, start, end, tuple(cur)))
            cur = []
        if not cur:
            pack, start, end = p, off, 0
        cur.append(cid)
        end = max(end, off + ln)
    if cur:
        reads.append(Fetch(pack, start, end, tuple(cur)))
    batches: list[list[Fetch]] = []
    size = 0
    for r in reads:
        n = r.end - r.start
        if batches and batches[-1] and (len(batches[-1]) < max_count
                                        and size + n <= max_bytes):
            batches[-1].append(r)
            size += n
        else:
            batches.append([r])
            size = n
    return batches


def _in_pack_order(locations: Mapping[bytes, Location], ids: Iterable[bytes]
                   ) -> Iterator[tuple[bytes, int, int, bytes]]:
    """``(pack, offset, length, id)`` of ``ids``, by pack name, then offset. From an
    :class:`Index`, sorted by one int per chunk (a pack's rank and the offset) instead of
    a tuple per chunk: a pull of 100k chunks holds ~4 MB here, not ~13 MB."""
    if not isinstance(locations, Index):
        yield from sorted((loc.pack, loc.offset, loc.length, cid)
                          for cid in ids for loc in (locations[cid],))
        return
    packs, pidx, offs, lens, cids = (locations.packs, locations.pack_idx, locations.offsets,
                                     locations.lengths, locations.cids)
    rank = {p: n for n, p in enumerate(sorted(set(packs)))}
    shift = [rank[p] << 41 for p in packs]  # offsets are <= 2**40 (decode checks)
    row = locations.row
    rows = []
    for cid in ids:
        r = row(cid)
        if r is None:
            raise KeyError(cid)
        rows.append(r)
    rows.sort(key=lambda r: shift[pidx[r]] | offs[r])
    for r in rows:
        yield packs[pidx[r]], offs[r], lens[r], cids[r]
