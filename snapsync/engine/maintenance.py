"""Maintenance engines: ``check`` (is every snapshot complete?) and ``gc`` (drop and delete).

Neither prints; the CLI subcommands registered by :func:`register` render their reports.

GC without a global lock (docs/format.md, "GC and concurrency"). A push learns what the store
holds from the manifests of the ref heads it read when it started, and uploads packs before
the manifest that names them. So gc keeps, besides what retention keeps:

* every ref head, re-read right before anything is deleted;
* every snapshot that was a ref head less than ``grace`` ago (its log entry, or the next newer
  one of the same ref, is younger than ``grace``), and every manifest younger than ``grace``;
* every pack younger than ``grace`` (packs of pushes still running) and every pack a kept
  manifest names, including manifests that appeared while gc ran.

Packs that are mostly dead are repacked (:func:`_repack`): their live chunks are copied into
new packs and the kept manifests rewritten at the same key; the old packs get a ``superseded``
marker and are deleted by a later run, once the marker is older than ``grace`` and no ref head
still records the manifest version that named them (a cached copy of it may still be trusted).

It is safe as long as no push runs longer than ``grace`` (default 24 h) and clocks are within
``grace`` of the store's clock.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import Location, Manifest, decode_manifest, encode_manifest
from snapsync.core.pack import PackBuilder, parse_pack
from snapsync.core.plan import check_paths
from snapsync.errors import FormatError, IntegrityError, NotFoundError, SnapsyncError, UsageError
from snapsync.repository import Repository, SnapshotInfo
from snapsync.repository.config import manifest_limit
from snapsync.store.store import Layout, Store

EXIT_PROBLEMS = 10
DEFAULT_GRACE = 24 * 3600.0
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
# Ref names may be hierarchical (feature/x): the ref is everything up to the last '/'.
_LOG_KEY = re.compile(r"^logs/(?P<ref>.+)/(?P<ns>\d{1,20})-(?P<sid>[0-9a-f]{32})\.json$")
_MANIFEST_KEY = re.compile(r"^manifests/[0-9a-f]{2}/(?P<sid>[0-9a-f]{32})\.mf$")
_PACK_KEY = re.compile(r"^packs/[0-9a-f]{2}/(?P<pid>[0-9a-f]{32})\.pack$")
_MARKER_KEY = re.compile(r"^superseded/[0-9a-f]{2}/(?P<pid>[0-9a-f]{32})\.json$")
DEFAULT_REPACK_BELOW = 0.5
REPACK_SINGLE_BELOW = 0.1  # one lone candidate is repacked only when it is this empty
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w``, ``1y`` or combinations (``1d12h``) to seconds."""
    t = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdwy])", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        if re.fullmatch(r"\d+(?:\.\d+)?", t):
            return float(t)
        raise UsageError(f"invalid duration {text!r}: use e.g. 90s, 30m, 12h, 7d, 2w")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _mtime(info: dict[str, Any]) -> float | None:
    """An object's modification time (seconds since the epoch) from an fsspec info dict."""
    for key in ("LastModified", "last_modified", "mtime", "updated", "created",
                "creation_time", "timeCreated"):
        v = info.get(key)
        if v is None or v == "":
            continue
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


@dataclass
class _LogEntry:
    ref: str
    time_ns: int
    sid: str
    key: str


@dataclass
class _Listing:
    """One look at the store: refs, log entries, manifests and packs (with mtimes)."""

    refs: dict[str, SnapshotInfo]
    bad_refs: dict[str, str]
    logs: list[_LogEntry]
    manifests: dict[str, float | None]
    packs: dict[bytes, tuple[int, float | None]]
    stray: list[str]
    markers: dict[bytes, float | None] = field(default_factory=dict)


def _read_refs(store: Store) -> tuple[dict[str, SnapshotInfo], dict[str, str]]:
    keys = [k for k in store.list(Layout.REFS + "/") if k.endswith(".json")]
    refs: dict[str, SnapshotInfo] = {}
    bad: dict[str, str] = {}
    for key, raw in store.get_many(keys).items():
        if raw is None:
            continue  # deleted since the listing
        name = key[len(Layout.REFS) + 1:-len(".json")]
        try:
            refs[name] = SnapshotInfo.from_json(raw, store.where(key))
        except FormatError as exc:
            bad[name] = str(exc)
    return refs, bad


