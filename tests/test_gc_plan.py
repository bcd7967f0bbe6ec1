"""gc is plan, then execute: ``gc --dry-run`` shows the plan, and gc carries out that plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_crash import SMALL
from test_repack import _tree

import snapsync
from snapsync.cli import main
from snapsync.engine.check import check
from snapsync.engine.gc import gc, plan_gc
from snapsync.repository import Repository
from snapsync.store import Layout, open_store


def _keys(store_dir: Path) -> set[str]:
    return {p.relative_to(store_dir).as_posix() for p in store_dir.rglob("*") if p.is_file()}


def _history(tmp_path: Path) -> tuple[str, Path, list[str]]:
    store_dir = tmp_path / "store"
    url = store_dir.as_uri()
    sids = [snapsync.push(_tree(tmp_path / f"v{i}", i), url, config=SMALL).snapshot_id
            for i in range(1, 5)]
    return url, store_dir, sids


def _planned_keys(plan: dict) -> set[str]:
    return ({*plan["log_entries"]}
            | {Layout.manifest(s) for s in plan["manifests"]}
            | {Layout.pack(bytes.fromhex(p)) for p in plan["packs"]})


@pytest.mark.parametrize("repack", [False, True])
def test_dry_run_plan_is_what_gc_executes(tmp_path, capsys, repack):
    url, store_dir, sids = _history(tmp_path)
    args = ["gc", url, "--keep-last", "1", "--grace", "0", "--json"]
    if not repack:
        args.append("--no-repack")
    before = _keys(store_dir)

    assert main([*args, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert _keys(store_dir) == before  # the dry run changed nothing
    assert dry["plan"]["snapshots_dropped"] == sorted(sids[:3])
    assert dry["plan"]["packs"] and dry["plan"]["log_entries"]

    assert main(args) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["plan"] == dry["plan"]  # the same plan, now carried out
    gone = before - _keys(store_dir)
    assert gone == _planned_keys(dry["plan"])
    for field in ("log_entries_deleted", "manifests_deleted", "packs_deleted", "bytes_freed",
                  "packs_repacked", "manifests_rewritten"):
        assert done[field] == dry[field], field
    assert check(url, read_data=True).ok


def test_plan_gc_writes_nothing_and_names_why(tmp_path):
    url, store_dir, sids = _history(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in store_dir.rglob("*") if p.is_file()}
    repo = Repository(open_store(url), None)
    repo.open()
    plan = plan_gc(repo, keep_last=2, grace=0)
    assert {p: p.stat().st_mtime_ns for p in store_dir.rglob("*") if p.is_file()} == before
    assert plan.snapshots_kept == sorted(sids[2:])
    assert set(plan.manifests) == set(sids[:2])
    # Executing a plan through the library gives the report the CLI renders.
    r = gc(url, keep_last=2, grace=0)
    assert r.plan is not None and r.plan.as_dict() == plan.as_dict()
