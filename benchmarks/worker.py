"""A measuring worker process for the Python tools (snapsync, naive fsspec, prefect-aws).

One worker per tool, so its peak RSS shows that tool's own imports and buffers. Commands come
as JSON lines on stdin; each answer is one JSON line with wall and CPU seconds of the operation
alone (interpreter start-up and imports excluded, as for a long-lived worker) and the peak RSS
during it (the kernel's high-water mark, reset before each operation via ``clear_refs``).

    python -m benchmarks.worker       # then: {"op": "statwalk", "args": {"root": "..."}}
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _release() -> None:
    """Hand memory freed by earlier operations back to the OS, so each peak is its own."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_now_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clear_fsspec() -> None:
    # A fresh client per operation, as a fresh CLI or flow run would have; also drops
    # fsspec's listing cache so no operation sees another's listing.
    import fsspec

    for name in ("s3", "file"):
        try:
            fsspec.get_filesystem_class(name).clear_instance_cache()
        except (ImportError, ValueError, AttributeError):
            pass


# ---------------------------------------------------------------------------- operations


def statwalk(root: str) -> dict[str, Any]:
    """The floor for a no-op push: walk the tree and stat every entry, nothing else."""
    n = 0
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                e.stat(follow_symlinks=False)
                n += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return {"entries": n}


def snapsync_push(root: str, url: str, storage_options: dict[str, Any], cache_dir: str,
                  jobs: int | None = None, level: int = 3,
                  chunker: dict[str, Any] | None = None, pack_size: int | None = None,
                  dry_run: bool = False) -> dict[str, Any]:
    import snapsync
    from snapsync.core.chunking import ChunkerParams
    from snapsync.repository import DEFAULT_PACK_SIZE, StoreConfig

    config = None
    if chunker or pack_size:
        config = StoreConfig(chunker=ChunkerParams(**chunker) if chunker else ChunkerParams(),
                             pack_size=pack_size or DEFAULT_PACK_SIZE)
    # use_default_ignore=False: ship every file, like the peers (and Prefect without an
    # ignore file), so all tools move the same bytes.
    r = snapsync.push(root, url, storage_options=storage_options, cache_dir=cache_dir,
                      jobs=jobs, level=level, config=config, use_default_ignore=False,
                      dry_run=dry_run)
    keys = ("files", "bytes_scanned", "files_read", "bytes_read", "chunks", "chunks_new",
            "bytes_new", "bytes_uploaded", "packs_uploaded", "requests", "unchanged")
    return {k: getattr(r, k) for k in keys}


def snapsync_pull(url: str, dest: str, storage_options: dict[str, Any], cache_dir: str,
                  jobs: int | None = None, use_cache: bool = True) -> dict[str, Any]:
    import snapsync

    r = snapsync.pull(url, dest, storage_options=storage_options, cache_dir=cache_dir,
                      jobs=jobs, use_cache=use_cache)
    keys = ("files", "bytes", "unchanged", "files_written", "chunks_needed", "chunks_cached",
            "chunks_downloaded", "bytes_downloaded", "requests")
    return {k: getattr(r, k) for k in keys}


def _fs(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    opts = dict(storage_options)
    if url.startswith("file://"):
        opts.setdefault("auto_mkdir", True)
    return url_to_fs(url, **opts)


def naive_push(root: str, url: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """What Prefect's steps do, through fsspec: every file, one ``put_file`` after another."""
    fs, base = _fs(url, storage_options)
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            local = os.path.join(dirpath, f)
            rel = os.path.relpath(local, root).replace(os.sep, "/")
            fs.put_file(local, f"{base}/{rel}")
            n += 1
    return {"files": n}


def naive_pull(url: str, dest: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    fs, base = _fs(url, storage_options)
    n = 0
    for remote in fs.find(base):
        rel = remote[len(base.rstrip("/")) + 1:]
        local = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fs.get_file(remote, local)
        n += 1
    return {"files": n}


def _prefect_args(endpoint: str, key: str, secret: str) -> dict[str, Any]:
    return {"credentials": {"aws_access_key_id": key, "aws_secret_access_key": secret},
            "client_parameters": {"endpoint_url": endpoint}}


def prefect_push(root: str, bucket: str, folder: str, endpoint: str, key: str,
                 secret: str) -> dict[str, Any]:
    from prefect_aws.deployments.steps import push_to_s3

    old = os.getcwd()
    os.chdir(root)  # push_to_s3 pushes the current directory
    try:
        push_to_s3(bucket, folder, **_prefect_args(endpoint, key, secret))
    finally:
        os.chdir(old)
    return {}


def prefect_pull(bucket: str, folder: str, dest: str, endpoint: str, key: str,
                 secret: str) -> dict[str, Any]:
    from prefect_aws.deployments.steps import pull_from_s3

    old = os.getcwd()
    os.makedirs(dest, exist_ok=True)
    os.chdir(dest)
    try:
        pull_from_s3(bucket, folder, **_prefect_args(endpoint, key, secret))
    finally:
        os.chdir(old)
    return {}


def warm(tool: str) -> dict[str, Any]:
    """Import a tool's modules before timing anything (a worker has them loaded)."""
    if tool == "snapsync":
        import s3fs

        import snapsync  # noqa: F401
    elif tool == "naive":
        import s3fs  # noqa: F401
    elif tool == "prefect-aws":
        import prefect_aws.deployments.steps  # noqa: F401
    return {}


def profiled(target: str, out: str, **kw: Any) -> dict[str, Any]:
    """Run another operation under pyinstrument; write the text profile to ``out``."""
    from pyinstrument import Profiler

    prof = Profiler(interval=0.001)
    prof.start()
    try:
        result = OPS[target](**kw)
    finally:
        prof.stop()
        Path(out).write_text(prof.output_text(unicode=False, color=False, show_all=False))
    return result


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "statwalk": statwalk, "snapsync_push": snapsync_push, "snapsync_pull": snapsync_pull,
    "naive_push": naive_push, "naive_pull": naive_pull, "prefect_push": prefect_push,
    "prefect_pull": prefect_pull, "warm": warm, "profiled": profiled,
}


def _run(op: str, args: dict[str, Any]) -> dict[str, Any]:
    if op != "warm":
        _clear_fsspec()
    _release()
    rss0 = _rss_now_mb()
    _reset_peak()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = OPS[op](**args)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"ok": True, "wall": wall, "cpu": user + sys_, "user": user, "sys": sys_,
            "rss_mb": _peak_mb(), "result": result, "rss_start_mb": rss0}


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            answer = _run(cmd["op"], cmd.get("args") or {})
        except BaseException as exc:  # report, keep serving
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "trace": traceback.format_exc()[-3000:]}
        out.write(json.dumps(answer, default=str) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
