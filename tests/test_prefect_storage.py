"""SnapsyncStorage as Prefect's RunnerStorage, against SeaweedFS, with Prefect offline.

Prefect is imported inside the fixture, after PREFECT_API_URL points at a closed port
(shared/reference/prefect-steps.md section 6): nothing here talks to a Prefect server. The
real server, worker and deployment are in test_prefect_e2e.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.s3]


FLOW = '''\
from pathlib import Path

from prefect import flow

VERSION = (Path(__file__).parent / "version.txt").read_text().strip()  # read at load time


@flow
def hello() -> str:
    return "hello " + VERSION
'''


@pytest.fixture
def s3(s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The store URL; credentials come from the environment (a worker's usual setup)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    return {"url": f"{s3_bucket}/proj",
            "options": {"endpoint_url": s3_server.endpoint,
                        "config_kwargs": {"s3": {"addressing_style": "path"}}}}


def project(root: Path, version: str = "v1") -> Path:
    (root / "flows").mkdir(parents=True, exist_ok=True)
    (root / "flows" / "hello.py").write_text(FLOW)
    (root / "flows" / "version.txt").write_text(version + "\n")
    (root / "a.txt").write_text(f"a {version}\n")
    (root / "b.txt").write_text(f"b {version}\n")
    (root / "unchanged.txt").write_text("same in every version\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return root


def test_is_a_runner_storage_and_from_source_loads_the_flow(
        prefect_offline: dict[str, Any], s3: dict[str, Any], tmp_path: Path) -> None:
    import snapsync

    storage = prefect_offline["SnapsyncStorage"](s3["url"], storage_options=s3["options"])
    assert isinstance(storage, prefect_offline["RunnerStorage"])
    snapsync.push(project(tmp_path / "src"), s3["url"], storage_options=s3["options"])
    flow = prefect_offline["Flow"].from_source(storage, entrypoint="flows/hello.py:hello")
    assert flow.name == "hello"
    assert flow.fn() == "hello v1"  # the code and its data file came from the store
    assert storage == prefect_offline["SnapsyncStorage"](s3["url"],
                                                         storage_options=s3["options"])
    assert storage != prefect_offline["SnapsyncStorage"](s3["url"], ref="other")


def test_periodic_pull_is_incremental_and_switches_atomically(
        prefect_offline: dict[str, Any], s3: dict[str, Any], tmp_path: Path) -> None:
    import snapsync

    src = project(tmp_path / "src")
    snapsync.push(src, s3["url"], storage_options=s3["options"])
    storage = prefect_offline["SnapsyncStorage"](s3["url"], storage_options=s3["options"],
                                                 pull_interval=1)
    storage.set_base_path(tmp_path / "runner")
    asyncio.run(storage.pull_code())
    dest = storage.destination
    assert dest.is_symlink() and (dest / "a.txt").read_text() == "a v1\n"
    old_gen = Path(os.path.realpath(dest))  # where a flow run that started now would be
    ino = os.stat(dest / "unchanged.txt").st_ino

    assert storage.pull() is None  # ref unchanged: nothing to do

    (src / "a.txt").write_text("a v2\n")
    (src / "b.txt").unlink()
    (src / "run.sh").chmod(0o644)
    snapsync.push(src, s3["url"], storage_options=s3["options"])
    result = storage.pull()
    assert result is not None
    assert result.files_written == 1 and result.bytes_downloaded < 100
    assert (dest / "a.txt").read_text() == "a v2\n" and not (dest / "b.txt").exists()
    assert not os.access(dest / "run.sh", os.X_OK)
    assert os.stat(dest / "unchanged.txt").st_ino == ino  # linked, not rewritten
    # The old generation is untouched: a flow still running there sees one whole tree.
    assert (old_gen / "a.txt").read_text() == "a v1\n" and (old_gen / "b.txt").exists()
    assert os.access(old_gen / "run.sh", os.X_OK)

    # Old generations are pruned to two behind the current one.
    for v in ("v3", "v4", "v5"):
        (src / "a.txt").write_text(f"a {v}\n")
        snapsync.push(src, s3["url"], storage_options=s3["options"])
        storage.pull()
    gens = [p for p in dest.parent.joinpath(f".{dest.name}.snapsync").iterdir() if p.is_dir()]
    assert len(gens) == 3 and not old_gen.exists()
    assert (dest / "a.txt").read_text() == "a v5\n"


def test_concurrent_pulls_serialize_and_readers_never_see_a_mix(
        prefect_offline: dict[str, Any], s3: dict[str, Any], tmp_path: Path) -> None:
    import copy

    import snapsync

    src = project(tmp_path / "src")
    snapsync.push(src, s3["url"], storage_options=s3["options"])
    base = prefect_offline["SnapsyncStorage"](s3["url"], storage_options=s3["options"])
    base.set_base_path(tmp_path / "runner")
    base.pull()
    dest = base.destination
    stop = threading.Event()
    mixed: list[tuple[str, str]] = []
    reads = [0]

    def reader() -> None:  # what a flow run starting at a random moment would see
        while not stop.is_set():
            root = os.path.realpath(dest)
            try:
                a = Path(root, "a.txt").read_text().split()[1]
                b = Path(root, "b.txt").read_text().split()[1]
            except FileNotFoundError:
                mixed.append(("missing", root))
                continue
            reads[0] += 1
            if a != b:
                mixed.append((a, b))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in ("v2", "v3", "v4"):
            project(src, v)
            snapsync.push(src, s3["url"], storage_options=s3["options"])
            errors: list[BaseException] = []

            def pull(storage: Any, errors: list[BaseException] = errors) -> None:
                try:
                    storage.pull()
                except BaseException as exc:  # collected, re-raised below
                    errors.append(exc)

            workers = [threading.Thread(target=pull, args=(copy.deepcopy(base),))
                       for _ in range(3)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(120)
            assert not errors, errors
            assert (dest / "a.txt").read_text() == f"a {v}\n"
    finally:
        stop.set()
        t.join(30)
    assert reads[0] > 0 and not mixed, mixed[:3]


def test_to_pull_step_pins_the_deployed_snapshot(
        prefect_offline: dict[str, Any], s3: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import snapsync

    src = project(tmp_path / "src")
    storage = prefect_offline["SnapsyncStorage"](s3["url"], storage_options=s3["options"])
    pushed = storage.push(src)
    assert storage.pinned == pushed.snapshot_id
    project(src, "v2")
    snapsync.push(src, s3["url"], storage_options=s3["options"])  # someone pushes later
    step = storage.to_pull_step()
    assert step == {"snapsync.steps.pull": {
        "requires": "snapsync", "url": s3["url"], "snapshot": pushed.snapshot_id,
        "storage_options": s3["options"]}}
    # Without a push, the ref's head at deploy time is pinned.
    fresh = prefect_offline["SnapsyncStorage"](s3["url"], storage_options=s3["options"])
    head = fresh.to_pull_step()["snapsync.steps.pull"]["snapshot"]
    assert head != pushed.snapshot_id and len(head) == 32

    # The step runs in Prefect's runner and brings back the deployed code.
    work = tmp_path / "worker"
    work.mkdir()
    monkeypatch.chdir(work)
    out = asyncio.run(prefect_offline["run_steps"]([step], print_function=lambda *a, **k: None))
    assert out["snapshot"] == pushed.snapshot_id
    assert Path(out["directory"], "flows", "version.txt").read_text() == "v1\n"


def test_to_pull_step_refuses_plain_secrets(prefect_offline: dict[str, Any]) -> None:
    from snapsync.errors import UsageError

    storage = prefect_offline["SnapsyncStorage"](
        "s3://bkt/proj", snapshot="0" * 32,
        storage_options={"key": "AKIA", "secret": "plain", "client_kwargs": {"token": "t"}})
    with pytest.raises(UsageError, match=r"key, secret, client_kwargs\.token .*Secret\.load"):
        storage.to_pull_step()


def test_step_errors_and_summaries_reach_prefect_loggers(
        prefect_offline: dict[str, Any], s3: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Through Prefect's runner: what snapsync did, and why it failed, on Prefect's loggers."""
    import snapsync

    caplog.set_level(logging.INFO, logger="prefect")
    snapsync.push(project(tmp_path / "src"), s3["url"], storage_options=s3["options"])
    monkeypatch.chdir(tmp_path)
    ok = {"snapsync.steps.pull": {"url": s3["url"], "storage_options": s3["options"]}}
    asyncio.run(prefect_offline["run_steps"]([ok], print_function=lambda *a, **k: None))
    ours = [r for r in caplog.records if r.name == "prefect.snapsync"]
    assert any("pulled snapshot" in r.getMessage() and "requests" in r.getMessage()
               for r in ours)
    bad = {"snapsync.steps.pull": {"url": s3["url"], "storage_options": s3["options"],
                                   "snapshot": "deadbeefdeadbeef"}}
    with pytest.raises(prefect_offline["StepExecutionError"]):
        asyncio.run(prefect_offline["run_steps"]([bad], print_function=lambda *a, **k: None))
    errors = [r for r in caplog.records if r.name == "prefect.snapsync"
              and r.levelno == logging.ERROR]
    assert errors and "no snapshot deadbeefdeadbeef" in errors[-1].getMessage()
