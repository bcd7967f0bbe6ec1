"""Push engine: snapshot a local tree into a store, sending only the chunks it lacks.

Algorithm:
 1. Read the store config (create it on the first push) and every ref with its manifest
    (manifests come from the local cache by id). Their chunk locations are the existence
    oracle: no per-chunk HEAD and no listing of packs, a constant number of requests.
 2. Walk the tree with the ignore rules. Files whose stat signature matches the stat cache
    reuse their chunk ids without being read (when those chunks are known to the store).
 3. Read the other files (one thread: reading small files does not scale with threads), cut
    and hash them; new chunks go to a window of compression threads, then into packs, and
    full packs go to a window of uploads.
 4. Write order: packs, then manifest, then log entry and ref. A crash anywhere leaves the
    refs naming complete snapshots; orphan packs are collected by ``gc``.
"""

from __future__ import annotations

import hashlib
import os
import time
from array import array
from collections import ChainMap
from collections.abc import Callable, Collection, Container, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from snapsync.concurrency import (
    Concurrency,
    Window,
    compress_window,
    packs_in_flight,
    shared_malloc_arena,
)
from snapsync.core.arena import Arena, ArenaPool
from snapsync.core.chunking import Chunker
from snapsync.core.codec import Codec
from snapsync.core.hashing import ID_SIZE, chunk_id
from snapsync.core.ignore import (
    IgnoreRules,
    default_ignore_digest,
    default_ignore_note,
    resolve_rules,
)
from snapsync.core.keyed import Keyring
from snapsync.core.manifest import FILE, SYMLINK, Location, Manifest
from snapsync.core.manifest_encode import encode_manifest_columns
from snapsync.engine.publish import git_facts_of, publish_snapshot
from snapsync.engine.push_plan import rules_key, tree_columns
from snapsync.engine.results import PushResult
from snapsync.errors import LocalFileError, UsageError
from snapsync.local.listing import Listing
from snapsync.local.statcache import TreeCache
from snapsync.local.tree import (
    default_cache_dir,
    own_dirs,
    read_file,
    read_small_into,
    summarize,
    walk,
)
from snapsync.progress import NullProgress, Progress, Warnings
from snapsync.repository import Repository, SnapshotInfo, StoreConfig
from snapsync.repository.journal import UploadJournal
from snapsync.repository.packer import PackWriter
from snapsync.store import Store, as_store, check_ref_name


