"""Decoding a manifest read from a store: untrusted input, validated before any use.

Pure: no I/O. Every column is checked against the format (docs/format.md §4) in C-speed passes
(type sets, min/max, sorted paths); when one fails, a per-entry loop names the first bad entry.
Every length is bounded by the object's size (:func:`snapsync.core.manifest._unpack`).
"""

from __future__ import annotations

from array import array
from itertools import accumulate, islice
from operator import gt, sub
from typing import Any

from snapsync.core.hashing import ID_SIZE
from snapsync.core.manifest import (
    _KIND_BY_BYTE,
    _KIND_NAMES,
    _KINDS,
    _MODES,
    DIR,
    FILE,
    INDEX_ENTRY_MIN_BYTES,
    MANIFEST_MAGIC,
    MANIFEST_VERSION,
    MAX_CHUNK_SIZE,
    MAX_ENTRIES,
    SYMLINK,
    TREE_ENTRY_MIN_BYTES,
    TREE_MAGIC,
    Index,
    Manifest,
    TreeColumns,
    _unpack,
    split_ids,
    tree_id,
)
from snapsync.errors import FormatError, IntegrityError


def _check(cond: bool, what: str, msg: str) -> None:
    if not cond:
        raise FormatError(f"{what}: {msg}")


def _ints(values: Any, n: int, what: str, name: str, upper: int, code: str) -> array[int]:
    """An integer column as an array of ``code``; every value an int in ``[0, upper]``."""
    _check(isinstance(values, list) and len(values) == n, what, f"column {name} is malformed")
    # One C pass each (type set, min, max); the loop finds the culprit only when one is bad.
    if values and (set(map(type, values)) != {int} or min(values) < 0 or max(values) > upper):
        for v in values:
            if type(v) is not int or v < 0 or v > upper:
                raise FormatError(f"{what}: column {name} holds an invalid value {v!r}")
    return array(code, values)


_ALLOWED = frozenset((_KINDS[k], m) for k, modes in _MODES.items() for m in modes)


