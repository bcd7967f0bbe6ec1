"""Push's per-directory stat cache and walk: what a re-push reads, and what it may skip.

The walk reuses the last push's decisions for a directory that lists the same names under the
same rules, and a file's chunk ids while its stat signature holds (and it was not racy). Each
test changes one thing and checks that exactly the changed files are read, and that the
snapshot is the one a push without any cache makes.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import msgpack
import pytest
from treeutil import backdate, make_project

import snapsync
from snapsync.core.codec import Codec
from snapsync.core.manifest import DIR, FILE, SYMLINK, Entry, Location, TreeColumns
from snapsync.core.manifest_encode import encode_manifest, encode_manifest_columns


def _push(src: Path, url: str, **kw):
    return snapsync.push(src, url, use_default_ignore=False, **kw)


def _fresh_id(src: Path, tmp_path: Path) -> str:
    """The snapshot id of ``src`` pushed with no stat cache at all (reads everything)."""
    return _push(src, (tmp_path / "other-store").as_uri(), use_stat_cache=False,
                 cache_dir=tmp_path / "other-cache").snapshot_id


@pytest.fixture()
def pushed(tmp_path):
    src = make_project(tmp_path / "src")
    backdate(src)
    url = (tmp_path / "store").as_uri()
    first = _push(src, url)
    assert first.files_read == first.files
    again = _push(src, url)
    assert again.unchanged and again.files_read == 0 and again.files == first.files
    return src, url, first


def _edit_keeping_mtime(p: Path, data: bytes) -> None:
    st = p.stat()
    p.write_bytes(data)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime (and content) differ


def test_same_size_same_mtime_edit_is_seen_through_ctime(pushed, tmp_path):
    src, url, first = pushed
    p = src / "pkg" / "sub1" / "mod1.py"
    old = p.read_bytes()
    _edit_keeping_mtime(p, bytes(reversed(old)))
    r = _push(src, url)
    assert not r.unchanged and r.files_read == 1 and r.snapshot_id != first.snapshot_id
    assert r.snapshot_id == _fresh_id(src, tmp_path)


def test_new_removed_and_retyped_names_are_seen(pushed, tmp_path):
    src, url, first = pushed
    (src / "pkg" / "sub2" / "new.py").write_text("new = 1\n")
    r = _push(src, url)
    assert r.files == first.files + 1 and r.files_read == 1
    (src / "pkg" / "sub2" / "new.py").unlink()
    r = _push(src, url)
    assert r.snapshot_id == first.snapshot_id and r.files_read == 0
    victim = src / "pkg" / "sub3" / "mod3.py"
    victim.unlink()
    victim.mkdir()  # a file became an (empty) directory of the same name
    r = _push(src, url)
    assert r.files == first.files - 1 and r.dirs == first.dirs + 1 and r.files_read == 0
    assert r.snapshot_id == _fresh_id(src, tmp_path)
    victim.rmdir()
    victim.symlink_to("mod8.py")  # and then a symlink
    r = _push(src, url)
    assert r.symlinks == first.symlinks + 1 and r.snapshot_id == _fresh_id(src, tmp_path)


def test_racy_files_are_read_again(tmp_path):
    src = make_project(tmp_path / "src")
    backdate(src)
    fresh = src / "pkg" / "sub0" / "mod0.py"
    soon = time.time_ns() + 200_000_000
    os.utime(fresh, ns=(soon, soon))  # within the granularity of the save: racy
    url = (tmp_path / "store").as_uri()
    first = _push(src, url)
    time.sleep(0.3)  # past it now: the next save finds it old enough
    second = _push(src, url)
    assert second.files_read == 1 and second.snapshot_id == first.snapshot_id
    third = _push(src, url)
    assert third.unchanged and third.files_read == 0


def test_file_changed_within_the_same_tick_is_caught(tmp_path):
    """The racy-git case: a push, then a write within the mtime granularity, same size."""
    src = tmp_path / "src"
    src.mkdir()
    p = src / "a.txt"
    p.write_bytes(b"one")
    url = (tmp_path / "store").as_uri()
    first = _push(src, url)
    st = p.stat()
    p.write_bytes(b"two")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if within the same tick
    r = _push(src, url)
    assert r.files_read == 1 and r.snapshot_id != first.snapshot_id
    assert r.snapshot_id == _fresh_id(src, tmp_path)


def test_changed_rules_decide_again_but_reuse_chunk_ids(pushed, tmp_path):
    src, url, first = pushed
    (src / ".prefectignore").write_text("pkg/sub4/\n*.bin\n")
    past = time.time() - 60
    os.utime(src / ".prefectignore", (past, past))  # not racy (only this file's ctime moves)
    r = snapsync.push(src, url)
    assert r.files_read == 1  # only .prefectignore itself: the kept files' ids are reused
    from snapsync.repository import Repository
    from snapsync.store import open_store

    shipped = {e.name for e in Repository(open_store(url), tmp_path / "c").load_manifest(
        r.snapshot_id).entries}
    assert shipped and not any(n.startswith("pkg/sub4/") or n.endswith(".bin")
                               for n in shipped)
    assert r.snapshot_id == snapsync.push(src, (tmp_path / "s2").as_uri(), use_stat_cache=False,
                                          cache_dir=tmp_path / "c2").snapshot_id
    assert r.files < first.files
    again = snapsync.push(src, url)
    assert again.unchanged and again.files_read == 0


def test_cache_rows_that_do_not_line_up_are_refused(pushed, snapsync_cache_dir):
    src, url, first = pushed
    from snapsync.local.statcache import TreeCache

    [path] = snapsync_cache_dir.glob("stat/*.msgpack")
    ver, key, meta, rows = msgpack.unpackb(path.read_bytes(), raw=False)
    assert ver == TreeCache.VERSION
    rel, names, flags, sigs, nchunks, ids, lint = rows[0]
    rows[0] = [rel, names, flags[:-1], sigs, nchunks, ids, lint]  # a decision short
    path.write_bytes(msgpack.packb([ver, key, meta, rows], use_bin_type=True))
    warned: list[str] = []
    r = _push(src, url, on_warning=warned.append)
    assert any("stat cache" in w and "does not decode" in w for w in warned), warned
    assert r.snapshot_id == first.snapshot_id and r.files_read == r.files


def test_column_encoder_gives_the_same_bytes_as_entries():
    rng = random.Random(5)
    entries, locations = [], {}
    for i in range(300):
        path = f"d{i % 7}/f{i:04d}".encode()
        kind = rng.choice([FILE, FILE, FILE, SYMLINK, DIR])
        if kind == FILE:
            chunks = tuple(rng.randbytes(16) if rng.random() < 0.8 else b"\x01" * 16
                           for _ in range(rng.randint(0, 3)))
            for c in chunks:
                locations.setdefault(c, Location(rng.randbytes(16), rng.randint(0, 1 << 30),
                                                 rng.randint(1, 1 << 20), 10))
            entries.append(Entry(path, FILE, rng.choice([0o644, 0o755, 0o600]),
                                 10 * len(chunks), chunks))
        elif kind == SYMLINK:
            entries.append(Entry(path, SYMLINK, 0o777, 0, (), b"../t" + path[-2:]))
        else:
            entries.append(Entry(path, DIR, 0o755))
    entries.sort(key=lambda e: e.path)
    cols = TreeColumns([e.path for e in entries], bytes(ord(e.kind) for e in entries),
                       [e.mode for e in entries], [e.size for e in entries],
                       [len(e.chunks) for e in entries],
                       b"".join(c for e in entries for c in e.chunks),
                       [e.target for e in entries])
    info = {"ignore": ["x"], "chunker": {"name": "fastcdc2020"}}
    sid, raw = encode_manifest(entries, locations, info)
    sid2, raw2, distinct, packs = encode_manifest_columns(cols, locations, info)
    assert (sid2, raw2) == (sid, raw)
    assert set(packs) == {locations[c].pack for e in entries for c in e.chunks}
    assert distinct == len({c for e in entries for c in e.chunks})
    assert cols.entries() == entries


def test_encode_many_stores_what_encode_stores():
    rng = random.Random(3)
    text = b"def f(x):\n    return x + 1\n" * 400
    chunks = [text[:rng.randint(1, len(text))] if i % 2 else rng.randbytes(rng.randint(1, 9000))
              for i in range(40)]
    codec = Codec(3)
    pairs = codec.encode_many(chunks)
    views = codec.encode_many(chunks, copy=False)
    assert [(t, bytes(p)) for t, p in views] == [(t, bytes(p)) for t, p in pairs]
    for data, (tag, payload) in zip(chunks, pairs, strict=True):
        blob = tag + bytes(payload)
        assert blob == codec.encode(data)
        from snapsync.core.hashing import chunk_id

        assert codec.decode(blob, len(data), chunk_id(data)) == data


def test_compacted_listing_saves_the_rows_an_uncompacted_one_does(tmp_path):
    # Push compacts the walk's listing once it has the columns (names as bytes, no
    # signatures): the stat cache's rows come from the columns and must not change, and
    # a signature push updates in the columns (a file re-read) must reach them.
    from array import array

    from snapsync.core.ignore import IgnoreRules
    from snapsync.local.statcache import TreeCache
    from snapsync.local.tree import walk

    src = make_project(tmp_path / "src")
    (src / "empty2").mkdir()
    os.symlink("pkg", src / "link2")
    backdate(src)
    rows = []
    for compact in (False, True):
        listing = walk(src, IgnoreRules([], "none"), print)
        cols = listing.columns()
        if compact:
            listing.compact()
            with pytest.raises(RuntimeError):
                listing.columns()
        nchunks = array("I", [1 if k == ord(FILE) else 0 for k in cols.kinds])
        ids = b"".join(bytes([i % 256]) * 16 for i in range(sum(nchunks)))
        first = cols.kinds.index(ord(FILE))
        cols.sigs[5 * first + 2] = 12345  # as if re-read, with a new ctime
        cache = TreeCache(tmp_path / f"cache-{compact}" / "stat.msgpack")
        packed = cache.rows_of("key", listing, cols, nchunks, ids, unread=())
        rows.append(Path(packed.tmp).read_bytes())
        packed.discard()
    assert rows[0] == rows[1]
    found = []
    for rel, _names, _flags, sigs, *_ in msgpack.unpackb(rows[0]):
        sig = array("q")
        sig.frombytes(sigs)
        found += [rel for j in range(2, len(sig), 5) if sig[j] == 12345]
    assert found == [os.path.dirname(cols.paths[first])]


def test_path_column_is_a_sequence_of_its_paths():
    from snapsync.local.listing import PathColumn

    paths = [b"a", b"", b"b/c", "\u00e9".encode(), b"d" * 300]
    col = PathColumn(paths)
    assert len(col) == 5 and list(col) == paths and col == paths and paths == col
    assert [col[i] for i in range(-5, 5)] == paths + paths
    assert col[1:4] == paths[1:4] and col[::2] == paths[::2] and col[4:] == paths[4:]
    assert col[10:] == [] and b"b/c" in col and col != paths[:4] and col != [b"x"] * 5
    with pytest.raises(IndexError):
        col[5]
    with pytest.raises(IndexError):
        col[-6]
    assert PathColumn([]) == [] and list(PathColumn(iter(paths))) == paths
