"""Reading content: verified chunks by id from a chain of sources — the one chunk reader.

Sources, first hit wins: decoded chunks in memory, the local chunk cache, blobs the caller
hands in (chunks found in old files of a pull's target, a pack ``check`` read whole), and the
store (ranged reads from packs, planned by :func:`snapsync.core.plan.plan_fetch`). Whatever the
source, a chunk is decoded and checked against its id (and its keyed MAC in tamper-evident
mode) by :meth:`ChunkReader.verify` before anyone sees it: the cache is not trusted blindly,
and a cached blob that fails is dropped and read from the store again (with a warning).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from snapsync.concurrency import Concurrency
from snapsync.core.codec import RAW_TAG, Codec
from snapsync.core.manifest import Location
from snapsync.core.plan import FETCH_BATCH_BYTES, Fetch, plan_fetch
from snapsync.errors import CacheError, FormatError, IntegrityError, NotFoundError
from snapsync.local.cache import ChunkCache
from snapsync.progress import NullProgress, Progress
from snapsync.store import Layout, Store

CACHE_QUERY = 256  # ids per SQLite query when loading cached chunks
SEED_FLUSH = 32 << 20  # bytes of seeded chunks held before they are written to the cache


class ChunkReader:
    """Verified chunks of one snapshot (``locations``: the manifest's index).

    ``cache`` holds stored blobs (what packs hold); with ``keep`` the decoded chunks of
    :meth:`fetch` and :meth:`preload` stay in memory for :meth:`get`, else ``get`` decodes
    them from the cache again on each call.
    """

    def __init__(self, store: Store, locations: Mapping[bytes, Location], codec: Codec,
                 cache: ChunkCache | None = None, *, keep: bool = True,
                 what: str = "", on_warning: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.locations = locations
        self.codec = codec
        self.cache = cache
        self.keep = keep
        self.what = what  # names the snapshot in errors
        self.warn = on_warning if on_warning is not None else (lambda _msg: None)
        self.ready: dict[bytes, bytes] = {}
        self.refetched = [0, 0]  # chunks and bytes downloaded again for bad cached blobs
        self._lock = threading.Lock()
        self._warned = False

    # ---- the one verification -------------------------------------------------------------
    def verify(self, cid: bytes, blob: bytes | memoryview) -> bytes:
        """Decode a stored blob of chunk ``cid`` and check it; raises ``IntegrityError``."""
        return self.codec.decode(blob, self.locations[cid].raw_size, cid)

    # ---- sources ----------------------------------------------------------------------------
    def get(self, cid: bytes) -> bytes:
        """One chunk: from memory, else the local cache (verified again; a blob that fails
        is dropped and the chunk read from the store)."""
        data = self.ready.get(cid)
        if data is None:
            blob = self.cache.get(cid) if self.cache is not None else None
            if blob is None:
                raise CacheError(f"chunk {cid.hex()} vanished from the local cache")
            try:
                data = self.verify(cid, blob)
            except FormatError as exc:
                data = self.from_store_again({cid: exc})[cid]
            if self.keep:
                self.ready[cid] = data
        return data

    def from_store_again(self, bad: Mapping[bytes, FormatError]) -> dict[bytes, bytes]:
        """Chunks whose cached blobs failed verification (``bad``: id -> why): dropped from
        the cache, read from the store, verified and cached again, with a warning.

        A poisoned cache (a bad disk, a killed writer, a hand-edited file) must not fail
        every later pull; what the store serves is verified like any download.
        """
        assert self.cache is not None
        first, why = next(iter(bad.items()))
        self.cache.drop(bad)
        with self._lock:  # one warning per pull, however many chunks (and threads) meet it
            warned, self._warned = self._warned, True
        if not warned:
            self.warn(f"the local cache {self.cache.path} holds chunks that fail verification "
                      f"({len(bad)} here; chunk {first.hex()}: {why}); they are dropped and "
                      "downloaded again")
        out: dict[bytes, bytes] = {}
        rows: list[tuple[bytes, bytes, int]] = []
        for batch in plan_fetch(self.locations, bad, FETCH_BATCH_BYTES, 64):
            for f, data in zip(batch, self._download(batch, self.store.io), strict=True):
                with self._lock:
                    self.refetched[0] += len(f.chunks)
                    self.refetched[1] += len(data)
                for cid in f.chunks:
                    loc = self.locations[cid]
                    blob = data[loc.offset - f.start:loc.offset - f.start + loc.length]
                    try:
                        out[cid] = self.verify(cid, blob)
                    except IntegrityError as exc:
                        raise IntegrityError(f"{self.store.display_url}: {exc}") from None
                    rows.append((cid, blob, loc.raw_size))
        self.cache.put_many(rows)
        return out

    def _download(self, batch: list[Fetch], io: int) -> list[bytes]:
        try:
            return self.store.get_ranges(
                [(Layout.pack(f.pack), f.start, f.end) for f in batch], batch_size=io)
        except NotFoundError as exc:
            raise NotFoundError(f"{exc}: a pack that snapshot {self.what} needs is missing "
                                "from the store (run `snapsync check`)") from None

    def seed(self, found: Iterable[tuple[bytes, bytes | memoryview]]) -> set[bytes]:
        """Cache raw chunks found elsewhere (old files of the target), stored raw.

        ``found`` yields ids computed from the bytes themselves (``read_chunks`` hashes what
        it reads), so they are not hashed again here; like every cached chunk, they are
        verified when :meth:`get` or :meth:`preload` reads them back (MACs included).
        """
        if self.cache is None:
            return set()
        cache = self.cache
        rows: list[tuple[bytes, bytes, int]] = []
        got: set[bytes] = set()
        size = 0
        for cid, data in found:
            blob = RAW_TAG + data
            rows.append((cid, blob, len(data)))
            got.add(cid)
            size += len(blob)
            if size >= SEED_FLUSH:  # a big file's chunks go to the cache in slices
                cache.put_many(rows)
                rows, size = [], 0
        cache.put_many(rows)
        return got

    def preload(self, ids: Iterable[bytes], cpu: Executor) -> None:
        """Decode and verify cached chunks into memory, in batched queries on the CPU threads."""
        if not self.keep or self.cache is None:
            return
        cache = self.cache
        order = sorted(ids)

        bad: dict[bytes, FormatError] = {}

        def load(part: list[bytes]) -> list[tuple[bytes, bytes]]:
            blobs = cache.get_many(part)
            lost = [c for c in part if c not in blobs]
            if lost:
                raise CacheError(f"chunk {lost[0].hex()} vanished from the local cache")
            out = []
            for c in part:
                try:
                    out.append((c, self.verify(c, blobs[c])))
                except FormatError as exc:
                    bad[c] = exc  # read from the store below, once for all of them
            return out

        for pairs in cpu.map(load, [order[i:i + CACHE_QUERY]
                                    for i in range(0, len(order), CACHE_QUERY)]):
            self.ready.update(pairs)
        if bad:
            self.ready.update(self.from_store_again(bad))

    def fetch(self, ids: set[bytes], conc: Concurrency, cpu: Executor,
              progress: Progress | None = None) -> tuple[int, int]:
        """Download, verify and cache ``ids``; return (chunks, bytes) downloaded.

        Batch *i+1* downloads while batch *i* is verified and batch *i-1* is written to the
        cache, each on its own thread; at most two batches of ``FETCH_BATCH_BYTES`` are held.
        """
        prog = progress or NullProgress()
        batches = plan_fetch(self.locations, ids, FETCH_BATCH_BYTES, max(conc.io * 2, 8))
        if not batches:
            return 0, 0
        n_chunks = n_bytes = 0

        def download(batch: list[Fetch]) -> list[bytes]:
            return self._download(batch, conc.io)

        def verify(items: list[tuple[bytes, Any]]) -> list[tuple[bytes, Any, bytes]]:
            return [(cid, blob, self.verify(cid, blob)) for cid, blob in items]

        with ThreadPoolExecutor(1, thread_name_prefix="snapsync-fetch") as fetch_ex, \
                ThreadPoolExecutor(1, thread_name_prefix="snapsync-cache") as cache_ex:
            pending = fetch_ex.submit(download, batches[0])
            caching: Any = None
            for i, batch in enumerate(batches):
                datas = pending.result()
                if i + 1 < len(batches):
                    pending = fetch_ex.submit(download, batches[i + 1])
                work: list[list[tuple[bytes, Any]]] = [[]]
                for f, data in zip(batch, datas, strict=True):
                    n_bytes += len(data)
                    prog.advance(len(data))
                    view = memoryview(data)  # slices share the range's buffer: no copies
                    for cid in f.chunks:
                        loc = self.locations[cid]
                        work[-1].append((cid, view[loc.offset - f.start:
                                                   loc.offset - f.start + loc.length]))
                        if len(work[-1]) >= 64:
                            work.append([])
                del datas
                rows = []
                try:
                    for verified in cpu.map(verify, work):
                        for cid, blob, data in verified:
                            rows.append((cid, blob, len(data)))
                            if self.keep:
                                self.ready[cid] = data
                except IntegrityError as exc:
                    raise IntegrityError(f"{self.store.display_url}: {exc}") from None
                if caching is not None:
                    caching.result()
                if self.cache is not None:
                    caching = cache_ex.submit(self.cache.put_many, rows)
                n_chunks += len(rows)
            if caching is not None:
                caching.result()
        return n_chunks, n_bytes


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
