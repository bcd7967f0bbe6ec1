"""The manifest: a snapshot's tree plus where each of its chunks lives. Sole msgpack user.

Pure: no I/O. Layout (docs/format.md §4):

    manifest = zstd(msgpack([b"snapsync-manifest", 1, tree: bin, index: bin, info: map]))
    tree     = msgpack([b"snapsync-tree", 1, paths, kinds, modes, sizes, nchunks, ids, targets])
    index    = msgpack([packs, ids, pack_idx, offsets, lengths, raw_sizes])

The snapshot id is xxh3-128 of the ``tree`` bytes only. The tree holds nothing volatile (no
times, hosts or locations), entries are sorted by path bytes and paths are posix, so the same
tree always gives the same id. Columns instead of rows load ~8x faster (docs/design.md, "Bounds").
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from snapsync.core.hashing import ID_SIZE, chunk_id
from snapsync.errors import FormatError, IntegrityError

MANIFEST_MAGIC = b"snapsync-manifest"
TREE_MAGIC = b"snapsync-tree"
MANIFEST_VERSION = 1

FILE = "f"
SYMLINK = "l"
DIR = "d"
_KINDS = {FILE: ord("f"), SYMLINK: ord("l"), DIR: ord("d")}
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


@dataclass(frozen=True, slots=True)
class Entry:
    """One tree entry. ``path`` is relative, posix, as the file system's bytes."""

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


@dataclass(frozen=True, slots=True)
class Location:
    """Where a stored chunk lives: ``length`` stored bytes at ``offset`` in ``pack``."""

    pack: bytes
    offset: int
    length: int
    raw_size: int


@dataclass
class Manifest:
    """A decoded manifest. ``entries`` are sorted by path; ``id`` is the snapshot id (hex)."""

    entries: list[Entry]
    locations: dict[bytes, Location]
    info: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def files(self) -> Iterable[Entry]:
        return (e for e in self.entries if e.kind == FILE)

    def chunk_ids(self) -> set[bytes]:
        return {c for e in self.entries for c in e.chunks}


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


def encode_tree(entries: Sequence[Entry]) -> bytes:
    """Canonical tree bytes. Raises ``ValueError`` when entries are unsorted or duplicated."""
    last = None
    for e in entries:
        if last is not None and e.path <= last:
            raise ValueError(f"tree entries not sorted or duplicated at {e.path!r}")
        last = e.path
    return _pack([
        TREE_MAGIC,
        MANIFEST_VERSION,
        [e.path for e in entries],
        bytes(_KINDS[e.kind] for e in entries),
        [e.mode for e in entries],
        [e.size for e in entries],
        [len(e.chunks) for e in entries],
        b"".join(c for e in entries for c in e.chunks),
        [e.target for e in entries],
    ])


def tree_id(tree_bytes: bytes) -> str:
    return chunk_id(tree_bytes).hex()


def encode_index(entries: Sequence[Entry], locations: Mapping[bytes, Location]) -> bytes:
    """Index of every chunk the tree uses, in first-use order (deterministic for a tree)."""
    return encode_index_ids(b"".join(c for e in entries for c in e.chunks), locations)[0]