def push(root: str | os.PathLike[str], url: str | Store, *,
         storage_options: dict[str, Any] | None = None,
         ref: str = "latest",
         message: str = "",
         ignore_file: str | os.PathLike[str] | None = None,
         use_default_ignore: bool = True,
         dry_run: bool = False,
         jobs: int | None = None,
         level: int = 3,
         pack_size: int | None = None,
         cache_dir: str | os.PathLike[str] | None = None,
         use_stat_cache: bool = True,
         skip_unreadable: bool = False,
         config: StoreConfig | None = None,
         progress: Progress | None = None,
         on_warning: Callable[[str], None] | None = None,
         only: Collection[str] | None = None,
         git_facts: dict[str, Any] | None = None) -> PushResult:
    """Snapshot ``root`` into the store at ``url`` and point ``ref`` at it.

    Args:
        root: the project folder.
        url: the store: a URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``...)
            or an open :class:`~snapsync.store.Store`.
        storage_options: passed to fsspec as they are (e.g. ``{"endpoint_url": ...}``).
        ref: the ref to update.
        message: free text stored with the snapshot.
        ignore_file: gitignore-style rules; default ``root/.prefectignore``, else Prefect's
            default template (unless ``use_default_ignore`` is off).
        dry_run: do everything but write to the store.
        jobs: requests in flight; CPU threads follow the core count.
        level: zstd level for new chunks.
        pack_size: target pack size in bytes (default: the store's config).
        cache_dir: where the stat and manifest caches live (default: user cache dir).
        use_stat_cache: trust unchanged stat signatures instead of re-reading files.
        skip_unreadable: warn about unreadable files and leave them out instead of failing.
        config: chunker and pack parameters for a store this push creates (benchmarks).
        progress: progress hooks; ``on_warning``: called with each warning as it happens.
        only: ship exactly these relative paths (``push --git``: git's file list); the
            ignore rules are then recorded for ``pull --delete`` but select nothing.
        git_facts: the ``git`` facts to record in the log entry (default: probe ``root``).

    Returns:
        A :class:`PushResult`.

    Raises:
        SnapsyncError: a subclass naming the file, URL or option at fault.
    """
    t0 = time.perf_counter()
    prog = progress or NullProgress()
    warnings = warn = Warnings(on_warning)

    check_ref_name(ref)
    rootp = Path(root).resolve()
    if not rootp.is_dir():
        raise LocalFileError(f"{rootp} is not a directory")
    conc = Concurrency.from_jobs(jobs)
    codec = Codec(level)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    store = as_store(url, storage_options)
    repo = Repository(store, cache_root, on_warning=warn)
    cfg = _open_config(repo, dry_run, config)
    target_pack = pack_size or cfg.pack_size
    if target_pack < 1 << 16:
        raise UsageError(f"pack size must be at least 64 KiB, got {target_pack}")

    # 1. The refs, then the walk.
    refs = repo.list_refs()
    parent = refs.get(ref)
    keyring = Keyring.from_env()
    rules, note = resolve_rules(rootp, ignore_file, use_default_ignore, lazy=True)
    if only is not None:  # e.g. git's file list: exactly these files, whatever rules say
        from snapsync.local.git import SelectedFiles

        rules.compile()  # recorded for pull --delete: an invalid pattern is still an error
        rules, note = SelectedFiles(only, rules, "git ls-files"), None  # type: ignore[assignment]
    prog.phase("scan", None, "files")
    skipped: list[str] = []  # --skip-unreadable: summarized in one warning, not one each
    exclude = own_dirs(cache_root, store.backend.local_root)
    stat_cache = TreeCache(_stat_cache_path(cache_root, rootp, store.url)
                           if use_stat_cache else None, warn)
    key = rules_key(rules, exclude)
    if isinstance(rules, IgnoreRules) and key != stat_cache.key:
        rules.compile()  # decided afresh: an invalid pattern is reported before the walk
    local = walk(rootp, rules, warn, exclude=exclude,
                 skip=skipped.append if skip_unreadable else None,
                 memo=stat_cache.memo(), reuse=bool(key) and key == stat_cache.key)
    prog.close()
    if skipped:
        warn(summarize("skipped unreadable entries (--skip-unreadable)", skipped))

    # The default template's note names what it dropped, once per (folder, store).
    noted = default_ignore_digest(rules) if note else ""
    notes = [default_ignore_note(note, rules)] if note and stat_cache.meta.get(
        "default_ignore") != noted else []
    fast = _unchanged_since_last_push(local, stat_cache, parent, keyring, dry_run)
    # push --git: a new commit of the same tree is logged again, so git:<commit> finds it.
    same_git = git_facts is None or (parent is not None and parent.git == git_facts)
    if fast is not None and same_git:
        if notes and not dry_run:  # the tree did not change, but what the template drops did
            stat_cache.meta["default_ignore"] = noted
            stat_cache.save_meta()
        fast.ref, fast.url, fast.notes, fast.warnings = ref, store.display_url, notes, warnings
        fast.requests = store.stats.as_dict()["requests"]
        fast.seconds = round(time.perf_counter() - t0, 3)
        return fast
    cols = local.columns()
    # The listing is kept for the stat cache's rows (saved per directory), but only its
    # names as bytes and its decisions: the columns hold the rest from here on.
    local.compact()
    stat_cache.dirs = {}  # the last push's rows: the columns took what they matched

    # 2. What the store already has, from the refs' manifests.
    manifests: dict[str, Manifest] = {}
    for info in refs.values():
        if info.snapshot not in manifests:
            try:
                manifests[info.snapshot] = repo.load_manifest(info.snapshot)
            except Exception as exc:  # a broken ref must not block publishing a good tree
                warn(f"ref {info.ref}: cannot use snapshot {info.snapshot} as a dedup source "
                     f"({exc})")
    known = repo.known_locations(list(manifests.values()))  # a view, not a copy
    # Tamper-evident mode: chunk MACs come from verified manifests or from reading the file.
    macs = keyring.macs_of(manifests.values(), warn) if keyring else {}
    # Packs a crashed push uploaded (this machine's journal) count as present.
    journal = None if dry_run else UploadJournal(cache_root, store.url)
    if journal is not None:
        for cid, loc in journal.resume(repo).items():
            known.setdefault(cid, loc)

    # Which files the stat cache vouches for (their chunks known to the store), which to read.
    n = len(cols)
    kinds, sigs, cached = cols.kinds, cols.sigs, cols.cached
    reuse = bytearray(n)
    total_read = 0
    for i in range(n):
        if kinds[i] != _FILE:
            continue
        ids = cached[i]
        if ids is not None and all(ids[j:j + ID_SIZE] in known
                                   for j in range(0, len(ids), ID_SIZE)) and (
                keyring is None or all(ids[j:j + ID_SIZE] in macs
                                       for j in range(0, len(ids), ID_SIZE))):
            reuse[i] = 1
        else:
            total_read += sigs[5 * i]

    # 3. Read, cut, hash; compress and pack new chunks; upload full packs. Every entry's
    # chunk ids go into one column, in entry order (reused or read).
    pending: set[bytes] = set()
    stats = {"files_read": 0, "bytes_read": 0, "bytes_new": 0}
    chunker = Chunker(cfg.chunker)
    nchunks = array("I", bytes(4 * n))
    all_ids = bytearray()
    unread_idx: set[int] = set()

    def compress(arena: Arena | None, batch: list[tuple[bytes, Any]]
                 ) -> tuple[Arena | None, list[tuple[bytes, bytes, Any, int]]]:
        pairs = codec.encode_many([data for _, data in batch], copy=False)
        return arena, [(cid, tag, payload, len(data))
                       for (cid, data), (tag, payload) in zip(batch, pairs, strict=True)]

    def on_chunk(cid: bytes, data: memoryview) -> None:
        if keyring is not None:
            macs[cid] = keyring.chunk_mac(data)

    prog.phase("read", total_read, "B")
    root_s, threshold = str(rootp), cfg.chunker.threshold
    # A batch is read into one arena: room for the batch limit and one more small file.
    pool = ArenaPool(max(2 * _BATCH_BYTES, threshold + 1))
    with shared_malloc_arena(), \
            ThreadPoolExecutor(conc.cpu, thread_name_prefix="snapsync-cpu") as cpu_ex, \
            PackWriter(store, target_pack, journal=journal, dry_run=dry_run,
                       in_flight=packs_in_flight(conc.io, store.local)) as writer:
        def packed(done: tuple[Arena | None, list[tuple[bytes, bytes, Any, int]]]) -> None:
            used, blobs = done
            payload: Any = None
            for cid, tag, payload, raw in blobs:
                writer.add(cid, payload, raw, tag)
                pending.discard(cid)  # the writer knows it now
            # The views of the arena and of zstd's output buffer go before the arena is
            # reused (and the output buffer is freed).
            del blobs, done, payload
            if used is not None:
                pool.put(used)  # its chunks are in the pack now

        packed_ids = writer.locations
        fresh = _Either(pending, packed_ids)
        compressing: Window[tuple[Arena | None, list[tuple[bytes, bytes, Any, int]]]] = \
            Window(cpu_ex, compress_window(conc.cpu), packed)
        arena = pool.get()
        batch: list[tuple[bytes, Any]] = []
        batch_bytes = 0

        def submit() -> None:
            nonlocal arena, batch, batch_bytes
            if batch:
                compressing.submit(compress, arena, batch)
                arena = pool.get()
            batch, batch_bytes = [], 0

        def take(cid: bytes, payload: Any, n: int) -> None:
            # A new chunk joins the batch for compression; a full batch goes out.
            nonlocal batch_bytes
            pending.add(cid)
            stats["bytes_new"] += n
            batch.append((cid, payload))
            batch_bytes += n
            if batch_bytes >= _BATCH_BYTES or len(batch) >= 256:
                submit()

        def add_fresh(cid: bytes, data: memoryview) -> None:
            # New chunks go out as they are read: a file larger than memory never sits in
            # memory whole (the windows block the reader when they are full). ``data`` is
            # only valid during the call: it is copied into the arena (or, when larger than
            # an arena, into its own bytes).
            n = len(data)
            if n > arena.capacity - arena.used:
                submit()
            take(cid, arena.put(data) if n <= arena.capacity else bytes(data), n)

        unread: list[str] = []
        try:
            for i in range(n):
                if kinds[i] != _FILE:
                    continue
                if reuse[i]:
                    ids = cached[i]
                    all_ids += ids  # type: ignore[operator]
                    nchunks[i] = len(ids) // ID_SIZE  # type: ignore[arg-type]
                    continue
                abs_path = os.path.join(root_s, os.fsdecode(cols.paths[i]))
                sig = tuple(sigs[5 * i:5 * i + 5])
                try:
                    small = None
                    if sig[0] <= threshold:
                        if sig[0] >= arena.capacity - arena.used:
                            submit()  # the new arena has room for any small file
                        small = read_small_into(abs_path, arena.room()[:sig[0] + 1])
                    if small is not None and small[1] == sig and small[0] == sig[0]:
                        # The common case, inlined: one chunk, unchanged since the walk,
                        # read into the arena (kept there only when it is new).
                        size, after = small
                        got: tuple[bytes, ...] = ()
                        if size:
                            data = arena.view[arena.used:arena.used + size]
                            cid = chunk_id(data)
                            got = (cid,)
                            if keyring is not None:
                                on_chunk(cid, data)
                            if cid not in known and cid not in pending and \
                                    cid not in packed_ids:
                                take(cid, arena.keep(size), size)
                            del data
                    else:  # large, or changed since the walk: read until it holds still
                        got, after, _ = read_file(abs_path, sig, chunker, known, fresh,
                                                   on_chunk, add_fresh)
                except LocalFileError as exc:
                    if skip_unreadable:
                        unread.append(str(exc))
                        unread_idx.add(i)
                        continue
                    raise
                for c in got:
                    all_ids += c
                nchunks[i] = len(got)
                sigs[5 * i:5 * i + 5] = array("q", after)  # the stat cache saves these
                stats["files_read"] += 1
                stats["bytes_read"] += after[0]
                prog.advance(after[0])
            submit()
            compressing.drain()
            new_locs = writer.finish()
        except BaseException:
            compressing.cancel()
            raise
        finally:
            # The read buffers go before the manifest is built (push's other peak).
            batch, arena = [], None  # type: ignore[assignment]
            pool.clear()
            chunker.release()
    prog.close()
    stats["packs"], stats["uploaded"] = writer.packs, writer.bytes
    stats["pack_bytes"] = writer.bytes  # of what is uploaded: packs; the rest is metadata
    existed, n_new = writer.existed, len(new_locs)
    del packed_ids, fresh
    if unread:
        warn(summarize("skipped unreadable files (--skip-unreadable)", unread))

    # 4. Manifest, then ref.
    tree = tree_columns(cols, nchunks, all_ids, unread_idx)
    # The stat cache's rows are packed now, so the walk's listing and columns can go before
    # the manifest is built (push's peak at 100k files); they are written once it published.
    rows = None if dry_run else stat_cache.rows_of(key, local, cols, nchunks, all_ids,
                                                   unread_idx)
    del local, cols, kinds, sigs, cached, all_ids
    try:
        # No merged copy of the two maps: a first push has nothing known, a later one few new.
        locations: Mapping[bytes, Location] = ChainMap(new_locs, known) if known else new_locs
        info_section = {"ignore": rules.patterns, "ignore_source": rules.source,
                        "chunker": cfg.chunker.to_dict()}
        if keyring is not None:
            info_section["auth"] = keyring.sign(tree, locations, info_section, macs)
        sid, raw_manifest, distinct, packs = encode_manifest_columns(tree, locations, info_section)
        # The chunk locations (the writer's index, ~13 MB at 100k files) are in the
        # manifest now: gone before it is compressed and stored.
        del locations, new_locs, known
        writer = None  # type: ignore[assignment]  # the closures' cell: the last reference
        # With a key, an unsigned manifest of the same tree is replaced by a signed one.
        resign = keyring is not None and not keyring.signed(manifests.get(sid))
        unchanged = parent is not None and parent.snapshot == sid and not resign and same_git
        kind_count = {k: tree.kinds.count(k) for k in (b"f", b"d", b"l")}
        totals = {
            "files": kind_count[b"f"],
            "dirs": kind_count[b"d"],
            "symlinks": kind_count[b"l"],
            "bytes": sum(tree.sizes),
        }
        del tree  # its columns are in the manifest's bytes
        parent_id = parent.snapshot if parent else None
        attempts = 0
        if not dry_run and not unchanged:
            needs = set(packs)  # the packs it names
            published = publish_snapshot(repo, ref, sid, raw_manifest, needs, existed,
                                 manifests.get(sid), resign, keyring, stats, totals, message,
                                 git_facts_of(rootp) if git_facts is None else git_facts,
                                 git_facts is not None)
            if published is not None:
                attempts = published.attempts
            if published is None or published.same:
                unchanged = True  # the ref names this tree already (another push put it there)
            else:
                parent_id = published.info.parent
        if journal is not None:
            journal.forget()  # the ref now names what the journal kept alive
        if not dry_run:
            stat_cache.meta = {"snapshot": sid, "default_ignore": noted, "totals": totals,
                               "chunks": distinct}
            stat_cache.save_rows_of(rows)
    finally:
        if rows is not None:
            rows.discard()  # written by now, or the push failed: never left behind

    req = store.stats.as_dict()
    sent = req["bytes_sent"] if not dry_run else stats["uploaded"]
    return PushResult(
        snapshot_id=sid, ref=ref, url=store.display_url,
        parent_id=parent_id, unchanged=unchanged, dry_run=dry_run,
        files=totals["files"], dirs=totals["dirs"], symlinks=totals["symlinks"],
        bytes_scanned=totals["bytes"], files_read=stats["files_read"],
        bytes_read=stats["bytes_read"], chunks=distinct, chunks_new=n_new,
        chunks_reused=distinct - n_new, bytes_new=stats["bytes_new"],
        bytes_uploaded=sent, bytes_packs=stats["pack_bytes"],
        bytes_metadata=max(0, sent - stats["pack_bytes"]),
        packs_uploaded=stats["packs"], ref_attempts=attempts, requests=req["requests"],
        seconds=round(time.perf_counter() - t0, 3), warnings=warnings, notes=notes)


