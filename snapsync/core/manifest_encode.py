"""Encoding manifests: the canonical tree and index bytes, and so the snapshot id.

Pure: no I/O. From a list of :class:`~snapsync.core.manifest.Entry` (small trees, tests) or
from :class:`~snapsync.core.manifest.TreeColumns` (push: columns, packed in place a slice at a
time); both give the same bytes for the same tree (docs/format.md §4).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from itertools import islice
from operator import gt
from typing import Any

from snapsync.core.hashing import ID_SIZE
from snapsync.core.manifest import (
    _KINDS,
    MANIFEST_MAGIC,
    MANIFEST_VERSION,
    TREE_MAGIC,
    Entry,
    Location,
    TreeColumns,
    _pack,
    tree_id,
)


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


def encode_index(entries: Sequence[Entry], locations: Mapping[bytes, Location]) -> bytes:
    """Index of every chunk the tree uses, in first-use order (deterministic for a tree)."""
    return encode_index_ids(b"".join(c for e in entries for c in e.chunks), locations)[0]


def encode_manifest(entries: Sequence[Entry], locations: dict[bytes, Location],
                    info: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """Return ``(snapshot id, uncompressed manifest bytes)``."""
    tree = encode_tree(entries)
    index = encode_index(entries, locations)
    return tree_id(tree), _pack([MANIFEST_MAGIC, MANIFEST_VERSION, tree, index, info or {}])


# Columns are packed a slice at a time straight into the output buffer: the same bytes as
# packing each column as one list (msgpack's array of n elements is its header, then the
# elements), without a list of 100k ints or a packed copy of each column (push's manifest
# build was its high-water mark at 100k files: docs/design.md, "Bounds").
_SLICE = 4096
_BIN32_HEADER = 5  # b"\xc6" + a 4-byte length: room reserved before an embedded object


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _put_seq(buf: bytearray, col: Sequence[Any]) -> None:
    """Append msgpack of ``list(col)`` (a list or an ``array``), a slice at a time."""
    n = len(col)
    buf += _array_header(n)
    tolist = getattr(col, "tolist", None)
    for a in range(0, n, _SLICE):
        part = col[a:a + _SLICE]
        if tolist is not None:
            part = part.tolist()  # type: ignore[attr-defined]
        elif type(part) is not list:
            part = list(part)
        packed = _pack(part)
        buf += memoryview(packed)[len(_array_header(len(part))):]


def _put_bin(buf: bytearray, data: bytes | bytearray | memoryview) -> None:
    """Append msgpack's ``bin`` of ``data`` (no packed copy of it)."""
    buf += _bin_header(len(data))
    buf += data


def _open_bin(buf: bytearray) -> int:
    """Reserve a ``bin`` header for an object appended next; :func:`_close_bin` fills it."""
    pos = len(buf)
    buf += bytes(_BIN32_HEADER)
    return pos


def _close_bin(buf: bytearray, pos: int) -> int:
    """Write the header reserved at ``pos`` for what follows it; return where that begins.

    msgpack's shortest header: a ``bin32`` takes the reserved room exactly; a smaller object
    (under 64 KiB, so cheap to move) is moved up to its shorter header.
    """
    body = pos + _BIN32_HEADER
    n = len(buf) - body
    head = _bin_header(n)
    if len(head) == _BIN32_HEADER:
        buf[pos:body] = head
        return body
    buf[pos:] = head + buf[body:]
    return pos + len(head)


def _put_tree(buf: bytearray, cols: TreeColumns) -> None:
    paths = cols.paths
    if not all(map(gt, islice(paths, 1, None), paths)):
        for i in range(1, len(paths)):
            if paths[i] <= paths[i - 1]:
                raise ValueError(f"tree entries not sorted or duplicated at {paths[i]!r}")
    buf += _array_header(9)
    buf += _pack(TREE_MAGIC)
    buf += _pack(MANIFEST_VERSION)
    _put_seq(buf, paths)
    _put_bin(buf, cols.kinds)
    _put_seq(buf, cols.modes)
    _put_seq(buf, cols.sizes)
    _put_seq(buf, cols.nchunks)
    _put_bin(buf, cols.ids)
    _put_seq(buf, cols.targets)


def encode_tree_columns(cols: TreeColumns) -> bytes:
    """Canonical tree bytes from columns; ``ValueError`` when paths are unsorted or repeated.

    The integer columns may be lists or arrays: the bytes are the same.
    """
    buf = bytearray()
    _put_tree(buf, cols)
    return bytes(buf)


def _put_index(buf: bytearray, ids: bytes | bytearray, locations: Mapping[bytes, Location]
               ) -> tuple[int, list[bytes]]:
    seen: set[bytes] = set()
    packs: list[bytes] = []
    pack_no: dict[bytes, int] = {}
    firsts = bytearray()
    # Arrays, not lists: 8 bytes a chunk instead of an int object and a pointer.
    pack_idx, offsets, lengths, raws = array("Q"), array("Q"), array("Q"), array("Q")
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
    distinct = len(seen)
    del seen, pack_no
    buf += _array_header(6)
    _put_seq(buf, packs)
    _put_bin(buf, firsts)
    del firsts
    for col in (pack_idx, offsets, lengths, raws):
        _put_seq(buf, col)
    return distinct, packs


def encode_index_ids(ids: bytes, locations: Mapping[bytes, Location]
                     ) -> tuple[bytes, int, list[bytes]]:
    """The index of the chunk ids ``ids`` (concatenated, in entry order): first-use order.

    Returns the index bytes, the number of distinct chunks and the packs they lie in
    (:func:`encode_index` is this for a list of entries).
    """
    buf = bytearray()
    distinct, packs = _put_index(buf, ids, locations)
    return bytes(buf), distinct, packs


def encode_manifest_columns(cols: TreeColumns, locations: Mapping[bytes, Location],
                            info: dict[str, Any] | None = None
                            ) -> tuple[str, bytearray, int, list[bytes]]:
    """From columns: ``(snapshot id, uncompressed manifest bytes, distinct chunks, packs)``.

    ``packs``: every pack the manifest names (what the snapshot depends on). The manifest is
    built in one buffer, the tree packed in place (no separate tree and joined copies): the
    same bytes as :func:`encode_manifest` gives for the same entries. The index is built
    first, so that its working set (a set of every distinct id) is gone before the tree's
    bytes exist.
    """
    index = bytearray()
    distinct, packs = _put_index(index, cols.ids, locations)
    buf = bytearray(_array_header(5))
    buf += _pack(MANIFEST_MAGIC)
    buf += _pack(MANIFEST_VERSION)
    pos = _open_bin(buf)
    _put_tree(buf, cols)
    sid = _id_of(buf, _close_bin(buf, pos))
    _put_bin(buf, index)
    del index
    buf += _pack(info or {})
    return sid, buf, distinct, packs


def _id_of(buf: bytearray, start: int) -> str:
    """The snapshot id of the tree that fills ``buf`` from ``start`` (no copy of it)."""
    with memoryview(buf) as view:
        return tree_id(view[start:])  # type: ignore[arg-type]
