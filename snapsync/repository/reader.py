"""Reading content: verified chunks by id from a chain of sources — the one chunk reader.

Sources: the local chunk cache (raw chunks in segment files, verified when they entered it
and guarded by a stat signature since, ``snapsync.local.cache``), chunks the caller hands in
(found in old files of a pull's target), and the store (ranged reads from packs, planned by
:func:`snapsync.core.plan.plan_fetch`). Whatever the source, a chunk is decoded and checked
against its id (and its keyed MAC in tamper-evident mode) by :meth:`ChunkReader.verify`
before it reaches a sink (the cache's segment writer) or a caller.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Protocol

from snapsync.concurrency import Concurrency
from snapsync.core.codec import RAW_TAG, Codec
from snapsync.core.manifest import Location
from snapsync.core.plan import FETCH_BATCH_BYTES, Fetch, plan_fetch
from snapsync.errors import IntegrityError, NotFoundError
from snapsync.progress import NullProgress, Progress
from snapsync.store import Layout, Store

Sink = Callable[[list[tuple[bytes, Any]]], None]  # [(chunk id, verified raw bytes)]; one thread


class Placer(Protocol):
    """Where verified chunks are written by the CPU threads themselves (the local cache's
    segment writer): places are assigned in order on the fetching thread, filled anywhere."""

    def reserve(self, items: Iterable[tuple[bytes, int]]) -> Any: ...

    def write(self, runs: Any, datas: list[bytes | memoryview]) -> None: ...

    def abort(self) -> None: ...
VERIFY_UNIT = 64  # chunks per CPU task: a task costs ~12 µs, a small chunk's check ~2 µs
# ...and at most about this many decoded bytes: a unit's chunks are all decoded before they
# are written, so a batch of well-compressed chunks (8 MiB stored can be 80 MiB of CSV)
# must not be decoded at once. The tasks in flight hold ~2 x cpu of these.
VERIFY_UNIT_BYTES = 1 << 20


class ChunkReader:
    """Verified chunks of one snapshot (``locations``: the manifest's index)."""

    def __init__(self, store: Store, locations: Mapping[bytes, Location], codec: Codec, *,
                 what: str = "", on_warning: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.locations = locations
        self.codec = codec
        self.what = what  # names the snapshot in errors
        self.warn = on_warning if on_warning is not None else (lambda _msg: None)
        # Tamper-evident mode: the codec also checks keyed MACs, so raw chunks read back from
        # the local cache are checked through it too (hashed on every read).
        self.keyed = type(codec) is not Codec
        self.refetched = [0, 0]  # chunks and bytes downloaded again for bad cached chunks
        self._lock = threading.Lock()
        self._warned = False

    # ---- the one verification -------------------------------------------------------------
    def verify(self, cid: bytes, blob: bytes | memoryview) -> bytes:
        """Decode a stored blob of chunk ``cid`` and check it; raises ``IntegrityError``."""
        return self.codec.decode(blob, self.locations[cid].raw_size, cid)  # type: ignore[return-value]

    def verify_raw(self, cid: bytes, data: bytes | memoryview) -> None:
        """Check raw chunk bytes (read back from the local cache, or found in an old file)
        against ``cid`` and, in tamper-evident mode, its MAC; raises ``IntegrityError``."""
        self.codec.decode(RAW_TAG + bytes(data), self.locations[cid].raw_size, cid)

    # ---- sources ----------------------------------------------------------------------------
    def _download(self, batch: list[Fetch], io: int,
                  slot: _Slot | None = None) -> list[bytes | memoryview]:
        """The batch's ranges; with ``slot``, read into its buffer where the store can (a
        local one: no fresh memory per range), else as new ``bytes``."""
        into = None
        if slot is not None:
            need = sum(f.end - f.start for f in batch)
            if len(slot.buf) < need:  # a new one: views of the old may still be alive
                slot.buf = bytearray(need)
            view, into, pos = memoryview(slot.buf), [], 0
            for f in batch:
                into.append(view[pos:pos + f.end - f.start])
                pos += f.end - f.start
        try:
            return self.store.get_ranges(
                [(Layout.pack(f.pack), f.start, f.end) for f in batch], batch_size=io,
                into=into)
        except NotFoundError as exc:
            raise NotFoundError(f"{exc}: a pack that snapshot {self.what} needs is missing "
                                "from the store (run `snapsync check`)") from None

    def refetch(self, bad: Mapping[bytes, Exception], sink: Sink) -> None:
        """Chunks whose cached copy failed verification (``bad``: id -> why), read from the
        store, verified and handed to ``sink``, with one warning per pull.

        A poisoned cache (a bad disk, a killed writer, a hand-edited file) must not fail
        every later pull; what the store serves is verified like any download.
        """
        first, why = next(iter(bad.items()))
        with self._lock:  # one warning per pull, however many chunks (and threads) meet it
            warned, self._warned = self._warned, True
        if not warned:
            self.warn(f"the local chunk cache holds chunks that fail verification "
                      f"({len(bad)} here; chunk {first.hex()}: {why}); they are downloaded "
                      "again")
        for batch in plan_fetch(self.locations, bad, FETCH_BATCH_BYTES, 64):
            for f, data in zip(batch, self._download(batch, self.store.io), strict=True):
                with self._lock:
                    self.refetched[0] += len(f.chunks)
                    self.refetched[1] += len(data)
                for cid in f.chunks:
                    loc = self.locations[cid]
                    try:
                        raw = self.verify(cid, data[loc.offset - f.start:
                                                    loc.offset - f.start + loc.length])
                    except IntegrityError as exc:
                        raise IntegrityError(f"{self.store.display_url}: {exc}") from None
                    sink([(cid, raw)])

    def seed(self, found: Iterable[tuple[bytes, bytes | memoryview]], sink: Sink) -> set[bytes]:
        """Hand raw chunks found elsewhere (old files of the target) to ``sink``.

        ``found`` yields ids computed from the bytes themselves (``read_chunks`` hashes what
        it reads), so they are not hashed again here; in tamper-evident mode their MAC is
        checked (a chunk that fails is left out: it is downloaded instead).
        """
        got: set[bytes] = set()
        for cid, data in found:
            if self.keyed:
                try:
                    self.verify_raw(cid, data)
                except IntegrityError:
                    continue
            sink([(cid, data)])
            got.add(cid)
        return got

    def plan(self, ids: Iterable[bytes], conc: Concurrency) -> list[list[Fetch]]:
        """The batches :meth:`fetch` downloads ``ids`` in (packs and offsets in order)."""
        return plan_fetch(self.locations, ids, FETCH_BATCH_BYTES, max(conc.io * 2, 8))

    def fetch(self, ids: set[bytes], conc: Concurrency, cpu: Executor, sink: Sink,
              progress: Progress | None = None,
              flush: Callable[[], None] | None = None,
              batches: list[list[Fetch]] | None = None,
              place: Placer | None = None) -> tuple[int, int]:
        """Download and verify ``ids``, handing each chunk to ``sink`` (and calling
        ``flush`` after each batch); return (chunks, bytes) downloaded. ``batches``: the
        caller's :meth:`plan` of ``ids`` (to know which chunks each ``flush`` completes).
        With ``place`` instead of ``sink``, each CPU thread writes the chunks it verified
        into places reserved here (so this thread neither waits for nor copies their bytes);
        a failure aborts ``place`` once no write is running (nothing half-written is kept).

        Batch *i+1* downloads while batch *i* is verified on the CPU threads; verified
        chunks reach ``sink`` (on this thread) in order, at most ``2 x cpu`` units of
        :data:`VERIFY_UNIT` chunks after their check: at most two batches of
        ``FETCH_BATCH_BYTES`` stored bytes and a few MiB of decoded ones are held.
        """
        prog = progress or NullProgress()
        if batches is None:
            batches = self.plan(ids, conc)
        if not batches:
            return 0, 0
        n_chunks = n_bytes = 0

        # Work items: (id, stored bytes, raw size), the location looked up once per chunk.
        Item = tuple[bytes, Any, int]
        decode = self.codec.decode

        def verify(items: list[Item]) -> list[tuple[bytes, bytes]]:
            return [(cid, decode(blob, n, cid)) for cid, blob, n in items]  # type: ignore[misc]

        def verify_place(items: list[Item], runs: Any) -> int:
            assert place is not None
            # Written at once: a chunk stored raw is written from the download's buffer.
            place.write(runs, [decode(blob, n, cid, False) for cid, blob, n in items])
            return len(items)

        def submit(items: list[Item]) -> Future[Any]:
            if place is None:
                return cpu.submit(verify, items)
            runs = place.reserve([(cid, n) for cid, _blob, n in items])
            return cpu.submit(verify_place, items, runs)

        futs: list[Any] = []

        # Two buffers a local store reads into, in turn: batch i+1 lands in the one batch i-1
        # used, which nothing references once its chunks were verified and written (here,
        # before the next batch is asked for). Reused, so ~1 GB of ranges cost no fresh
        # pages: fresh ones cost a page fault each (~300k, ~0.8 s CPU at 100k files), and
        # glibc's heap kept freed ones (docs/design.md, "Bounds").
        slots = (_Slot(), _Slot()) if self.store.reads_into else (None, None)
        with ThreadPoolExecutor(1, thread_name_prefix="snapsync-fetch") as fetch_ex:
            pending = fetch_ex.submit(self._download, batches[0], conc.io, slots[0])
            try:
                for i, batch in enumerate(batches):
                    datas = pending.result()
                    if i + 1 < len(batches):
                        pending = fetch_ex.submit(self._download, batches[i + 1], conc.io,
                                                  slots[(i + 1) % 2])
                    work: list[list[Item]] = [[]]
                    raw = 0  # decoded bytes of the unit being filled
                    locations = self.locations  # a stale-manifest retry replaces it
                    for f, data in zip(batch, datas, strict=True):
                        n_bytes += len(data)
                        prog.advance(len(data))
                        view = memoryview(data)  # slices share the range's buffer: no copies
                        for cid in f.chunks:
                            _pack, off, ln, n = locations[cid]
                            off -= f.start
                            work[-1].append((cid, view[off:off + ln], n))
                            raw += n
                            if len(work[-1]) >= VERIFY_UNIT or raw >= VERIFY_UNIT_BYTES:
                                work.append([])
                                raw = 0
                    del datas
                    depth = 2 * max(1, conc.cpu)
                    futs = []
                    # One by one: a failed reserve leaves the started ones in ``futs``, which
                    # the cleanup waits out (by index: no name keeps a unit's views alive).
                    for k in range(min(depth, len(work))):
                        futs.append(submit(work[k]))
                    nxt = len(futs)
                    for k in range(len(work)):
                        try:
                            verified = futs[k].result()
                        except IntegrityError as exc:
                            raise IntegrityError(f"{self.store.display_url}: {exc}") from None
                        futs[k] = None  # type: ignore[call-overload]
                        if nxt < len(work):
                            futs.append(submit(work[nxt]))
                            nxt += 1
                        if place is None:
                            sink(verified)
                            n_chunks += len(verified)
                        else:
                            n_chunks += verified
                        work[k] = []
                    # Nothing of this batch's buffers outlives it (the next one is in flight).
                    del verified, view, data
                    if flush is not None:
                        flush()
            except BaseException:
                pending.cancel()
                if place is not None:
                    # Reserved places may be unwritten: wait out the writes, keep none of it.
                    for f in futs:
                        if f is not None and not f.cancel():
                            with contextlib.suppress(BaseException):
                                f.result()
                    place.abort()
                raise
        return n_chunks, n_bytes


class _Slot:
    """A reusable download buffer (:meth:`ChunkReader.fetch`)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()


def with_stale_retry(fn: Callable[[], Any], stale: Callable[[], bool],
                     refresh: Callable[[], None]) -> Any:
    """Run ``fn``; when a pack is missing and ``stale()`` says the manifest came from the
    local cache, ``refresh()`` it (gc may have repacked, docs/format.md §8) and run once more."""
    try:
        return fn()
    except NotFoundError:
        if not stale():
            raise
    refresh()
    return fn()
