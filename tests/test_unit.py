"""Unit tests of the pure layer: chunking, codec, packs, manifests, tree diff, path checks."""

from __future__ import annotations

import os
import random

import pytest

from snapsync.core.chunking import Chunker, ChunkerParams
from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import DIR, FILE, SYMLINK, Entry, Location
from snapsync.core.manifest_decode import decode_manifest
from snapsync.core.manifest_encode import encode_manifest, encode_tree
from snapsync.core.pack import PackBuilder, parse_pack
from snapsync.core.plan import Seen, check_paths, diff_trees, plan_pull
from snapsync.errors import FormatError, IntegrityError, UnsafePathError

SMALL = ChunkerParams(threshold=64 << 10, min_size=16 << 10, avg_size=32 << 10,
                      max_size=128 << 10)


def _ids(data: bytes, params: ChunkerParams = SMALL) -> list[bytes]:
    return [chunk_id(c) for c in Chunker(params).cut(data)]


def test_small_files_are_one_chunk_and_empty_files_none():
    ch = Chunker(SMALL)
    assert [bytes(c) for c in ch.cut(b"abc")] == [b"abc"]
    assert list(ch.cut(b"")) == []


def test_chunks_cover_the_input_exactly():
    data = random.Random(1).randbytes(3 << 20)
    pieces = [bytes(c) for c in Chunker(SMALL).cut(data)]
    assert b"".join(pieces) == data
    assert all(len(p) <= SMALL.max_size for p in pieces)
    assert all(len(p) >= SMALL.min_size for p in pieces[:-1])


