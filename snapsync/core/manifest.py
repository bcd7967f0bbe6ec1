"""The manifest: a snapshot's tree plus where each of its chunks lives. Sole msgpack user.

Pure: no I/O. Layout (docs/format.md §4):

    manifest = zstd(msgpack([b"snapsync-manifest", 1, tree: bin, index: bin, info: map]))
    tree     = msgpack([b"snapsync-tree", 1, paths, kinds, modes, sizes, nchunks, ids, targets])
    index    = msgpack([packs, ids, pack_idx, offsets, lengths, raw_sizes])

Encoding (the canonical bytes, hence the snapshot id) is in :mod:`snapsync.core.manifest_encode`;
decoding and validating a manifest read from a store (untrusted input) is in
:mod:`snapsync.core.manifest_decode`.

The snapshot id is xxh3-128 of the ``tree`` bytes only. The tree holds nothing volatile (no
times, hosts or locations), entries are sorted by path bytes and paths are posix, so the same
tree always gives the same id. Columns instead of rows load ~8x faster (docs/design.md, "Bounds").
"""

from __future__ import annotations

import gc
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

import msgpack

from snapsync.core.hashing import ID_SIZE, chunk_id
from snapsync.errors import FormatError

MANIFEST_MAGIC = b"snapsync-manifest"
TREE_MAGIC = b"snapsync-tree"
MANIFEST_VERSION = 1

FILE = "f"
SYMLINK = "l"
DIR = "d"
# Each kind's byte in a tree's ``kinds`` column (what code over the columns compares).
FILE_B, LINK_B, DIR_B = ord(FILE), ord(SYMLINK), ord(DIR)
_KINDS = {FILE: FILE_B, SYMLINK: LINK_B, DIR: DIR_B}
_KIND_BY_BYTE = {v: k for k, v in _KINDS.items()}
_KIND_NAMES = {FILE: "file", SYMLINK: "symlink", DIR: "directory"}

# The only modes the format carries (docs/format.md §4): git's 0644/0755, their owner-only
# forms 0600/0700, links 0777, empty directories 0755. Anything else (setuid, setgid, sticky,
# group-writable...) is refused: a store must not be able to plant a setuid file.
FILE_MODES = (0o644, 0o755, 0o600, 0o700)
_MODES = {FILE: FILE_MODES, SYMLINK: (0o777,), DIR: (0o755,)}

# Bounds applied when decoding untrusted manifests: nothing may ask for unbounded memory.
MAX_CHUNK_SIZE = 64 << 20
MAX_ENTRIES = 50_000_000


class Entry(NamedTuple):
    """One tree entry. ``path`` is relative, posix, as the file system's bytes.

    A named tuple, not a dataclass: a manifest holds columns and makes entries on demand
    (:meth:`TreeColumns.entry`), which costs ~0.3 µs here against ~1.5 µs for a frozen one.
    """

    path: bytes
    kind: str
    mode: int = 0o644
    size: int = 0
    chunks: tuple[bytes, ...] = ()
    target: bytes = b""

    @property
    def name(self) -> str:
        """The path as text (undecodable bytes kept as surrogate escapes)."""
        return self.path.decode("utf-8", "surrogateescape")


def path_text(path: bytes) -> str:
    """A manifest path as text, for messages (undecodable bytes as surrogate escapes)."""
    return path.decode("utf-8", "surrogateescape")


class Location(NamedTuple):
    """Where a stored chunk lives: ``length`` stored bytes at ``offset`` in ``pack``."""

    pack: bytes
    offset: int
    length: int
    raw_size: int


_new_tuple = tuple.__new__


def split_ids(ids: bytes | bytearray) -> list[bytes]:
    """The ``ID_SIZE``-byte ids of a concatenated id column (one C loop, no Python one)."""
    return _ID_RE.findall(ids)


_ID_RE = re.compile(b"(?s).{%d}" % ID_SIZE)


