"""End to end: push then pull on file://, memory:// and the real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest
from treeutil import backdate, describe, make_project

import snapsync
import snapsync.engine.inspect
from snapsync.errors import NotAStoreError, NotFoundError


@pytest.fixture(params=["file", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict]:
    """(url, storage_options) for a fresh, empty store on each backend."""
    if request.param == "file":
        return (tmp_path / "store").as_uri(), {}
    if request.param == "memory":
        return f"memory://snapsync-{uuid.uuid4().hex}", {}
    bucket = request.getfixturevalue("s3_bucket")
    server = request.getfixturevalue("s3_server")
    return f"{bucket}/code", server.storage_options


def _pushes(n: dict) -> int:
    return n.get("PUT", 0)


def test_roundtrip_keeps_bytes_modes_links_and_empty_dirs(store, tmp_path):
    url, opts = store
    src = make_project(tmp_path / "src")
    r = snapsync.push(src, url, storage_options=opts)
    assert r.files == 44 and r.symlinks == 2 and r.dirs == 1
    p = snapsync.pull(url, tmp_path / "dst", storage_options=opts)
    assert p.snapshot_id == r.snapshot_id
    assert describe(tmp_path / "dst") == describe(src)
    assert os.readlink(tmp_path / "dst" / "pkglink") == "pkg"
    assert os.access(tmp_path / "dst" / "run.sh", os.X_OK)


def test_unchanged_repush_uploads_nothing(store, tmp_path):
    url, opts = store
    src = make_project(tmp_path / "src")
    backdate(src)
    first = snapsync.push(src, url, storage_options=opts)
    again = snapsync.push(src, url, storage_options=opts)
    assert again.unchanged and again.snapshot_id == first.snapshot_id
    assert again.packs_uploaded == 0 and _pushes(again.requests) == 0
    assert again.files_read == 0, "the stat cache should spare re-reading unchanged files"
    # Constant number of requests: config, ref listing and refs; manifest comes from the cache.
    assert sum(again.requests.values()) <= 4, again.requests


def test_one_edited_file_uploads_about_its_compressed_size(store, tmp_path):
    url, opts = store
    src = make_project(tmp_path / "src")
    backdate(src)
    snapsync.push(src, url, storage_options=opts)
    target = src / "pkg" / "sub1" / "mod1.py"
    target.write_text(target.read_text() + "y = 1\n")
    r = snapsync.push(src, url, storage_options=opts)
    assert r.files_read == 1 and r.chunks_new == 1 and r.packs_uploaded == 1
    # one pack (the chunk + trailer) + the manifest + log entry + ref
    assert r.bytes_uploaded < target.stat().st_size + 4096
    assert _pushes(r.requests) == 4


def test_insert_at_start_of_large_file_uploads_at_most_two_chunks(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(5).randbytes(50_000_000)
    (src / "big.bin").write_bytes(data)
    first = snapsync.push(src, url)
    assert first.chunks_new > 20
    (src / "big.bin").write_bytes(os.urandom(100) + data)
    r = snapsync.push(src, url)
    assert r.chunks_new <= 2, r.chunks_new
    assert r.bytes_uploaded < 9 << 20  # at most two chunks of at most 4 MiB, plus metadata


def test_pull_into_older_tree_writes_only_changed_files(store, tmp_path):
    url, opts = store
    src = make_project(tmp_path / "src")
    snapsync.push(src, url, storage_options=opts)
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, storage_options=opts)
    (src / "pkg" / "sub2" / "mod2.py").write_text("changed = True\n")
    (src / "new.txt").write_text("new\n")
    (src / "run.sh").chmod(0o644)
    os.unlink(src / "README.md")
    snapsync.push(src, url, storage_options=opts)
    p = snapsync.pull(url, dst, storage_options=opts, delete=True)
    assert p.files_written == 2 and p.modes_changed == 1 and p.deleted == 1
    assert p.chunks_downloaded == 2
    assert describe(dst) == describe(src)


def test_second_pull_into_fresh_folder_with_warm_cache_downloads_nothing(store, tmp_path):
    url, opts = store
    src = make_project(tmp_path / "src")
    snapsync.push(src, url, storage_options=opts)
    first = snapsync.pull(url, tmp_path / "run1", storage_options=opts)
    assert first.bytes_downloaded > 0
    second = snapsync.pull(url, tmp_path / "run2", storage_options=opts)
    assert second.bytes_downloaded == 0 and second.chunks_downloaded == 0
    assert second.chunks_cached == second.chunks_needed > 0
    assert describe(tmp_path / "run2") == describe(src)


def test_no_cache_pull_downloads_again(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    snapsync.push(src, url)
    snapsync.pull(url, tmp_path / "a")
    p = snapsync.pull(url, tmp_path / "b", use_cache=False)
    assert p.chunks_downloaded == p.chunks_needed > 0


def test_same_tree_same_id_across_stores_and_paths(tmp_path):
    a = make_project(tmp_path / "a", seed=3)
    b = make_project(tmp_path / "b", seed=3)
    ra = snapsync.push(a, (tmp_path / "s1").as_uri())
    rb = snapsync.push(b, (tmp_path / "s2").as_uri(), message="other message")
    assert ra.snapshot_id == rb.snapshot_id


def test_delete_keeps_ignored_paths(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    (src / ".prefectignore").write_text("*.log\n.venv/\n")
    snapsync.push(src, url)
    dst = tmp_path / "dst"
    snapsync.pull(url, dst)
    (dst / "stale.py").write_text("x")
    (dst / "run.log").write_text("keep me: ignored")
    (dst / ".venv" / "lib").mkdir(parents=True)
    (dst / ".venv" / "lib" / "x.py").write_text("keep")
    p = snapsync.pull(url, dst, delete=True)
    assert p.deleted == 1
    assert not (dst / "stale.py").exists()
    assert (dst / "run.log").exists() and (dst / ".venv" / "lib" / "x.py").exists()


def test_pull_specific_snapshot_and_refs(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    r1 = snapsync.push(src, url)
    (src / "README.md").write_text("v2\n")
    r2 = snapsync.push(src, url, ref="prod", message="v2")
    assert r2.parent_id is None  # a new ref has no parent
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, snapshot=r1.snapshot_id[:8])
    assert (dst / "README.md").read_text() == "hello\n"
    snapsync.pull(url, dst, ref="prod")
    assert (dst / "README.md").read_text() == "v2\n"
    with pytest.raises(NotFoundError, match="ref 'nope'"):
        snapsync.pull(url, dst, ref="nope")


def test_pull_replaces_dir_with_file_and_never_writes_through_links(tmp_path):
    url = (tmp_path / "store").as_uri()
    outside = tmp_path / "outside"
    outside.mkdir()
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("inside")
    snapsync.push(src, url)
    dst = tmp_path / "dst"
    dst.mkdir()
    # The target holds a symlink where the snapshot has a directory.
    os.symlink(outside, dst / "a")
    snapsync.pull(url, dst)
    assert not (outside / "f.txt").exists()
    assert (dst / "a").is_dir() and not (dst / "a").is_symlink()
    assert (dst / "a" / "f.txt").read_text() == "inside"


def test_non_utf8_names_roundtrip(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    name = b"caf\xe9.txt"  # latin-1, not valid UTF-8
    with open(os.path.join(os.fsencode(src), name), "wb") as f:
        f.write(b"bytes")
    r = snapsync.push(src, url)
    assert any("not valid UTF-8" in w for w in r.warnings)
    dst = tmp_path / "dst"
    snapsync.pull(url, dst)
    with open(os.path.join(os.fsencode(dst), name), "rb") as f:
        assert f.read() == b"bytes"


def test_default_ignore_template_and_note(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "m.pyc").write_bytes(b"x")
    r = snapsync.push(src, url)
    assert any("default ignore template" in n for n in r.notes)
    names = {e["path"] for e in snapsync.engine.inspect.list_entries(url)}
    assert not any(n.startswith((".git", "__pycache__")) for n in names)
    r2 = snapsync.push(src, (tmp_path / "s2").as_uri(), use_default_ignore=False)
    assert r2.files == r.files + 2 and not r2.notes


def test_errors_name_the_url(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotAStoreError, match=str(empty)):
        snapsync.pull(empty.as_uri(), tmp_path / "d")
    with pytest.raises(snapsync.UsageError, match="--ref"):
        snapsync.push(tmp_path, (tmp_path / "s").as_uri(), ref="bad/../name")
    with pytest.raises(snapsync.LocalFileError, match="not a directory"):
        snapsync.push(tmp_path / "missing", (tmp_path / "s").as_uri())


def test_missing_bucket_and_bad_credentials(s3_server, tmp_path):
    opts = s3_server.storage_options
    with pytest.raises(NotFoundError, match="does not exist"):
        snapsync.pull("s3://no-such-bucket-xyz/code", tmp_path / "d", storage_options=opts)
    bad = {**opts, "secret": "wrong-secret"}
    with pytest.raises(snapsync.StoreAccessError, match="access denied"):
        snapsync.pull("s3://whatever/code", tmp_path / "d", storage_options=bad)


def test_dry_run_writes_nothing(tmp_path):
    store = tmp_path / "store"
    src = make_project(tmp_path / "src")
    r = snapsync.push(src, store.as_uri(), dry_run=True)
    assert r.dry_run and r.chunks_new > 0 and not store.exists()


def test_same_size_edit_with_restored_mtime_is_still_seen(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    backdate(src)
    snapsync.push(src, url)
    f = src / "README.md"
    st = f.stat()
    f.write_text("HELLO\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime: ctime still moves
    r = snapsync.push(src, url)
    assert r.files_read == 1 and not r.unchanged


def test_unknown_store_version_is_refused_by_name(tmp_path):
    store = tmp_path / "store"
    src = make_project(tmp_path / "src")
    snapsync.push(src, store.as_uri())
    cfg = store / "snapsync.json"
    cfg.write_text(cfg.read_text().replace('"version": 1', '"version": 99'))
    with pytest.raises(snapsync.FormatError, match=r"version 99 .*upgrade snapsync"):
        snapsync.pull(store.as_uri(), tmp_path / "dst")
    with pytest.raises(snapsync.FormatError, match="snapsync.json"):
        snapsync.push(src, store.as_uri())


def test_push_skips_a_killed_pulls_staging_folder(tmp_path):
    src = make_project(tmp_path / "src")
    (src / ".snapsync-staging-abc123").mkdir()
    (src / ".snapsync-staging-abc123" / "00000001").write_text("half-written")
    r = snapsync.push(src, (tmp_path / "store").as_uri())
    assert r.files == 44


def test_noop_fast_path_skips_manifests_but_sees_any_change(tmp_path):
    import shutil

    from snapsync.local.tree import default_cache_dir

    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    backdate(src)
    first = snapsync.push(src, url)
    shutil.rmtree(default_cache_dir() / "manifests")  # a manifest load would now be a GET
    again = snapsync.push(src, url)
    assert again.unchanged and again.snapshot_id == first.snapshot_id
    assert again.requests == {"GET": 2, "LIST": 1}  # config, ref listing, the ref
    (src / "newdir").mkdir()  # no file changed, but the tree did
    r = snapsync.push(src, url)
    assert not r.unchanged and r.dirs == 2 and r.snapshot_id != first.snapshot_id
    os.symlink("README.md", src / "newdir" / "link")
    r2 = snapsync.push(src, url)
    assert not r2.unchanged and r2.symlinks == 3 and r2.dirs == 1


@pytest.mark.parametrize("where", ["target", "cache"])
def test_failed_pull_into_empty_folder_leaves_it_empty(tmp_path, monkeypatch, where):
    # A full disk while the files are copied into the target, or while downloaded chunks
    # are written into the local chunk cache: an error naming the folder, nothing left.
    url = (tmp_path / "store").as_uri()
    src = make_project(tmp_path / "src")
    snapsync.push(src, url)
    dst = tmp_path / "dst"
    dst.mkdir()
    # Chunks reach the cache in few large writes: the first one fails there.
    name, limit = ("copy_file_range", 10) if where == "target" else ("pwritev", 0)
    calls = {"n": 0}
    real = getattr(os, name)

    def failing(*args):
        calls["n"] += 1
        if calls["n"] > limit:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(os, name, failing)
    with pytest.raises(snapsync.LocalFileError, match="No space left") as ei:
        snapsync.pull(url, dst)
    monkeypatch.undo()
    assert calls["n"] > limit
    assert ("chunk cache" in str(ei.value)) == (where == "cache")
    assert list(dst.iterdir()) == []
    snapsync.pull(url, dst)
    assert describe(dst) == describe(src)


def test_pull_of_an_insert_reuses_the_old_copy_of_a_large_file(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(9).randbytes(20_000_000)
    (src / "big.bin").write_bytes(data)
    snapsync.push(src, url)
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, use_cache=False)
    (src / "big.bin").write_bytes(b"x" * 100 + data)
    snapsync.push(src, url)
    p = snapsync.pull(url, dst, use_cache=False)
    assert p.files_written == 1 and p.chunks_downloaded <= 2 < p.chunks_from_target
    assert p.bytes_downloaded < 9 << 20
    assert (dst / "big.bin").read_bytes() == b"x" * 100 + data


def test_pull_delete_spares_the_cache_and_a_store_inside_the_target(tmp_path):
    src = make_project(tmp_path / "src", files=3)
    dst = tmp_path / "dst"
    store = dst / "store"
    cache = dst / ".cache" / "snapsync"
    snapsync.push(src, store.as_uri(), cache_dir=cache)
    (dst / "stale.txt").parent.mkdir(exist_ok=True)
    (dst / "stale.txt").write_text("old\n")
    r = snapsync.pull(store.as_uri(), dst, delete=True, cache_dir=cache)
    assert not (dst / "stale.txt").exists() and r.deleted >= 1
    assert (store / "snapsync.json").is_file() and (cache / "chunks" / "index.sqlite").is_file()
    snapsync.pull(store.as_uri(), tmp_path / "again")  # the store still holds everything
    assert describe(tmp_path / "again") == describe(src)