@pytest.mark.parametrize("step", [None, 4096, 100_001])
def test_reading_into_the_window_cuts_as_the_stream_does(step):
    """cut_readinto (push's reader, one reused window) makes pyfastcdc's stream cuts, for
    any read size, with sizes around the window's edges and a run of zeros (max-size cuts)."""
    import io

    rng = random.Random(7)
    ch = Chunker(SMALL)
    cap = SMALL.max_size + (1 << 20)  # the window's size
    for size in (0, 1, 1000, SMALL.max_size, cap - 1, cap, cap + 1, 3 * cap + 17):
        data = rng.randbytes(size // 2) + bytes(size // 4) + rng.randbytes(size - size // 2
                                                                            - size // 4)
        want = [bytes(c) for c in ch.cut_stream(io.BytesIO(data))]
        src = io.BytesIO(data)

        def readinto(v: memoryview, src: io.BytesIO = src) -> int:
            return src.readinto(v if step is None else v[:step])

        got = [bytes(c) for c in ch.cut_readinto(readinto)]
        assert got == want, size
        assert b"".join(got) == data


@pytest.mark.parametrize("where", ["start", "middle"])
def test_boundaries_stay_put_after_an_insertion(where):
    data = random.Random(2).randbytes(4 << 20)
    at = 0 if where == "start" else len(data) // 2
    edited = data[:at] + os.urandom(100) + data[at:]
    before, after = _ids(data), _ids(edited)
    changed = set(after) - set(before)
    assert len(changed) <= 2, f"{len(changed)} of {len(after)} chunks changed"


def test_default_params_give_about_one_mib_chunks():
    data = random.Random(3).randbytes(32 << 20)
    n = len(_ids(data, ChunkerParams()))
    assert 16 <= n <= 48


def test_chunker_params_roundtrip_and_reject_unknown():
    p = ChunkerParams()
    assert ChunkerParams.from_dict(p.to_dict()) == p
    with pytest.raises(FormatError):
        ChunkerParams.from_dict({**p.to_dict(), "name": "rabin"})


def test_codec_roundtrip_compressible_and_raw():
    c = Codec(3)
    text = b"hello world " * 1000
    blob = c.encode(text)
    assert blob[0] == 1 and len(blob) < len(text)
    assert c.decode(blob, len(text), chunk_id(text)) == text
    noise = os.urandom(5000)
    raw = c.encode(noise)
    assert raw[0] == 0 and raw[1:] == noise
    assert c.decode(raw, len(noise), chunk_id(noise)) == noise


def test_codec_refuses_wrong_bytes_sizes_and_tags():
    c = Codec(3)
    text = b"abc" * 100
    blob = c.encode(text)
    with pytest.raises(IntegrityError, match="does not match its id"):
        c.decode(blob, len(text), chunk_id(b"other"))
    with pytest.raises(IntegrityError):
        c.decode(blob, len(text) - 1, chunk_id(text))
    with pytest.raises(IntegrityError, match="codec tag"):
        c.decode(b"\x07" + blob[1:], len(text), chunk_id(text))
    with pytest.raises(IntegrityError):
        c.decode(blob[:-3], len(text), chunk_id(text))


def test_pack_roundtrip_lists_its_chunks():
    c = Codec(3)
    b = PackBuilder()
    items = [os.urandom(100), b"x" * 5000, b""]
    for data in items:
        b.add(chunk_id(data), c.encode(data) if data else b"\x00", len(data))
    pid, data, locs = b.finish()
    assert pid == chunk_id(data)
    assert parse_pack(data) == locs
    for d in items:
        loc = locs[chunk_id(d)]
        assert c.decode(data[loc.offset:loc.offset + loc.length], loc.raw_size, chunk_id(d)) == d
    with pytest.raises(FormatError):
        parse_pack(data[:-1])
    with pytest.raises(FormatError):
        parse_pack(data[:10] + b"\xff" * 20 + data[30:-12] + b"\x00" * 12)


def _entries() -> tuple[list[Entry], dict[bytes, Location]]:
    a, b = chunk_id(b"a"), chunk_id(b"bb")
    pack = chunk_id(b"pack")
    entries = [
        Entry(b"dir/a.txt", FILE, 0o644, 1, (a,)),
        Entry(b"dir/b.sh", FILE, 0o755, 3, (b, a)),
        Entry(b"empty", DIR, 0o755),
        Entry(b"link", SYMLINK, 0o777, 0, (), b"dir/a.txt"),
    ]
    locs = {a: Location(pack, 0, 2, 1), b: Location(pack, 2, 3, 2)}
    return entries, locs


def test_manifest_roundtrip_and_canonical_id():
    entries, locs = _entries()
    sid, raw = encode_manifest(entries, locs, {"ignore": ["x"]})
    m = decode_manifest(raw, sid)
    assert m.entries == entries and m.locations == locs and m.info == {"ignore": ["x"]}
    # Metadata and chunk locations are not part of the id.
    moved = {k: Location(chunk_id(b"other"), v.offset, v.length, v.raw_size)
             for k, v in locs.items()}
    sid2, _ = encode_manifest(entries, moved, {"ignore": []})
    assert sid2 == sid
    # Anything in the tree is.
    changed = [entries[0], Entry(b"dir/b.sh", FILE, 0o644, 3, entries[1].chunks), *entries[2:]]
    assert encode_manifest(changed, locs)[0] != sid


def test_manifest_refuses_unsorted_wrong_id_and_bad_sizes():
    entries, locs = _entries()
    with pytest.raises(ValueError):
        encode_tree(list(reversed(entries)))
    _sid, raw = encode_manifest(entries, locs)
    with pytest.raises(IntegrityError):
        decode_manifest(raw, "0" * 32)
    bad = [Entry(b"dir/a.txt", FILE, 0o644, 99, entries[0].chunks)]
    _, raw = encode_manifest(bad, locs)
    with pytest.raises(FormatError, match="add up"):
        decode_manifest(raw)
    with pytest.raises(FormatError):
        decode_manifest(b"\x93garbage")


@pytest.mark.parametrize("path", [b"/etc/passwd", b"../x", b"a/../../x", b"a//b", b"./a",
                                  b"", b"a/\x00"])
def test_check_paths_refuses_escapes(path):
    with pytest.raises(UnsafePathError):
        check_paths([Entry(path, FILE)], case_insensitive=False)


def test_check_paths_refuses_paths_through_links_files_and_case_twins():
    link = Entry(b"a", SYMLINK, 0o777, 0, (), b"/etc")
    with pytest.raises(UnsafePathError, match="symlink"):
        check_paths([link, Entry(b"a/passwd", FILE)], case_insensitive=False)
    with pytest.raises(UnsafePathError, match="a file"):
        check_paths([Entry(b"a", FILE), Entry(b"a/b", FILE)], case_insensitive=False)
    twins = [Entry(b"A.txt", FILE), Entry(b"a.txt", FILE)]
    check_paths(twins, case_insensitive=False)
    with pytest.raises(UnsafePathError, match="case"):
        check_paths(twins, case_insensitive=True)


@pytest.mark.parametrize(("leaf", "under"), [
    (b"Link", b"link/passwd"),  # a case twin of the link's name
    (b"LINK", b"Link/x/y"),
    ("\u00c9t\u00e9".encode(), "e\u0301te\u0301/x".encode()),  # composed vs decomposed
])
def test_where_case_does_not_count_no_path_passes_through_a_link_in_other_case(leaf, under):
    """On APFS, HFS+ or NTFS "link/passwd" is written through a link named "Link"."""
    entries = sorted([Entry(leaf, SYMLINK, 0o777, 0, (), b"/etc"), Entry(under, FILE)],
                     key=lambda e: e.path)
    check_paths(entries, case_insensitive=False)  # two names where case counts
    with pytest.raises(UnsafePathError, match="passes through"):
        check_paths(entries, case_insensitive=True)


def test_plan_pull_and_diff():
    entries, _ = _entries()
    seen = {
        b"dir/a.txt": Seen(FILE, 0o644, 1, entries[0].chunks),
        b"dir/b.sh": Seen(FILE, 0o644, 3, entries[1].chunks),
        b"link": Seen(SYMLINK, target=b"elsewhere"),
    }
    plan = plan_pull(entries, seen)
    assert [e.path for e in plan.write] == [b"link"]
    assert [e.path for e in plan.chmod] == [b"dir/b.sh"]
    assert [e.path for e in plan.mkdir] == [b"empty"]
    assert plan.unchanged == 1
    d = diff_trees(entries[:2], [entries[0], entries[2]])
    assert d.added == ["empty"] and d.removed == ["dir/b.sh"] and d.modified == []


def test_stat_cache_distrusts_racy_entries(tmp_path):
    import time

    from snapsync.local.statcache import StatCache

    path = tmp_path / "stat.msgpack"
    now = time.time_ns()
    old_sig = (10, now - 5_000_000_000 + 123, now, 1, 0o100644)
    racy_sig = (10, now + 1_000_000, now, 2, 0o100644)  # modified "after" the cache write
    ids = (b"\x01" * 16,)
    c = StatCache(path)
    c.replace({"old": (old_sig, ids), "racy": (racy_sig, ids)})
    c.save()
    c2 = StatCache(path)
    assert c2.lookup("old", old_sig) == ids
    assert c2.lookup("old", (11, *old_sig[1:])) is None  # any signature change misses
    assert c2.lookup("racy", racy_sig) is None
    path.write_bytes(b"garbage")
    assert StatCache(path).lookup("old", old_sig) is None  # a broken cache is just empty


def test_pack_built_in_place_is_the_documented_layout_whatever_the_buffer():
    """Blobs are copied into one buffer: the bytes are exactly blobs + trailer + tail
    (docs/format.md §3), also when the builder outgrows its buffer or reuses a dirty one."""
    import struct

    from snapsync.core.manifest import encode_json_like
    from snapsync.core.pack import new_buffer

    rng = random.Random(5)
    blobs = [(chunk_id(bytes([i])), rng.randbytes(rng.randrange(1, 300_000)), b"\x01")
             for i in range(12)]
    dirty = new_buffer(1 << 16)
    dirty[:] = b"\xee" * len(dirty)  # a reused buffer holds an older pack's bytes
    for buf in (None, dirty):
        b = PackBuilder(buf)
        for cid, blob, tag in blobs:
            b.add(cid, blob, len(blob) + 7, tag)
        pid, view, locs = b.seal()
        body = b"".join(tag + blob for _, blob, tag in blobs)
        offs = [sum(len(t) + len(x) for _, x, t in blobs[:i]) for i in range(len(blobs))]
        trailer = encode_json_like([1, b"".join(c for c, _, _ in blobs), offs,
                                    [len(t) + len(x) for _, x, t in blobs],
                                    [len(x) + 7 for _, x, _ in blobs]])
        want = body + trailer + struct.pack("<I8s", len(trailer), b"SNAPPACK")
        assert bytes(view) == want and pid == chunk_id(want)
        assert parse_pack(bytes(view)) == locs


def test_pack_writer_reuses_buffers_only_after_their_upload(tmp_path):
    """Many packs through one upload slot: each stored pack is intact (a buffer reused while
    its upload still read it would show up as a pack whose id is not its hash)."""
    from snapsync.core.pack import parse_pack as parse
    from snapsync.repository.packer import PackWriter
    from snapsync.store import Layout, open_store

    store = open_store((tmp_path / "s").as_uri())
    rng = random.Random(9)
    chunks = {}
    with PackWriter(store, 1 << 16, in_flight=1) as w:
        for _ in range(300):
            data = rng.randbytes(rng.randrange(1, 20_000))
            chunks[chunk_id(data)] = data
            w.add(chunk_id(data), data, len(data), b"\x00")
        locs = w.finish()
    assert w.packs > 20 and set(locs) == set(chunks)
    for pid in {loc.pack for loc in locs.values()}:
        raw = store.get(Layout.pack(pid))
        assert chunk_id(raw) == pid
        for cid, loc in parse(raw).items():
            assert raw[loc.offset + 1:loc.offset + loc.length] == chunks[cid]