def _list(store: Store, with_refs: bool = True) -> _Listing:
    store.invalidate()
    stray: list[str] = []
    logs: list[_LogEntry] = []
    for key in store.list(Layout.LOGS + "/"):
        m = _LOG_KEY.match(key)
        if m:
            logs.append(_LogEntry(m["ref"], int(m["ns"]), m["sid"], key))
        else:
            stray.append(key)
    manifests: dict[str, float | None] = {}
    for key, info in store.list(Layout.MANIFESTS + "/").items():
        m = _MANIFEST_KEY.match(key)
        if m:
            manifests[m["sid"]] = _mtime(info)
        else:
            stray.append(key)
    packs: dict[bytes, tuple[int, float | None]] = {}
    for key, info in store.list(Layout.PACKS + "/").items():
        m = _PACK_KEY.match(key)
        if m:
            packs[bytes.fromhex(m["pid"])] = (int(info.get("size") or 0), _mtime(info))
        else:
            stray.append(key)
    markers: dict[bytes, float | None] = {}
    for key, info in store.list(Layout.SUPERSEDED + "/").items():
        m = _MARKER_KEY.match(key)
        if m:
            markers[bytes.fromhex(m["pid"])] = _mtime(info)
        else:
            stray.append(key)
    refs, bad = _read_refs(store) if with_refs else ({}, {})
    return _Listing(refs, bad, logs, manifests, packs, stray, markers)


def _prefetch(repo: Repository, sids: Iterable[str]) -> dict[str, bytes | None]:
    """Manifest objects by id, fetched concurrently (``None``: missing)."""
    keys = [Layout.manifest(s) for s in sorted(set(sids))]
    out: dict[str, bytes | None] = {}
    for i in range(0, len(keys), 64):
        for key, blob in repo.store.get_many(keys[i:i + 64]).items():
            out[key.rsplit("/", 1)[-1][:-3]] = blob
    return out


def _load(repo: Repository, sid: str, blobs: dict[str, bytes | None] | None = None) -> Manifest:
    """Fetch and decode a manifest from the store itself (never the local cache)."""
    where = repo.store.where(Layout.manifest(sid))
    if blobs is not None and sid in blobs:
        blob = blobs.pop(sid)
        if blob is None:
            raise NotFoundError(f"{where}: not found")
    else:
        blob = repo.store.get(Layout.manifest(sid))
    return decode_manifest(repo.codec.decompress_blob(blob, where, manifest_limit(blob)), sid,
                           where)


# =============================================================================== check


