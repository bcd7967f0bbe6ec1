"""The decoded manifest keeps the format's columns: entries, locations and plans are views.

The column checks run in C loops and fall back to the per-entry loop only to name a culprit,
so a tree with several faults must still name the first one, in entry order.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from snapsync.core.hashing import chunk_id
from snapsync.core.keyed import index_order
from snapsync.core.manifest import (
    DIR,
    FILE,
    MANIFEST_MAGIC,
    SYMLINK,
    TREE_MAGIC,
    ChainLocations,
    Entry,
    Location,
    TreeColumns,
)
from snapsync.core.manifest_decode import decode_manifest, decode_tree
from snapsync.core.manifest_encode import encode_manifest, encode_tree, encode_tree_columns
from snapsync.core.plan import Seen, plan_pull
from snapsync.errors import FormatError


def _tree(n: int = 300, seed: int = 7) -> tuple[list[Entry], dict[bytes, Location]]:
    rng = random.Random(seed)
    packs = [rng.randbytes(16) for _ in range(3)]
    shared = chunk_id(b"shared")
    entries, locs = [], {shared: Location(packs[0], 0, 5, 4)}
    for i in range(n):
        path = b"d%02d/f%04d" % (i % 17, i)
        r = rng.random()
        if r < 0.1:
            entries.append(Entry(path, SYMLINK, 0o777, 0, (), b"../t%d" % i))
        elif r < 0.15:
            entries.append(Entry(path, DIR, 0o755))
        else:
            k = rng.choice([0, 1, 1, 2, 3])
            ids = tuple(rng.randbytes(16) for _ in range(k))
            if rng.random() < 0.2:
                ids = (*ids, shared)  # a chunk used by several files
            size = 0
            for c in ids:
                if c not in locs:
                    locs[c] = Location(rng.choice(packs), rng.randrange(1 << 30), 100,
                                       rng.randrange(1, 5000))
                size += locs[c].raw_size
            entries.append(Entry(path, FILE, rng.choice([0o644, 0o755, 0o600]), size, ids))
    entries.sort(key=lambda e: e.path)
    return entries, locs


def test_columns_give_back_the_entries_and_the_same_bytes():
    entries, locs = _tree()
    sid, raw = encode_manifest(entries, locs, {"ignore": []})
    m = decode_manifest(raw, sid)
    assert m.entries == entries and list(m.tree) == entries
    assert [m.tree.entry(i) for i in range(len(entries))] == entries
    assert m.locations == locs and len(m.index) == len(locs)
    assert all(m.index.raw_size(c) == loc.raw_size for c, loc in locs.items())
    assert m.index.used_packs() == {loc.pack for loc in locs.values()}
    assert m.chunk_ids() == set(locs) == {c for e in entries for c in e.chunks}
    assert encode_tree_columns(m.tree) == encode_tree(entries)  # so the id is the same
    assert encode_manifest(m.entries, m.locations, m.info) == (sid, raw)
    assert index_order(m) == index_order(entries)
    assert [e.path for e in m.files()] == [e.path for e in entries if e.kind == FILE]


def test_plan_over_columns_equals_plan_over_entries():
    entries, locs = _tree()
    sid, raw = encode_manifest(entries, locs)
    m = decode_manifest(raw, sid)
    rng = random.Random(3)
    seen = {}
    for e in entries:
        r = rng.random()
        if r < 0.3 and e.kind == FILE:
            seen[e.path] = Seen(FILE, e.mode if r < 0.2 else 0o600, e.size, e.chunks)
        elif r < 0.4:
            seen[e.path] = Seen(e.kind, target=e.target)
    for target in ({}, seen):
        a, b = plan_pull(m, target), plan_pull(entries, target)
        for part in ("write", "chmod", "mkdir"):
            assert list(getattr(a, part)) == list(getattr(b, part))
        assert a.unchanged == b.unchanged and a.needed == b.needed
        assert a.files.size() == sum(e.size for e in b.files)
    # Chunk ids handed out by a plan over the manifest are the index's own objects.
    ids = {id(c) for c in m.index.cids}
    assert all(id(c) in ids for c in plan_pull(m, {}).needed)


def test_repeated_index_rows_keep_the_last_like_a_dict():
    entries, locs = _tree(20)
    sid, raw = encode_manifest(entries, locs)
    parts = msgpack.unpackb(raw, raw=False)
    packs, ids, pidx, offs, lens, raws = msgpack.unpackb(parts[3], raw=False)
    first = ids[:16]
    index = msgpack.packb([packs, ids + first, [*pidx, pidx[0]], [*offs, offs[0] + 1],
                           [*lens, lens[0]], [*raws, raws[0]]], use_bin_type=True)
    m = decode_manifest(msgpack.packb([MANIFEST_MAGIC, 1, parts[2], index, {}],
                                      use_bin_type=True), sid)
    assert m.index[first].offset == offs[0] + 1 and len(m.index) == len(locs)


def _raw_tree(paths, kinds, modes, sizes, nchunks, ids, targets) -> bytes:
    return msgpack.packb([TREE_MAGIC, 1, paths, kinds, modes, sizes, nchunks, ids, targets],
                         use_bin_type=True)


@pytest.mark.parametrize(("cols", "message"), [
    # several faults: the first entry's wins, as with the per-entry loop
    (([b"a", b"b", b"c"], b"fxf", [0o644, 0o4755, 0o644], [0, 0, 0], [0, 0, 0], b"",
      [b"", b"", b"x"]), "unknown entry kind at b'b'"),
    (([b"a", b"b", b"c"], b"ffl", [0o644, 0o4755, 0o777], [0, 0, 0], [0, 0, 0], b"",
      [b"", b"", b""]), "b'b' has mode 0o4755"),
    (([b"a", b"b"], b"dl", [0o755, 0o777], [1, 0], [0, 0], b"", [b"", b"x\0"]),
     "non-file entry with data at b'a'"),
    (([b"a", b"b"], b"fl", [0o644, 0o777], [0, 0], [0, 0], b"", [b"t", b"x\0"]),
     "non-link entry with a target at b'a'"),
    (([b"a", b"b"], b"fl", [0o644, 0o777], [0, 0], [0, 0], b"", [b"", b""]),
     "symlink without a target at b'b'"),
    (([b"a", b"b"], b"fl", [0o644, 0o777], [0, 0], [0, 0], b"", [b"", b"x\0"]),
     "symlink b'b' has a NUL byte"),
    (([b"b", b"a"], b"ff", [0o644, 0o644], [0, 0], [0, 0], b"", [b"", b""]),
     "entry 1: b'a' does not sort after b'b'"),
    (([b"a", b"b"], b"ff", [0o644, True], [0, 0], [0, 0], b"", [b"", b""]),
     "column modes holds an invalid value True"),
    (([b"a", b"b"], b"ff", [0o644, 0o644], [0, -1], [0, 0], b"", [b"", b""]),
     "column sizes holds an invalid value -1"),
])
def test_first_fault_is_named(cols, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(")):
        decode_tree(_raw_tree(*cols), "m")


def test_size_and_location_faults_name_the_first_entry():
    a, b = chunk_id(b"a"), chunk_id(b"b")
    pack = chunk_id(b"p")
    entries = [Entry(b"x", FILE, 0o644, 1, (a,)), Entry(b"y", FILE, 0o644, 9, (b,))]
    tree = encode_tree(entries)
    index = msgpack.packb([[pack], a, [0], [0], [3], [1]], use_bin_type=True)  # no b
    raw = msgpack.packb([MANIFEST_MAGIC, 1, tree, index, {}], use_bin_type=True)
    with pytest.raises(FormatError, match=f"chunk {b.hex()} of b'y' has no location"):
        decode_manifest(raw)
    index = msgpack.packb([[pack], a + b, [0, 0], [0, 3], [3, 3], [1, 2]], use_bin_type=True)
    raw = msgpack.packb([MANIFEST_MAGIC, 1, tree, index, {}], use_bin_type=True)
    with pytest.raises(FormatError, match="b'y': chunk sizes add up to 2, the entry says 9"):
        decode_manifest(raw)


def test_chain_locations_last_index_wins_and_setdefault_adds():
    entries, locs = _tree(30)
    m1 = decode_manifest(encode_manifest(entries, locs)[1])
    c = next(iter(locs))
    moved = dict(locs)
    moved[c] = Location(chunk_id(b"elsewhere"), 1, 2, locs[c].raw_size)
    m2 = decode_manifest(encode_manifest(entries, moved)[1])
    known = ChainLocations([m1.index, m2.index])
    assert known[c] == moved[c] and c in known and bool(known)
    assert dict(known) == moved and len(known) == len(moved)
    new = chunk_id(b"new")
    assert new not in known
    loc = Location(chunk_id(b"j"), 0, 1, 1)
    assert known.setdefault(new, loc) == loc and known[new] == loc
    assert known.setdefault(c, loc) == moved[c]  # known already: kept
    assert not ChainLocations([])


def test_tree_columns_from_entries_round_trip():
    entries, _ = _tree(50)
    cols = TreeColumns.from_entries(entries)
    assert cols.entries() == entries and encode_tree_columns(cols) == encode_tree(entries)
    assert cols == decode_tree(encode_tree(entries), "m")


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 4097, 70_000])
def test_streamed_encode_gives_the_bytes_of_packing_whole_lists(n):
    # The manifest is packed a slice at a time into one buffer, from arrays: every array
    # and bin header size (fix/16/32) must come out as msgpack packs the whole lists.
    from array import array

    from snapsync.core.manifest_encode import encode_index_ids, encode_manifest_columns

    rng = random.Random(n)
    paths = sorted({b"p%07d" % rng.randrange(10 * n + 10) for _ in range(n)})
    n = len(paths)
    kinds = bytes(rng.choice(b"fld") for _ in range(n))
    ids = [rng.randbytes(16) for _ in range(n)]
    packs = [rng.randbytes(16) for _ in range(1 + n // 1000)]
    locs = {c: Location(rng.choice(packs), rng.randrange(1 << 40), rng.randrange(1 << 20),
                        rng.randrange(1 << 33)) for c in ids}
    modes = [rng.choice([0o644, 0o755, 0o777]) for _ in range(n)]
    sizes = [rng.randrange(1 << rng.choice([4, 12, 40])) for _ in range(n)]
    as_lists = TreeColumns(paths, kinds, modes, sizes, [1] * n, b"".join(ids),
                           [b"t" * (i % 3) for i in range(n)])
    as_arrays = TreeColumns(paths, kinds, array("H", modes), array("q", sizes),
                            array("I", [1] * n), b"".join(ids), as_lists.targets)
    tree = msgpack.packb([TREE_MAGIC, 1, paths, kinds, modes, sizes, [1] * n,
                          b"".join(ids), as_lists.targets], use_bin_type=True)
    order = list(dict.fromkeys(ids))
    index = msgpack.packb([packs_used := list(dict.fromkeys(locs[c].pack for c in order)),
                           b"".join(order), [packs_used.index(locs[c].pack) for c in order],
                           [locs[c].offset for c in order], [locs[c].length for c in order],
                           [locs[c].raw_size for c in order]], use_bin_type=True)
    info = {"k": "v"}
    manifest = msgpack.packb([MANIFEST_MAGIC, 1, tree, index, info], use_bin_type=True)
    for cols in (as_lists, as_arrays):
        assert encode_tree_columns(cols) == tree
        assert encode_index_ids(cols.ids, locs)[0] == index
        sid, raw, distinct, used = encode_manifest_columns(cols, locs, info)
        assert (sid, bytes(raw), distinct, used) == (chunk_id(tree).hex(), manifest,
                                                     len(order), packs_used)
