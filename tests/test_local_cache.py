"""The local cache is not trusted: a bad chunk, manifest or stat cache entry is dropped (with a
warning) and the store's copy used, so one poisoned cache cannot fail every later pull."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

import msgpack
import pytest
from treeutil import describe, make_project

import snapsync
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


def _segments(cache: Path) -> list[Path]:
    segs = sorted((cache / "chunks").glob("*.seg"))
    assert segs
    return segs


def _scribble(seg: Path, keep_mtime: bool = False) -> None:
    """Overwrite a segment's bytes in place, same size: a hand edit, a bad disk tool."""
    st = seg.stat()
    fd = os.open(seg, os.O_WRONLY)  # the tests run as root: the 0444 mode does not stop it
    try:
        os.pwrite(fd, os.urandom(min(st.st_size, 1 << 16)), 0)
    finally:
        os.close(fd)
    if keep_mtime:  # put the mtime back: only the ctime still tells
        os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_segments_are_read_only_and_aligned(pushed):
    _src, _url, cache = pushed
    db = sqlite3.connect(cache / "chunks" / "index.sqlite")
    places = [p for (p,) in db.execute("SELECT place FROM loc")]
    db.close()
    assert places and all((p & ((1 << 40) - 1)) % 4096 == 0 for p in places)
    for seg in _segments(cache):
        assert stat.S_IMODE(seg.stat().st_mode) == 0o444


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["mtime", "ctime-only"])
def test_changed_cache_segment_is_detected_dropped_and_refetched(pushed, tmp_path, keep_mtime):
    src, url, cache = pushed
    for seg in _segments(cache):
        _scribble(seg, keep_mtime)
    warned: list[str] = []
    r = snapsync.pull(url, tmp_path / "dst", on_warning=warned.append)
    assert describe(tmp_path / "dst") == describe(src)  # nothing of the scribbles got in
    assert warned and all("changed after it was written" in w for w in warned), warned
    assert r.chunks_cached == 0 and r.chunks_downloaded == r.chunks_needed
    # The cache healed: the next pull downloads nothing and warns about nothing.
    again = snapsync.pull(url, tmp_path / "dst2")
    assert describe(tmp_path / "dst2") == describe(src)
    assert again.chunks_downloaded == 0 and again.warnings == []


def test_segment_changed_while_copied_from_is_caught_before_commit(pushed, tmp_path,
                                                                   monkeypatch):
    # A writer races with the pull: the segment changes after the pull checked it, while
    # files are copied out of it. The second check, before the commit, catches it.
    import snapsync.local.segments as segments_mod

    src, url, _cache = pushed
    real = os.copy_file_range
    done = {"n": 0}

    def racing(fd, out, length, off, out_off):  # type: ignore[no-untyped-def]
        if not done["n"]:
            w = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
            os.pwrite(w, b"\xff" * length, off)
            os.close(w)
        done["n"] += 1
        return real(fd, out, length, off, out_off)

    monkeypatch.setattr(segments_mod.os, "copy_file_range", racing)
    warned: list[str] = []
    r = snapsync.pull(url, tmp_path / "dst", on_warning=warned.append)
    assert done["n"] > 0
    assert describe(tmp_path / "dst") == describe(src)
    assert any("changed while this pull copied" in w for w in warned), warned
    assert r.chunks_downloaded > 0


def test_index_row_of_an_unknown_segment_is_no_cache_hit(pushed, tmp_path):
    src, url, cache = pushed
    db = sqlite3.connect(cache / "chunks" / "index.sqlite")
    with db:
        db.execute("UPDATE loc SET place = place + (1000 << 40)")
    db.close()
    shutil.rmtree(cache / "chunks" / "places")  # else the snapshot's saved places answer
    r = snapsync.pull(url, tmp_path / "dst")
    assert describe(tmp_path / "dst") == describe(src)
    assert r.chunks_cached == 0 and r.chunks_downloaded == r.chunks_needed


