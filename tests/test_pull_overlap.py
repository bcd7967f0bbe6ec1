"""A pull writes files while later chunks still download (issue 11), and keeps its promises:
a failure after some files were written empties an empty target again, leaves an old tree as
it was, and the cache holds only whole, published segments."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from treeutil import describe, make_project

import snapsync
import snapsync.repository.reader as reader_mod
from snapsync.errors import NotFoundError
from snapsync.local.tree import STAGING_PREFIX

SMALL = 1 << 16  # packs and download batches: many batches for a small tree


def _written(dst: Path) -> int:
    """Regular files in ``dst`` (its staging folder included: an old tree's pull stages)."""
    n = 0
    for _dirpath, _dirs, files in os.walk(dst):
        n += len(files)
    return n


def _project(root: Path, seed: int) -> Path:
    make_project(root, seed=seed, files=300)
    return root


def _wait_for_files(dst: Path, more_than: int) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _written(dst) > more_than:
            return True
        time.sleep(0.01)
    return False


def _slow_last_batch(monkeypatch, dst: Path, base: int, fail: bool = False) -> dict:
    """Hold the download of the last batch until files show up in ``dst`` (beyond ``base``):
    only a pull that writes while it downloads gets past it. With ``fail``, that download
    then fails as a missing pack does."""
    seen = {"calls": 0, "batches": 0, "overlapped": None}
    real_plan = reader_mod.ChunkReader.plan
    real_download = reader_mod.ChunkReader._download

    def plan(self, ids, conc):
        batches = real_plan(self, ids, conc)
        seen["batches"] = len(batches)
        return batches

    def download(self, batch, io, slot=None):
        seen["calls"] += 1
        if seen["batches"] > 2 and seen["calls"] == seen["batches"]:
            seen["overlapped"] = _wait_for_files(dst, base)
            if fail:
                raise NotFoundError("packs/gone.pack: not found (test)")
        return real_download(self, batch, io, slot)

    monkeypatch.setattr(reader_mod, "FETCH_BATCH_BYTES", SMALL)
    monkeypatch.setattr(reader_mod.ChunkReader, "plan", plan)
    monkeypatch.setattr(reader_mod.ChunkReader, "_download", download)
    return seen


@pytest.mark.parametrize(("use_cache", "jobs"), [(True, None), (False, None), (True, 1)])
def test_files_are_written_while_later_chunks_download(tmp_path, monkeypatch, use_cache, jobs):
    src = _project(tmp_path / "src", 1)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url, pack_size=SMALL)
    dst = tmp_path / "dst"
    dst.mkdir()
    seen = _slow_last_batch(monkeypatch, dst, 0)
    r = snapsync.pull(url, dst, use_cache=use_cache, cache_dir=tmp_path / "cache", jobs=jobs)
    assert seen["batches"] > 2 and seen["overlapped"] is True
    assert describe(dst) == describe(src)
    assert r.chunks_downloaded == r.chunks_needed
    assert not [p for p in dst.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_a_download_failing_after_files_were_written_empties_the_target(tmp_path, monkeypatch):
    src = _project(tmp_path / "src", 1)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url, pack_size=SMALL)
    dst = tmp_path / "dst"
    dst.mkdir()
    cache = tmp_path / "cache"
    seen = _slow_last_batch(monkeypatch, dst, 0, fail=True)
    with pytest.raises(NotFoundError):
        snapsync.pull(url, dst, cache_dir=cache)
    assert seen["overlapped"] is True  # files had been written when the download failed
    assert list(dst.iterdir()) == []  # empty again, staging folder included
    # What was verified stays in the cache, in published segments only: the next pull
    # downloads just the rest, and gets the whole tree.
    monkeypatch.undo()
    r = snapsync.pull(url, dst, cache_dir=cache)
    assert describe(dst) == describe(src)
    assert 0 < r.chunks_cached < r.chunks_needed


def test_a_download_failing_after_files_were_staged_leaves_the_old_tree(tmp_path, monkeypatch):
    v1 = _project(tmp_path / "v1", 1)
    v2 = _project(tmp_path / "v2", 2)
    url = (tmp_path / "store").as_uri()
    snapsync.push(v1, url, ref="v1", pack_size=SMALL)
    snapsync.push(v2, url, ref="v2", pack_size=SMALL)
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, ref="v1", use_cache=False)
    before = describe(dst)
    seen = _slow_last_batch(monkeypatch, dst, _written(dst), fail=True)
    with pytest.raises(NotFoundError):
        snapsync.pull(url, dst, ref="v2", use_cache=False)
    assert seen["overlapped"] is True  # files had been staged when the download failed
    assert describe(dst) == before
    assert not [p for p in dst.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_reserved_places_filled_by_threads_in_any_order(tmp_path, monkeypatch):
    """The segment writer's reserved places (verify threads write their own chunks): across
    segment boundaries, filled in any order, published only by seal; abort keeps nothing."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import snapsync.local.cache as cache_mod
    import snapsync.local.segments as segments_mod

    monkeypatch.setattr(segments_mod, "SEGMENT_BYTES", 64 << 10)  # several segments
    cache = cache_mod.ChunkCache(tmp_path / "c")
    rng = random.Random(7)
    chunks = [(bytes([i]) * 16, rng.randbytes(rng.randint(1, 20000))) for i in range(60)]
    writer = cache.writer()
    units = [chunks[i:i + 7] for i in range(0, len(chunks), 7)]
    runs = [writer.reserve([(cid, len(d)) for cid, d in u]) for u in units]
    assert len({fd for r in runs for fd, _pos, _idx in r}) > 2  # it spans segments
    assert cache.where([c for c, _ in chunks], lambda c: 0) == {}  # nothing published yet
    order = list(range(len(units)))
    rng.shuffle(order)
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda k: writer.write(runs[k], [d for _c, d in units[k]]), order))
    writer.seal()
    sizes = dict(chunks)
    where = cache.where(sizes, lambda c: len(sizes[c]))
    assert set(where) == set(sizes)
    segs = cache.open_segments({segments_mod.seg_of(p) for p in where.values()})
    try:
        for cid, data in chunks:
            assert segs.read(where[cid], len(data)) == data
    finally:
        segs.close()

    # Reserved but abandoned: neither the full (retired) segments nor the open one publish.
    w2 = cache.writer()
    more = [(bytes([100 + i]) * 16, rng.randbytes(20000)) for i in range(8)]
    w2.reserve([(c, len(d)) for c, d in more])
    w2.abort()
    assert cache.where([c for c, _ in more], lambda c: 20000) == {}
    on_disk = {p.name for p in (tmp_path / "c" / "chunks").iterdir() if p.suffix == ".seg"}
    assert on_disk == {r[0] for r in cache._conn().execute("SELECT name FROM segs")}
