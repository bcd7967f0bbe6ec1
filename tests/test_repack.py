"""gc repacks mostly dead packs: live chunks are copied into new packs, kept manifests are
rewritten at the same key, and the old packs stay (with a ``superseded`` marker) until no
reader can still be using them (docs/format.md §8).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_crash import SMALL
from treeutil import describe

import snapsync
from snapsync.core.pack import parse_pack
from snapsync.engine.check import check
from snapsync.engine.gc import gc
from snapsync.errors import NotFoundError
from snapsync.repository import Repository
from snapsync.store import Layout, open_store


def _tree(root: Path, version: int, files: int = 32) -> Path:
    """Incompressible 8 KB files; every 8th is the same in every version (stays live)."""
    for j in range(files):
        seed = 1000 + j if j % 8 == 0 else version * 100_000 + j
        p = root / f"f{j:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(random.Random(seed).randbytes(8192))
    return root


def _packs(store_dir: Path) -> set[str]:
    return {p.stem for p in (store_dir / "packs").rglob("*.pack")}


def _markers(store_dir: Path) -> set[str]:
    return {p.stem for p in (store_dir / "superseded").rglob("*.json")}


def _manifest(url: str, sid: str):
    return Repository(open_store(url), None).load_manifest(sid)  # from the store, no cache


def _pull_ok(url: str, sid: str, root: Path, dst: Path, **kw) -> None:
    snapsync.pull(url, dst, snapshot=sid, **kw)
    assert describe(dst) == describe(root)


def _setup(tmp_path: Path) -> tuple[str, Path, list[Path], list[str]]:
    store_dir = tmp_path / "store"
    url = store_dir.as_uri()
    roots = [_tree(tmp_path / f"v{i}", i) for i in range(1, 4)]
    sids = [snapsync.push(r, url, config=SMALL).snapshot_id for r in roots]
    return url, store_dir, roots, sids


def _repacked(tmp_path: Path):
    url, store_dir, roots, sids = _setup(tmp_path)
    before = _packs(store_dir)
    old_v3 = _manifest(url, sids[2])
    r = gc(url, keep_last=1, grace=0)
    assert set(r.snapshots_dropped) == set(sids[:2])
    assert r.packs_repacked >= 2 and r.manifests_rewritten == 1 and r.bytes_repacked > 0
    superseded = _markers(store_dir)
    assert len(superseded) == r.packs_superseded and superseded <= before
    return url, store_dir, roots, sids, before, old_v3, superseded


def test_repack_copies_live_chunks_and_defers_deleting_old_packs(tmp_path):
    url, store_dir, roots, sids, before, old_v3, superseded = _repacked(tmp_path)
    v3 = _manifest(url, sids[2])
    assert v3.entries == old_v3.entries and v3.id == sids[2]  # same tree, same id
    used = {loc.pack.hex() for loc in v3.locations.values()}
    assert not used & superseded  # the rewritten manifest names only the new copies
    new = _packs(store_dir) - before
    assert new and new <= used
    live_ids = v3.chunk_ids()
    for h in new:  # new packs hold live chunks only, and nothing else
        data = (store_dir / "packs" / h[:2] / f"{h}.pack").read_bytes()
        assert set(parse_pack(data)) <= live_ids
    assert superseded <= _packs(store_dir)  # old packs are still there for old readers
    assert check(url, read_data=True).ok
    _pull_ok(url, sids[2], roots[2], tmp_path / "o1", use_cache=False)

    # The ref still records the pre-repack manifest digest: a machine with a cached copy
    # trusts it, so the old packs stay until the ref moves.
    r = gc(url, keep_last=1, grace=0)
    assert r.packs_superseded_kept == len(superseded) and superseded <= _packs(store_dir)

    # A push from a machine without the stale copy moves the ref; now they go.
    v4 = _tree(tmp_path / "v4", 4)
    s4 = snapsync.push(v4, url, cache_dir=tmp_path / "fresh-cache").snapshot_id
    assert not {loc.pack.hex() for loc in _manifest(url, s4).locations.values()} & superseded
    r = gc(url, keep_last=2, grace=0)
    assert not superseded & _packs(store_dir)
    assert r.markers_deleted == len(superseded) and not _markers(store_dir)
    assert check(url, read_data=True).ok
    _pull_ok(url, sids[2], roots[2], tmp_path / "o2", use_cache=False)
    _pull_ok(url, s4, v4, tmp_path / "o3", use_cache=False)


def _stale_pull_setup(tmp_path: Path):
    url, store_dir, roots, sids, _before, _old_v3, superseded = _repacked(tmp_path)
    s4 = snapsync.push(_tree(tmp_path / "v4", 4), url,
                       cache_dir=tmp_path / "fresh-cache").snapshot_id
    gc(url, keep_last=2, grace=0)
    assert not superseded & _packs(store_dir)  # the packs the cached manifest names are gone
    return url, roots, sids, s4


def test_pull_with_stale_cached_manifest_falls_back_to_store(tmp_path):
    url, roots, sids, _ = _stale_pull_setup(tmp_path)
    # The default cache still holds v3's manifest as pushed (before the repack).
    _pull_ok(url, sids[2], roots[2], tmp_path / "out")
    # The cache now holds the store's copy.
    _pull_ok(url, sids[2], roots[2], tmp_path / "out2")


def test_pull_with_stale_cached_manifest_fails_without_fallback(tmp_path, monkeypatch):
    url, _roots, sids, _ = _stale_pull_setup(tmp_path)
    # No way to refresh: a "reload" hands back the cached (stale) copy again.
    monkeypatch.setattr(Repository, "reload_manifest",
                        lambda self, sid, verify=True: self.load_manifest(sid, verify))
    with pytest.raises(NotFoundError, match="missing"):
        snapsync.pull(url, tmp_path / "out", snapshot=sids[2])


def test_push_with_pre_repack_manifest_keeps_old_packs_referenced(tmp_path):
    url, store_dir, _roots, sids, _before, _old_v3, superseded = _repacked(tmp_path)
    # This machine cached v3's manifest before the repack; its digest matches the ref, so
    # the next push reuses chunk locations in the superseded packs.
    v4 = _tree(tmp_path / "v4", 4)
    s4 = snapsync.push(v4, url).snapshot_id
    named = {loc.pack.hex() for loc in _manifest(url, s4).locations.values()}
    assert named & superseded
    r = gc(url, keep_last=1, grace=0)
    assert sids[2] in r.snapshots_dropped
    assert named <= _packs(store_dir)  # referenced: kept, whatever the marker says
    assert check(url, read_data=True).ok
    _pull_ok(url, s4, v4, tmp_path / "out", use_cache=False)
    # That gc may have repacked v4's mostly dead packs in turn; another run must still
    # leave v4 whole, also for this machine's cached (pre-rewrite) copy of its manifest.
    gc(url, keep_last=1, grace=0)
    assert check(url, read_data=True).ok
    _pull_ok(url, s4, v4, tmp_path / "out2")


def test_repack_dry_run_writes_nothing(tmp_path):
    url, store_dir, _roots, _sids = _setup(tmp_path)

    def state() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(store_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in store_dir.rglob("*") if p.is_file()}

    was = state()
    r = gc(url, keep_last=1, grace=0, dry_run=True)
    assert r.packs_repacked >= 2 and r.bytes_repacked > 0 and r.packs_written == 0
    assert state() == was
    r = gc(url, keep_last=1, grace=0, repack=False)
    assert r.packs_repacked == 0 and not (store_dir / "superseded").exists()


def test_signed_snapshots_are_not_repacked(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPSYNC_KEY", "a-test-key-of-enough-length")
    url, store_dir, roots, sids = _setup(tmp_path)
    before = _packs(store_dir)
    r = gc(url, keep_last=1, grace=0)
    assert r.packs_repacked == 0 and any("signed" in n for n in r.notes)
    assert not (store_dir / "superseded").exists()
    assert _packs(store_dir) <= before and check(url, read_data=True).ok
    _pull_ok(url, sids[2], roots[2], tmp_path / "out", use_cache=False)


def test_unexplained_manifest_digest_blocks_pack_deletion(tmp_path):
    """Two pushes of one tree race: the ref records a manifest version the store no longer
    holds. A cache may trust that version, so gc deletes no unreferenced pack."""
    url, store_dir, _roots, _sids = _setup(tmp_path)
    store = open_store(url)
    doc = json.loads(store.get(Layout.ref("latest")))
    doc["manifest"] = "f" * 32
    store.put(Layout.ref("latest"), json.dumps(doc).encode())
    before = _packs(store_dir)
    r = gc(url, keep_last=1, grace=0, repack=False)
    assert r.packs_deleted == 0 and _packs(store_dir) == before
    assert any("digest" in n for n in r.notes)


def test_stale_ref_digest_keeps_superseded_packs_for_cached_pushers(tmp_path):
    """After the marker's grace the old packs are still kept while the ref head records the
    pre-repack manifest digest: this machine's cached copy matches it and names them."""
    url, store_dir, _roots, _sids, _before, _old_v3, superseded = _repacked(tmp_path)
    gc(url, keep_last=1, grace=0)  # marker aged past grace, but the ref is stale
    assert superseded <= _packs(store_dir)
    v4 = _tree(tmp_path / "v4", 4)
    s4 = snapsync.push(v4, url).snapshot_id  # trusts the cached, pre-repack manifest
    gc(url, keep_last=1, grace=0)
    assert check(url, read_data=True).ok
    _pull_ok(url, s4, v4, tmp_path / "out", use_cache=False)