@dataclass
class CheckReport:
    """What ``check`` found. ``problems`` is empty when the store is healthy."""

    url: str
    read_data: bool
    refs: int = 0
    log_entries: int = 0
    snapshots: int = 0
    manifests: int = 0
    packs: int = 0
    packs_referenced: int = 0
    chunks: int = 0
    packs_read: int = 0
    chunks_verified: int = 0
    bytes_read: int = 0
    unreferenced_packs: int = 0
    unreferenced_manifests: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def check(url: str, read_data: bool = False, *,
          storage_options: dict[str, Any] | None = None,
          store: Store | None = None) -> CheckReport:
    """Check that every ref names a complete snapshot and every manifest's chunks exist.

    Follows refs and log entries to manifests (decoded, id-checked, paths checked), manifests
    to packs (present, large enough for every chunk location). With ``read_data`` every
    referenced pack is downloaded: its id, trailer and every chunk (decoded and hashed) are
    verified. With ``SNAPSYNC_KEY`` set, manifest signatures and chunk MACs are checked too.
    Packs and manifests nothing refers to are garbage for ``gc``, reported as notes.
    """
    from snapsync.core.keyed import Keyring

    t0 = time.perf_counter()
    store = store or Store(url, storage_options)
    repo = Repository(store, None)
    repo.open(create=False)
    rep = CheckReport(url=store.display_url, read_data=read_data)
    keyring = Keyring.from_env()
    problems = rep.problems

    listing = _list(store)
    rep.refs, rep.log_entries = len(listing.refs), len(listing.logs)
    rep.manifests, rep.packs = len(listing.manifests), len(listing.packs)
    for name, err in listing.bad_refs.items():
        problems.append(f"ref {name}: {err}")
    for key in listing.stray:
        rep.notes.append(f"unexpected object {store.where(key)}")

    # Roots: ref heads and log entries, re-read when their manifest is missing (a concurrent
    # gc may have moved things between our listing and our reads).
    wanted: dict[str, str] = {}
    for name, info in listing.refs.items():
        wanted.setdefault(info.snapshot, f"ref {name}")
    for e in listing.logs:
        wanted.setdefault(e.sid, f"log entry {e.key}")
    manifests: dict[str, Manifest] = {}
    orphans = sorted(set(listing.manifests) - set(wanted))
    blobs = _prefetch(repo, [*wanted, *orphans])

    def load(sid: str, why: str) -> None:
        try:
            m = _load(repo, sid, blobs)
        except NotFoundError:
            if _still_referenced(store, sid, why):
                problems.append(f"{why} names snapshot {sid}, whose manifest is missing")
            return
        except FormatError as exc:
            problems.append(f"snapshot {sid} ({why}): {exc}")
            return
        try:
            check_paths(m.entries, case_insensitive=False, windows=False)
        except FormatError as exc:
            problems.append(f"snapshot {sid}: {exc}")
        if keyring is not None:
            try:
                keyring.verify_manifest(m)
            except IntegrityError as exc:
                problems.append(f"snapshot {sid}: {exc}")
        manifests[sid] = m

    for sid, why in sorted(wanted.items()):
        load(sid, why)
    rep.unreferenced_manifests = len(orphans)
    for sid in orphans:
        load(sid, "unreferenced manifest")
    rep.snapshots = len(manifests)

    # Manifests to packs: every location must lie inside an existing pack.
    used: dict[bytes, dict[bytes, Location]] = {}
    needed_by: dict[bytes, str] = {}
    for sid, m in manifests.items():
        for cid in m.chunk_ids():
            loc = m.locations[cid]
            used.setdefault(loc.pack, {})[cid] = loc
            needed_by.setdefault(loc.pack, sid)
    rep.packs_referenced = len(used)
    rep.chunks = sum(len(v) for v in used.values())
    missing = [p for p in used if p not in listing.packs]
    if missing:  # confirm with a fresh listing before blaming the store
        store.invalidate()
        again = {bytes.fromhex(m["pid"]): (int(i.get("size") or 0), _mtime(i))
                 for k, i in store.list(Layout.PACKS + "/").items()
                 if (m := _PACK_KEY.match(k))}
        listing.packs.update(again)
    for pid, locs in sorted(used.items()):
        got = listing.packs.get(pid)
        if got is None:
            problems.append(f"pack {pid.hex()} is missing; snapshot {needed_by[pid]} needs "
                            f"{len(locs)} chunks from it")
            continue
        size = got[0]
        for cid, loc in locs.items():
            if loc.offset + loc.length > size - 12:
                problems.append(f"chunk {cid.hex()} lies outside pack {pid.hex()} "
                                f"({loc.offset}+{loc.length} > {size} bytes)")
                break
    rep.unreferenced_packs = len(set(listing.packs) - set(used))
    if rep.unreferenced_packs or orphans:
        rep.notes.append(f"{rep.unreferenced_packs} packs and {len(orphans)} manifests are not "
                         "referenced by any ref or log entry (left by interrupted pushes or "
                         "dropped snapshots; `snapsync gc` deletes them)")

    if read_data:
        _read_data(store, used, listing, rep, keyring, manifests)
    rep.requests = store.stats.as_dict()["requests"]
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _still_referenced(store: Store, sid: str, why: str) -> bool:
    """After a manifest turned out missing: is it still named by a ref or a log entry?"""
    store.invalidate()
    refs, _ = _read_refs(store)
    if any(i.snapshot == sid for i in refs.values()):
        return True
    return any(k.endswith(f"-{sid}.json") for k in store.list(Layout.LOGS + "/"))


def _read_data(store: Store, used: dict[bytes, dict[bytes, Location]], listing: _Listing,
               rep: CheckReport, keyring: Any, manifests: dict[str, Manifest]) -> None:
    codec = Codec()
    macs: dict[bytes, bytes] = {}
    if keyring is not None:
        for m in manifests.values():
            try:
                macs.update(keyring.verify_manifest(m))
            except IntegrityError:
                pass  # already reported
    pids = [p for p in sorted(used) if p in listing.packs]
    for i in range(0, len(pids), 4):  # four packs (<= 4 x pack size) in memory at a time
        batch = pids[i:i + 4]
        got = store.get_many([Layout.pack(p) for p in batch], batch_size=4)
        for pid in batch:
            key = Layout.pack(pid)
            data = got.get(key)
            if data is None:
                rep.problems.append(f"pack {pid.hex()} vanished while it was checked")
                continue
            rep.packs_read += 1
            rep.bytes_read += len(data)
            if chunk_id(data) != pid:
                rep.problems.append(f"pack {pid.hex()}: content does not hash to its id")
            try:
                trailer = parse_pack(data, store.where(key))
            except FormatError as exc:
                rep.problems.append(str(exc))
                trailer = {}
            for cid, loc in used[pid].items():
                t = trailer.get(cid)
                if trailer and (t is None or (t.offset, t.length, t.raw_size) !=
                                (loc.offset, loc.length, loc.raw_size)):
                    rep.problems.append(f"chunk {cid.hex()}: manifest location disagrees with "
                                        f"the trailer of pack {pid.hex()}")
                try:
                    raw = codec.decode(data[loc.offset:loc.offset + loc.length], loc.raw_size,
                                       cid)
                    if keyring is not None and cid in macs:
                        keyring.check_chunk(cid, raw, macs[cid])
                    rep.chunks_verified += 1
                except IntegrityError as exc:
                    rep.problems.append(f"pack {pid.hex()}: {exc}")