@dataclass(eq=False)
class TreeColumns:
    """A tree as the format stores it: one column per field, entries sorted by path bytes.

    Push builds its manifest from columns (lists, one per field, instead of an
    :class:`Entry` per file); a decoded manifest keeps its tree the same way, with the
    integer columns in arrays (a few bytes an entry, no object each). Either way the bytes,
    and so the snapshot id, are those :func:`encode_tree` gives for the same entries.
    Entries are made on demand: :meth:`entry`, iteration, :meth:`entries`.
    """

    paths: list[bytes]
    kinds: bytes  # one byte per entry: b"f", b"l", b"d"
    modes: Sequence[int]
    sizes: Sequence[int]
    nchunks: Sequence[int]
    ids: bytes  # every entry's chunk ids, concatenated in entry order
    targets: list[bytes]
    _starts: array[int] | None = field(default=None, repr=False)

    @classmethod
    def from_entries(cls, entries: Iterable[Entry]) -> TreeColumns:
        """Columns of ``entries`` (in the order given)."""
        es = list(entries)
        return cls([e.path for e in es], bytes(_KINDS[e.kind] for e in es),
                   [e.mode for e in es], [e.size for e in es], [len(e.chunks) for e in es],
                   b"".join(c for e in es for c in e.chunks), [e.target for e in es])

    def __len__(self) -> int:
        return len(self.paths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TreeColumns):
            return NotImplemented
        return (self.paths == other.paths and bytes(self.kinds) == bytes(other.kinds)
                and list(self.modes) == list(other.modes)
                and list(self.sizes) == list(other.sizes)
                and list(self.nchunks) == list(other.nchunks)
                and bytes(self.ids) == bytes(other.ids) and self.targets == other.targets)

    @property
    def starts(self) -> array[int]:
        """Prefix sums of the chunk counts (``n + 1`` values): entry *i*'s chunks are ids
        ``starts[i]`` to ``starts[i + 1]`` of :attr:`ids`."""
        if self._starts is None:
            self._starts = array("q", accumulate(self.nchunks, initial=0))
        return self._starts

    def chunks(self, i: int) -> tuple[bytes, ...]:
        """Entry ``i``'s chunk ids."""
        s = self.starts
        a, b = s[i] * ID_SIZE, s[i + 1] * ID_SIZE
        ids = self.ids
        if b == a:
            return ()
        if b - a == ID_SIZE:
            return (ids[a:b],)
        return tuple(ids[j:j + ID_SIZE] for j in range(a, b, ID_SIZE))

    def chunk_blob(self, i: int) -> bytes:
        """Entry ``i``'s chunk ids, concatenated."""
        s = self.starts
        return bytes(self.ids[s[i] * ID_SIZE:s[i + 1] * ID_SIZE])

    def kind(self, i: int) -> str:
        return _KIND_BY_BYTE[self.kinds[i]]

    def entry(self, i: int) -> Entry:
        """Entry ``i`` as an :class:`Entry` (made now; the tree keeps no objects per entry)."""
        return _new_tuple(Entry, (self.paths[i], _KIND_BY_BYTE[self.kinds[i]], self.modes[i],
                                  self.sizes[i], self.chunks(i), self.targets[i]))

    def __iter__(self) -> Iterator[Entry]:
        return map(self.entry, range(len(self.paths)))

    def entries(self) -> list[Entry]:
        """The same tree as :class:`Entry` objects."""
        return list(self)

    def indexes(self, kind: str) -> array[int]:
        """The indexes of the entries of ``kind``, in order."""
        kinds, b = self.kinds, _KINDS[kind]
        out = array("I")
        i = kinds.find(b)
        while i != -1:
            out.append(i)
            i = kinds.find(b, i + 1)
        return out


class Index(Mapping[bytes, Location]):
    """A manifest's index as the format stores it: columns, one row per distinct chunk.

    A mapping from chunk id to :class:`Location`, each made on demand: the index holds the
    id column, one ``dict`` from id to row, and arrays of ints (no object per chunk
    besides its id and its row number). ``cids[r]`` is row ``r``'s id.
    """

    __slots__ = ("_row", "cids", "ids", "lengths", "offsets", "pack_idx", "packs", "raws")

    def __init__(self, packs: list[bytes], ids: bytes, pack_idx: array[int],
                 offsets: array[int], lengths: array[int], raws: array[int]) -> None:
        self.packs = packs
        self.ids = ids
        self.pack_idx = pack_idx
        self.offsets = offsets
        self.lengths = lengths
        self.raws = raws
        self.cids = split_ids(ids)
        # A repeated id keeps its last row, as a dict built row by row would.
        self._row = dict(zip(self.cids, range(len(self.cids)), strict=True))

    def row(self, cid: bytes) -> int | None:
        """The row of chunk ``cid``, or ``None``."""
        return self._row.get(cid)

    def at(self, r: int) -> Location:
        """The location of row ``r``."""
        return _new_tuple(Location, (self.packs[self.pack_idx[r]], self.offsets[r],
                                     self.lengths[r], self.raws[r]))

    def __getitem__(self, cid: bytes) -> Location:
        r = self._row[cid]
        return _new_tuple(Location, (self.packs[self.pack_idx[r]], self.offsets[r],
                                     self.lengths[r], self.raws[r]))

    def raw_size(self, cid: bytes) -> int:
        return self.raws[self._row[cid]]

    def __contains__(self, cid: object) -> bool:
        return cid in self._row

    def __len__(self) -> int:
        return len(self._row)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._row)

    def used_packs(self) -> set[bytes]:
        """The packs the index's chunks lie in (``{loc.pack for loc in values()}``)."""
        packs = self.packs
        return {packs[p] for p in set(map(self.pack_idx.__getitem__, self._row.values()))}


