"""A pull's per-chunk state over the manifest index's rows (issue 11: 100k files in 100 MB):
the row map, the fetch plan's sort by one int per chunk, path checks without a set of every
path, and verification that never holds a whole batch decoded."""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard
from test_manifest_columns import _tree
from treeutil import describe, make_project

import snapsync
import snapsync.repository.reader as reader_mod
from snapsync.concurrency import Concurrency
from snapsync.core.codec import RAW_TAG, ZSTD_TAG, Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import DIR, FILE, SYMLINK, Entry, Location, TreeColumns
from snapsync.core.manifest_decode import decode_manifest
from snapsync.core.manifest_encode import encode_manifest
from snapsync.core.plan import check_paths, plan_fetch
from snapsync.core.rowmap import RowMap
from snapsync.errors import IntegrityError, UnsafePathError
from snapsync.repository.reader import ChunkReader
from snapsync.store import Layout, as_store


def _index():
    entries, locs = _tree(400, seed=11)
    sid, raw = encode_manifest(entries, locs, {})
    return decode_manifest(raw, sid), locs


def test_row_map_is_a_mapping_over_the_index_rows():
    m, locs = _index()
    ix = m.index
    rm = RowMap(ix.row, ix.cids)
    ids = list(locs)
    ref: dict[bytes, int] = {}
    rng = random.Random(3)
    for step in range(2000):
        cid = rng.choice(ids) if rng.random() < 0.9 else rng.randbytes(16)  # some unknown
        if rng.random() < 0.3 and ref:
            gone = rng.choice(list(ref))
            del rm[gone], ref[gone]
        else:
            rm[cid] = ref[cid] = step << 20
    assert dict(rm.items()) == ref and len(rm) == len(ref)
    assert sorted(rm.values()) == sorted(ref.values()) and set(rm) == set(ref)
    assert all((c in rm) == (c in ref) for c in ids)
    missing = next(c for c in ids if c not in ref)
    assert rm.get(missing) is None and rm.get(missing, 7) == 7
    with pytest.raises(KeyError):
        rm[missing]
    with pytest.raises(KeyError):
        del rm[missing]
    with pytest.raises(ValueError):
        rm[ids[0]] = -1  # -1 marks an empty slot