# =============================================================================== gc


@dataclass
class GcReport:
    """What ``gc`` kept, dropped and deleted (or would, with ``dry_run``)."""

    url: str
    dry_run: bool
    keep_last: int
    keep_within: float | None
    grace: float
    snapshots_kept: list[str] = field(default_factory=list)
    snapshots_dropped: list[str] = field(default_factory=list)
    log_entries_deleted: int = 0
    manifests_deleted: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0
    packs_kept: int = 0
    packs_young: int = 0
    packs_repacked: int = 0
    bytes_repacked: int = 0
    packs_superseded: int = 0
    packs_written: int = 0
    manifests_rewritten: int = 0
    packs_superseded_kept: int = 0
    markers_deleted: int = 0
    notes: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _young(t: float | None, now: float, grace: float) -> bool:
    # Unknown age counts as young: never delete what we cannot date.
    return t is None or now - t < grace


def _retained(listing: _Listing, keep_last: int, keep_within: float | None, grace: float,
              now: float) -> set[str]:
    """Snapshot ids that retention, ref heads or the grace period keep."""
    keep = {info.snapshot for info in listing.refs.values()}
    by_ref: dict[str, list[_LogEntry]] = {}
    for e in listing.logs:
        by_ref.setdefault(e.ref, []).append(e)
    for entries in by_ref.values():
        entries.sort(key=lambda e: e.time_ns, reverse=True)
        distinct: list[str] = []
        newer_ns: int | None = None  # when the entry above replaced this one as head
        for e in entries:
            t = e.time_ns / 1e9
            if e.sid not in distinct:
                distinct.append(e.sid)
            if e.sid in distinct[:keep_last]:
                keep.add(e.sid)
            if keep_within is not None and now - t < keep_within:
                keep.add(e.sid)
            # Head less than `grace` ago: a running push may reuse its chunks.
            if newer_ns is None or _young(newer_ns / 1e9, now, grace) or _young(t, now, grace):
                keep.add(e.sid)
            newer_ns = e.time_ns
    for sid, t in listing.manifests.items():
        if _young(t, now, grace):
            keep.add(sid)  # a push may be about to write its log entry and ref
    return keep


def _read_markers(store: Store, listed: dict[bytes, float | None]) -> dict[bytes, dict[str, Any]]:
    """The superseded markers' contents by pack id (unreadable ones are left out)."""
    out: dict[bytes, dict[str, Any]] = {}
    keys = {Layout.superseded(p): p for p in listed}
    for key, raw in store.get_many(sorted(keys)).items():
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("snapshots") or {}, dict):
            out[keys[key]] = doc
    return out