def decode_tree(tree: bytes, what: str) -> TreeColumns:
    """Decode and validate tree bytes (structure, sizes, sort order; paths are checked later).

    The columns are kept as they are (integers in arrays); no object is made per entry.
    """
    parts = _unpack(tree, what, TREE_ENTRY_MIN_BYTES)
    _check(isinstance(parts, list) and len(parts) == 9 and parts[0] == TREE_MAGIC, what,
           "not a snapsync tree")
    _check(parts[1] == MANIFEST_VERSION, what,
           f"tree version {parts[1]!r} is not supported (this snapsync reads {MANIFEST_VERSION})")
    paths, kinds, modes, sizes, nchunks, ids, targets = parts[2:]
    del parts
    _check(isinstance(paths, list) and len(paths) <= MAX_ENTRIES, what, "bad path column")
    n = len(paths)
    _check(isinstance(kinds, bytes) and len(kinds) == n, what, "bad kind column")
    _check(isinstance(targets, list) and len(targets) == n, what, "bad target column")
    _check(isinstance(ids, bytes) and len(ids) % ID_SIZE == 0, what, "bad chunk id column")
    modes = _ints(modes, n, what, "modes", 0o7777, "H")
    sizes = _ints(sizes, n, what, "sizes", 1 << 50, "q")
    nchunks = _ints(nchunks, n, what, "nchunks", len(ids) // ID_SIZE, "I")
    _check(sum(nchunks) * ID_SIZE == len(ids), what, "chunk counts do not add up")
    cols = TreeColumns(paths, kinds, modes, sizes, nchunks, ids, targets)
    if not _tree_fine(cols):
        _tree_problem(cols, what)  # raises, naming the first bad entry
    return cols


def _tree_fine(t: TreeColumns) -> bool:
    """Whether every entry passes :func:`_tree_problem`'s checks, column by column in C
    loops (a per-entry Python loop cost ~0.2 s at 100k entries). ``False`` is not a verdict:
    the per-entry loop then finds and names the first bad entry."""
    paths, kinds, modes, sizes, nchunks, targets = (t.paths, t.kinds, t.modes, t.sizes,
                                                    t.nchunks, t.targets)
    n = len(paths)
    if not n:
        return True
    if set(map(type, paths)) != {bytes} or paths[0] == b"":
        return False
    if not all(map(gt, islice(paths, 1, None), paths)):  # sorted and unique (so none empty)
        return False
    if kinds.translate(None, b"fld"):
        return False
    if set(map(type, targets)) != {bytes} or not set(zip(kinds, modes, strict=True)) <= _ALLOWED:
        return False
    links = t.indexes(SYMLINK)
    if targets.count(b"") != n - len(links):  # non-links have none, links one
        return False
    for i in links:
        if not targets[i] or b"\0" in targets[i] or sizes[i] or nchunks[i]:
            return False
    return all(sizes[i] == 0 and nchunks[i] == 0 for i in t.indexes(DIR))


def _tree_problem(t: TreeColumns, what: str) -> None:
    """Raise ``FormatError`` for the first entry that breaks a rule, in entry order."""
    paths, kinds, modes, sizes, nchunks, targets = (t.paths, t.kinds, t.modes, t.sizes,
                                                    t.nchunks, t.targets)
    last = b""
    for i in range(len(paths)):
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


def decode_manifest(data: bytes, expect_id: str | None = None, what: str = "manifest") -> Manifest:
    """Decode uncompressed manifest bytes; check the id and that sizes and locations add up."""
    parts = _unpack(data, what)
    _check(isinstance(parts, list) and len(parts) == 5 and parts[0] == MANIFEST_MAGIC, what,
           "not a snapsync manifest")
    _check(parts[1] == MANIFEST_VERSION, what,
           f"manifest version {parts[1]!r} is not supported (this snapsync reads "
           f"{MANIFEST_VERSION}); upgrade snapsync")
    tree, index, info = parts[2], parts[3], parts[4]
    del parts
    _check(isinstance(tree, bytes) and isinstance(index, bytes) and isinstance(info, dict),
           what, "malformed sections")
    sid = tree_id(tree)
    if expect_id is not None and sid != expect_id:
        raise IntegrityError(f"{what}: content hashes to {sid}, not to its id {expect_id}")
    cols = decode_tree(tree, what)
    del tree
    idx = decode_index(index, what)
    del index
    if idx.ids == cols.ids:  # every chunk used once, in entry order (the usual tree): one copy
        idx.ids = cols.ids
    return Manifest(cols, idx, info, sid, _check_sizes(cols, idx, what))


def _check_sizes(t: TreeColumns, idx: Index, what: str) -> array[int]:
    """Every chunk the tree names has a location, and every entry's chunk sizes add up to
    its size; return the index row of each chunk reference (in C loops: prefix sums of the
    raw sizes, one subtraction per entry)."""
    rows = list(map(idx._row.get, split_ids(t.ids)))
    if None not in rows:
        sums = array("q", accumulate(map(idx.raws.__getitem__, rows), initial=0))  # type: ignore[arg-type]
        starts = t.starts
        totals = array("q", map(sub, map(sums.__getitem__, islice(starts, 1, None)),
                                map(sums.__getitem__, starts)))
        if totals == t.sizes:
            return array("I", rows)  # type: ignore[arg-type]
    starts = t.starts
    for i, path in enumerate(t.paths):
        total = 0
        for c in t.chunks(i):
            r = idx.row(c)
            _check(r is not None, what, f"chunk {c.hex()} of {path!r} has no location")
            total += idx.raws[r]  # type: ignore[index]
        _check(total == t.sizes[i], what,
               f"{path!r}: chunk sizes add up to {total}, the entry says {t.sizes[i]}")
    raise AssertionError("sizes check disagrees with itself")  # unreachable


def decode_index(index: bytes, what: str) -> Index:
    parts = _unpack(index, what, INDEX_ENTRY_MIN_BYTES)
    _check(isinstance(parts, list) and len(parts) == 6, what, "malformed index")
    packs, ids, pack_idx, offsets, lengths, raws = parts
    del parts
    _check(isinstance(packs, list) and all(isinstance(p, bytes) and len(p) == ID_SIZE
                                           for p in packs), what, "bad pack column")
    _check(isinstance(ids, bytes) and len(ids) % ID_SIZE == 0, what, "bad index id column")
    n = len(ids) // ID_SIZE
    # Each list is freed as its array replaces it (an int object each against 4-8 bytes).
    pack_idx = _ints(pack_idx, n, what, "pack_idx", max(len(packs) - 1, 0), "I")
    offsets = _ints(offsets, n, what, "offsets", 1 << 40, "q")
    lengths = _ints(lengths, n, what, "lengths", MAX_CHUNK_SIZE + 1, "I")
    raws = _ints(raws, n, what, "raw_sizes", MAX_CHUNK_SIZE, "I")
    return Index(packs, ids, pack_idx, offsets, lengths, raws)