def _unchanged_since_last_push(local: Listing, stat_cache: TreeCache,
                               parent: SnapshotInfo | None, keyring: Keyring | None,
                               dry_run: bool) -> PushResult | None:
    """The no-op fast path: nothing changed since this folder's last push to this ref.

    True when the ref still names the snapshot the stat cache recorded and the walk found
    every directory as recorded (same names and decisions, every stat signature equal and
    none racy). Then no manifest is loaded or built, and no object is made per file: a no-op
    push costs the walk plus a few small requests.
    """
    meta = stat_cache.meta
    totals = meta.get("totals")
    if (parent is None or keyring is not None or not local.unchanged
            or meta.get("snapshot") != parent.snapshot or not isinstance(totals, dict)
            or not all(type(totals.get(k)) is int for k in ("files", "dirs", "symlinks",
                                                            "bytes"))
            or type(meta.get("chunks")) is not int):
        return None
    return PushResult(
        snapshot_id=parent.snapshot, ref=parent.ref, url="", parent_id=parent.parent,
        unchanged=True, dry_run=dry_run, files=totals["files"], dirs=totals["dirs"],
        symlinks=totals["symlinks"], bytes_scanned=totals["bytes"], chunks=meta["chunks"],
        chunks_reused=meta["chunks"])


def _open_config(repo: Repository, dry_run: bool, want: StoreConfig | None) -> StoreConfig:
    if dry_run:
        from snapsync.errors import NotAStoreError

        try:
            return repo.open(create=False)
        except NotAStoreError:
            return want or StoreConfig()
    return repo.open(create=True, want=want)


class _Either:
    """Membership in either of two containers (push: chunks in flight, or already packed)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Container[bytes], b: Container[bytes]) -> None:
        self.a, self.b = a, b

    def __contains__(self, item: object) -> bool:
        return item in self.a or item in self.b


_FILE, _LINK = ord(FILE), ord(SYMLINK)
_BATCH_BYTES = 1 << 20  # new chunks handed to a compression thread at once


def _stat_cache_path(cache_root: Path, root: Path, url: str) -> Path:
    key = hashlib.sha256(f"{root}\0{url}".encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_root / "stat" / f"{key}.msgpack"