def encode_manifest(entries: Sequence[Entry], locations: dict[bytes, Location],
                    info: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """Return ``(snapshot id, uncompressed manifest bytes)``."""
    tree = encode_tree(entries)
    index = encode_index(entries, locations)
    return tree_id(tree), _pack([MANIFEST_MAGIC, MANIFEST_VERSION, tree, index, info or {}])


@dataclass
class TreeColumns:
    """A tree as the format stores it: one column per field, entries sorted by path bytes.

    Push builds its manifest from columns (one list per field instead of an :class:`Entry`
    per file): the bytes, and so the snapshot id, are those :func:`encode_tree` gives for the
    same entries.
    """

    paths: list[bytes]
    kinds: bytes  # one byte per entry: b"f", b"l", b"d"
    modes: list[int]
    sizes: list[int]
    nchunks: list[int]
    ids: bytes  # every entry's chunk ids, concatenated in entry order
    targets: list[bytes]

    def entries(self) -> list[Entry]:
        """The same tree as :class:`Entry` objects."""
        out, pos = [], 0
        for i, path in enumerate(self.paths):
            k = self.nchunks[i]
            chunks = tuple(self.ids[j:j + ID_SIZE] for j in range(pos, pos + k * ID_SIZE,
                                                                   ID_SIZE))
            pos += k * ID_SIZE
            out.append(Entry(path, _KIND_BY_BYTE[self.kinds[i]], self.modes[i], self.sizes[i],
                             chunks, self.targets[i]))
        return out


def encode_tree_columns(cols: TreeColumns) -> bytes:
    """Canonical tree bytes from columns; ``ValueError`` when paths are unsorted or repeated."""
    paths = cols.paths
    for i in range(1, len(paths)):
        if paths[i] <= paths[i - 1]:
            raise ValueError(f"tree entries not sorted or duplicated at {paths[i]!r}")
    return _pack([TREE_MAGIC, MANIFEST_VERSION, paths, bytes(cols.kinds), cols.modes,
                  cols.sizes, cols.nchunks, bytes(cols.ids), cols.targets])


def encode_index_ids(ids: bytes, locations: Mapping[bytes, Location]
                     ) -> tuple[bytes, int, list[bytes]]:
    """The index of the chunk ids ``ids`` (concatenated, in entry order): first-use order.

    Returns the index bytes, the number of distinct chunks and the packs they lie in
    (:func:`encode_index` is this for a list of entries).
    """
    seen: set[bytes] = set()
    packs: list[bytes] = []
    pack_no: dict[bytes, int] = {}
    firsts = bytearray()
    pack_idx, offsets, lengths, raws = [], [], [], []
    for j in range(0, len(ids), ID_SIZE):
        c = bytes(ids[j:j + ID_SIZE])
        if c in seen:
            continue
        seen.add(c)
        firsts += c
        loc = locations[c]
        n = pack_no.get(loc.pack)
        if n is None:
            n = pack_no[loc.pack] = len(packs)
            packs.append(loc.pack)
        pack_idx.append(n)
        offsets.append(loc.offset)
        lengths.append(loc.length)
        raws.append(loc.raw_size)
    return _pack([packs, bytes(firsts), pack_idx, offsets, lengths, raws]), len(seen), packs


def encode_manifest_columns(cols: TreeColumns, locations: Mapping[bytes, Location],
                            info: dict[str, Any] | None = None
                            ) -> tuple[str, bytes, int, list[bytes]]:
    """From columns: ``(snapshot id, uncompressed manifest bytes, distinct chunks, packs)``.

    ``packs``: every pack the manifest names (what the snapshot depends on).
    """
    tree = encode_tree_columns(cols)
    index, distinct, packs = encode_index_ids(cols.ids, locations)
    return (tree_id(tree), _pack([MANIFEST_MAGIC, MANIFEST_VERSION, tree, index, info or {}]),
            distinct, packs)


def _check(cond: bool, what: str, msg: str) -> None:
    if not cond:
        raise FormatError(f"{what}: {msg}")


def _ints(values: Any, n: int, what: str, name: str, upper: int) -> list[int]:
    _check(isinstance(values, list) and len(values) == n, what, f"column {name} is malformed")
    for v in values:
        if type(v) is not int or v < 0 or v > upper:
            raise FormatError(f"{what}: column {name} holds an invalid value {v!r}")
    return values


def decode_tree(tree: bytes, what: str) -> list[Entry]:
    """Decode and validate tree bytes (structure, sizes, sort order; paths are checked later)."""
    parts = _unpack(tree, what, TREE_ENTRY_MIN_BYTES)
    _check(isinstance(parts, list) and len(parts) == 9 and parts[0] == TREE_MAGIC, what,
           "not a snapsync tree")
    _check(parts[1] == MANIFEST_VERSION, what,
           f"tree version {parts[1]!r} is not supported (this snapsync reads {MANIFEST_VERSION})")
    paths, kinds, modes, sizes, nchunks, ids, targets = parts[2:]
    _check(isinstance(paths, list) and len(paths) <= MAX_ENTRIES, what, "bad path column")
    n = len(paths)
    _check(isinstance(kinds, bytes) and len(kinds) == n, what, "bad kind column")
    _check(isinstance(targets, list) and len(targets) == n, what, "bad target column")
    _check(isinstance(ids, bytes) and len(ids) % ID_SIZE == 0, what, "bad chunk id column")
    _ints(modes, n, what, "modes", 0o7777)
    _ints(sizes, n, what, "sizes", 1 << 50)
    _ints(nchunks, n, what, "nchunks", len(ids) // ID_SIZE)
    _check(sum(nchunks) * ID_SIZE == len(ids), what, "chunk counts do not add up")
    entries: list[Entry] = []
    pos = 0
    last = b""
    for i in range(n):
        path = paths[i]
        _check(isinstance(path, bytes), what, f"path of entry {i} is not a byte string")
        _check(path != b"", what, f"entry {i} has an empty path")
        _check(path > last, what,
               f"paths unsorted or duplicated at entry {i}: {path[:100]!r} does not sort "
               f"after {last[:100]!r}")
        last = path
        kind = _KIND_BY_BYTE.get(kinds[i])
        _check(kind is not None, what, f"unknown entry kind at {path!r}")
        k = nchunks[i]
        chunks = tuple(ids[j:j + ID_SIZE] for j in range(pos, pos + k * ID_SIZE, ID_SIZE))
        pos += k * ID_SIZE
        target = targets[i]
        _check(isinstance(target, bytes), what, f"bad symlink target at {path!r}")
        allowed = _MODES[kind]  # type: ignore[index]
        if modes[i] not in allowed:
            raise FormatError(
                f"{what}: {path!r} has mode {modes[i]:#o}, which the format does not allow "
                f"(a {_KIND_NAMES[kind]} may have "  # type: ignore[index]
                f"{', '.join(f'{m:#o}' for m in allowed)})")
        if kind != FILE:
            _check(k == 0 and sizes[i] == 0, what, f"non-file entry with data at {path!r}")
        if kind != SYMLINK:
            _check(target == b"", what, f"non-link entry with a target at {path!r}")
        else:
            _check(target != b"", what, f"symlink without a target at {path!r}")
            # No file system stores one; os.symlink would fail half-way through a pull.
            _check(b"\0" not in target, what, f"symlink {path!r} has a NUL byte in its target")
        entries.append(Entry(path, kind, modes[i], sizes[i], chunks, target))
    return entries


def decode_manifest(data: bytes, expect_id: str | None = None, what: str = "manifest") -> Manifest:
    """Decode uncompressed manifest bytes; check the id and that sizes and locations add up."""
    parts = _unpack(data, what)
    _check(isinstance(parts, list) and len(parts) == 5 and parts[0] == MANIFEST_MAGIC, what,
           "not a snapsync manifest")
    _check(parts[1] == MANIFEST_VERSION, what,
           f"manifest version {parts[1]!r} is not supported (this snapsync reads "
           f"{MANIFEST_VERSION}); upgrade snapsync")
    tree, index, info = parts[2], parts[3], parts[4]
    _check(isinstance(tree, bytes) and isinstance(index, bytes) and isinstance(info, dict),
           what, "malformed sections")
    sid = tree_id(tree)
    if expect_id is not None and sid != expect_id:
        raise IntegrityError(f"{what}: content hashes to {sid}, not to its id {expect_id}")
    entries = decode_tree(tree, what)
    locations = decode_index(index, what)
    for e in entries:
        total = 0
        for c in e.chunks:
            loc = locations.get(c)
            _check(loc is not None, what, f"chunk {c.hex()} of {e.path!r} has no location")
            total += loc.raw_size  # type: ignore[union-attr]
        _check(total == e.size, what,
               f"{e.path!r}: chunk sizes add up to {total}, the entry says {e.size}")
    return Manifest(entries, locations, info, sid)


def decode_index(index: bytes, what: str) -> dict[bytes, Location]:
    parts = _unpack(index, what, INDEX_ENTRY_MIN_BYTES)
    _check(isinstance(parts, list) and len(parts) == 6, what, "malformed index")
    packs, ids, pack_idx, offsets, lengths, raws = parts
    _check(isinstance(packs, list) and all(isinstance(p, bytes) and len(p) == ID_SIZE
                                           for p in packs), what, "bad pack column")
    _check(isinstance(ids, bytes) and len(ids) % ID_SIZE == 0, what, "bad index id column")
    n = len(ids) // ID_SIZE
    _ints(pack_idx, n, what, "pack_idx", max(len(packs) - 1, 0))
    _ints(offsets, n, what, "offsets", 1 << 40)
    _ints(lengths, n, what, "lengths", MAX_CHUNK_SIZE + 1)
    _ints(raws, n, what, "raw_sizes", MAX_CHUNK_SIZE)
    out: dict[bytes, Location] = {}
    for i in range(n):
        out[ids[i * ID_SIZE:(i + 1) * ID_SIZE]] = Location(
            packs[pack_idx[i]], offsets[i], lengths[i], raws[i])
    return out


def encode_json_like(obj: Any) -> bytes:
    """msgpack for small metadata objects that are not JSON (pack trailers)."""
    return _pack(obj)


def decode_json_like(data: bytes, what: str, min_item_bytes: int = 1) -> Any:
    """Decode untrusted msgpack metadata, every length bounded by the input's size."""
    return _unpack(data, what, min_item_bytes)