def _repack(repo: Repository, rep: GcReport, manifests: dict[str, Manifest],
            packs: dict[bytes, tuple[int, float | None]], digests: dict[str, str], now: float,
            grace: float, below: float, dry_run: bool) -> None:
    """Copy the live chunks of mostly dead packs into new packs; rewrite the kept manifests.

    Candidates: packs older than ``grace`` whose live bytes (the stored lengths of the chunks
    kept manifests use) are below ``below`` of their size, none of whose users is signed
    (the signature covers chunk locations, and gc holds no key). Repacking is worth a
    request only when it merges at least two candidates, or frees a pack at least 90% dead.
    Order: new packs, then a ``superseded`` marker per old pack (naming the rewritten
    snapshots and the manifest digests they replace), then the manifests at the same keys.
    The old packs stay: a later gc deletes them once unreferenced and the marker rules allow
    (see :func:`gc` and docs/format.md §8).
    """
    live: dict[bytes, dict[bytes, Location]] = {}
    users: dict[bytes, set[str]] = {}
    conflicted: set[bytes] = set()
    for sid, m in manifests.items():
        for cid in m.chunk_ids():
            loc = m.locations[cid]
            seen = live.setdefault(loc.pack, {}).setdefault(cid, loc)
            if seen != loc:
                conflicted.add(loc.pack)
            users.setdefault(loc.pack, set()).add(sid)
    cands: list[tuple[bytes, int, int]] = []
    signed: list[bytes] = []
    for pid, locs in sorted(live.items()):
        got = packs.get(pid)
        if got is None or pid in conflicted or got[0] <= 0 or _young(got[1], now, grace):
            continue
        live_bytes = sum(loc.length for loc in locs.values())
        if live_bytes >= below * got[0]:
            continue
        if any("auth" in manifests[s].info for s in users[pid]):
            signed.append(pid)
            continue
        cands.append((pid, live_bytes, got[0]))
    if signed:
        rep.notes.append(f"{len(signed)} mostly dead packs are used by signed snapshots and "
                         "were not repacked (their signatures cover chunk locations)")
    if not cands or (len(cands) == 1 and cands[0][1] >= REPACK_SINGLE_BELOW * cands[0][2]):
        return
    if dry_run:
        rep.packs_repacked = rep.packs_superseded = len(cands)
        rep.bytes_repacked = sum(c[1] for c in cands)
        rep.manifests_rewritten = len(set().union(*(users[c[0]] for c in cands)))
        return

    store, codec = repo.store, Codec()
    pack_size = repo.config.pack_size if repo.config else 16 << 20
    moved: dict[bytes, Location] = {}  # chunk id -> its copy in a new pack
    builder = PackBuilder()
    queued: set[bytes] = set()

    def seal(b: PackBuilder) -> None:
        pid, data, locs = b.finish()
        store.put(Layout.pack(pid), data)
        moved.update(locs)
        rep.packs_written += 1

    done: list[bytes] = []
    for pid, _, _ in cands:
        key = Layout.pack(pid)
        try:
            data = store.get(key)
            if chunk_id(data) != pid:
                raise IntegrityError(f"{store.where(key)}: content does not hash to its id")
            trailer = parse_pack(data, store.where(key))
            blobs = []
            for cid, loc in sorted(live[pid].items(), key=lambda kv: kv[1].offset):
                t = trailer.get(cid)
                if t is None or (t.offset, t.length, t.raw_size) != (loc.offset, loc.length,
                                                                      loc.raw_size):
                    raise FormatError(f"chunk {cid.hex()}: manifest location disagrees with "
                                      f"the trailer of {store.where(key)}")
                blob = data[loc.offset:loc.offset + loc.length]
                codec.decode(blob, loc.raw_size, cid)  # copy only what proves to be the chunk
                blobs.append((cid, blob, loc.raw_size))
        except (NotFoundError, FormatError) as exc:
            rep.notes.append(f"pack {pid.hex()} not repacked: {exc} (run `snapsync check`)")
            continue
        del data
        for cid, blob, raw in blobs:
            if cid in queued:
                continue  # the same chunk in two candidates: one copy
            queued.add(cid)
            builder.add(cid, blob, raw)
            rep.bytes_repacked += len(blob)
            if builder.size >= pack_size:
                seal(builder)
                builder = PackBuilder()
        done.append(pid)
    if len(builder):
        seal(builder)
    if not done:
        return
    gone = set(done)
    rewrite = sorted(set().union(*(users[p] for p in done)))
    when = time.time()
    for pid in done:  # markers before manifests: a crash leaves the old packs referenced
        snaps = {s: digests.get(s, "") for s in sorted(users[pid])}
        # A pack repacked before (and named again by a push meanwhile) keeps what its old
        # marker knew: those manifest versions may still be cached somewhere.
        prev = _read_markers(store, {pid: None}).get(pid, {}).get("snapshots") or {}
        snaps.update({s: d for s, d in prev.items() if s not in snaps})
        doc = {"time": datetime.fromtimestamp(when).astimezone().isoformat(),
               "time_ns": time.time_ns(), "snapshots": snaps}
        store.put(Layout.superseded(pid), json.dumps(doc, sort_keys=True).encode())
    for sid in rewrite:
        m = manifests[sid]
        locs = {c: moved[c] if m.locations[c].pack in gone else m.locations[c]
                for c in m.chunk_ids()}
        new_sid, raw = encode_manifest(m.entries, locs, m.info)
        if new_sid != sid:
            raise AssertionError(f"repacking changed snapshot id {sid} to {new_sid}")
        repo.save_manifest(sid, raw)
    rep.packs_repacked = rep.packs_superseded = len(done)
    rep.manifests_rewritten = len(rewrite)


