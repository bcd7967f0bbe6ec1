"""Crashes: SIGKILL a push (or a pull) right after its k-th storage request, for k spread over
all of its requests, against the real S3 server (SeaweedFS).

After every kill: each ref names a complete snapshot, ``check`` passes, and the next push
succeeds sending only what did not land (the upload journal). An interrupted pull leaves the
target as it was (but for a staging folder the next pull removes) and the next pull does not
download again what the killed one had already verified and cached.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_faults import report
from treeutil import describe, make_project

import snapsync
from snapsync.core.pack import parse_pack
from snapsync.engine.check import check
from snapsync.repository import Repository, StoreConfig
from snapsync.store import Layout, open_store

FAULTS = Path(__file__).with_name("faults.py")
SMALL = StoreConfig(pack_size=1 << 16)  # many packs: many points to crash at


def _opts_args(opts: dict[str, Any]) -> list[str]:
    out = []
    for k, v in opts.items():
        out += ["-o", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return out


def _cli(args: list[str], kill_after: int | None = None, count_file: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(FAULTS)]
    if kill_after is not None:
        cmd += ["--kill-after", str(kill_after)]
    if count_file is not None:
        cmd += ["--count-file", str(count_file)]
    return subprocess.run([*cmd, "--", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _packs(url: str, opts: dict[str, Any]) -> set[str]:
    store = open_store(url, opts)
    return {o.key for o in store.list(Layout.PACKS) if o.key.endswith(".pack")}


def _chunks_in(url: str, opts: dict[str, Any], keys: set[str]) -> int:
    store = open_store(url, opts)
    return sum(len(parse_pack(store.get(k), k)) for k in keys)


def _v2(root: Path) -> Path:
    """v1 plus ~1.1 MB of new, incompressible data in several files (about 16 packs)."""
    rng = random.Random(7)
    for i in range(16):
        (root / "data" / f"new{i}.bin").parent.mkdir(exist_ok=True)
        (root / "data" / f"new{i}.bin").write_bytes(rng.randbytes(70_000))
    (root / "README.md").write_text("v2\n")
    return root


def test_push_killed_at_every_stage(s3_server, s3_bucket, tmp_path):
    opts = s3_server.storage_options
    v1 = make_project(tmp_path / "v1", files=20)
    v2 = _v2(make_project(tmp_path / "v2", files=20))
    base = f"{s3_bucket}/count"
    s1 = snapsync.push(v1, base, storage_options=opts, config=SMALL).snapshot_id

    # One clean run counts the push's requests and what it sends.
    counted = tmp_path / "n"
    done = _cli(["push", str(v2), base, "--ref", "latest", "--json", *_opts_args(opts)],
                count_file=counted)
    assert done.returncode == 0, done.stderr
    full = json.loads(done.stdout)
    total = int(counted.read_text())
    assert full["packs_uploaded"] >= 10 and total >= full["packs_uploaded"] + 5
    s2 = full["snapshot_id"]

    ks = sorted({1, 2, 3, total - 3, total - 2, total - 1,
                 *range(4, total - 3, max(1, (total - 7) // 8))})
    kills = 0
    for k in ks:
        url = f"{s3_bucket}/k{k}"
        assert snapsync.push(v1, url, storage_options=opts, config=SMALL).snapshot_id == s1
        before = _packs(url, opts)
        r = _cli(["push", str(v2), url, "-q", *_opts_args(opts)], kill_after=k)
        assert r.returncode == -signal.SIGKILL, (k, r.returncode, r.stderr)
        kills += 1
        landed = _packs(url, opts) - before

        # Every ref names a complete snapshot; check passes.
        rep = check(url, storage_options=opts)
        assert rep.ok, (k, rep.problems)
        head = Repository(open_store(url, opts), None).read_ref("latest")
        assert head is not None and head.snapshot in (s1, s2), k

        # The next push succeeds and sends only the chunks that did not land.
        again = snapsync.push(v2, url, storage_options=opts)
        assert again.snapshot_id == s2
        if head.snapshot == s2:  # killed after the ref was written: nothing left to do
            assert again.unchanged and again.packs_uploaded == 0
        else:
            assert again.chunks_new + _chunks_in(url, opts, landed) == full["chunks_new"], k
        assert check(url, storage_options=opts).ok

    # The last store pulls back to exactly v2.
    snapsync.pull(f"{s3_bucket}/k{ks[-1]}", tmp_path / "out", storage_options=opts)
    assert describe(tmp_path / "out") == describe(v2)
    report("SIGKILL of a push after its k-th request", kills)


def _without_staging(d: Path) -> dict[str, tuple]:
    return {k: v for k, v in describe(d).items() if not k.startswith(".snapsync-staging-")}


def test_pull_killed_during_download(s3_server, s3_bucket, tmp_path):
    opts = s3_server.storage_options
    url = f"{s3_bucket}/code"
    v1 = make_project(tmp_path / "v1", files=20)
    v2 = _v2(make_project(tmp_path / "v2", files=20))
    # More data in v2: more download batches, more points to die at.
    rng = random.Random(9)
    for i in range(24):
        (v2 / "data" / f"more{i}.bin").write_bytes(rng.randbytes(130_000))
    snapsync.push(v1, url, storage_options=opts, config=SMALL, ref="v1")
    snapsync.push(v2, url, storage_options=opts, ref="v2")

    def prepare(name: str) -> tuple[Path, Path, dict[str, str]]:
        """A target holding v1, with a chunk cache holding v1's chunks."""
        cache, dst = tmp_path / f"cache-{name}", tmp_path / f"dst-{name}"
        snapsync.pull(url, dst, ref="v1", storage_options=opts, cache_dir=cache)
        return dst, cache, {"SNAPSYNC_CACHE_DIR": str(cache)}

    counted = tmp_path / "n"
    dst, _cache, env = prepare("count")
    r = _cli(["pull", url, str(dst), "--ref", "v2", "-j", "1", "-q", *_opts_args(opts)],
             count_file=counted, env=env)
    assert r.returncode == 0, r.stderr
    total = int(counted.read_text())
    assert total >= 10

    kills = 0
    for k in sorted({3, 4, total // 2, total - 1}):
        dst, cache, env = prepare(str(k))
        before = describe(dst)
        r = _cli(["pull", url, str(dst), "--ref", "v2", "-j", "1", "-q", "--delete",
                  *_opts_args(opts)], kill_after=k, env=env)
        assert r.returncode == -signal.SIGKILL, (k, r.stderr)
        kills += 1
        assert _without_staging(dst) == before, k  # the target is exactly as it was

        p = snapsync.pull(url, dst, ref="v2", storage_options=opts, cache_dir=cache,
                          delete=True)
        assert describe(dst) == describe(v2)  # staging folder removed too
        # What the killed pull had verified and cached is not downloaded again.
        assert p.chunks_downloaded == p.chunks_needed - p.chunks_cached
        if k >= total - 1:
            assert p.chunks_cached > 0
    report("SIGKILL of a pull after its k-th request", kills)


_KILL_IN_COMMIT = """
import os, signal, sys
real = os.replace
n = 0
def replace(a, b):  # SIGKILL after the k-th rename into the target (the commit phase)
    global n
    real(a, b)
    if os.fsdecode(b).startswith(sys.argv[2]) and ".snapsync-staging-" not in os.fsdecode(b):
        n += 1
        if n == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from snapsync.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_pull_killed_during_commit_completes_next_time(tmp_path):
    url = (tmp_path / "store").as_uri()
    v1 = make_project(tmp_path / "v1", files=20)
    v2 = _v2(make_project(tmp_path / "v2", files=20))
    for i in range(20):
        (v2 / "pkg" / "sub1" / f"mod{i}.py").write_text(f"v2 = {i}\n")
    snapsync.push(v1, url, ref="v1")
    snapsync.push(v2, url, ref="v2")
    for k in (1, 5, 15):
        dst = tmp_path / f"dst{k}"
        snapsync.pull(url, dst, ref="v1")
        r = subprocess.run([sys.executable, "-c", _KILL_IN_COMMIT, str(k), str(dst), "pull",
                            url, str(dst), "--ref", "v2", "--delete", "-q"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == -signal.SIGKILL, r.stderr
        p = snapsync.pull(url, dst, ref="v2", delete=True)
        assert describe(dst) == describe(v2)
        assert p.chunks_downloaded == 0  # everything came from the verified local cache
    report("SIGKILL of a pull in its commit phase", 3)
