"""Every bound on concurrency lives here: CPU threads, requests in flight, windows.

CPU work (hashing, zstd, file writes) runs in threads: zstd and xxh3 release the GIL, and the
reading stays on one thread because threads lose on many small files (docs/design.md, "Bounds").
Network requests go through fsspec's bulk verbs, bounded by ``io`` (its ``batch_size``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_IO = 16  # requests in flight (``--jobs``): enough to hide a bucket's latency
META_BATCH = 64  # small objects (refs, logs, manifests) read in one concurrent batch
PACKS_IN_FLIGHT = 4  # uploads of pack-size objects at once: keeps the link busy, bounds memory
# To an object store that takes objects in parts (S3, Azure through obstore) packs are
# streamed instead (``Store.open_upload``): built into a temporary file, then uploaded in
# parts of STREAM_PART bytes (S3's smallest part), STREAM_PARTS_IN_FLIGHT per pack and
# STREAMED_PACKS_IN_FLIGHT packs at once: 4 requests in flight, as with 4 packs sent whole,
# but at most 2 x (2 + 1) x 5 MiB mapped instead of (4 + 1) x 16 MiB of pack buffers
# (docs/design.md, "Bounds").
STREAM_PART = 5 << 20
STREAM_PARTS_IN_FLIGHT = 2
STREAMED_PACKS_IN_FLIGHT = 2
# Sealed packs (in their temporary files: disk, not memory) the reading thread may have
# waiting before it waits itself: with only the two uploading, 100k files / 1.6 GB over
# SeaweedFS took a few seconds longer (see docs/design.md).
STREAMED_PACKS_QUEUED = 6
# On a local store a pack "upload" is a file write with no latency to hide: the reading
# thread writes it itself (0 in flight), so one pack buffer exists instead of five. Measured
# at 20 x 40 MB files: 92 MB peak RSS vs 110 MB with one in flight, and no slower.
LOCAL_PACKS_IN_FLIGHT = 0


def compress_window(cpu: int) -> int:
    """Batches of new chunks (1 MiB each, in their own arena) queued for compression.

    One per thread and one waiting keeps every thread busy; each more is another arena and
    output buffer resident. 5k files / 100 MB first push on 2 cores: 53.8-55.2 MB peak RSS
    at ``cpu + 1`` against 56.5-59.9 MB at ``2 x cpu``, wall 0.47-0.51 s against 0.46-0.50 s
    (3 runs each, interleaved).
    """
    return cpu + 1


def packs_in_flight(io: int, local: bool) -> int:
    """How many packs may upload at once (0: written in the caller's thread, see above)."""
    return LOCAL_PACKS_IN_FLIGHT if local else max(1, min(io, PACKS_IN_FLIGHT))


@dataclass(frozen=True)
class Concurrency:
    """``cpu``: worker threads for CPU-bound work; ``io``: requests in flight at once."""

    cpu: int
    io: int

    @classmethod
    def from_jobs(cls, jobs: int | None) -> Concurrency:
        """``--jobs N`` sets the requests in flight; CPU threads follow the core count."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        if jobs is not None and jobs < 1:
            from snapsync.errors import UsageError

            raise UsageError(f"--jobs must be at least 1, got {jobs}")
        io = jobs if jobs is not None else DEFAULT_IO
        return cls(cpu=max(1, min(cores, io)), io=io)


class Window(Generic[T]):
    """An executor with at most ``depth`` tasks in flight; results come back in order.

    ``submit`` blocks (by collecting the oldest result) when the window is full, which bounds
    memory no matter how fast the producer is. The first failure cancels the rest.
    """

    def __init__(self, executor: ThreadPoolExecutor, depth: int,
                 sink: Callable[[T], None]) -> None:
        self._ex = executor
        self._depth = max(1, depth)
        self._sink = sink
        self._q: deque[Future[T]] = deque()

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        while len(self._q) >= self._depth:
            self._collect_one()
        self._q.append(self._ex.submit(fn, *args))

    def _collect_one(self) -> None:
        fut = self._q.popleft()
        try:
            self._sink(fut.result())
        except BaseException:
            self.cancel()
            raise

    def drain(self) -> None:
        while self._q:
            self._collect_one()

    def cancel(self) -> None:
        for f in self._q:
            f.cancel()
        for f in self._q:
            if not f.cancelled():
                try:
                    f.result()
                except BaseException:
                    pass
        self._q.clear()

    def __iter__(self) -> Iterator[Future[T]]:
        return iter(self._q)


# A pull writes files while later chunks download (issue 11), on at most this many threads
# until the download ends (then on ``cpu``): decoding and hashing is the critical path, and on
# two cores a second writer only fights it for the GIL and the CPU. Cold pull of 100k files /
# 1.6 GB with a cold cache, file:// into /dev/shm, 2 runs each: 9.3 / 10.4 s with one writer,
# 10.9 / 11.4 s with two, 11.7 / 10.4 s writing only after the download.
WRITES_WHILE_DOWNLOADING = 1


_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
# A pull's big buffers (ranged reads of up to 4 MiB, decoded chunks) are made and dropped
# by the thousand. glibc raises its mmap threshold each time such a block is freed, so
# later ones land in the heap, whose holes are never given back: a cold pull of 100k files /
# 1.6 GB (file://, fresh cache) peaked at 96-105 MB; with blocks over 256 KiB always mapped
# (and unmapped when freed) at 82-84 MB, same CPU time (3 runs each, interleaved). A push
# reuses its buffers (core/arena.py): there it gained nothing and cost 0.6 s of system time.
PULL_MMAP_THRESHOLD = 256 << 10
_DEFAULT_MMAP_THRESHOLD = 128 << 10  # glibc's initial value


F = TypeVar("F", bound=Callable[..., Any])


def on_shared_arena(fn: F | None = None, *, mmap_threshold: int | None = None) -> Any:
    """Run ``fn`` inside :func:`shared_malloc_arena` (push and pull: whole operations);
    ``@on_shared_arena(mmap_threshold=N)`` also fixes glibc's mmap threshold meanwhile."""
    def wrap(f: F) -> F:
        @functools.wraps(f)
        def run(*args: Any, **kw: Any) -> Any:
            with shared_malloc_arena(mmap_threshold):
                return f(*args, **kw)
        return run  # type: ignore[return-value]
    return wrap(fn) if fn is not None else wrap


@contextmanager
def shared_malloc_arena(mmap_threshold: int | None = None) -> Iterator[None]:
    """Threads started inside share glibc's main heap arena; the default comes back after.

    Chunk buffers are allocated by one thread (reading, compressing, verifying) and freed by
    another; with an arena per thread each arena keeps its own freed holes. A first push of
    100k files / 1.6 GB peaked at ~138 MB instead of ~150-160 MB with one arena, at the same
    CPU time; a cold pull of it at 174 MB instead of 208 MB.
    Afterwards the limit goes back to glibc's default (8 per core), so a host process (a
    Prefect worker) keeps its allocator as it was for threads it starts later (the mmap
    threshold, when set, goes back to glibc's initial 128 KiB). No-op off glibc.
    """
    mallopt: Any = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            mallopt = None
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)
        if mmap_threshold is not None:
            mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(_M_ARENA_MAX, 8 * (os.cpu_count() or 1))
            if mmap_threshold is not None:
                mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