def gc(url: str, keep_last: int, keep_within: float | None = None, dry_run: bool = False,
       grace: float = DEFAULT_GRACE, *, repack: bool = True,
       repack_below: float = DEFAULT_REPACK_BELOW,
       storage_options: dict[str, Any] | None = None, store: Store | None = None,
       on_progress: Callable[[str], None] | None = None) -> GcReport:
    """Drop snapshots outside retention and delete what no kept snapshot needs.

    Args:
        url: the store.
        keep_last: per ref, keep the newest N distinct snapshots of its log (at least 1).
        keep_within: per ref, also keep snapshots logged less than this many seconds ago.
        dry_run: report what would be deleted, delete nothing.
        grace: seconds; nothing younger is deleted and snapshots that were ref heads less
            than this long ago are kept (see the module docstring for why).
        repack: copy the live chunks of mostly dead packs into new packs and point the kept
            manifests at them (:func:`_repack`); the old packs go in a later run.
        repack_below: a pack is mostly dead when its live bytes are below this fraction.
        storage_options: passed to fsspec. ``store``: an open Store (tests).
        on_progress: called with a short line per phase.

    Returns:
        A :class:`GcReport`.
    """
    if keep_last < 1:
        raise UsageError(f"--keep-last must be at least 1, got {keep_last}")
    if grace < 0 or (keep_within is not None and keep_within < 0):
        raise UsageError("--grace and --keep-within must not be negative")
    if not 0 <= repack_below <= 1:
        raise UsageError(f"--repack-below must be between 0 and 1, got {repack_below}")
    t0 = time.perf_counter()
    say = on_progress or (lambda _m: None)
    store = store or Store(url, storage_options)
    repo = Repository(store, None)
    repo.open(create=False)
    rep = GcReport(url=store.display_url, dry_run=dry_run, keep_last=keep_last,
                   keep_within=keep_within, grace=grace)
    now = time.time()

    say("listing the store")
    listing = _list(store)
    if listing.bad_refs:
        # A ref we cannot read might name anything: refuse rather than guess.
        raise FormatError("gc stopped: unreadable refs: " + "; ".join(listing.bad_refs.values()))
    keep = _retained(listing, keep_last, keep_within, grace, now)
    known = set(listing.manifests) | {e.sid for e in listing.logs}
    drop = sorted(known - keep)

    # Live packs: everything the kept manifests name. A kept manifest we cannot read stops
    # gc: its packs are unknown, so nothing can be called dead.
    say(f"reading {len(keep)} kept manifests")
    live: set[bytes] = set()
    loaded: set[str] = set()
    kept_manifests: dict[str, Manifest] = {}
    digests: dict[str, str] = {}  # sid -> xxh3 of the stored manifest object gc read

    def mark(sids: Iterable[str]) -> None:
        todo = sorted(set(sids) - loaded)
        blobs = _prefetch(repo, todo)
        for sid in todo:
            if blobs.get(sid) is not None:
                digests[sid] = chunk_id(blobs[sid]).hex()  # type: ignore[arg-type]
            try:
                m = _load(repo, sid, blobs)
            except NotFoundError:
                if sid in listing.manifests or any(i.snapshot == sid
                                                   for i in listing.refs.values()):
                    raise SnapsyncError(f"gc stopped: kept snapshot {sid} has no manifest "
                                        "(run `snapsync check`)") from None
                loaded.add(sid)
                continue
            loaded.add(sid)
            kept_manifests[sid] = m
            live.update(loc.pack for loc in m.locations.values())

    mark(keep)

    # Re-check the roots right before deleting: refs and manifests that appeared meanwhile
    # are kept, and their packs are live.
    say("re-reading refs")
    again = _list(store)
    if again.bad_refs:
        raise FormatError("gc stopped: unreadable refs: " + "; ".join(again.bad_refs.values()))
    new_roots = {i.snapshot for i in again.refs.values()} | (set(again.manifests) -
                                                             set(listing.manifests))
    new_roots |= _retained(again, keep_last, keep_within, grace, time.time()) & set(drop)
    keep |= new_roots
    mark(new_roots)
    drop = [s for s in drop if s not in keep]

    # Superseded packs (repacked by an earlier run) wait for their marker to age past
    # `grace`, and for every ref head whose snapshot gc rewrote to record the rewritten
    # manifest: until a push moves such a ref, clients may trust a cached copy of the old
    # manifest (its digest still matches the ref), and that copy names the old packs.
    markers = _read_markers(store, again.markers)
    replaced: dict[str, set[str]] = {}  # sid -> digests of manifest versions gc replaced
    for doc in markers.values():
        for sid, old in (doc.get("snapshots") or {}).items():
            replaced.setdefault(sid, set()).add(str(old))
    stale: set[str] = set()  # snapshots some ref head names with another manifest digest
    unexplained: list[str] = []
    for name, info in sorted(again.refs.items()):
        if info.manifest == digests.get(info.snapshot):
            continue
        stale.add(info.snapshot)
        if info.manifest and info.manifest not in replaced.get(info.snapshot, set()):
            unexplained.append(name)
    if unexplained:
        # A ref records a manifest version the store no longer holds, and no repack explains
        # it (two pushes of one tree raced): clients may trust that version from their
        # caches, and its packs are unknown. Delete no unreferenced pack until the ref moves.
        rep.notes.append(f"refs {', '.join(unexplained)} record a manifest digest that differs "
                         "from the stored manifest; no unreferenced pack is deleted until "
                         "they are pushed again")

    dead_packs = []
    for pid, (size, t) in sorted(listing.packs.items()):
        if pid in live:
            rep.packs_kept += 1
        elif _young(t, now, grace):
            rep.packs_young += 1
        elif pid in again.markers and (
                _young(again.markers[pid], now, grace)
                or stale & set((markers.get(pid) or {}).get("snapshots") or {})
                or pid not in markers):
            rep.packs_superseded_kept += 1
        elif unexplained:
            rep.packs_kept += 1
        elif pid in again.packs:
            dead_packs.append((pid, size))

    if repack:
        say("looking for mostly dead packs")
        _repack(repo, rep, {s: kept_manifests[s] for s in sorted(keep) if s in kept_manifests},
                again.packs, digests, now, grace, repack_below, dry_run)
    rep.snapshots_kept = sorted(keep & known)
    rep.snapshots_dropped = drop

    # Delete in the reverse of the push's write order: log entries, manifests, packs. A gc
    # stopped half-way leaves only unreferenced objects behind.
    drop_set = set(drop)
    dead_logs = [e.key for e in again.logs if e.sid in drop_set]
    dead_manifests = [s for s in drop if s in again.manifests
                      and not _young(again.manifests[s], now, grace)]
    rep.log_entries_deleted = len(dead_logs)
    rep.manifests_deleted = len(dead_manifests)
    rep.packs_deleted = len(dead_packs)
    rep.bytes_freed = sum(s for _, s in dead_packs)
    if not dry_run:
        say(f"deleting {len(dead_logs)} log entries, {len(dead_manifests)} manifests, "
            f"{len(dead_packs)} packs")
        store.delete(dead_logs)
        # A push re-publishing a dropped tree rewrites the same manifest and pack keys (ids
        # are content hashes): look once more right before deleting and spare rewritten ones.
        store.invalidate()
        fresh_m = {m["sid"]: _mtime(i) for k, i in store.list(Layout.MANIFESTS + "/").items()
                   if (m := _MANIFEST_KEY.match(k))}
        dead_manifests = [s for s in dead_manifests
                          if s in fresh_m and not _young(fresh_m[s], now, grace)]
        store.delete([Layout.manifest(s) for s in dead_manifests])
        fresh_p = {bytes.fromhex(m["pid"]): _mtime(i)
                   for k, i in store.list(Layout.PACKS + "/").items()
                   if (m := _PACK_KEY.match(k))}
        dead_packs = [(p, n) for p, n in dead_packs
                      if p in fresh_p and not _young(fresh_p[p], now, grace)]
        store.delete([Layout.pack(p) for p, _ in dead_packs])
        # Markers of packs that are gone (deleted now or earlier) have done their job.
        gone = {p for p, _ in dead_packs} | (set(again.markers) - set(fresh_p))
        dead_markers = sorted(p for p in gone if p in again.markers)
        store.delete([Layout.superseded(p) for p in dead_markers])
        rep.markers_deleted = len(dead_markers)
        rep.manifests_deleted = len(dead_manifests)
        rep.packs_deleted = len(dead_packs)
        rep.bytes_freed = sum(s for _, s in dead_packs)
    if rep.packs_young:
        rep.notes.append(f"{rep.packs_young} unreferenced packs are younger than the grace "
                         "period and were kept (a push may still need them)")
    if rep.packs_superseded_kept:
        rep.notes.append(f"{rep.packs_superseded_kept} repacked packs were kept: superseded "
                         "less than the grace period ago, or a ref head still records the "
                         "manifest version that names them (they go after its next push)")
    rep.requests = store.stats.as_dict()["requests"]
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


