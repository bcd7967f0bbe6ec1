"""The pull target: what is outside it never changes (hard links), and a failure leaves the
target as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from treeutil import describe, make_project

import snapsync


@pytest.mark.parametrize("change", ["mode", "content"])
def test_hard_link_out_of_the_target_is_replaced_not_changed(tmp_path, change):
    # A target file hard-linked to a file outside: pull must not chmod (or write) the
    # shared inode, which would change the outside file too.
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.sh").write_bytes(b"echo new\n" if change == "content" else b"echo hi\n")
    (src / "run.sh").chmod(0o755)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    outside = tmp_path / "outside.sh"
    outside.write_bytes(b"echo hi\n")
    outside.chmod(0o644)
    dst = tmp_path / "dst"
    dst.mkdir()
    os.link(outside, dst / "run.sh")
    r = snapsync.pull(url, dst)
    assert (r.modes_changed, r.files_written) == ((1, 0) if change == "mode" else (0, 1))
    assert (dst / "run.sh").read_bytes() == (src / "run.sh").read_bytes()
    assert stat.S_IMODE((dst / "run.sh").stat().st_mode) == 0o755
    assert outside.read_bytes() == b"echo hi\n" and stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert outside.stat().st_nlink == 1
    assert sorted(p.name for p in dst.iterdir()) == ["run.sh"]  # no copy left behind


def test_failed_commit_puts_the_old_tree_back(tmp_path, monkeypatch):
    """A commit that fails half-way (here: the 30th rename into place) leaves the target as it
    was: replaced files, folders in the way, modes and deleted entries all come back."""
    import snapsync.local.target as target_mod
    from snapsync.errors import LocalFileError

    url = (tmp_path / "store").as_uri()
    v1 = make_project(tmp_path / "v1", seed=1, files=40)
    v2 = make_project(tmp_path / "v2", seed=2, files=40)
    (v2 / "run.sh").chmod(0o644)  # a mode change
    (v2 / "README.md").unlink()
    (v2 / "README.md").mkdir()  # a file where a folder was, the other way round too
    (v2 / "README.md" / "x.txt").write_text("x\n")
    snapsync.push(v1, url, ref="v1")
    snapsync.push(v2, url, ref="v2")
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, ref="v1")
    (dst / "local-extra.txt").write_text("not in any snapshot\n")
    before = describe(dst)

    real = os.replace
    calls = {"n": 0}

    def failing(a, b):  # the 30th rename into the target fails, as a full disk would
        if ".snapsync-staging-" not in os.fsdecode(b):
            calls["n"] += 1
            if calls["n"] == 30:
                raise OSError(28, "No space left on device", b)
        return real(a, b)

    monkeypatch.setattr(target_mod.os, "replace", failing)
    with pytest.raises(LocalFileError, match="put back as it was"):
        snapsync.pull(url, dst, ref="v2", delete=True)
    monkeypatch.undo()
    assert calls["n"] == 30
    assert describe(dst) == before
    assert not [p for p in os.listdir(dst) if p.startswith(".snapsync-staging-")]
    snapsync.pull(url, dst, ref="v2", delete=True)  # and the next pull completes
    assert describe(dst) == describe(v2)


def test_files_get_their_modes_under_any_umask(tmp_path):
    src = make_project(tmp_path / "src", files=10)
    (src / "run.sh").chmod(0o755)
    (src / "key.pem").write_text("secret\n")
    (src / "key.pem").chmod(0o600)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    old = os.umask(0o077)  # a umask that would take group and other bits away
    try:
        snapsync.pull(url, tmp_path / "dst")
    finally:
        os.umask(old)
    assert describe(tmp_path / "dst") == describe(src)
    assert stat.S_IMODE((tmp_path / "dst" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "dst" / "key.pem").stat().st_mode) == 0o600


def test_a_fresh_pull_records_each_files_final_signature(tmp_path):
    # Into an empty folder, signatures are taken from the written files' descriptors (no
    # lstat pass): they must be what lstat sees after the pull, or the next pull re-reads.
    from snapsync.engine.pull import _key
    from snapsync.local.statcache import StatCache
    from snapsync.local.tree import stat_sig

    src = make_project(tmp_path / "src", files=30)
    (src / "run.sh").chmod(0o755)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    dst = tmp_path / "dst"
    r = snapsync.pull(url, dst)
    cache = StatCache(Path(os.environ["SNAPSYNC_CACHE_DIR"]) / "targets"
                      / f"{_key(dst)}.msgpack")
    assert len(cache.entries) == r.files > 30
    for name, (sig, _ids) in cache.entries.items():
        assert sig == stat_sig(os.lstat(dst / name)), name


def test_pull_stat_caches_do_not_pile_up(tmp_path, monkeypatch):
    # A worker pulls into a new folder on every run: only the newest caches are kept.
    import snapsync.local.target as target_mod

    monkeypatch.setattr(target_mod.prune_target_caches, "__defaults__", (3,))
    src = make_project(tmp_path / "src", files=3)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    folder = Path(os.environ["SNAPSYNC_CACHE_DIR"]) / "targets"
    for i in range(5):
        snapsync.pull(url, tmp_path / f"run{i}")
    from snapsync.engine.pull import _key

    left = {p.name for p in folder.iterdir()}
    assert len(left) == 3
    assert f"{_key(tmp_path / 'run4')}.msgpack" in left  # the last one written stays


def test_two_pulls_into_one_empty_folder_at_once(tmp_path):
    """Both write in place into an empty folder; without the target lock the loser's cleanup
    would empty the winner's files. Serialized, the second finds the tree and checks it."""
    import threading

    src = make_project(tmp_path / "src", seed=4, files=300)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    dest = tmp_path / "dest"
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        try:
            barrier.wait()
            snapsync.pull(url, dest, cache_dir=tmp_path / f"cache{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert describe(dest) == describe(src)
