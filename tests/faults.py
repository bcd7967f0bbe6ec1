"""A fault-injecting wrapper around any fsspec file system, for tests.

``FaultyFS(fs, [Fault(...), ...])`` forwards every call to ``fs`` and injects, by rule:

* ``error``    a transient connection error (``ConnectionError``),
* ``timeout``  a transient ``TimeoutError``,
* ``throttle`` a transient S3-style ``SlowDown`` (503),
* ``denied``   a persistent ``PermissionError`` (not retried),
* ``broken``   a persistent, non-transient ``OSError`` (not retried),
* ``truncate`` a short read: half of the bytes asked for,
* ``slow``     a delay of ``delay`` seconds before the call,
* ``kill``     SIGKILL of the whole process right after the matching request completed.

Bulk verbs (``cat``, ``cat_ranges``) get faults per item, returned in the result as fsspec does
with ``on_error="return"``. :func:`faulty_store` gives a Store whose fsspec backend goes
through one; engines take that store instead of a URL, and nothing global is patched. (Every
engine's own HTTP stack is tested under real network faults, 503s, resets and cut bodies,
through ``tests/fault_proxy.py`` in the contract suite; its ``Flaky`` wrapper injects at the
Backend level for engines without a network.)

Run as a script to execute the snapsync CLI under faults (crash tests use this)::

    python tests/faults.py --kill-after 7 -- push DIR URL -o endpoint_url=...
    python tests/faults.py --count-file n.txt -- push DIR URL      # count requests
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

READ = "read"
WRITE = "write"
LIST = "list"
DELETE = "delete"

_OPS = {"cat_file": READ, "cat": READ, "cat_ranges": READ, "pipe_file": WRITE,
        "rm_file": DELETE, "find": LIST, "ls": LIST, "exists": LIST, "info": LIST}


@dataclass
class Fault:
    """One rule: ``kind`` fires on requests of ``ops`` whose path contains ``match``.

    It skips the first ``after`` matching requests, then fires on every ``every``-th one, at
    most ``times`` times (``None``: forever).
    """

    kind: str
    ops: tuple[str, ...] = (READ, WRITE, LIST, DELETE)
    match: str = ""
    times: int | None = 1
    every: int = 1
    after: int = 0
    delay: float = 0.0
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def wants(self, op: str, path: str) -> bool:
        """Count a matching request and say whether the fault fires on it."""
        if op not in self.ops or self.match not in path:
            return False
        self.seen += 1
        n = self.seen - self.after
        if n <= 0 or (n - 1) % self.every:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


def _exception(kind: str, path: str) -> BaseException | None:
    if kind == "error":
        return ConnectionError(f"injected: connection reset by peer ({path})")
    if kind == "timeout":
        return TimeoutError(f"injected: read timed out ({path})")
    if kind == "throttle":
        return OSError(f"injected: SlowDown: please reduce your request rate (503) ({path})")
    if kind == "denied":
        return PermissionError(f"injected: AccessDenied ({path})")
    if kind == "broken":
        return OSError(f"injected: the disk is on fire ({path})")
    return None


class FaultyFS:
    """Forwards to ``fs``; injects ``faults``; counts requests (``requests``, ``injected``)."""

    def __init__(self, fs: Any, faults: Iterable[Fault] = (), *,
                 kill_after: int | None = None) -> None:
        self.fs = fs
        self.faults = list(faults)
        self.kill_after = kill_after
        self.requests = 0
        self.by_op: dict[str, int] = {}
        self.injected: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def protocol(self) -> Any:
        return self.fs.protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)

    # ---- bookkeeping ------------------------------------------------------------------------
    def _decide(self, verb: str, path: str) -> list[Fault]:
        op = _OPS[verb]
        with self._lock:
            self.requests += 1
            self.by_op[op] = self.by_op.get(op, 0) + 1
            hits = [f for f in self.faults if f.wants(op, path)]
            for f in hits:
                self.injected[f.kind] = self.injected.get(f.kind, 0) + 1
        return hits

    def _after(self) -> None:
        if self.kill_after is not None and self.requests >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def _run(self, verb: str, path: str, call: Callable[[], Any]) -> Any:
        hits = self._decide(verb, path)
        for f in hits:
            if f.kind == "slow":
                time.sleep(f.delay)
        for f in hits:
            exc = _exception(f.kind, path)
            if exc is not None:
                raise exc
        result = call()
        for f in hits:
            if f.kind == "truncate" and isinstance(result, bytes | bytearray):
                result = result[:len(result) // 2]
            if f.kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        self._after()
        return result

    # ---- single-object verbs ----------------------------------------------------------------
    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kw: Any) -> bytes:
        return self._run("cat_file", path,
                         lambda: self.fs.cat_file(path, start=start, end=end, **kw))

    def pipe_file(self, path: str, value: bytes, *args: Any, **kw: Any) -> Any:
        return self._run("pipe_file", path, lambda: self.fs.pipe_file(path, value, *args, **kw))

    def rm_file(self, path: str, **kw: Any) -> Any:
        return self._run("rm_file", path, lambda: self.fs.rm_file(path, **kw))

    def find(self, path: str, *args: Any, **kw: Any) -> Any:
        return self._run("find", path, lambda: self.fs.find(path, *args, **kw))

    def ls(self, path: str, *args: Any, **kw: Any) -> Any:
        return self._run("ls", path, lambda: self.fs.ls(path, *args, **kw))

    def exists(self, path: str, **kw: Any) -> Any:
        return self._run("exists", path, lambda: self.fs.exists(path, **kw))

    def info(self, path: str, **kw: Any) -> Any:
        return self._run("info", path, lambda: self.fs.info(path, **kw))

    # ---- bulk verbs: faults per item ----------------------------------------------------------
    def _items(self, verb: str, paths: Sequence[str], call: Callable[[int], Any]) -> list[Any]:
        out: list[Any] = []
        for i, p in enumerate(paths):
            hits = self._decide(verb, p)
            for f in hits:
                if f.kind == "slow":
                    time.sleep(f.delay)
            exc = next((e for f in hits if (e := _exception(f.kind, p)) is not None), None)
            if exc is not None:
                out.append(exc)
                continue
            try:
                val = call(i)
            except Exception as e:  # mimic on_error="return"
                val = e
            if isinstance(val, bytes) and any(f.kind == "truncate" for f in hits):
                val = val[:len(val) // 2]
            if any(f.kind == "kill" for f in hits):
                os.kill(os.getpid(), signal.SIGKILL)
            out.append(val)
        self._after()
        return out

    def cat_ranges(self, paths: Sequence[str], starts: Sequence[int], ends: Sequence[int],
                   *args: Any, **kw: Any) -> list[Any]:
        kw.pop("batch_size", None)

        def one(i: int) -> Any:
            return self.fs.cat_file(paths[i], start=starts[i], end=ends[i])

        return self._items("cat_ranges", paths, one)

    def cat(self, paths: Any, *args: Any, on_error: str = "raise", **kw: Any) -> Any:
        if isinstance(paths, str):
            return self.cat_file(paths)
        vals = self._items("cat", list(paths), lambda i: self.fs.cat_file(paths[i]))
        if on_error != "return":
            for v in vals:
                if isinstance(v, BaseException):
                    raise v
        return dict(zip(paths, vals, strict=True))


def faulty_store(url: str, faults: Iterable[Fault] = (),
                 options: dict[str, Any] | None = None, *, kill_after: int | None = None,
                 retry: Any = None) -> tuple[Any, FaultyFS]:
    """A snapsync Store at ``url`` whose fsspec file system is wrapped in a FaultyFS.

    Hand the store to the engines (``snapsync.push(root, store)``); the wrapper counts and
    injects. Other stores opened on the same URL are not affected.
    """
    from snapsync.store import RetryPolicy, Store
    from snapsync.store.fsspec_backend import FsspecBackend

    base = FsspecBackend.open(url, dict(options or {}))
    w = FaultyFS(base.fs, faults, kill_after=kill_after)
    return Store(url, FsspecBackend(w, base.root), retry=retry or RetryPolicy()), w


def main(argv: Sequence[str] | None = None) -> int:
    """Run the snapsync CLI with a FaultyFS around every store (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="faults.py")
    ap.add_argument("--kill-after", type=int, help="SIGKILL after this many requests")
    ap.add_argument("--count-file", help="write the number of requests here at exit")
    ap.add_argument("--slow-writes", type=float, default=0.0, help="delay every write")
    ap.add_argument("--mode", default="cli", choices=["cli"])
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    rest = a.rest[1:] if a.rest and a.rest[0] == "--" else a.rest
    wrappers: list[FaultyFS] = []

    def open_store(url: str, options: dict[str, Any]) -> Any:
        faults = [Fault("slow", ops=(WRITE,), times=None, delay=a.slow_writes)] \
            if a.slow_writes else []
        store, w = faulty_store(url, faults, options, kill_after=a.kill_after)
        wrappers.append(w)
        return store

    from snapsync.cli import main as cli_main

    try:
        return cli_main(rest, open_store=open_store)
    finally:
        if a.count_file:
            with open(a.count_file, "w") as f:
                f.write(str(sum(w.requests for w in wrappers)))


if __name__ == "__main__":
    sys.exit(main())