# =============================================================================== CLI


def _store_from(args: argparse.Namespace) -> Store:
    from snapsync.cli import _storage_options

    return Store(args.url, _storage_options(args.option))


def cmd_check(args: argparse.Namespace) -> int:
    r = check(args.url, read_data=args.read_data, store=_store_from(args))

    def human() -> str:
        lines = [f"{'OK' if r.ok else 'PROBLEMS'}: {r.url}",
                 f"  refs {r.refs}, log entries {r.log_entries}, snapshots {r.snapshots}, "
                 f"packs {r.packs} ({r.packs_referenced} referenced), chunks {r.chunks}"]
        if r.read_data:
            lines.append(f"  read {r.packs_read} packs ({r.bytes_read} bytes), verified "
                         f"{r.chunks_verified} chunks")
        lines += [f"  problem: {p}" for p in r.problems]
        lines += [f"  note: {n}" for n in r.notes]
        return "\n".join(lines)

    from snapsync.cli import _emit

    _emit(args, r.as_dict(), human)
    if not r.ok and args.quiet:  # quiet drops the summary, not the problems
        for p in r.problems:
            print(f"snapsync: problem: {p}", file=sys.stderr)
    return 0 if r.ok else EXIT_PROBLEMS


def cmd_gc(args: argparse.Namespace) -> int:
    keep_within = parse_duration(args.keep_within) if args.keep_within else None
    r = gc(args.url, keep_last=args.keep_last, keep_within=keep_within, dry_run=args.dry_run,
           grace=parse_duration(args.grace), repack=args.repack,
           repack_below=args.repack_below, store=_store_from(args))

    def human() -> str:
        verb = "would delete" if r.dry_run else "deleted"
        lines = [f"gc {r.url}: kept {len(r.snapshots_kept)} snapshots, dropped "
                 f"{len(r.snapshots_dropped)}",
                 f"  {verb} {r.log_entries_deleted} log entries, {r.manifests_deleted} "
                 f"manifests, {r.packs_deleted} packs ({r.bytes_freed} bytes)",
                 f"  packs kept {r.packs_kept}, young unreferenced packs kept {r.packs_young}",
                 f"  {'would repack' if r.dry_run else 'repacked'} {r.packs_repacked} mostly "
                 f"dead packs ({r.bytes_repacked} live bytes copied, {r.packs_written} new "
                 f"packs, {r.manifests_rewritten} manifests rewritten)"]
        lines += [f"  note: {n}" for n in r.notes]
        return "\n".join(lines)

    from snapsync.cli import _emit

    _emit(args, r.as_dict(), human)
    return 0


