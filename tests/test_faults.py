"""Storage faults: transient ones are retried (backoff, jitter), persistent ones end in a clear
error naming the object, and a failed pull leaves the old tree intact.

Runs in-process on ``memory://`` through ``tests/faults.py``; one test uses the real S3 server.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import READ, WRITE, Fault, FaultyFS, faulty_store
from treeutil import describe, make_project

import snapsync
import snapsync.engine.inspect
from snapsync.engine.check import check
from snapsync.errors import StoreAccessError, StoreError
from snapsync.store import RetryPolicy


def report(kind: str, injected: int, lost: str = "nothing") -> None:
    """Append a row to $SNAPSYNC_FAULT_REPORT (the issue's closing table)."""
    path = os.environ.get("SNAPSYNC_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"fault": kind, "times": injected, "lost": lost}) + "\n")


@pytest.fixture
def url() -> str:
    return f"memory://faults-{uuid.uuid4().hex}"


class Injected(list):  # type: ignore[type-arg]
    """Every FaultyFS the test made so far; ``store`` is the newest faulty Store."""

    store: Any = None


@pytest.fixture
def _fast_backoff() -> list[float]:
    """Backoff sleeps, recorded instead of slept (the schedule is asserted separately)."""
    return []


@pytest.fixture
def inject(url: str, _fast_backoff: list[float]) -> Iterator[Any]:
    """``inject(*faults, options=...)``: a Store on the test's URL whose requests go through
    a FaultyFS; engines are handed ``.store``. Stores opened by URL are not affected."""
    made = Injected()

    def go(*faults: Fault, at: str | None = None,
           options: dict[str, Any] | None = None) -> Injected:
        made.store, w = faulty_store(at or url, faults, options,
                                     retry=RetryPolicy(sleep=_fast_backoff.append))
        made.append(w)
        return made

    yield go


def _injected(wrappers: list[FaultyFS]) -> int:
    return sum(sum(w.injected.values()) for w in wrappers)


@pytest.mark.parametrize("kind", ["error", "timeout", "throttle"])
def test_transient_write_faults_are_retried(kind, url, tmp_path, inject):
    src = make_project(tmp_path / "src")
    ws = inject(Fault(kind, ops=(WRITE,), every=2, times=6))
    r = snapsync.push(src, ws.store, pack_size=1 << 16)
    assert _injected(ws) == 6 and r.requests.get("RETRY", 0) == 6
    snapsync.pull(url, tmp_path / "dst")
    assert describe(tmp_path / "dst") == describe(src)
    assert check(url, read_data=True).ok
    report(f"{kind} on writes", 6)


@pytest.mark.parametrize("kind", ["error", "timeout", "throttle", "truncate"])
def test_transient_read_faults_are_retried(kind, url, tmp_path, inject):
    src = make_project(tmp_path / "src")
    snapsync.push(src, url, pack_size=1 << 16)
    ws = inject(Fault(kind, ops=(READ,), match="/packs/", times=3))
    p = snapsync.pull(ws.store, tmp_path / "dst", use_cache=False)
    assert _injected(ws) == 3 and p.requests.get("RETRY", 0) == 3
    assert describe(tmp_path / "dst") == describe(src)
    report(f"{kind} on pack reads", 3)


def test_faults_on_manifest_ref_and_listing_are_retried(url, tmp_path, inject):
    src = make_project(tmp_path / "src")
    snapsync.push(src, url)
    ws = inject(Fault("error", ops=(READ,), match="/manifests/", times=2),
                Fault("throttle", ops=(READ,), match="/refs/", times=2),
                Fault("timeout", match="snapsync.json", times=1))
    snapsync.pull(ws.store, tmp_path / "dst", use_cache=False)
    assert _injected(ws) == 5
    assert describe(tmp_path / "dst") == describe(src)
    report("errors on config, ref and manifest reads", 5)


def test_slow_responses_still_complete(url, tmp_path, inject):
    src = make_project(tmp_path / "src", files=10)
    ws = inject(Fault("slow", times=None, delay=0.01))
    r = snapsync.push(src, ws.store)
    snapsync.pull(ws.store, tmp_path / "dst", use_cache=False)
    assert describe(tmp_path / "dst") == describe(src)
    assert _injected(ws) > 5 and r.requests.get("RETRY", 0) == 0
    report("slow responses (10 ms each)", _injected(ws))


def test_backoff_grows_with_jitter(url, tmp_path, inject, _fast_backoff):
    src = make_project(tmp_path / "src", files=3)
    ws = inject(Fault("error", ops=(WRITE,), match="/packs/", times=None))
    with pytest.raises(StoreError):
        snapsync.push(src, ws.store)
    delays = _fast_backoff[:4]
    assert len(delays) == 4
    # base 0.1 s doubling, each scaled by a random factor in [0.5, 1.5)
    for i, d in enumerate(delays):
        assert 0.05 * 2**i <= d < 0.15 * 2**i
    assert len(set(delays)) == 4


def test_persistent_read_fault_names_object_and_keeps_old_tree(url, tmp_path, inject):
    old = make_project(tmp_path / "old", seed=1)
    new = make_project(tmp_path / "new", seed=2)
    snapsync.push(old, url, ref="old")
    snapsync.push(new, url, ref="new")
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, ref="old")
    before = describe(dst)
    ws = inject(Fault("error", ops=(READ,), match="/packs/", times=None))
    with pytest.raises(StoreError) as ei:
        snapsync.pull(ws.store, dst, ref="new", use_cache=False, delete=True)
    assert "packs/" in str(ei.value) and "connection reset" in str(ei.value)
    assert describe(dst) == before  # nothing changed, no staging left visible to describe
    report("persistent read errors (pull fails, old tree kept)", _injected(ws))


@pytest.mark.parametrize("kind", ["truncate", "broken"])
def test_persistent_bad_reads_fail_cleanly(kind, url, tmp_path, inject):
    old = make_project(tmp_path / "old", seed=1)
    snapsync.push(old, url, ref="old")
    snapsync.push(make_project(tmp_path / "new", seed=3), url, ref="new")
    dst = tmp_path / "dst"
    snapsync.pull(url, dst, ref="old")
    before = describe(dst)
    ws = inject(Fault(kind, ops=(READ,), match="/packs/", times=None))
    with pytest.raises(StoreError) as ei:
        snapsync.pull(ws.store, dst, ref="new", use_cache=False)
    assert "packs/" in str(ei.value)
    assert ("truncated" in str(ei.value)) == (kind == "truncate")
    assert describe(dst) == before
    report(f"persistent {kind} pack reads", _injected(ws))


def test_access_denied_is_not_retried(url, tmp_path, inject):
    src = make_project(tmp_path / "src", files=3)
    snapsync.push(src, url)
    ws = inject(Fault("denied", ops=(READ,), match="/refs/", times=None))
    with pytest.raises(StoreAccessError) as ei:
        snapsync.pull(ws.store, tmp_path / "dst")
    assert "refs/latest.json" in str(ei.value) and "access denied" in str(ei.value)
    assert ws[0].injected["denied"] == 1  # no retry of a permission error
    assert not (tmp_path / "dst").exists() or not any((tmp_path / "dst").iterdir())


def test_failed_push_keeps_ref_and_next_push_completes(url, tmp_path, inject):
    src = make_project(tmp_path / "src", seed=1)
    first = snapsync.push(src, url)
    (src / "pkg" / "new.py").write_text("print('new')\n" * 1000)
    ws = inject(Fault("broken", ops=(WRITE,), match="/manifests/", times=None))
    with pytest.raises(StoreError) as ei:
        snapsync.push(src, ws.store)
    assert "manifests/" in str(ei.value)
    assert snapsync.engine.inspect.log(url)[0].snapshot == first.snapshot_id
    assert check(url).ok
    again = snapsync.push(src, url)
    # The packs of the failed push landed; the journal lets the retry skip them.
    assert again.packs_uploaded == 0
    snapsync.pull(url, tmp_path / "dst")
    assert describe(tmp_path / "dst") == describe(src)
    report("persistent manifest write error (push fails, ref kept)", _injected(ws))


def test_fault_on_s3_names_the_object(s3_server, s3_bucket, tmp_path, inject):
    src = make_project(tmp_path / "src", files=5)
    url = f"{s3_bucket}/code"
    opts = s3_server.storage_options
    ws = inject(Fault("error", ops=(WRITE,), match="/packs/", every=2, times=3), at=url,
                options=opts)
    snapsync.push(src, ws.store, pack_size=1 << 16)
    n_write = _injected(ws)
    inject(Fault("timeout", ops=(READ,), match="/packs/", times=None), at=url, options=opts)
    with pytest.raises(StoreError) as ei:
        snapsync.pull(ws.store, tmp_path / "dst", use_cache=False)
    assert f"{url}/packs/" in str(ei.value)
    snapsync.pull(url, tmp_path / "dst", storage_options=opts, use_cache=False)
    assert describe(tmp_path / "dst") == describe(src)
    assert check(url, read_data=True, storage_options=opts).ok
    report("S3 (SeaweedFS): errors on pack writes", n_write)
    report("S3 (SeaweedFS): persistent timeouts on pack reads", _injected(ws) - n_write)


def _touch(p: Path) -> None:
    p.write_text("x")
