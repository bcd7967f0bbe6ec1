"""Pull engine: make a local folder equal to a snapshot, verifying every byte.

Plan, then execute:
 1. Resolve the ref (or ``--snapshot``), load the manifest (local cache by id), verify its id
    (and signature) and reject unsafe paths before anything is written.
 2. Plan: look at the target without following symlinks; files with the right size are
    compared by chunk ids (from the target's stat cache, else by hashing them). The plan
    lists what to write, chmod, create and (with ``delete``) remove; nothing has changed yet.
 3. Chunks: the chunk reader takes what it can from the local cache and the large files
    being replaced, and downloads the rest (ranged reads from packs, nearby ranges merged,
    many in flight); every chunk is decoded and checked against its id, and written into
    a cache segment by the thread that checked it.
 4. Stage, beside step 3: write every new file and symlink into a staging folder inside the
    target (an empty target: in place), each as soon as all its chunks are in published
    segments. Any failure so far leaves the old tree as it was (an empty target empty).
 5. Commit: rename staged entries into place (replacing what is in the way), fix modes,
    create empty directories, delete stale entries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from snapsync.concurrency import (
    PULL_MMAP_THRESHOLD,
    WRITES_WHILE_DOWNLOADING,
    Concurrency,
    on_shared_arena,
)
from snapsync.core.chunking import Chunker
from snapsync.core.hashing import chunk_id
from snapsync.core.ignore import IgnoreRules
from snapsync.core.keyed import Keyring
from snapsync.core.manifest import FILE, Manifest
from snapsync.core.plan import Fetch, PullPlan, Seen, check_paths, plan_deletes, plan_pull
from snapsync.core.rowmap import RowMap
from snapsync.engine.results import PullResult
from snapsync.errors import CacheError, FormatError, LocalFileError
from snapsync.local import stage, target
from snapsync.local.cache import ChunkCache
from snapsync.local.segments import OFFSET_BITS, Segments, SegmentWriter, seg_of
from snapsync.local.statcache import StatCache
from snapsync.local.tree import default_cache_dir, own_dirs, read_chunks
from snapsync.progress import NullProgress, Progress, Warnings
from snapsync.repository import Repository
from snapsync.repository.reader import ChunkReader, with_stale_retry
from snapsync.store import Store, as_store


@on_shared_arena(mmap_threshold=PULL_MMAP_THRESHOLD)
def pull(url: str | Store, dest: str | os.PathLike[str] = ".", *,
         storage_options: dict[str, Any] | None = None,
         ref: str | None = None,
         snapshot: str | None = None,
         delete: bool = False,
         delete_ignored: bool = False,
         jobs: int | None = None,
         cache_dir: str | os.PathLike[str] | None = None,
         use_cache: bool = True,
         progress: Progress | None = None,
         on_warning: Callable[[str], None] | None = None) -> PullResult:
    """Make ``dest`` hold the snapshot named by ``snapshot`` or ``ref`` (default ``latest``).

    Args:
        url: the store: a URL or an open :class:`~snapsync.store.Store`.
        dest: the target folder (created if missing).
        storage_options: passed to the store as they are (fsspec-shaped).
        ref / snapshot: what to pull; a snapshot id (or unique prefix) wins over a ref.
        delete: remove files in ``dest`` that are not in the snapshot, except paths the
            snapshot's ignore rules match (``delete_ignored`` removes those too).
        jobs: requests in flight.
        cache_dir / use_cache: the local chunk and manifest cache (default: user cache dir).
        progress / on_warning: hooks for the caller; the engine never prints.

    Returns:
        A :class:`PullResult`.

    Raises:
        SnapsyncError: a subclass naming the file, URL or option at fault.
    """
    t0 = time.perf_counter()
    prog = progress or NullProgress()
    warnings = Warnings(on_warning)

    conc = Concurrency.from_jobs(jobs)
    destp = Path(dest).absolute()
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    store = as_store(url, storage_options)
    repo = Repository(store, cache_root if use_cache else None, Keyring.from_env(), warnings)
    cfg = repo.open(create=False)
    sid = repo.resolve(ref, snapshot)
    manifest = repo.load_manifest(sid)  # verified (signature too, in tamper-evident mode)
    check_paths(manifest)
    rules = None
    if delete:  # validated now: nothing may fail for a bad rule after the commit started
        rules = IgnoreRules.none() if delete_ignored else IgnoreRules(
            list(manifest.info.get("ignore") or []), "snapshot")

    try:
        destp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalFileError(f"cannot create target folder {destp}: {exc.strerror}") from None
    if not destp.is_dir():
        raise LocalFileError(f"target {destp} is not a directory")
    # One pull at a time per target: two into one empty folder would undo each other.
    with target.locked(destp):
        target.remove_stale_staging(destp)
        target.check_fits(destp, manifest)  # names and paths this file system refuses

        # Plan. An empty target (a worker's fresh folder) holds nothing to compare: no look.
        direct = target.is_empty(destp)
        chunker = Chunker(cfg.chunker)
        cache_file = cache_root / "targets" / f"{_key(destp)}.msgpack" if use_cache else None
        # Loaded only when there is a tree to compare with (a folder's cache can be large).
        stat_cache = StatCache(None if direct else cache_file, warnings)
        stat_cache.path = cache_file
        seen = {} if direct else target.observe(destp, manifest, stat_cache, chunker)
        plan = plan_pull(manifest, seen)
        if rules is not None:
            # Never delete snapsync's own cache or a local store that lives inside the target.
            plan.delete = plan_deletes(manifest, *target.scan_extras(
                destp, rules, own_dirs(cache_root, store.backend.local_root)))
        files = plan.files
        need = plan.needed
        result = PullResult(snapshot_id=sid, url=store.display_url, directory=str(destp),
                            files=manifest.tree.kinds.count(b"f"),
                            bytes=sum(manifest.tree.sizes),
                            unchanged=plan.unchanged, chunks_needed=len(need), warnings=warnings)

        # An empty target has no old tree to protect: files are written in place (no staging and
        # renames, about half the metadata work), and a failure empties the target again.
        staging = Path(tempfile.mkdtemp(prefix=target.STAGING_PREFIX, dir=destp))
        segs: Segments | None = None
        writer = None
        try:
            cache = ChunkCache(cache_root if use_cache else staging / "cache", on_warning=warnings)
            reader = ChunkReader(store, manifest.locations, repo.chunk_codec(manifest), what=sid,
                                 on_warning=warnings)
            # Chunks come from the cache's segments; what they lack is first put there (from
            # the old files of the target, else downloaded), then every file is copied out.
            manifest0 = manifest  # ``where`` and ``fill`` go by this index's rows, retry or not
            index = manifest.index
            # A worker's every flow run pulls the same snapshot into a new folder: the places
            # the last such pull used are kept, and used while all their segments are there.
            places_key = _places_key(manifest) if use_cache and direct else None
            where, segs = _saved_places(cache, places_key, manifest)
            saved = where is not None
            if where is None:
                where = cache.where(need, index.raw_size, RowMap(index.row, index.cids))
                segs = cache.open_segments({seg_of(p) for p in where.values()})
                for cid in [c for c, p in where.items() if seg_of(p) not in segs]:
                    del where[cid]
            writer = cache.writer(where)
            result.chunks_cached = len(where)
            missing = need  # what no source has yet (one set of ids, not two)
            missing.difference_update(where)
            del need
            seeded = reader.seed(_old_chunks(destp, plan, seen, missing, chunker), writer.add_many)
            result.chunks_from_target = len(seeded)
            missing -= seeded
            sigs = array("q", bytes(40 * len(plan.write))) if direct and use_cache else None
            # Files are written while later chunks download: each as soon as the batch that
            # completes its chunks is verified and its segment published (downloading is
            # decoding and hashing, writing is mostly the kernel's file creation: on two cores
            # the one hides much of the other). ``todo``: entries not yet handed to the stager.
            todo = bytearray(b"\1") * len(plan.write)
            wprog = _Later(prog)
            with ThreadPoolExecutor(conc.cpu, thread_name_prefix="snapsync-cpu") as cpu_ex, \
                    ThreadPoolExecutor(conc.cpu, thread_name_prefix="snapsync-write") as write_ex:
                stager: stage.Stager | None = None
                try:
                    fill = _filler(reader, cache, segs, where, writer, manifest0)
                    width = min(conc.cpu, WRITES_WHILE_DOWNLOADING)
                    stager = stage.Stager(staging, plan, fill, write_ex, wprog,
                                           destp if direct else None, sigs, width=width)

                    def hand(ns: Sequence[int]) -> None:
                        for n in ns:
                            todo[n] = 0
                        assert stager is not None
                        stager.submit(ns)

                    def download() -> tuple[int, int]:
                        # What the cache (or the target's old files) held, and what an
                        # attempt that failed fetched, is in published segments: written now.
                        _publish(cache, writer, writer.placed, segs)
                        batches = reader.plan(missing, conc)
                        now, later = _ready_after(manifest, plan, todo, batches)
                        hand(now)
                        done = [0]

                        def flush() -> None:  # after each batch: its chunks can be copied
                            _publish(cache, writer, writer.placed, segs)
                            hand(later[done[0]])
                            later[done[0]] = array("l")
                            done[0] += 1

                        # The bytes the ranged reads fetch (what the bar advances by).
                        prog.phase("download", sum(f.end - f.start for b in batches for f in b),
                                   "B")
                        return reader.fetch(missing, conc, cpu_ex, writer.add_many, prog, flush,
                                            batches, place=writer)

                    def refresh() -> None:
                        nonlocal manifest, missing
                        fresh = repo.reload_manifest(sid)
                        if fresh.tree != manifest.tree:  # same id, so the same tree
                            raise LocalFileError(f"snapshot {sid} changed in the store during "
                                                 "the pull")
                        manifest = fresh
                        reader.locations = fresh.locations
                        reader.codec = repo.chunk_codec(fresh)
                        # What the failed attempt fetched before it stopped is not fetched again.
                        missing = {c for c in missing if c not in writer}

                    result.chunks_downloaded, result.bytes_downloaded = with_stale_retry(
                        download, lambda: sid in repo.from_cache, refresh)
                    prog.close()
                    stager.widen(conc.cpu - width)
                    _publish(cache, writer, where, segs)
                    hand([n for n in range(len(todo)) if todo[n]])  # none: each had its batch
                    prog.phase("write", files.size(), "B")
                    wprog.start()
                    stager.wait()
                    # Copied from segments that changed meanwhile: fetch those chunks again and
                    # rewrite the files made of them, before anything is committed.
                    for _ in range(3):
                        redo = _recheck(reader, cache, segs, where, writer, plan)
                        if not redo:
                            break
                        stager.submit(redo, again=True)
                        stager.wait()
                    else:
                        raise CacheError(f"the chunk cache {cache.dir} keeps changing while it is "
                                         "read; pull again with --no-cache")
                except BaseException:
                    if stager is not None:
                        stager.cancel()  # no write may land after the target is emptied
                    if direct:
                        target.empty_again(destp, staging)
                    raise
                prog.close()
            result.chunks_cached = max(0, result.chunks_cached - reader.refetched[0])
            result.chunks_downloaded += reader.refetched[0]  # for cached chunks that were bad
            result.bytes_downloaded += reader.refetched[1]
            # Commit: from here on the target changes; a failure puts the old tree back (an empty
            # target is emptied again).
            try:
                deleted = target.commit(destp, plan, direct, staging)
            except BaseException:
                if direct:
                    target.empty_again(destp, staging)
                raise
            if use_cache:
                with contextlib.suppress(Exception):  # LRU bookkeeping only
                    cache.touch(segs.fds)
            if places_key is not None and (not saved or writer.segs):  # else: as saved
                cache.save_places(places_key, where.values_array)
        finally:
            if writer is not None:
                writer.abort()
            if segs is not None:
                segs.close()
            shutil.rmtree(staging, ignore_errors=True)
        _count(result, plan)
        result.deleted = deleted

        del where, seen, fill  # before the stat cache's rows are built: a lower peak
        target.save_target_cache(destp, manifest, stat_cache,
                                 (plan, sigs) if sigs is not None else None)
        if use_cache:
            target.prune_target_caches(cache_root / "targets")
        if use_cache:
            with contextlib.suppress(Exception):
                cache.trim()
        result.requests = store.stats.as_dict()["requests"]
        result.seconds = round(time.perf_counter() - t0, 3)
        return result


def _places_key(manifest: Manifest) -> str:
    """Names what a saved place map means: which chunk (and raw size) each index row is."""
    index = manifest.index
    return chunk_id(bytes(index.ids) + index.raws.tobytes()).hex()


def _saved_places(cache: ChunkCache, key: str | None, manifest: Manifest
                  ) -> tuple[RowMap | None, Segments | None]:
    """The places saved under ``key`` and their segments, opened and checked; ``(None,
    None)`` when none are saved or one of their segments is gone or changed (then the
    index is asked, chunk by chunk)."""
    if key is None:
        return None, None
    index = manifest.index
    vals = cache.load_places(key, len(index.cids))
    if vals is None:
        return None, None
    try:
        where = RowMap.of_values(index.row, index.cids, vals)
    except ValueError:
        return None, None
    wanted = {v >> OFFSET_BITS for v in vals if v >= 0}  # one pass over the array
    segs = cache.open_segments(wanted)
    if len(segs.fds) != len(wanted):
        segs.close()
        return None, None
    return where, segs


def _publish(cache: ChunkCache, writer: SegmentWriter, where: RowMap,
             segs: Segments) -> None:
    """Seal what ``writer`` holds (its chunks join ``where``), and open its new segments for
    copying; chunks of a segment that cannot be opened (evicted meanwhile) leave ``where``."""
    fresh = set(writer.finish()) - set(segs.fds)
    if fresh:
        segs.update(cache.open_segments(fresh))
        lost = fresh - set(segs.fds)
        if lost:
            for cid in [c for c, p in where.items() if seg_of(p) in lost]:
                del where[cid]
            raise CacheError(f"the chunk cache {cache.dir} lost a segment this pull just wrote; "
                             "pull again (or with --no-cache)")


def _filler(reader: ChunkReader, cache: ChunkCache, segs: Segments, where: RowMap,
            writer: SegmentWriter, manifest: Manifest) -> stage.Fill:
    """How a file's content gets into its descriptor: each chunk copied from its segment by
    the kernel; in tamper-evident mode read, checked (id and MAC) and written instead.

    By index row (``manifest``: the one ``where`` was built on; a stale-manifest retry's
    fresh index may number chunks otherwise, so it is not used here): a chunk's size and
    place are array reads, no ``Location`` or id lookup per chunk."""
    lock = threading.Lock()
    index, refs, starts = manifest.index, manifest.refs, manifest.tree.starts
    raws, cids, place_of, copy = index.raws, index.cids, where.at, segs.copy

    def fill(fd: int, i: int) -> None:
        pos = 0
        for r in refs[starts[i]:starts[i + 1]]:
            n = raws[r]
            place = place_of(r)
            if reader.keyed:
                cid = cids[r]
                data = segs.read(place, n)
                try:
                    reader.verify_raw(cid, data)
                except FormatError as exc:
                    got: dict[bytes, bytes] = {}
                    with lock:  # one thread at a time asks the store and drops segments
                        reader.refetch({cid: exc}, got.update)
                        with contextlib.suppress(Exception):
                            cache.drop_segments([seg_of(place)])
                    data = got[cid]
                _write_all(fd, data, pos)
            else:
                copy(place, n, fd, pos)
            pos += n

    return fill


class _Later:
    """Progress of the file writes that start during the download: counted, and shown once
    the write phase starts (:meth:`start`), so each phase's bar counts its own work."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        self.live = False
        self.held = 0
        self.lock = threading.Lock()

    def phase(self, name: str, total: int | None, unit: str = "B") -> None:
        self.prog.phase(name, total, unit)

    def advance(self, n: int) -> None:
        if not self.live:
            with self.lock:
                if not self.live:
                    self.held += n
                    return
        self.prog.advance(n)

    def close(self) -> None:
        self.prog.close()

    def start(self) -> None:
        with self.lock:
            self.live = True
            held, self.held = self.held, 0
        if held:
            self.prog.advance(held)