def register(sub: Any, common: Callable[..., None]) -> None:
    """Add the ``check`` and ``gc`` subcommands to the CLI's subparsers."""
    p = sub.add_parser("check", help="verify that every snapshot in a store is complete",
                       description="Follow refs and log entries to manifests, manifests to "
                                   "packs. Exit code 10 when anything is wrong.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--read-data", action="store_true",
                   help="download every referenced pack and verify every chunk")
    common(p, jobs=False)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("gc", help="drop old snapshots and delete unreferenced data",
                       description="Keep, per ref, the newest --keep-last snapshots (and those "
                                   "newer than --keep-within); delete log entries, manifests "
                                   "and packs no kept snapshot needs; repack mostly dead "
                                   "packs. Safe while pushes run, as long as no push takes "
                                   "longer than --grace.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--keep-last", type=int, required=True, metavar="N",
                   help="per ref, keep the newest N distinct snapshots (at least 1)")
    p.add_argument("--keep-within", metavar="DURATION",
                   help="per ref, also keep snapshots logged within DURATION (e.g. 7d, 12h)")
    p.add_argument("--grace", default="24h", metavar="DURATION",
                   help="never delete anything younger, keep snapshots that were ref heads "
                        "this recently (default 24h; must exceed the longest push "
                        "plus 1h)")
    p.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    p.add_argument("--no-repack", dest="repack", action="store_false",
                   help="do not copy the live chunks of mostly dead packs into new packs")
    p.add_argument("--repack-below", type=float, default=DEFAULT_REPACK_BELOW,
                   metavar="FRACTION",
                   help="repack packs whose live bytes are below this fraction of their size "
                        f"(default {DEFAULT_REPACK_BELOW}); the old packs are deleted by a "
                        "later gc, after --grace")
    common(p, jobs=False)
    p.set_defaults(func=cmd_gc)
