"""Concurrent writers on the real S3 server (SeaweedFS): many pushes to one ref at once, and
``gc`` looping while pushes run. Nothing a push reported may be lost, except snapshots that gc
dropped by retention (never a ref head), and every kept snapshot stays complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_crash import FAULTS, SMALL, _opts_args
from test_faults import report
from treeutil import backdate, describe, make_project

import snapsync
from snapsync.engine.check import check
from snapsync.engine.gc import gc
from snapsync.errors import GcRaceError
from snapsync.repository import Repository
from snapsync.store import Layout, as_store, open_store

_PUSHER = """
import json, os, random, sys
from pathlib import Path
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from faults import Fault, WRITE, faulty_store
import snapsync
from treeutil import make_project
_, url, opts, base, who, count, slow = sys.argv[1:]
opts = json.loads(opts)
store = url
if float(slow):
    store, _w = faulty_store(url, [Fault("slow", ops=(WRITE,), times=None, delay=float(slow))],
                             opts)
for i in range(int(count)):
    root = make_project(Path(base) / f"{who}-{i}", seed=1, files=15)
    rng = random.Random(f"{who}-{i}")
    for j in range(6):
        (root / f"unique{j}.bin").write_bytes(rng.randbytes(40_000))
    r = snapsync.push(root, store, storage_options=opts, ref="main", jobs=2)
    print(json.dumps({"sid": r.snapshot_id, "root": str(root)}), flush=True)
"""


def _start_pushers(url: str, opts: dict[str, Any], base: Path, n: int, count: int,
                   slow: float) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-c", _PUSHER, str(FAULTS), url, json.dumps(opts),
                              str(base), f"p{w}", str(count), str(slow)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for w in range(n)]


def _collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, str]]:
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr
            out += [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    finally:
        for p in procs:  # only the processes this test started
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@contextlib.contextmanager
def gc_in_a_loop(url: str, opts: dict[str, Any], **kwargs: Any) -> Iterator[list[Any]]:
    """Run gc over and over in a thread while the block runs; yields its reports, with one
    more run's appended after the block (and any gc error raised)."""
    reports: list[Any] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                reports.append(gc(url, storage_options=opts, **kwargs))
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                return

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield reports
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not errors, errors
    reports.append(gc(url, storage_options=opts, **kwargs))


