"""Pull engine: make a local folder equal to a snapshot, verifying every byte.

Algorithm:
 1. Resolve the ref (or ``--snapshot``), load the manifest (local cache by id), verify its id
    and reject unsafe paths before anything is written.
 2. Look at the target without following symlinks; files with the right size are compared by
    chunk ids (from the target's stat cache, else by hashing them). Only differences are
    planned.
 3. Fetch the chunks the plan needs and the local chunk cache lacks: ranged reads from packs,
    nearby ranges merged, many in flight; every chunk is decoded and checked against its id.
 4. Stage: write every new file and symlink into a staging folder inside the target. Nothing
    in the target has changed yet, so any failure so far leaves the old tree as it was.
 5. Commit: rename staged entries into place (replacing what is in the way), fix modes,
    create empty directories, then delete stale files when asked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapsync.concurrency import Concurrency
from snapsync.core.chunking import Chunker
from snapsync.core.codec import Codec
from snapsync.core.ignore import IgnoreRules
from snapsync.core.keyed import Keyring
from snapsync.core.manifest import DIR, FILE, SYMLINK, Entry, Location, Manifest
from snapsync.core.plan import PullPlan, Seen, check_paths, plan_pull
from snapsync.errors import IntegrityError, LocalFileError, NotFoundError, StoreError
from snapsync.local.cache import ChunkCache
from snapsync.local.tree import (
    STAGING_PREFIX,
    StatCache,
    default_cache_dir,
    dir_ids,
    file_chunk_ids,
    normal_mode,
    own_dirs,
    read_chunks,
)
from snapsync.progress import NullProgress, Progress
from snapsync.repository import Repository
from snapsync.store.store import Layout, Store

MAX_GAP = 256 << 10  # merge ranges closer than this: one request beats two
MAX_RANGE = 16 << 20  # but keep each request reasonably sized
MEMORY_BUDGET = 128 << 20  # decoded chunks kept in memory; beyond this they go via the cache
BATCH_BYTES = 32 << 20  # bytes of ranges fetched in one concurrent batch


@dataclass
class PullResult:
    """What a pull did."""

    snapshot_id: str
    url: str
    directory: str
    files: int = 0
    bytes: int = 0
    unchanged: int = 0
    files_written: int = 0
    bytes_written: int = 0
    symlinks_written: int = 0
    dirs_created: int = 0
    modes_changed: int = 0
    deleted: int = 0
    chunks_needed: int = 0
    chunks_cached: int = 0
    chunks_from_target: int = 0
    chunks_downloaded: int = 0
    bytes_downloaded: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pull(url: str, dest: str | os.PathLike[str] = ".", *,
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
        url: the store's fsspec URL.
        dest: the target folder (created if missing).
        storage_options: passed to fsspec as they are.
        ref / snapshot: what to pull; a snapshot id (or unique prefix) wins over a ref.
        delete: remove files in ``dest`` that are not in the snapshot, except paths the
            snapshot's ignore rules match (``delete_ignored`` removes those too).
        jobs: requests in flight.
        cache_dir / use_cache: the local chunk and manifest cache (default: user cache dir).
        progress / on_warning: hooks for the caller; the engine never prints.

    Returns:
        A :class:`PullResult`.
    """
    t0 = time.perf_counter()
    prog = progress or NullProgress()
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        if on_warning:
            on_warning(msg)

    conc = Concurrency.from_jobs(jobs)
    destp = Path(dest).absolute()
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    store = Store(url, storage_options)
    repo = Repository(store, cache_root if use_cache else None)
    cfg = repo.open(create=False)
    sid = repo.resolve(ref, snapshot)
    # Tamper-evident mode: the signature is checked before anything is written.
    keyring = Keyring.from_env()
    if keyring is None:
        manifest, macs = repo.load_manifest(sid), None
    else:
        manifest, macs = keyring.load_verified(repo, sid)
    check_paths(manifest.entries)

    try:
        destp.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalFileError(f"cannot create target folder {destp}: {exc.strerror}") from None
    if not destp.is_dir():
        raise LocalFileError(f"target {destp} is not a directory")
    _remove_stale_staging(destp)

    chunker = Chunker(cfg.chunker)
    stat_cache = StatCache(cache_root / "targets" / f"{_key(destp)}.msgpack"
                           if use_cache else None)
    seen = _observe(destp, manifest.entries, stat_cache, chunker)
    plan = plan_pull(manifest.entries, seen)

    files = [e for e in plan.write if e.kind == FILE]
    need = {c for e in files for c in e.chunks}
    codec = Codec() if keyring is None or macs is None else keyring.wrap_codec(Codec(), macs)
    result = PullResult(snapshot_id=sid, url=store.display_url, directory=str(destp),
                        files=sum(1 for _ in manifest.files()),
                        bytes=sum(e.size for e in manifest.files()),
                        unchanged=plan.unchanged, chunks_needed=len(need), warnings=warnings)

    # An empty target has no old tree to protect: files are written in place (no staging and
    # renames, about half the metadata work), and a failure empties the target again.
    direct = _is_empty(destp)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=destp))
    try:
        cache = ChunkCache(cache_root) if use_cache else ChunkCache(staging / "cache")
        cached = cache.has(need)
        result.chunks_cached = len(cached)
        seeded = _seed_from_target(destp, plan, seen, need - cached, cache, chunker)
        result.chunks_from_target = len(seeded)
        cached |= seeded
        missing = need - cached
        raw_need = sum(manifest.locations[c].raw_size for c in need)
        keep_in_memory = raw_need <= MEMORY_BUDGET
        ready: dict[bytes, bytes] = {}
        prog.phase("download", sum(manifest.locations[c].length for c in missing), "B")
        with ThreadPoolExecutor(conc.cpu, thread_name_prefix="snapsync-cpu") as cpu_ex:
            try:
                got = _download(store, manifest, missing, codec, cache, ready if keep_in_memory
                                else None, conc, cpu_ex, prog)
            except NotFoundError:
                # A cached manifest may predate a gc repack that moved its chunks to new
                # packs (docs/format.md §8): fetch the store's copy and try once more.
                if repo.manifests is None or sid not in repo.from_cache:
                    raise
                repo.manifests.drop(sid)
                if keyring is None:
                    fresh, macs = repo.load_manifest(sid), None
                else:
                    fresh, macs = keyring.load_verified(repo, sid)
                if fresh.entries != manifest.entries:  # same id, so the same tree
                    raise
                manifest = fresh
                codec = Codec() if keyring is None or macs is None else \
                    keyring.wrap_codec(Codec(), macs)
                missing = {c for c in missing if c not in ready}
                missing -= cache.has(missing)
                got = _download(store, manifest, missing, codec, cache, ready if keep_in_memory
                                else None, conc, cpu_ex, prog)
            prog.close()
            result.chunks_downloaded, result.bytes_downloaded = got

            def chunk(cid: bytes) -> bytes:
                data = ready.get(cid)
                if data is None:
                    blob = cache.get(cid)
                    if blob is None:
                        raise StoreError(f"chunk {cid.hex()} vanished from the local cache")
                    data = codec.decode(blob, manifest.locations[cid].raw_size, cid)
                    if keep_in_memory:
                        ready[cid] = data
                return data

            if keep_in_memory and cached:
                # Decode and verify cached chunks up front, in batches on the CPU threads:
                # the cache is not trusted blindly, and one query per 256 ids beats one each.
                def load(ids: list[bytes]) -> list[tuple[bytes, bytes]]:
                    blobs = cache.get_many(ids)
                    missing_ids = [c for c in ids if c not in blobs]
                    if missing_ids:
                        raise StoreError(f"chunk {missing_ids[0].hex()} vanished from the "
                                         "local cache")
                    return [(c, codec.decode(blobs[c], manifest.locations[c].raw_size, c))
                            for c in ids]

                order = sorted(cached)
                for pairs in cpu_ex.map(load, [order[i:i + 256]
                                               for i in range(0, len(order), 256)]):
                    ready.update(pairs)
            prog.phase("write", sum(e.size for e in files), "B")
            if use_cache:
                touched = cpu_ex.submit(cache.touch, need)  # LRU bookkeeping, off the path
            if direct:
                try:
                    staged = _stage(staging, plan, chunk, cpu_ex, prog, destp)
                except BaseException:
                    _empty_again(destp, staging)
                    raise
            else:
                staged = _stage(staging, plan, chunk, cpu_ex, prog)
            prog.close()
            if use_cache:
                touched.result()
        # Commit: from here on the target changes.
        _commit(destp, plan, staged, result, direct)
        if delete:
            rules = IgnoreRules.none() if delete_ignored else IgnoreRules(
                list(manifest.info.get("ignore") or []), "snapshot")
            result.deleted = _delete_stale(destp, manifest, rules,
                                           dir_ids(own_dirs(store, cache_root)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    _save_target_cache(destp, manifest, stat_cache)
    if use_cache:
        with contextlib.suppress(Exception):
            cache.trim()
    result.requests = store.stats.as_dict()["requests"]
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _key(p: Path) -> str:
    import hashlib

    return hashlib.sha256(os.fsencode(os.path.realpath(p))).hexdigest()[:32]


def _seed_from_target(destp: Path, plan: PullPlan, seen: dict[bytes, Seen],
                      want: set[bytes], cache: ChunkCache, chunker: Chunker) -> set[bytes]:
    """Take needed chunks from the large files being replaced, instead of downloading them.

    An edit near the start of a big file changes one or two chunks; the rest are still in the
    old copy on disk. Old files are read before anything is replaced, every chunk is hashed as
    it is read, and what is found goes into the chunk cache (stored raw), so the rest of the
    pull treats it as cached and verifies it again.
    """
    found: set[bytes] = set()
    if not want:
        return found
    root = os.fsencode(destp)
    for e in plan.write:
        s = seen.get(e.path)
        if e.kind != FILE or s is None or s.kind != FILE or s.size <= chunker.params.threshold:
            continue
        if not want.intersection(e.chunks):
            continue
        rows: list[tuple[bytes, bytes, int]] = []
        try:
            for cid, data in read_chunks(os.fsdecode(os.path.join(root, e.path)), s.size,
                                         chunker):
                if cid in want and cid not in found:
                    found.add(cid)
                    rows.append((cid, b"\x00" + bytes(data), len(data)))
        except LocalFileError:
            continue  # an unreadable old file only means downloading more
        cache.put_many(rows)
    return found


def _is_empty(destp: Path) -> bool:
    with os.scandir(destp) as it:
        return not any(True for _ in it)


def _empty_again(destp: Path, keep: Path) -> None:
    """Undo a failed direct write: the target was empty, so it is emptied again."""
    with os.scandir(destp) as it:
        for de in it:
            if de.path == str(keep):
                continue
            if de.is_dir(follow_symlinks=False):
                shutil.rmtree(de.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(de.path)


def _remove_stale_staging(destp: Path) -> None:
    """A pull killed mid-way leaves its staging folder; the next pull removes it."""
    with contextlib.suppress(OSError), os.scandir(destp) as it:
        for de in it:
            if de.name.startswith(STAGING_PREFIX) and de.is_dir(follow_symlinks=False):
                shutil.rmtree(de.path, ignore_errors=True)


class _SafeDirs:
    """Answers "is this relative directory a real directory inside the target?" (memoized).

    A path whose parent chain holds a symlink or a file is treated as absent: it will be
    replaced, and nothing is ever read or written through a symlink.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._ok: dict[bytes, bool] = {b"": True}

    def ok(self, rel_dir: bytes) -> bool:
        hit = self._ok.get(rel_dir)
        if hit is not None:
            return hit
        parent, _, _ = rel_dir.rpartition(b"/")
        good = self.ok(parent)
        if good:
            try:
                st = os.lstat(os.path.join(os.fsencode(self.root), rel_dir))
                good = stat.S_ISDIR(st.st_mode)
            except OSError:
                good = False
        self._ok[rel_dir] = good
        return good


def _observe(destp: Path, entries: list[Entry], stat_cache: StatCache,
             chunker: Chunker) -> dict[bytes, Seen]:
    root = os.fsencode(destp)
    dirs = _SafeDirs(str(destp))
    seen: dict[bytes, Seen] = {}
    for e in entries:
        parent = e.path.rpartition(b"/")[0]
        if not dirs.ok(parent):
            continue
        abs_path = os.path.join(root, e.path)
        try:
            st = os.lstat(abs_path)
        except OSError:
            continue
        m = st.st_mode
        if stat.S_ISDIR(m):
            seen[e.path] = Seen(DIR)
        elif stat.S_ISLNK(m):
            seen[e.path] = Seen(SYMLINK, target=os.readlink(abs_path))
        elif stat.S_ISREG(m):
            chunks = None
            if e.kind == FILE and st.st_size == e.size:
                sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)
                chunks = stat_cache.lookup(e.name, sig)
                if chunks is None:
                    try:
                        chunks = file_chunk_ids(os.fsdecode(abs_path), chunker)
                    except LocalFileError:
                        chunks = None
            seen[e.path] = Seen(FILE, normal_mode(m), st.st_size, chunks)
        else:
            seen[e.path] = Seen("other")
    return seen


def _ranges(manifest: Manifest, ids: set[bytes]) -> list[tuple[bytes, int, int,
                                                                list[tuple[bytes, Location]]]]:
    """Group chunks by pack and merge nearby ranges: ``(pack, start, end, chunks)``."""
    by_pack: dict[bytes, list[tuple[bytes, Location]]] = defaultdict(list)
    for cid in ids:
        loc = manifest.locations[cid]
        by_pack[loc.pack].append((cid, loc))
    out = []
    for pack, items in by_pack.items():
        items.sort(key=lambda x: x[1].offset)
        cur: list[tuple[bytes, Location]] = []
        start = end = 0
        for cid, loc in items:
            if cur and (loc.offset - end > MAX_GAP or loc.offset + loc.length - start > MAX_RANGE):
                out.append((pack, start, end, cur))
                cur = []
            if not cur:
                start = loc.offset
            cur.append((cid, loc))
            end = max(end, loc.offset + loc.length)
        if cur:
            out.append((pack, start, end, cur))
    return out


def _batches(reqs: list[Any], max_bytes: int, max_count: int) -> list[list[Any]]:
    """Split range requests into batches bounded in count and bytes (bounds memory)."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    size = 0
    for r in reqs:
        n = r[2] - r[1]
        if cur and (len(cur) >= max_count or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += n
    if cur:
        out.append(cur)
    return out


def _download(store: Store, manifest: Manifest, ids: set[bytes], codec: Codec,
              cache: ChunkCache, ready: dict[bytes, bytes] | None, conc: Concurrency,
              cpu_ex: ThreadPoolExecutor, prog: Progress) -> tuple[int, int]:
    """Fetch, verify and cache ``ids``; return (chunks, bytes) downloaded.

    Batch *i+1* downloads while batch *i* is verified and batch *i-1* is written to the
    cache, each on its own thread; at most two batches of ``BATCH_BYTES`` are in memory.
    """
    if not ids:
        return 0, 0
    reqs = _ranges(manifest, ids)
    reqs.sort(key=lambda r: (r[0], r[1]))
    batches = _batches(reqs, BATCH_BYTES, max(conc.io * 2, 8))
    n_chunks = n_bytes = 0

    def fetch(batch: list[Any]) -> list[bytes]:
        try:
            return store.get_ranges_multi(
                [(Layout.pack(p), s, e) for p, s, e, _ in batch], batch_size=conc.io)
        except NotFoundError as exc:
            raise NotFoundError(f"{exc}: a pack that snapshot {manifest.id} needs is missing "
                                "from the store (run `snapsync check`)") from None

    def verify(items: list[tuple[bytes, Location, bytes]]) -> list[tuple[bytes, bytes, bytes,
                                                                         int]]:
        return [(cid, blob, codec.decode(blob, loc.raw_size, cid), loc.raw_size)
                for cid, loc, blob in items]

    with ThreadPoolExecutor(1, thread_name_prefix="snapsync-fetch") as fetch_ex, \
            ThreadPoolExecutor(1, thread_name_prefix="snapsync-cache") as cache_ex:
        pending = fetch_ex.submit(fetch, batches[0])
        cached: Any = None
        for i, batch in enumerate(batches):
            datas = pending.result()
            if i + 1 < len(batches):
                pending = fetch_ex.submit(fetch, batches[i + 1])
            work: list[list[tuple[bytes, Location, bytes]]] = [[]]
            for (_pack, start, _end, chunks), data in zip(batch, datas, strict=True):
                n_bytes += len(data)
                prog.advance(len(data))
                view = memoryview(data)  # slices share the range's buffer: no copies
                for cid, loc in chunks:
                    blob = view[loc.offset - start:loc.offset - start + loc.length]
                    work[-1].append((cid, loc, blob))
                    if len(work[-1]) >= 64:
                        work.append([])
            del datas
            rows = []
            try:
                for verified in cpu_ex.map(verify, work):
                    for cid, blob, data, raw in verified:
                        rows.append((cid, blob, raw))
                        if ready is not None:
                            ready[cid] = data
            except IntegrityError as exc:
                raise IntegrityError(f"{store.display_url}: {exc}") from None
            if cached is not None:
                cached.result()
            cached = cache_ex.submit(cache.put_many, rows)
            n_chunks += len(rows)
        if cached is not None:
            cached.result()
    return n_chunks, n_bytes


def _stage(staging: Path, plan: PullPlan, chunk: Callable[[bytes], bytes],
           cpu_ex: ThreadPoolExecutor, prog: Progress,
           direct: Path | None = None) -> dict[bytes, str]:
    """Write every planned file and symlink into ``staging``; return path -> staged name.

    With ``direct`` (an empty target), write them at their final paths in ``direct`` instead.
    """
    staged: dict[bytes, str] = {}
    jobs: list[list[tuple[Entry, str]]] = [[]]
    if direct is not None:
        root = os.fsencode(direct)
        made: set[bytes] = set()
        for e in plan.write:  # directories first, on this thread: mkdir races between threads
            _make_dirs(root, e.path.rpartition(b"/")[0], made)
    for n, e in enumerate(plan.write):
        name = (os.fsdecode(os.path.join(root, e.path)) if direct is not None
                else os.path.join(staging, f"{n:08d}"))
        staged[e.path] = name
        jobs[-1].append((e, name))
        if len(jobs[-1]) >= 64:
            jobs.append([])

    def write(items: list[tuple[Entry, str]]) -> None:
        for e, name in items:
            if e.kind == SYMLINK:
                os.symlink(e.target, os.fsencode(name))
                continue
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for cid in e.chunks:
                    data = chunk(cid)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                os.fchmod(fd, e.mode)
            finally:
                os.close(fd)
            prog.advance(e.size)

    try:
        for _ in cpu_ex.map(write, jobs):
            pass
    except OSError as exc:
        raise LocalFileError(f"cannot write into {staging.parent}: {exc.strerror or exc}")\
            from None
    return staged


def _make_dirs(root: bytes, rel_dir: bytes, made: set[bytes]) -> None:
    """Create ``rel_dir`` under ``root``, replacing any file or symlink in the way."""
    if not rel_dir or rel_dir in made:
        return
    _make_dirs(root, rel_dir.rpartition(b"/")[0], made)
    p = os.path.join(root, rel_dir)
    try:
        st = os.lstat(p)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(p)
            os.mkdir(p)
    except FileNotFoundError:
        os.mkdir(p)
    made.add(rel_dir)


def _commit(destp: Path, plan: PullPlan, staged: dict[bytes, str], result: PullResult,
            direct: bool = False) -> None:
    """Move staged entries into place (already there when ``direct``), then modes and dirs."""
    root = os.fsencode(destp)
    made: set[bytes] = set()
    try:
        for e in plan.write:
            if not direct:
                _make_dirs(root, e.path.rpartition(b"/")[0], made)
                final = os.path.join(root, e.path)
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISDIR(os.lstat(final).st_mode):
                        shutil.rmtree(final)
                os.replace(os.fsencode(staged[e.path]), final)
            if e.kind == FILE:
                result.files_written += 1
                result.bytes_written += e.size
            else:
                result.symlinks_written += 1
        for e in plan.chmod:
            os.chmod(os.path.join(root, e.path), e.mode)
            result.modes_changed += 1
        for e in plan.mkdir:
            _make_dirs(root, e.path, made)
            result.dirs_created += 1
    except OSError as exc:
        raise LocalFileError(f"cannot update {destp}: {exc.strerror or exc} "
                             f"({os.fsdecode(exc.filename or b'')})") from None


def _delete_stale(destp: Path, manifest: Manifest, rules: IgnoreRules,
                  protect: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()
                  ) -> int:
    """Remove files, links and folders of the target that the snapshot does not hold.

    ``protect``: (device, inode) of directories never entered nor removed (a local store or
    snapsync's cache inside the target).
    """
    keep = {e.path for e in manifest.entries}
    keep_dirs = {b""}
    for e in manifest.entries:
        parts = e.path.split(b"/")
        for i in range(1, len(parts)):
            keep_dirs.add(b"/".join(parts[:i]))
        if e.kind == DIR:
            keep_dirs.add(e.path)
    removed = 0
    root = os.fsencode(destp)

    def walk(rel: bytes) -> bool:
        """Clean one directory; return whether it is now empty."""
        nonlocal removed
        empty = True
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            items = list(it)
        for de in items:
            name = de.name
            if not rel and name.startswith(STAGING_PREFIX.encode()):
                empty = False
                continue
            path = rel + b"/" + name if rel else name
            text = os.fsdecode(path)
            is_dir = de.is_dir(follow_symlinks=False)
            if is_dir and protect:
                st = de.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) in protect:
                    empty = False
                    continue
            if rules.ignored(text, is_dir):
                empty = False
                continue
            if is_dir:
                if walk(path) and path not in keep_dirs:
                    os.rmdir(de.path)
                    removed += 1
                else:
                    empty = False
            elif path in keep:
                empty = False
            else:
                os.unlink(de.path)
                removed += 1
        return empty

    try:
        walk(b"")
    except OSError as exc:
        raise LocalFileError(f"cannot delete stale files in {destp}: {exc.strerror or exc}")\
            from None
    return removed


def _save_target_cache(destp: Path, manifest: Manifest, stat_cache: StatCache) -> None:
    if stat_cache.path is None:
        return
    root = os.fsencode(destp)
    rows = {}
    for e in manifest.files():
        try:
            st = os.lstat(os.path.join(root, e.path))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == e.size:
            rows[e.name] = ((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode),
                            e.chunks)
    stat_cache.replace(rows)
    stat_cache.save()
