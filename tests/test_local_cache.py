"""The local cache is not trusted: a bad chunk, manifest or stat cache entry is dropped (with a
warning) and the store's copy used, so one poisoned cache cannot fail every later pull."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgpack
import pytest
from treeutil import describe, make_project

import snapsync
import snapsync.engine.pull
from snapsync.errors import IntegrityError
from snapsync.store import Layout


@pytest.fixture
def pushed(tmp_path: Path, snapsync_cache_dir: Path) -> tuple[Path, str, Path]:
    """(source, store URL, cache dir) after one push and one pull that warmed the cache."""
    src = make_project(tmp_path / "src", files=6)
    with open(src / "big.bin", "wb") as f:  # chunked by FastCDC: several chunks in one file
        f.write(os.urandom(3 << 20))
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    snapsync.pull(url, tmp_path / "warm")
    return src, url, snapsync_cache_dir


def _poison_chunks(cache: Path) -> int:
    """Replace every cached blob by a raw blob of other bytes; return how many."""
    db = sqlite3.connect(cache / "chunks.sqlite")
    with db:
        n = db.execute("UPDATE chunks SET blob = CAST(X'00' || randomblob(raw) AS BLOB)").rowcount
    db.close()
    return n


@pytest.mark.parametrize("keep", [True, False], ids=["in-memory", "via-cache"])
def test_poisoned_chunk_cache_is_dropped_and_refetched(pushed, tmp_path, keep, monkeypatch):
    src, url, cache = pushed
    if not keep:  # a pull too big for memory reads each chunk from the cache as it writes
        monkeypatch.setattr(snapsync.engine.pull, "MEMORY_BUDGET", 0)
    n = _poison_chunks(cache)
    assert n > 3
    warned: list[str] = []
    r = snapsync.pull(url, tmp_path / "dst", on_warning=warned.append)
    assert describe(tmp_path / "dst") == describe(src)
    assert len(warned) == 1 and "fail verification" in warned[0], warned
    assert "chunks.sqlite" in warned[0] and r.warnings == warned
    assert r.chunks_downloaded == n
    # The cache healed: the next pull downloads nothing and warns about nothing.
    again = snapsync.pull(url, tmp_path / "dst2")
    assert describe(tmp_path / "dst2") == describe(src)
    assert again.chunks_downloaded == 0 and again.warnings == []


def test_poisoned_cache_and_bad_store_still_refused(pushed, tmp_path):
    # Every byte stays verified: the store's copy is checked like any download.
    _src, url, cache = pushed
    _poison_chunks(cache)
    for pack in (tmp_path / "store" / "packs").rglob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[10] ^= 0xFF  # inside the first blob
        pack.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as ei:
        snapsync.pull(url, tmp_path / "dst")
    assert ei.value.exit_code == 7 and "does not match" in str(ei.value)
    assert not (tmp_path / "dst").exists() or not any(
        p for p in (tmp_path / "dst").iterdir() if not p.name.startswith(".snapsync"))


def test_corrupt_cached_manifest_is_dropped_with_a_warning(pushed, tmp_path):
    src, url, cache = pushed
    cached = list((cache / "manifests").rglob("*"))
    files = [p for p in cached if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    sid = files[0].name
    # By snapshot id no ref names the manifest's digest: the cached copy is decoded, fails.
    warned: list[str] = []
    r = snapsync.pull(url, tmp_path / "dst", snapshot=sid, on_warning=warned.append)
    assert describe(tmp_path / "dst") == describe(src)
    assert any("cached manifest" in w and sid in w for w in warned), warned
    blob = (tmp_path / "store" / Layout.manifest(r.snapshot_id)).read_bytes()
    assert (cache / "manifests" / sid[:2] / sid).read_bytes() == blob
    # Through a ref that records the digest, a cached copy that differs is skipped as stale.
    files[0].write_bytes(b"garbage")
    snapsync.pull(url, tmp_path / "dst2")
    assert describe(tmp_path / "dst2") == describe(src)
    assert (cache / "manifests" / sid[:2] / sid).read_bytes() == blob


def test_chunk_cache_that_is_not_a_database_is_replaced(pushed, tmp_path):
    src, url, cache = pushed
    (cache / "chunks.sqlite").write_bytes(b"not a database " * 512)
    for extra in ("chunks.sqlite-wal", "chunks.sqlite-shm"):
        (cache / extra).unlink(missing_ok=True)
    warned: list[str] = []
    snapsync.pull(url, tmp_path / "dst", on_warning=warned.append)
    assert describe(tmp_path / "dst") == describe(src)
    assert any("chunks.sqlite" in w and "not usable" in w for w in warned), warned
    assert snapsync.pull(url, tmp_path / "dst2").chunks_downloaded == 0


@pytest.mark.parametrize("doc, push_doc", [
    ([3, 0, [[1, 2, 3]], {}],  # a row of the wrong types
     [4, "k", {}, [[1, 2, 3, 4, 5, 6, 7]]]),
    ([3, "x", [], {}],  # a time (push: a rules key) that is not an integer (a string)
     [4, 5, {}, []]),
    ([3, 0, 7, {}],  # rows that are not a list
     [4, "k", {}, 7]),
    ([3, 0, [[b"a.txt", [1, "b"], b"\x01" * 16]], {}],  # a signature that is not integers
     [4, "k", {}, [[b"", b"a.txt", b"f", b"\x01" * 39, b"\0" * 4, b"", False]]]),
])
def test_stat_cache_that_does_not_decode_is_ignored_with_a_warning(pushed, tmp_path, doc,
                                                                   push_doc):
    from snapsync.local.statcache import TreeCache

    src, url, cache = pushed
    stat_files = list(cache.rglob("*.msgpack"))
    assert len(stat_files) >= 2  # the push's (folder, store) and the pull's target
    assert push_doc[0] == TreeCache.VERSION  # (an older version is rebuilt, not warned about)
    for p in stat_files:
        mine = p.parent.name == "stat"  # the push's cache: one row per directory
        p.write_bytes(msgpack.packb(push_doc if mine else doc, use_bin_type=True))
    (src / "new.txt").write_text("new\n")
    pushed_warn: list[str] = []
    snapsync.push(src, url, on_warning=pushed_warn.append)
    assert any("stat cache" in w and "does not decode" in w for w in pushed_warn), pushed_warn
    pulled_warn: list[str] = []
    snapsync.pull(url, tmp_path / "warm", on_warning=pulled_warn.append)
    assert describe(tmp_path / "warm") == describe(src)
    assert any("stat cache" in w for w in pulled_warn), pulled_warn