def _ready_after(manifest: Manifest, plan: PullPlan, todo: bytearray,
                 batches: list[list[Fetch]]) -> tuple[array[int], list[array[int]]]:
    """The entries of ``plan.write`` still ``todo``, by when they can be written: now (every
    chunk in a published segment), or after batch *i* of ``batches``, the last that holds one
    of their chunks. Each list in ``plan.write`` order (folders fill in turn). Works on index
    rows (``manifest.refs``): no object per file or chunk."""
    if not batches:  # nothing to download (a warm pull): every entry can be written now
        return array("l", [n for n in range(len(todo)) if todo[n]]), []
    index = manifest.index
    batch_of = array("l", [-1]) * len(index.cids)
    row = index.row
    for b, batch in enumerate(batches):
        for f in batch:
            for c in f.chunks:
                batch_of[row(c)] = b  # type: ignore[index]
    now: array[int] = array("l")
    later = [array("l") for _ in batches]
    refs, starts, get = manifest.refs, manifest.tree.starts, batch_of.__getitem__
    for n, i in enumerate(plan.write.idx):
        if not todo[n]:
            continue
        a, z = starts[i], starts[i + 1]  # no chunks: a symlink or an empty file
        last = max(map(get, refs[a:z])) if z > a else -1
        (later[last] if last >= 0 else now).append(n)
    return now, later