def test_many_pushes_to_one_ref_at_once(s3_server, s3_bucket, tmp_path):
    opts = s3_server.storage_options
    url = f"{s3_bucket}/code"
    snapsync.push(make_project(tmp_path / "seed", files=5), url, storage_options=opts,
                  config=SMALL)
    trees = []
    for w in range(4):
        root = make_project(tmp_path / f"t{w}", seed=w + 10, files=15)
        (root / "who.txt").write_text(f"writer {w}\n")
        trees.append(root)
    procs = [subprocess.Popen([sys.executable, str(FAULTS), "--", "push", str(t), url,
                               "--ref", "main", "--json", *_opts_args(opts)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t in trees]
    sids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        sids.append(json.loads(out)["snapshot_id"])
    assert len(set(sids)) == 4

    repo = Repository(open_store(url, opts), None)
    head = repo.read_ref("main")
    assert head is not None and head.snapshot in sids  # last writer wins...
    assert {e.snapshot for e in repo.log("main")} == set(sids)  # ...with history
    rep = check(url, read_data=True, storage_options=opts)
    assert rep.ok, rep.problems  # no pack lost, every chunk verified
    for sid, root in zip(sids, trees, strict=True):
        dst = tmp_path / f"out-{sid}"
        snapsync.pull(url, dst, snapshot=sid, storage_options=opts, use_cache=False)
        assert describe(dst) == describe(root)
    report("4 concurrent pushes to one ref", 4)


def test_gc_in_a_loop_while_pushes_run(s3_server, s3_bucket, tmp_path):
    opts = s3_server.storage_options
    url = f"{s3_bucket}/code"
    grace = 6.0  # well above one push here (~1-2 s), even on a loaded machine

    # Garbage that gc may delete while the pushes run: old snapshots of another ref and the
    # packs of a push killed half-way, all older than the grace period.
    snapsync.push(make_project(tmp_path / "junk0", seed=3, files=5), url,
                  storage_options=opts, config=SMALL, ref="junk")
    for i in (1, 2):
        junk = make_project(tmp_path / f"junk{i}", seed=3 + i, files=5)
        snapsync.push(junk, url, storage_options=opts, ref="junk")
    killed = subprocess.run([sys.executable, str(FAULTS), "--kill-after", "8", "--", "push",
                             str(make_project(tmp_path / "junk9", seed=99, files=30)), url,
                             "-q", "--ref", "junk", *_opts_args(opts)],
                            capture_output=True, timeout=120)
    assert killed.returncode == -9
    time.sleep(grace + 0.5)

    procs = _start_pushers(url, opts, tmp_path / "trees", n=3, count=5, slow=0.15)
    with gc_in_a_loop(url, opts, keep_last=1, grace=grace) as reports:
        pushed = _collect(procs)

    deleted_packs = sum(r.packs_deleted for r in reports)
    dropped = {s for r in reports for s in r.snapshots_dropped}
    assert len(reports) >= 3 and deleted_packs > 0  # gc really ran and really deleted

    rep = check(url, read_data=True, storage_options=opts)
    assert rep.ok, rep.problems
    repo = Repository(open_store(url, opts), None)
    head = repo.read_ref("main")
    assert head is not None and head.snapshot in {p["sid"] for p in pushed}
    store = open_store(url, opts)
    verified = 0
    for p in pushed:
        exists = store.get_optional(Layout.manifest(p["sid"])) is not None
        if not exists:  # only retention may remove a reported snapshot, and never a head
            assert p["sid"] in dropped and p["sid"] != head.snapshot
            continue
        dst = tmp_path / "out" / p["sid"]
        snapsync.pull(url, dst, snapshot=p["sid"], storage_options=opts, use_cache=False)
        assert describe(dst) == describe(Path(p["root"]))
        verified += 1
    assert verified >= 1
    report(f"gc x{len(reports)} (grace {grace:.0f} s) during 15 pushes", len(reports),
           f"nothing ({verified} snapshots verified, {len(dropped)} dropped by retention, "
           f"{deleted_packs} packs collected)")


def test_gc_keeps_heads_retention_and_young_data(tmp_path):
    url = (tmp_path / "store").as_uri()
    roots = [make_project(tmp_path / f"v{i}", seed=i, files=4) for i in range(4)]
    sids = [snapsync.push(r, url, config=SMALL).snapshot_id for r in roots]
    # Everything is younger than the grace period: nothing goes.
    r = gc(url, keep_last=1)
    assert r.snapshots_dropped == [] and r.packs_deleted == 0
    # Without grace, keep_last=2 keeps the two newest; the others and their packs go.
    r = gc(url, keep_last=2, grace=0)
    assert set(r.snapshots_dropped) == set(sids[:2]) and r.packs_deleted > 0
    assert check(url, read_data=True).ok
    for sid, root in zip(sids[2:], roots[2:], strict=True):
        snapsync.pull(url, tmp_path / f"o{sid}", snapshot=sid)
        assert describe(tmp_path / f"o{sid}") == describe(root)
    # keep_within keeps recent ones regardless of keep_last; dry run deletes nothing.
    r = gc(url, keep_last=1, keep_within=3600, grace=0, dry_run=True)
    assert r.snapshots_dropped == [] and r.packs_deleted == 0
    r = gc(url, keep_last=1, grace=0, dry_run=True)
    assert r.snapshots_dropped == [sids[2]]
    assert open_store(url).get_optional(Layout.manifest(sids[2])) is not None


def test_gc_keeps_snapshot_a_running_push_reuses(tmp_path):
    """A push reads ref heads at its start; a head replaced meanwhile must survive gc for
    the grace period, or the push would publish a manifest naming deleted packs."""
    url = (tmp_path / "store").as_uri()
    a = make_project(tmp_path / "a", seed=1, files=4)
    b = make_project(tmp_path / "b", seed=2, files=4)
    sa = snapsync.push(a, url, config=SMALL).snapshot_id
    snapsync.push(b, url)  # a is no longer the head...
    r = gc(url, keep_last=1, grace=60)
    assert sa not in r.snapshots_dropped  # ...but it was one less than `grace` ago
    # Once it stopped being the head longer ago than grace, it goes.
    r = gc(url, keep_last=1, grace=0)
    assert sa in r.snapshots_dropped
    assert check(url).ok


def test_check_reports_missing_pack_and_corrupt_chunk(tmp_path):
    url = (tmp_path / "store").as_uri()
    sid = snapsync.push(make_project(tmp_path / "a", files=4), url, config=SMALL).snapshot_id
    assert check(url, read_data=True).ok
    packs = sorted((tmp_path / "store" / "packs").rglob("*.pack"))
    data = bytearray(packs[0].read_bytes())
    data[5] ^= 0xFF
    packs[0].write_bytes(bytes(data))
    assert check(url).ok  # metadata only: sizes still fit
    rep = check(url, read_data=True)
    assert not rep.ok and any("does not hash to its id" in p for p in rep.problems)
    os.unlink(packs[-1])
    rep = check(url)
    assert any("is missing" in p and sid in p for p in rep.problems)
    from snapsync.cli import main

    assert main(["check", url, "-q"]) == 10


def test_stale_cached_manifest_not_trusted_after_gc_and_repush(tmp_path):
    """Rollback after gc: tree T1 is dropped and collected, then pushed again from another
    machine (same snapshot id, new packs). A machine whose cache still holds T1's old manifest
    must not publish a snapshot naming the deleted packs."""
    url = (tmp_path / "store").as_uri()
    t1, t2 = tmp_path / "t1", tmp_path / "t2"
    t1.mkdir()
    t2.mkdir()
    shared = os.urandom(30_000)  # one chunk in common, so the packs of a re-push differ
    (t1 / "a.bin").write_bytes(shared)
    (t2 / "a.bin").write_bytes(shared)
    for i in range(3):
        (t1 / f"u{i}.bin").write_bytes(os.urandom(30_000))
    (t2 / "z.bin").write_bytes(os.urandom(30_000))
    backdate(t1)
    cache_a, cache_b = tmp_path / "cache-a", tmp_path / "cache-b"
    s1 = snapsync.push(t1, url, cache_dir=cache_a, config=SMALL).snapshot_id
    snapsync.push(t2, url, cache_dir=cache_a)
    r = gc(url, keep_last=1, grace=0)
    assert s1 in r.snapshots_dropped and r.packs_deleted > 0
    assert snapsync.push(t1, url, cache_dir=cache_b).snapshot_id == s1  # the rollback
    (t1 / "hotfix.py").write_text("fixed = True\n")
    s3 = snapsync.push(t1, url, cache_dir=cache_a).snapshot_id  # A's cache is stale
    rep = check(url, read_data=True)
    assert rep.ok, rep.problems
    snapsync.pull(url, tmp_path / "out", snapshot=s3, cache_dir=cache_a)
    assert describe(tmp_path / "out") == describe(t1)


def _rollback_trees(tmp_path):
    url = (tmp_path / "store").as_uri()
    t1, t2 = tmp_path / "t1", tmp_path / "t2"
    for root in (t1, t2):  # nothing in common: the re-push recreates T1's packs exactly
        root.mkdir()
        for i in range(3):
            (root / f"f{i}.bin").write_bytes(os.urandom(80_000))
    s1 = snapsync.push(t1, url, config=SMALL).snapshot_id
    snapsync.push(t2, url)
    time.sleep(0.05)
    return url, t1, s1


@pytest.mark.parametrize("store", ["file", "memory"])
def test_gc_spares_a_rollback_published_before_its_tombstones(tmp_path, store):
    """A rollback push of a dropped tree needs the very manifest and pack keys gc is about to
    delete (ids are content hashes). Published after gc's plan but before its tombstones, its
    log entry is in gc's look after them, and gc spares what it needs (docs/format.md §8)."""
    url, t1, s1 = _rollback_trees(tmp_path)
    if store == "memory":
        url = f"memory://rollback-{os.urandom(4).hex()}"
        s1 = snapsync.push(t1, url, config=SMALL).snapshot_id
        snapsync.push(tmp_path / "t2", url)
    pushed = []

    def race(line: str) -> None:
        if line.startswith("writing tombstones"):
            pushed.append(snapsync.push(t1, url, cache_dir=tmp_path / "c2"))

    r = gc(url, keep_last=1, grace=0, on_progress=race)
    assert pushed[0].snapshot_id == s1 and not pushed[0].unchanged
    assert s1 in r.snapshots_dropped and s1 in r.snapshots_spared  # dropped, then spared
    assert r.packs_deleted == 0 and r.manifests_deleted == 0
    rep = check(url, read_data=True)
    assert rep.ok, rep.problems
    snapsync.pull(url, tmp_path / "out", use_cache=False)
    assert describe(tmp_path / "out") == describe(t1)
    assert all(t.done for t in Repository(as_store(url)).tombstones().values())


def _push_seeing_tombstones(tree, url, cache):
    """Start a push in a thread; return it with an event set once it waits for a gc it
    found deleting (its warning says so).

    The event is the warning, not the first sight of a tombstone: released at that first
    sight, a gc could finish before the push looked again, and the push would never wait
    (seen under load).
    """
    waits = threading.Event()
    out: dict[str, Any] = {}

    def warned(msg: str) -> None:
        if "waits for it to finish" in msg:
            waits.set()

    def run():
        try:
            out["result"] = snapsync.push(tree, url, cache_dir=cache, on_warning=warned)
        except BaseException as exc:  # looked at by the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, waits, out


def _gc_racing_a_push(url, tree, cache, phase):
    """Run gc; when it reaches ``phase``, start a push of ``tree`` and hold gc until the push
    has logged its snapshot and waits for gc. Returns gc's report and the push's
    outcome (``result`` or ``error``)."""
    started = []

    def race(line: str) -> None:
        if line.startswith(phase):
            thread, saw, out = _push_seeing_tombstones(tree, url, cache)
            started.append((thread, out))
            assert saw.wait(30)

    r = gc(url, keep_last=1, grace=0, on_progress=race)
    thread, out = started[0]
    thread.join(60)
    return r, out


def test_a_rollback_that_sees_gc_tombstones_waits_and_is_spared(tmp_path):
    """Published after gc wrote its tombstones but before gc's look at the logs, the rollback
    sees them and waits; gc sees its log entry and spares it; then it lands whole."""
    url, t1, s1 = _rollback_trees(tmp_path)
    r, out = _gc_racing_a_push(url, t1, tmp_path / "c2", "re-reading refs and logs")
    assert "error" not in out, out.get("error")
    assert out["result"].snapshot_id == s1 and s1 in r.snapshots_spared
    assert r.packs_deleted == 0 and r.manifests_deleted == 0
    assert any("waits for it to finish" in w for w in out["result"].warnings)
    rep = check(url, read_data=True)
    assert rep.ok, rep.problems
    snapsync.pull(url, tmp_path / "out", use_cache=False)
    assert describe(tmp_path / "out") == describe(t1)


def test_a_rollback_whose_objects_gc_deleted_publishes_nothing(tmp_path):
    """Logged after gc's look, the rollback sees the tombstones, waits for gc, finds that the
    objects it needs are gone, and publishes nothing (exit 8) rather than a ref to missing
    data; pushed again, it uploads them and lands whole."""
    url, t1, s1 = _rollback_trees(tmp_path)
    r, out = _gc_racing_a_push(url, t1, tmp_path / "c2", "deleting")
    err = out.get("error")
    assert isinstance(err, GcRaceError) and err.exit_code == 8, out
    assert "nothing was published" in str(err) and "push again" in str(err)
    assert s1 in r.snapshots_dropped and r.packs_deleted > 0
    repo = Repository(as_store(url))
    assert s1 not in {e.snapshot for e in repo.log("latest")}  # its log entry went too
    assert check(url).ok  # the ref still names the tree before the rollback
    assert snapsync.push(t1, url, cache_dir=tmp_path / "c2").snapshot_id == s1
    rep = check(url, read_data=True)
    assert rep.ok, rep.problems
    snapsync.pull(url, tmp_path / "out", use_cache=False)
    assert describe(tmp_path / "out") == describe(t1)


def test_gc_and_check_cli(tmp_path, capsys):
    from snapsync.cli import main, parse_duration

    assert parse_duration("1d12h") == 1.5 * 86400 and parse_duration("90") == 90
    url = (tmp_path / "store").as_uri()
    for i in range(3):
        snapsync.push(make_project(tmp_path / f"v{i}", seed=i, files=3), url)
    capsys.readouterr()
    assert main(["gc", url, "--keep-last", "1", "--grace", "0", "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["snapshots_dropped"]) == 2 and out["dry_run"]
    assert main(["gc", url, "--keep-last", "1", "--grace", "0"]) == 0
    assert "dropped 2" in capsys.readouterr().out
    assert main(["check", url, "--read-data", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["gc", url, "--keep-last", "0"]) == 2
    assert main(["gc", url, "--keep-last", "1", "--grace", "soon"]) == 2


def test_a_rollback_that_lists_tombstones_after_gc_finished_publishes_nothing(
        tmp_path, monkeypatch):
    """A rollback finds its old manifest and packs still stored (create-only), then a whole gc
    runs before it logs: gc does not see it and deletes them, and its tombstones are done by
    the time the push looks. The push must still notice before it moves the ref."""
    url, t1, s1 = _rollback_trees(tmp_path)
    real = Repository._write_log
    reports = []

    def log_after_gc(self, info):
        if not reports:
            reports.append(gc(url, keep_last=1, grace=0))
        return real(self, info)

    monkeypatch.setattr(Repository, "_write_log", log_after_gc)
    with pytest.raises(GcRaceError, match="nothing was published"):
        snapsync.push(t1, url, cache_dir=tmp_path / "c2")
    monkeypatch.undo()
    assert s1 in reports[0].snapshots_dropped and reports[0].packs_deleted > 0
    rep = check(url, read_data=True)
    assert rep.ok, rep.problems  # the ref still names the tree before the rollback
    assert snapsync.push(t1, url, cache_dir=tmp_path / "c2").snapshot_id == s1
    assert check(url, read_data=True).ok