def test_poisoned_cache_and_bad_store_still_refused(pushed, tmp_path):
    # Every byte stays verified: the store's copy is checked like any download.
    _src, url, cache = pushed
    for seg in _segments(cache):
        _scribble(seg)
    for pack in (tmp_path / "store" / "packs").rglob("*.pack"):
        data = bytearray(pack.read_bytes())
        data[10] ^= 0xFF  # inside the first blob
        pack.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as ei:
        snapsync.pull(url, tmp_path / "dst")
    assert ei.value.exit_code == 7 and "does not match" in str(ei.value)
    assert not (tmp_path / "dst").exists() or not any(
        p for p in (tmp_path / "dst").iterdir() if not p.name.startswith(".snapsync"))


def test_cache_is_trimmed_least_recently_used_first(tmp_path):
    from snapsync.local.cache import ChunkCache

    c = ChunkCache(tmp_path / "c", max_bytes=3 * 4096)
    segs = []
    for i in range(5):
        w = c.writer()
        w.add(bytes([i]) * 16, bytes([i]) * 4000)
        w.finish()
        segs.append(w.segs[0])
    db = sqlite3.connect(tmp_path / "c" / "chunks" / "index.sqlite")
    with db:  # distinct use times: segment i last used at time i
        db.executemany("UPDATE segs SET used=? WHERE seg=?", [(i, s) for i, s in enumerate(segs)])
    db.close()
    c.touch([segs[0]])  # used again now: the newest, so it stays
    orphan = tmp_path / "c" / "chunks" / "orphan.seg"  # a killed pull's unpublished file
    orphan.write_bytes(b"x")
    os.utime(orphan, (0, 0))
    young = tmp_path / "c" / "chunks" / "young.seg"  # a running pull's: kept
    young.write_bytes(b"x")
    c.trim()
    assert c.size() <= 3 * 4096
    left = set(c.where((bytes([i]) * 16 for i in range(5)), lambda _c: 4000))
    assert left == {bytes([i]) * 16 for i in (0, 3, 4)}
    names = {p.name for p in (tmp_path / "c" / "chunks").glob("*.seg")}
    assert "orphan.seg" not in names and "young.seg" in names and len(names) == 4


def test_concurrent_pulls_share_one_cache(tmp_path):
    """Several processes pull at once into their own folders through one empty cache: all
    trees are right, and afterwards the cache serves a pull on its own."""
    import subprocess
    import sys

    src = make_project(tmp_path / "src", files=60)
    with open(src / "big.bin", "wb") as f:
        f.write(os.urandom(3 << 20))
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    cache = tmp_path / "shared-cache"
    code = ("import sys, snapsync; snapsync.pull(sys.argv[1], sys.argv[2], "
            "cache_dir=sys.argv[3])")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path / f"d{i}"),
                               str(cache)]) for i in range(4)]
    assert [p.wait(120) for p in procs] == [0] * 4
    for i in range(4):
        assert describe(tmp_path / f"d{i}") == describe(src)
    r = snapsync.pull(url, tmp_path / "after", cache_dir=cache)
    assert describe(tmp_path / "after") == describe(src)
    assert r.chunks_downloaded == 0 and r.warnings == []


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
    index = cache / "chunks" / "index.sqlite"
    index.write_bytes(b"not a database " * 512)
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (cache / "chunks" / extra).unlink(missing_ok=True)
    warned: list[str] = []
    snapsync.pull(url, tmp_path / "dst", on_warning=warned.append)
    assert describe(tmp_path / "dst") == describe(src)
    assert any("index.sqlite" in w and "not usable" in w for w in warned), warned
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


def test_a_cached_chunk_counts_only_at_its_stored_length(tmp_path):
    """A chunk id does not commit to a length: a manifest that gives a cached chunk another
    size must not get the bytes after it in the segment (or fewer), but a download."""
    from snapsync.local.cache import ChunkCache

    c = ChunkCache(tmp_path / "c")
    w = c.writer()
    w.add(b"a" * 16, b"x" * 1000)
    w.add(b"b" * 16, b"y" * 1000)
    w.finish()
    assert set(c.where([b"a" * 16, b"b" * 16], lambda _c: 1000)) == {b"a" * 16, b"b" * 16}
    assert c.where([b"a" * 16], lambda _c: 5000) == {}
    assert c.where([b"a" * 16], lambda _c: 10) == {}