def _write_all(fd: int, data: bytes, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        pos += n
        view = view[n:]


def _recheck(reader: ChunkReader, cache: ChunkCache, segs: Segments, where: RowMap,
             writer: SegmentWriter, plan: PullPlan) -> list[int]:
    """After staging: segments whose signature changed since they were opened are dropped,
    their chunks fetched again (into a new segment), and the indexes of the files that used
    them returned, to be written again. Empty when every copy came from an unchanged file."""
    bad = set(segs.changed())
    if not bad:
        return []
    cache.warn(f"the chunk cache {cache.dir} changed while this pull copied from it "
               f"({len(bad)} segment(s)); the files made from it are written again")
    cache.drop_segments(bad)
    for seg in bad:
        fd, _sig, _name = segs.fds.pop(seg)
        os.close(fd)
    lost = {c for c, p in where.items() if seg_of(p) in bad}
    for c in lost:
        del where[c]
    # The store's copy; a chunk the old tree held is downloaded too (the old file may be gone).
    reader.refetch(dict.fromkeys(lost, CacheError("its segment changed")), writer.add_many)
    _publish(cache, writer, where, segs)
    return [n for n, e in enumerate(plan.write) if e.kind == FILE and not lost.isdisjoint(
        e.chunks)]


def _count(result: PullResult, plan: PullPlan) -> None:
    files = plan.files
    result.files_written = len(files)
    result.bytes_written = files.size()
    result.symlinks_written = len(plan.write) - len(files)
    result.modes_changed = len(plan.chmod)
    result.dirs_created = len(plan.mkdir)


def _key(p: Path) -> str:
    return chunk_id(os.fsencode(os.path.realpath(p))).hex()  # a name, not a secret


def _old_chunks(destp: Path, plan: PullPlan, seen: dict[bytes, Seen], want: set[bytes],
                chunker: Chunker):  # type: ignore[no-untyped-def]
    """Needed chunks found in the large files being replaced, read before anything changes.

    An edit near the start of a big file changes one or two chunks; the rest are still in the
    old copy on disk, so the chunk reader takes them from there instead of downloading them.
    """
    if not want:
        return
    found: set[bytes] = set()
    root = os.fsencode(destp)
    for e in plan.write:
        s = seen.get(e.path)
        if e.kind != FILE or s is None or s.kind != FILE or s.size <= chunker.params.threshold:
            continue
        if not want.intersection(e.chunks):
            continue
        try:
            for cid, data in read_chunks(os.fsdecode(os.path.join(root, e.path)), s.size,
                                         chunker):
                if cid in want and cid not in found:
                    found.add(cid)
                    yield cid, data
        except LocalFileError:
            continue  # an unreadable old file only means downloading more
