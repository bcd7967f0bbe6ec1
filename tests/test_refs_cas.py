"""Ref updates by compare-and-swap: concurrent pushes to one ref form one parent chain
(docs/format.md §5), with a bounded retry and exit 8 when the ref will not hold still."""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_concurrency import gc_in_a_loop
from treeutil import describe, make_project

import snapsync
from snapsync.engine.check import check
from snapsync.errors import ConflictError
from snapsync.repository import Repository
from snapsync.repository import publish as publish_mod
from snapsync.store import as_store, open_store


def _trees(base: Path, n: int, files: int = 6) -> list[Path]:
    out = []
    for w in range(n):
        root = make_project(base / f"t{w}", seed=w + 10, files=files)
        (root / "who.txt").write_text(f"writer {w}\n")
        out.append(root)
    return out


def _all_read_the_same_head(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make ``n`` concurrent publishers read the ref before any of them writes it, so that
    all but one lose their first compare-and-swap."""
    barrier = threading.Barrier(n, timeout=60)
    first = threading.local()
    real = Repository.read_ref_versioned

    def read(self: Repository, name: str) -> Any:
        got = real(self, name)
        if not getattr(first, "done", False):
            first.done = True
            barrier.wait()
        return got

    monkeypatch.setattr(Repository, "read_ref_versioned", read)


def _push_all(trees: list[Path], url: str, opts: dict[str, Any] | None,
              cache: Path) -> list[Any]:
    results: list[Any] = [None] * len(trees)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = snapsync.push(trees[i], url, storage_options=opts, ref="main",
                                       cache_dir=cache / str(i), jobs=2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(trees))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return results


def _assert_one_chain(repo: Repository, sids: set[str], seed: str | None) -> None:
    log = repo.log("main")  # newest first
    assert {e.snapshot for e in log} == sids | ({seed} if seed else set())
    assert len(log) == len(sids) + (1 if seed else 0)  # no stray entry of a lost round
    for newer, older in itertools.pairwise(log):
        assert newer.parent == older.snapshot, "the log is not one parent chain"
    assert log[-1].parent is None
    head = repo.read_ref("main")
    assert head is not None and head.snapshot == log[0].snapshot


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_concurrent_pushes_form_one_parent_chain(tmp_path, monkeypatch, kind):
    url = ((tmp_path / "store").as_uri() if kind == "file"
           else f"memory://cas-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(publish_mod, "_sleep", lambda _s: None)
    trees = _trees(tmp_path, 8)
    _all_read_the_same_head(monkeypatch, 8)
    results = _push_all(trees, url, None, tmp_path / "cache")
    sids = {r.snapshot_id for r in results}
    assert len(sids) == 8
    attempts = sorted(r.ref_attempts for r in results)
    assert attempts[0] == 1 and attempts[-1] >= 2  # all read one head: all but one lost once
    _assert_one_chain(Repository(as_store(url)), sids, None)
    assert check(url, read_data=True).ok


def test_ref_that_keeps_moving_gives_exit_8_and_publishes_nothing(tmp_path, monkeypatch):
    url = (tmp_path / "store").as_uri()
    first = snapsync.push(make_project(tmp_path / "a", seed=1, files=4), url).snapshot_id
    monkeypatch.setattr(publish_mod, "_sleep", lambda _s: None)
    real = Repository.read_ref_versioned

    def stale(self: Repository, name: str) -> Any:
        info, _etag = real(self, name)
        return info, "0" * 32  # as if another push had always just moved it

    monkeypatch.setattr(Repository, "read_ref_versioned", stale)
    with pytest.raises(ConflictError) as info:
        snapsync.push(make_project(tmp_path / "b", seed=2, files=4), url)
    msg = str(info.value)
    assert info.value.exit_code == 8
    assert "ref 'latest'" in msg and str(tmp_path / "store") in msg and "--snapshot" in msg
    monkeypatch.undo()
    repo = Repository(as_store(url))
    assert [e.snapshot for e in repo.log("latest")] == [first]  # no entry of the loser
    assert repo.read_ref("latest").snapshot == first
    assert check(url, read_data=True).ok


def test_same_tree_pushed_twice_at_once_is_logged_once(tmp_path, monkeypatch):
    url = (tmp_path / "store").as_uri()
    tree = make_project(tmp_path / "t", seed=3, files=6)
    monkeypatch.setattr(publish_mod, "_sleep", lambda _s: None)
    _all_read_the_same_head(monkeypatch, 2)
    results = _push_all([tree, tree], url, None, tmp_path / "cache")
    assert results[0].snapshot_id == results[1].snapshot_id
    assert sorted(r.unchanged for r in results) == [False, True]
    assert len(Repository(as_store(url)).log("main")) == 1


def test_eight_pushes_to_one_ref_on_s3_beside_gc(s3_server, s3_bucket, tmp_path, monkeypatch):
    """8 concurrent pushes of different trees to one ref through obstore on SeaweedFS, all
    reading the same head first, while gc runs in a loop with a small grace period: the log
    is one parent chain of 8 snapshots, nothing is lost, and every snapshot pulls whole."""
    opts = s3_server.storage_options
    url = f"{s3_bucket}/cas-{uuid.uuid4().hex[:8]}"
    assert open_store(url, opts).backend.name == "obstore" and open_store(url, opts).conditional
    grace = 2.0
    # Garbage for gc to collect meanwhile: 10 snapshots of another ref, 9 of them dropped.
    junk = make_project(tmp_path / "junk", seed=5, files=3)
    for i in range(10):
        (junk / "n.txt").write_text(str(i))
        (junk / "blob.bin").write_bytes(os.urandom(20_000))
        snapsync.push(junk, url, storage_options=opts, ref="junk",
                      cache_dir=tmp_path / "junk-cache")
    time.sleep(grace + 0.5)

    monkeypatch.setattr(publish_mod, "_sleep", lambda _s: time.sleep(0.01))
    trees = _trees(tmp_path, 8, files=10)
    _all_read_the_same_head(monkeypatch, 8)
    # keep_last=8: every snapshot of main stays, junk's old ones go
    with gc_in_a_loop(url, opts, keep_last=8, grace=grace) as reports:
        results = _push_all(trees, url, opts, tmp_path / "cache")
    monkeypatch.undo()
    assert len(reports) >= 2 and sum(r.packs_deleted + r.log_entries_deleted
                                     for r in reports) > 0  # gc ran and deleted

    sids = {r.snapshot_id for r in results}
    assert len(sids) == 8 and max(r.ref_attempts for r in results) >= 2
    _assert_one_chain(Repository(open_store(url, opts)), sids, None)
    rep = check(url, read_data=True, storage_options=opts)
    assert rep.ok, rep.problems
    for r, root in zip(results, trees, strict=True):
        dst = tmp_path / "out" / r.snapshot_id
        snapsync.pull(url, dst, snapshot=r.snapshot_id, storage_options=opts, use_cache=False)
        assert describe(dst) == describe(root)


def test_concurrent_pushes_form_one_chain_on_azurite(azurite_server, az_container, tmp_path,
                                                    monkeypatch):
    """The same compare-and-swap through obstore's Azure client (ETags, If-Match)."""
    opts = azurite_server.storage_options
    url = f"{az_container}/cas"
    assert open_store(url, opts).conditional
    monkeypatch.setattr(publish_mod, "_sleep", lambda _s: None)
    trees = _trees(tmp_path, 4)
    _all_read_the_same_head(monkeypatch, 4)
    results = _push_all(trees, url, opts, tmp_path / "cache")
    monkeypatch.undo()
    assert max(r.ref_attempts for r in results) >= 2
    _assert_one_chain(Repository(open_store(url, opts)), {r.snapshot_id for r in results}, None)
    assert check(url, read_data=True, storage_options=opts).ok