class ChainLocations(Mapping[bytes, Location]):
    """Chunk locations from several indexes (the last one that places a chunk wins, as a
    ``dict.update`` per index would) and ones added by :meth:`setdefault`, without copying
    any index: push's view of what the store holds."""

    def __init__(self, indexes: Iterable[Index]) -> None:
        self.indexes = list(indexes)[::-1]
        self.added: dict[bytes, Location] = {}

    def __getitem__(self, cid: bytes) -> Location:
        loc = self.added.get(cid)
        if loc is not None:
            return loc
        for ix in self.indexes:
            r = ix.row(cid)
            if r is not None:
                return ix.at(r)
        raise KeyError(cid)

    def __contains__(self, cid: object) -> bool:
        if cid in self.added:
            return True
        for ix in self.indexes:  # noqa: SIM110 (push asks per chunk: no generator per call)
            if cid in ix._row:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.added) or any(len(ix) for ix in self.indexes)

    def __iter__(self) -> Iterator[bytes]:
        seen: set[bytes] = set()
        for m in (self.added, *self.indexes):
            for cid in m:
                if cid not in seen:
                    seen.add(cid)
                    yield cid

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def setdefault(self, cid: bytes, loc: Location) -> Location:
        """``loc`` for ``cid`` unless a location is known already (which is returned)."""
        if cid in self:
            return self[cid]
        self.added[cid] = loc
        return loc


class Manifest:
    """A decoded manifest: ``tree`` (columns, sorted by path), ``index`` (where each chunk
    lives), ``info``, and ``id`` (the snapshot id, hex).

    ``refs[j]`` is the index row of the tree's ``j``-th chunk reference (``tree.ids``),
    computed while the sizes were checked. Entries are made on demand.
    """

    __slots__ = ("id", "index", "info", "refs", "tree")

    def __init__(self, tree: TreeColumns, index: Index, info: dict[str, Any] | None = None,
                 id: str = "", refs: array[int] | None = None) -> None:
        self.tree = tree
        self.index = index
        self.info = info if info is not None else {}
        self.id = id
        if refs is None:
            refs = array("I", map(index._row.__getitem__, split_ids(tree.ids)))
        self.refs = refs

    @property
    def entries(self) -> list[Entry]:
        """Every entry as an :class:`Entry`, built now (for light consumers: ls, diff, export;
        the pull path reads :attr:`tree`'s columns instead)."""
        return self.tree.entries()

    @property
    def locations(self) -> Index:
        """The index, as a mapping from chunk id to :class:`Location`."""
        return self.index

    def files(self) -> Iterator[Entry]:
        tree = self.tree
        return map(tree.entry, tree.indexes(FILE))

    def chunk_rows(self) -> set[int]:
        """The index rows of the chunks the tree uses."""
        return set(self.refs)

    def chunk_ids(self) -> set[bytes]:
        keys = self.index.cids
        return {keys[r] for r in set(self.refs)}


def as_tree(entries: Manifest | TreeColumns | Iterable[Entry]) -> TreeColumns:
    """The tree columns of a manifest, of columns, or of a list of entries."""
    if isinstance(entries, Manifest):
        return entries.tree
    if isinstance(entries, TreeColumns):
        return entries
    return TreeColumns.from_entries(entries)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# The fewest bytes one element of a column can take in a valid object: a tree entry needs a
# path (bin header + a byte), a kind byte, a mode (a uint16: 0o600..0o777), a size, a chunk
# count and a target (bin header); an index or trailer entry needs a 16-byte id and three or
# four ints. No array of a valid object can hold more elements than its bytes allow, so
# msgpack refuses such a claim from the header, before it allocates the list.
TREE_ENTRY_MIN_BYTES = 11
INDEX_ENTRY_MIN_BYTES = 18


def _unpack(data: bytes, what: str, min_item_bytes: int = 1) -> Any:
    """msgpack-decode untrusted bytes with every length bounded by ``len(data)``.

    ``min_item_bytes``: what one element of the object's arrays costs at least, so an array
    header that claims more elements than the object's size allows is refused up front.
    """
    n = len(data)
    # The cyclic GC dominates unpacking of big nested lists (docs/design.md, "Bounds").
    was = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True,
                               max_bin_len=n, max_str_len=min(n, 1 << 24),
                               max_array_len=max(16, n // min_item_bytes),
                               max_map_len=max(16, n // 2), max_ext_len=0)
    except Exception as exc:
        raise FormatError(f"{what}: not valid msgpack ({exc})") from None
    finally:
        if was:
            gc.enable()


def tree_id(tree_bytes: bytes) -> str:
    return chunk_id(tree_bytes).hex()


def encode_json_like(obj: Any) -> bytes:
    """msgpack for small metadata objects that are not JSON (pack trailers)."""
    return _pack(obj)


def decode_json_like(data: bytes, what: str, min_item_bytes: int = 1) -> Any:
    """Decode untrusted msgpack metadata, every length bounded by the input's size."""
    return _unpack(data, what, min_item_bytes)