def test_fetch_plan_from_the_index_equals_the_plan_from_a_dict():
    m, locs = _index()
    want = set(random.Random(5).sample(sorted(locs), len(locs) // 2))
    for max_bytes, max_count in ((1 << 12, 3), (8 << 20, 32)):
        assert plan_fetch(m.index, want, max_bytes, max_count) == \
            plan_fetch(dict(locs), want, max_bytes, max_count)
    with pytest.raises(KeyError):
        plan_fetch(m.index, [b"\0" * 16], 1 << 20, 8)


def test_a_sorted_tree_is_checked_without_a_set_of_its_paths():
    def tree(*entries: Entry) -> TreeColumns:
        return TreeColumns.from_entries(sorted(entries, key=lambda e: e.path))

    # "a-b" sorts between "a" and "a/c": the folder "a" is found by bisection anyway.
    with pytest.raises(UnsafePathError, match="passes through 'a', which is a file"):
        check_paths(tree(Entry(b"a", FILE), Entry(b"a-b", FILE), Entry(b"a/c", FILE)),
                    case_insensitive=False)
    with pytest.raises(UnsafePathError, match="which is a symlink"):
        check_paths(tree(Entry(b"x/l", SYMLINK, 0o777, 0, (), b"/"), Entry(b"x/l/d/f", FILE)),
                    case_insensitive=False)
    check_paths(tree(Entry(b"a", DIR, 0o755), Entry(b"a-b", FILE), Entry(b"a/c", FILE)),
                case_insensitive=False)
    # Unsorted (an entry list, not a decoded tree): repeats are still found.
    with pytest.raises(UnsafePathError, match="twice"):
        check_paths([Entry(b"b", FILE), Entry(b"a", FILE), Entry(b"b", FILE)],
                    case_insensitive=False)


def test_a_raw_chunk_can_be_verified_without_a_copy():
    data = random.Random(1).randbytes(5000)
    cid = chunk_id(data)
    blob = RAW_TAG + data
    view = Codec().decode(blob, len(data), cid, copy=False)
    assert isinstance(view, memoryview) and view.obj is blob and bytes(view) == data
    with pytest.raises(IntegrityError, match="does not match"):
        Codec().decode(RAW_TAG + data[:-1] + b"?", len(data), cid, copy=False)


class _Recorder:
    """A placer that keeps what each verify task wrote (sizes only) and the chunks."""

    def __init__(self) -> None:
        self.units: list[int] = []
        self.got: dict[bytes, bytes] = {}
        self.pending: dict[int, bytes] = {}

    def reserve(self, items: Iterable[tuple[bytes, int]]) -> Any:
        return [cid for cid, _n in items]

    def write(self, runs: Any, datas: list[Any]) -> None:
        self.units.append(sum(len(d) for d in datas))
        for cid, d in zip(runs, datas, strict=True):
            self.got[cid] = bytes(d)

    def abort(self) -> None:
        pass


def test_no_verify_task_decodes_more_than_its_byte_bound(tmp_path: Path, monkeypatch):
    """64 chunks that compress 1000:1 sit in one small download batch; decoded they are
    64 MiB. The tasks split them by decoded size, not only by count."""
    monkeypatch.setattr(reader_mod, "VERIFY_UNIT_BYTES", 4 << 20)
    raw = [bytes([i]) * (1 << 20) for i in range(64)]
    zc = zstandard.ZstdCompressor()
    blobs = [ZSTD_TAG + zc.compress(d) for d in raw]
    pack, locs, off = b"p" * 16, {}, 0
    for d, b in zip(raw, blobs, strict=True):
        locs[chunk_id(d)] = Location(pack, off, len(b), len(d))
        off += len(b)
    store = as_store(f"file://{tmp_path}/s")
    store.put(Layout.pack(pack), b"".join(blobs))
    reader = ChunkReader(store, locs, Codec())
    rec = _Recorder()
    with ThreadPoolExecutor(2) as ex:
        n, _b = reader.fetch(set(locs), Concurrency(2, 4), ex, lambda items: None, place=rec)
    assert n == 64 and rec.got == {chunk_id(d): d for d in raw}
    assert max(rec.units) <= (4 << 20) and len(rec.units) >= 16


def test_a_pull_with_the_row_state_gives_the_tree_back(tmp_path: Path):
    src = make_project(tmp_path / "src", seed=4, files=400)
    url = f"file://{tmp_path}/store"
    snapsync.push(src, url, cache_dir=tmp_path / "c1")
    for n, cache in enumerate((tmp_path / "c2", tmp_path / "c2", None)):
        dst = tmp_path / f"dst{n}"
        r = snapsync.pull(url, dst, cache_dir=cache, use_cache=cache is not None)
        assert describe(dst) == describe(src)
        if n == 1:
            assert r.chunks_downloaded == 0 and r.chunks_cached == r.chunks_needed


@pytest.mark.parametrize("preadv", [True, False])
def test_ranges_read_into_the_callers_buffers(tmp_path: Path, monkeypatch, preadv: bool):
    from snapsync.errors import TruncatedObjectError
    from snapsync.store import local_read

    if not preadv:  # Windows, older macOS: read, then copied into the buffer
        monkeypatch.setattr(local_read, "_PREADV", None)

    store = as_store(f"file://{tmp_path}/s")
    data = random.Random(2).randbytes(100_000)
    store.put("packs/ab/obj.pack", data)
    buf = bytearray(70_000)
    view = memoryview(buf)
    reqs = [("packs/ab/obj.pack", 10, 30_010), ("packs/ab/obj.pack", 60_000, 90_000)]
    got = store.get_ranges(reqs, into=[view[:30_000], view[30_000:70_000]])
    assert [bytes(g) for g in got] == [data[10:30_010], data[60_000:90_000]]
    assert all(isinstance(g, memoryview) and g.obj is buf for g in got)  # no copy made
    with pytest.raises(TruncatedObjectError, match="short read"):
        store.get_ranges([("packs/ab/obj.pack", 90_000, 110_000)], into=[view[:20_000]])


def test_a_warm_pull_of_the_same_snapshot_uses_the_saved_places(tmp_path: Path, monkeypatch):
    import snapsync.local.cache as cache_mod

    src = make_project(tmp_path / "src", seed=8, files=300)
    url = f"file://{tmp_path}/store"
    cache = tmp_path / "cache"
    snapsync.push(src, url, cache_dir=tmp_path / "pc")
    import snapsync.local.segments as segments_mod
    monkeypatch.setattr(segments_mod, "SEGMENT_BYTES", 256 << 10)  # several segments
    snapsync.pull(url, tmp_path / "d0", cache_dir=cache)  # cold: fills the cache, saves
    assert len(list((cache / "chunks").glob("*.seg"))) > 2
    (saved,) = (cache / "chunks" / "places").glob("*.bin")
    asked = {"n": 0}
    real_where = cache_mod.ChunkCache.where

    def where(self, *a, **k):  # type: ignore[no-untyped-def]
        asked["n"] += 1
        return real_where(self, *a, **k)

    monkeypatch.setattr(cache_mod.ChunkCache, "where", where)
    r = snapsync.pull(url, tmp_path / "d1", cache_dir=cache)
    assert describe(tmp_path / "d1") == describe(src)
    assert asked["n"] == 0 and r.chunks_downloaded == 0  # no index lookup at all

    # A segment gone (trimmed by another pull): the index is asked, the rest still cached.
    seg = sorted((cache / "chunks").glob("*.seg"))[0]
    seg.unlink()
    r = snapsync.pull(url, tmp_path / "d2", cache_dir=cache)
    assert describe(tmp_path / "d2") == describe(src)
    assert asked["n"] == 1 and 0 < r.chunks_downloaded < r.chunks_needed

    # A damaged map is not used (its checksum fails): the index answers instead.
    data = bytearray(saved.read_bytes())
    data[3] ^= 0xFF
    saved.write_bytes(bytes(data))
    r = snapsync.pull(url, tmp_path / "d3", cache_dir=cache)
    assert describe(tmp_path / "d3") == describe(src)
    assert asked["n"] == 2 and r.chunks_downloaded == 0
