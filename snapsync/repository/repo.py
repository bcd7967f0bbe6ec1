"""The repository: a store seen as typed objects — config, packs, manifests, refs and logs.

Write order for a snapshot is packs, then manifest, then log entry, then ref: a crash at any
point leaves every ref naming a complete snapshot. Where the store has conditional writes,
packs, manifests and log entries are written create-only and a ref update is a
compare-and-swap, so concurrent pushes to one ref form one parent chain (docs/format.md §5);
elsewhere a ref is "last writer wins, with history". Before the ref moves, the publisher looks
for gc tombstones naming what the snapshot needs (§8).

Everything that reads or writes those objects goes through here, once: listing by kind (keys
parsed by :class:`~snapsync.store.layout.Layout` only), manifests with their local cache and
its staleness rules, signature checks in tamper-evident mode, refs and logs.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from snapsync.concurrency import META_BATCH
from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.keyed import Keyring
from snapsync.core.manifest import Location, Manifest, decode_manifest
from snapsync.errors import (
    AlreadyExistsError,
    ConflictError,
    FormatError,
    GcRaceError,
    NotAStoreError,
    NotFoundError,
    SnapsyncError,
    UsageError,
)
from snapsync.local.cache import ManifestCache
from snapsync.repository.config import (
    TOMBSTONE_IDS_MAX,
    TOMBSTONE_TTL,
    SnapshotInfo,
    StoreConfig,
    Tombstone,
    manifest_limit,
)
from snapsync.store import IfMatch, Key, Layout, PutMode, Store, check_ref_name
from snapsync.store import layout as kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredObject(Key):
    """One listed object, typed: what :meth:`Layout.parse` made of its key, plus the object's
    own key, size and time."""

    key: str
    size: int
    mtime: float | None


@dataclass
class Listing:
    """One look at the store: packs and markers by raw id, manifests by snapshot id, logs."""

    packs: dict[bytes, StoredObject] = field(default_factory=dict)
    manifests: dict[str, StoredObject] = field(default_factory=dict)
    logs: list[StoredObject] = field(default_factory=list)
    markers: dict[bytes, StoredObject] = field(default_factory=dict)
    tombstones: list[StoredObject] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)


# Compare-and-swap attempts of one ref update: each lost round means another push won, so 8
# concurrent pushes need at most 8; beyond 16 the ref is too busy to promise anything.
PUBLISH_TRIES = 16
_sleep = time.sleep  # between compare-and-swap rounds (tests make it instant)
# How long a push waits for a gc that is deleting what it needs (a gc stops deleting after
# TOMBSTONE_TTL / 2 whatever happens; one that deletes thousands of packs takes minutes).
GC_WAIT = 300.0
# Tombstones bigger than this are not gc's (TOMBSTONE_IDS_MAX ids of ~35 bytes each).
_TOMBSTONE_MAX_BYTES = 8 << 20


@dataclass
class Published:
    """How a ref update went: ``info`` is what the ref says now (ours unless ``same``)."""

    info: SnapshotInfo
    attempts: int = 1
    moved: bool = False  # another push moved the ref first: our parent is its snapshot
    same: bool = False  # another push published this very snapshot first: nothing written


class Repository:
    """Content-addressed view of a store.

    ``cache_dir=None`` disables the local manifest cache (check and gc always read the
    store). With a ``keyring`` (tamper-evident mode) manifests are verified as they load.
    """

    def __init__(self, store: Store, cache_dir: Path | None = None,
                 keyring: Keyring | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.warn = on_warning if on_warning is not None else (lambda _msg: None)
        self.codec = Codec(3)
        self.keyring = keyring
        self.manifests = ManifestCache(cache_dir) if cache_dir is not None else None
        self.config: StoreConfig | None = None
        self.digests: dict[str, str] = {}  # sid -> digest of the manifest object used
        self.expected: dict[str, str] = {}  # sid -> digest that a ref read says it has
        self.from_cache: set[str] = set()  # sids whose last load came from the local cache
        self.macs: dict[str, dict[bytes, bytes]] = {}  # sid -> chunk MACs of a verified one

    # ---- config ---------------------------------------------------------------------------
    def open(self, create: bool = False, want: StoreConfig | None = None) -> StoreConfig:
        """Read the store config; create it when ``create`` and the store is new."""
        raw = self.store.get_optional(Layout.CONFIG)
        if raw is None:
            if not create:
                if not self.store.local and not self.store.root_exists():
                    raise NotFoundError(f"{self.store.display_url}: bucket or container does "
                                        "not exist")
                raise NotAStoreError(f"{self.store.display_url}: no snapsync store here "
                                     f"(no {Layout.CONFIG}); push to it first")
            cfg = want or StoreConfig()
            try:
                self.store.put(Layout.CONFIG, cfg.to_json(), mode=self.immutable)
            except AlreadyExistsError:
                pass  # a concurrent first push won: its config is the store's
            raw = self.store.get(Layout.CONFIG)
        self.config = StoreConfig.from_json(raw, self.store.where(Layout.CONFIG))
        return self.config

    # ---- typed listing --------------------------------------------------------------------
    def objects(self, prefix: str) -> tuple[list[StoredObject], list[str]]:
        """The objects under one of :class:`Layout`'s folders, and the stray keys there."""
        out: list[StoredObject] = []
        stray: list[str] = []
        for meta in self.store.list(prefix):
            k = Layout.parse(meta.key)
            if k is None:
                stray.append(meta.key)
            else:
                out.append(StoredObject(k.kind, k.id, k.ref, k.time_ns, key=meta.key,
                                        size=meta.size, mtime=meta.mtime))
        return out, stray

    def listing(self) -> Listing:
        """Log entries, manifests, packs and superseded markers, from fresh listings."""
        self.store.invalidate()
        lst = Listing()
        for prefix in (Layout.LOGS, Layout.MANIFESTS, Layout.PACKS, Layout.SUPERSEDED,
                       Layout.TOMBSTONES):
            objs, stray = self.objects(prefix)
            lst.stray += stray
            for o in objs:
                if o.kind == kinds.LOG:
                    lst.logs.append(o)
                elif o.kind == kinds.MANIFEST:
                    lst.manifests[o.id] = o  # type: ignore[index]
                elif o.kind == kinds.PACK:
                    lst.packs[o.raw_id] = o
                elif o.kind == kinds.SUPERSEDED:
                    lst.markers[o.raw_id] = o
                elif o.kind == kinds.TOMBSTONE:
                    lst.tombstones.append(o)
                else:
                    lst.stray.append(o.key)
        return lst

    def packs(self) -> dict[bytes, StoredObject]:
        """Every pack in the store, from a fresh listing."""
        self.store.invalidate()
        objs, _ = self.objects(Layout.PACKS)
        return {o.raw_id: o for o in objs if o.kind == kinds.PACK}

    def manifest_objects(self) -> dict[str, StoredObject]:
        """Every manifest in the store, from a fresh listing."""
        self.store.invalidate()
        objs, _ = self.objects(Layout.MANIFESTS)
        return {o.id: o for o in objs if o.kind == kinds.MANIFEST}  # type: ignore[misc]

    # ---- manifests ------------------------------------------------------------------------
    def _decode(self, sid: str, blob: bytes) -> Manifest:
        where = self.store.where(Layout.manifest(sid))
        return decode_manifest(self.codec.decompress_blob(blob, where, manifest_limit(blob)),
                               sid, where)

    def load_manifest(self, sid: str, verify: bool = True) -> Manifest:
        """A manifest, from the local cache by id when it is there, else from the store.

        The cached copy is skipped when a ref recorded another digest for it (gc rewrote the
        manifest) and dropped when it does not decode. With a keyring and ``verify``, the
        signature is checked; a cached copy that fails is re-fetched once.
        """
        blob = self.manifests.get(sid) if self.manifests else None
        expect = self.expected.get(sid)
        if blob is not None and expect and chunk_id(blob).hex() != expect:
            blob = None  # the store holds another manifest of this tree: the cache is stale
        if blob is not None:
            try:
                m = self._decode(sid, blob)
                self._verify(m, verify)
            except FormatError as exc:  # a corrupt or stale cache entry: the store's wins
                self.warn(f"the cached manifest of snapshot {sid} in "
                          f"{self.manifests.root if self.manifests else ''} failed ({exc}); "
                          "dropped it and read the store's")
                return self.reload_manifest(sid, verify)
            self.from_cache.add(sid)
            self.digests[sid] = chunk_id(blob).hex()
            return m
        return self.reload_manifest(sid, verify)

    def reload_manifest(self, sid: str, verify: bool = True) -> Manifest:
        """A manifest from the store itself, replacing any cached copy."""
        if self.manifests:
            self.manifests.drop(sid)
        try:
            blob = self.store.get(Layout.manifest(sid))
        except NotFoundError:
            raise NotFoundError(f"snapshot {sid} not found in {self.store.display_url}")\
                from None
        m = self._decode(sid, blob)
        self._verify(m, verify)
        if self.manifests:
            self.manifests.put(sid, blob)
        self.from_cache.discard(sid)
        self.digests[sid] = chunk_id(blob).hex()
        return m

    def _verify(self, m: Manifest, verify: bool) -> None:
        if self.keyring is not None and verify:
            self.macs[m.id] = self.keyring.verify_manifest(m)

    def fetch_manifests(self, sids: Iterable[str]) -> dict[str, Manifest | SnapsyncError]:
        """Manifests straight from the store (never the cache), fetched concurrently.

        Each id maps to its manifest, or to the error that loading it raised (``NotFoundError``
        when it is missing), so check and gc can report and decide per snapshot.
        """
        todo = sorted(set(sids))
        out: dict[str, Manifest | SnapsyncError] = {}
        for i in range(0, len(todo), META_BATCH):
            part = todo[i:i + META_BATCH]
            got = self.store.get_many([Layout.manifest(s) for s in part])
            for sid in part:
                blob = got[Layout.manifest(sid)]
                if blob is None:
                    out[sid] = NotFoundError(f"{self.store.where(Layout.manifest(sid))}: "
                                             "not found")
                    continue
                self.digests[sid] = chunk_id(blob).hex()
                try:
                    out[sid] = self._decode(sid, blob)
                except FormatError as exc:
                    out[sid] = exc
        return out

    @property
    def immutable(self) -> PutMode:
        """The put mode of objects that never change: create-only where the store can."""
        return "create" if self.store.conditional else "overwrite"

    def save_manifest(self, sid: str, raw: bytes, rewrite: bool = False
                      ) -> tuple[int, Manifest | None]:
        """Compress and store a manifest (and cache it); return its stored size.

        Create-only where the store can: when a manifest of the same tree is already there
        (a rollback, or a concurrent push of one tree) it is kept and returned, decoded, as
        the second value, and the ref records its digest; its chunk locations are what the
        snapshot then depends on. Otherwise the second value is ``None``. ``rewrite``
        (gc's repack) replaces the stored manifest of the same tree.
        """
        blob = self.codec.compress_blob(raw)
        try:
            self.store.put(Layout.manifest(sid), blob,
                           mode="overwrite" if rewrite else self.immutable)
        except AlreadyExistsError:
            return 0, self.reload_manifest(sid, verify=False)
        self.digests[sid] = chunk_id(blob).hex()
        if self.manifests:
            self.manifests.put(sid, blob)
        return len(blob), None

    def chunk_codec(self, m: Manifest) -> Codec:
        """The codec that verifies ``m``'s chunks: ids always, keyed MACs when verified."""
        macs = self.macs.get(m.id)
        if self.keyring is None or macs is None:
            return Codec()
        return self.keyring.wrap_codec(Codec(), macs)

    # ---- superseded markers (gc's repack, docs/format.md §8) ------------------------------
    def read_markers(self, pids: Iterable[bytes]) -> dict[bytes, dict[str, Any]]:
        """The markers of ``pids`` by pack id; missing or unreadable ones are left out."""
        keys = {Layout.superseded(p): p for p in pids}
        out: dict[bytes, dict[str, Any]] = {}
        for key, raw in self.store.get_many(sorted(keys)).items():
            if raw is None:
                continue
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("snapshots") or {}, dict):
                out[keys[key]] = doc
        return out

    def write_marker(self, pid: bytes, snapshots: dict[str, str]) -> None:
        """Mark pack ``pid`` superseded; ``snapshots``: rewritten id -> replaced digest."""
        doc = {"time": datetime.now().astimezone().isoformat(), "time_ns": time.time_ns(),
               "snapshots": snapshots}
        self.store.put(Layout.superseded(pid), json.dumps(doc, sort_keys=True).encode())

    # ---- refs -----------------------------------------------------------------------------
    def read_ref(self, name: str) -> SnapshotInfo | None:
        check_ref_name(name)
        raw = self.store.get_optional(Layout.ref(name))
        return None if raw is None else self._expect(SnapshotInfo.from_json(
            raw, self.store.where(Layout.ref(name))))

    def _expect(self, info: SnapshotInfo) -> SnapshotInfo:
        if info.manifest:
            self.expected[info.snapshot] = info.manifest
        return info

    def read_refs(self) -> tuple[dict[str, SnapshotInfo], dict[str, str]]:
        """All refs with what they point to, and the refs that do not parse (name -> error).

        One LIST plus one concurrent batch of GETs.
        """
        objs, _ = self.objects(Layout.REFS)
        keys = {o.key: o.ref for o in objs if o.kind == kinds.REF}
        refs: dict[str, SnapshotInfo] = {}
        bad: dict[str, str] = {}
        for key, raw in self.store.get_many(sorted(keys)).items():
            if raw is None:
                continue  # deleted since the listing
            name = keys[key]
            try:
                refs[name] = self._expect(SnapshotInfo.from_json(raw, self.store.where(key)))
            except FormatError as exc:
                bad[name] = str(exc)  # type: ignore[index]
        return refs, bad  # type: ignore[return-value]

    def list_refs(self) -> dict[str, SnapshotInfo]:
        """All refs with what they point to; an unreadable ref is an error."""
        refs, bad = self.read_refs()
        if bad:
            raise FormatError("; ".join(bad.values()))
        return refs

    def write_ref(self, info: SnapshotInfo) -> None:
        """Point a ref at ``info`` unconditionally: a log entry first, then the ref (gc's
        repack and tests; pushes go through :meth:`publish`)."""
        if not info.manifest:
            info.manifest = self.digests.get(info.snapshot, "")
        data = info.to_json()
        self.store.put(Layout.log(info.ref, info.time_ns, info.snapshot), data,
                       mode=self.immutable)
        self.store.put(Layout.ref(info.ref), data)

    def read_ref_versioned(self, name: str) -> tuple[SnapshotInfo | None, str | None]:
        """A ref and its version token (``None`` when the store gives none)."""
        got = self.store.get_versioned(Layout.ref(name))
        if got is None:
            return None, None
        raw, etag = got
        return self._expect(SnapshotInfo.from_json(raw, self.store.where(Layout.ref(name)))), \
            etag

    def publish(self, ref: str, make: Callable[[SnapshotInfo | None], SnapshotInfo | None],
                needs: Iterable[bytes] = (), confirm: Iterable[bytes] = ()
                ) -> Published | None:
        """Move ``ref`` to a new snapshot: log entry, tombstone check, then the ref.

        ``make(head)`` builds the new entry from the ref's current head (its ``parent`` is
        the head's snapshot), or returns ``None`` when there is nothing to publish. ``needs``
        are the packs the snapshot's manifest names; ``confirm`` those of them (and, when
        given, the manifest) that the push found already stored rather than wrote, which
        must be seen in a listing before the ref moves: an old object may have been collected
        by a gc whose tombstones are already done. Where the store has conditional writes
        the ref moves by compare-and-swap: when another push moved it first, the entry is
        rebuilt on the new head (a new log entry replaces ours) and tried again, up to
        :data:`PUBLISH_TRIES` times; so concurrent pushes form one parent chain and none is
        overwritten unseen. Elsewhere the last writer wins, and the log keeps the others.

        Raises:
            GcRaceError: a gc run deleted a pack or the manifest the snapshot needs while
                the push ran (or is still deleting after ``GC_WAIT``); nothing was published.
            ConflictError: the ref kept moving (exit 8); the snapshot is stored and can be
                pulled with ``--snapshot``.
        """
        check_ref_name(ref)
        head, etag = self.read_ref_versioned(ref)
        info = make(head)
        if info is None:
            return None
        first_parent = info.parent
        log_key = self._write_log(info)
        logged = time.monotonic()
        try:
            needs = set(needs)
            self._outlast_gc(info.snapshot, needs)
            late = time.monotonic() - logged > TOMBSTONE_TTL / 4  # a stalled push: look
            if confirm or late:
                missing = self._missing(info.snapshot, needs if late else set(confirm))
                if missing:
                    raise GcRaceError(
                        f"{self.store.where(missing[0])}, which snapshot {info.snapshot} "
                        "needs, is gone (gc collected it while this push ran); nothing was "
                        "published: push again (it uploads what is missing)")
            if not self.store.conditional:
                self.store.put(Layout.ref(ref), info.to_json())
                return Published(info)
            for attempt in range(1, PUBLISH_TRIES + 1):
                mode: PutMode = "create" if head is None or etag is None else IfMatch(etag)
                try:
                    self.store.put(Layout.ref(ref), info.to_json(), mode=mode)
                    return Published(info, attempt, moved=info.parent != first_parent)
                except ConflictError:
                    pass
                # Another push won this round: build on its snapshot and try again.
                _sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
                head, etag = self.read_ref_versioned(ref)
                if head is not None and head.snapshot == info.snapshot:
                    if (head.time_ns, head.host) == (info.time_ns, info.host):
                        # Our own write landed; only its answer was lost (then retried).
                        return Published(info, attempt, moved=info.parent != first_parent)
                    self.store.delete([log_key])
                    log_key = ""
                    return Published(head, attempt + 1, moved=True, same=True)
                rebuilt = make(head)
                if rebuilt is None:
                    self.store.delete([log_key])
                    log_key = ""
                    return None
                info = rebuilt
                # The new entry is written before the old one goes, so some log entry always
                # names the snapshot: gc's look after its tombstones sees it (§8).
                old_key, log_key = log_key, self._write_log(info)
                self.store.delete([old_key])
            raise ConflictError(
                f"ref {ref!r} in {self.store.display_url} moved {PUBLISH_TRIES} times while "
                f"this push tried to update it; snapshot {info.snapshot} is stored (pull it "
                "with --snapshot) but the ref does not name it: push again")
        except BaseException:
            if log_key:
                try:
                    self.store.delete([log_key])
                except SnapsyncError:
                    pass  # a stray log entry names a complete snapshot: harmless
            raise

    def _outlast_gc(self, sid: str, needs: set[bytes]) -> None:
        """Return once no gc tombstone names what snapshot ``sid`` needs.

        Our log entry is written, so a gc whose tombstone we see either saw that entry when
        it looked after writing the tombstone, and spares the snapshot, or did not, and may
        delete some of what it needs. Wait for its tombstones to go, then look: all there
        means spared; anything missing raises :class:`GcRaceError` (nothing published).
        """
        deadline = time.monotonic() + GC_WAIT
        doomed = self.doomed(sid, needs)
        seen: set[str] = set()
        while doomed:
            if not all(t.done for k, t in self.tombstones().items() if k in doomed):
                self.warn(f"gc is deleting objects in {self.store.display_url}; this push "
                          f"waits for it to finish ({self.store.where(doomed[0])})")
            while any(not t.done for k, t in self.tombstones().items() if k in doomed):
                if time.monotonic() > deadline:
                    raise GcRaceError(
                        f"gc is still deleting objects that snapshot {sid} needs after "
                        f"{GC_WAIT:.0f} s ({self.store.where(doomed[0])}); nothing was "
                        "published: push again later", doomed)
                _sleep(0.5)
            missing = self._missing(sid, needs)
            if missing:
                raise GcRaceError(
                    f"gc deleted {self.store.where(missing[0])}, which snapshot {sid} needs, "
                    "while this push ran; nothing was published: push again (it uploads what "
                    "gc took)", doomed)
            seen.update(doomed)  # those gc runs are over and left what we need: look for others
            doomed = [k for k in self.doomed(sid, needs) if k not in seen]

    def _missing(self, sid: str, packs: set[bytes]) -> list[str]:
        """Keys of the manifest ``sid`` and of ``packs`` that are not in the store (one LIST
        per key folder: only after a race with gc)."""
        want = [Layout.manifest(sid)] + [Layout.pack(p) for p in sorted(packs)]
        folders = sorted({k.rsplit("/", 1)[0] + "/" for k in want})
        self.store.invalidate()
        have = {m.key for f in folders for m in self.store.list(f)}
        return [k for k in want if k not in have]

    def _write_log(self, info: SnapshotInfo) -> str:
        if not info.manifest:
            info.manifest = self.digests.get(info.snapshot, "")
        key = Layout.log(info.ref, info.time_ns, info.snapshot)
        try:
            self.store.put(key, info.to_json(), mode=self.immutable)
        except AlreadyExistsError:
            # A retried create whose first attempt landed finds its own bytes: done.
            if self.store.get_optional(key) != info.to_json():
                raise
        return key

    # ---- gc tombstones (docs/format.md §8) ------------------------------------------------
    def write_tombstones(self, manifests: Iterable[str], packs: Iterable[str],
                         keys: list[str] | None = None) -> list[str]:
        """Announce what a gc run is about to delete; returns the tombstones' keys (also
        appended to ``keys`` as each is written, so a caller can remove them after a
        failure half-way)."""
        import socket  # only gc needs the host name here (~7 ms to import)

        ids = [("m", s) for s in manifests] + [("p", p) for p in packs]
        keys = keys if keys is not None else []
        for i in range(0, len(ids), TOMBSTONE_IDS_MAX):
            part = ids[i:i + TOMBSTONE_IDS_MAX]
            t = Tombstone(time.time_ns(), socket.gethostname(),
                          [x for k, x in part if k == "m"], [x for k, x in part if k == "p"])
            key = Layout.tombstone(t.time_ns, random.randbytes(8).hex())
            keys.append(key)  # before the write: a lost response may still have landed
            self.store.put(key, t.to_json(), mode=self.immutable)
        return keys

    def finish_tombstones(self, keys: Iterable[str]) -> None:
        """Mark gc's tombstones done: they stay until void, so that a push that lists them
        late still learns that what it needs may be gone (docs/format.md §8)."""
        for key in keys:
            raw = self.store.get_optional(key)
            if raw is None:
                continue
            try:
                t = Tombstone.from_json(raw, self.store.where(key))
            except FormatError:
                continue
            t.done = True
            self.store.put(key, t.to_json())

    def tombstones(self, void: bool = False) -> dict[str, Tombstone]:
        """The tombstones in the store by key: live ones, or with ``void`` the expired ones.

        One LIST (usually of an empty folder); an unreadable tombstone is skipped with a
        warning, since gc writes each whole.
        """
        objs, _ = self.objects(Layout.TOMBSTONES)
        keys = [o.key for o in objs if o.kind == kinds.TOMBSTONE]
        big = {o.key for o in objs if o.size > _TOMBSTONE_MAX_BYTES}
        out: dict[str, Tombstone] = {}
        now = time.time()
        for key, raw in self.store.get_many(sorted(set(keys) - big)).items():
            if raw is None:
                continue  # its gc finished meanwhile
            try:
                t = Tombstone.from_json(raw, self.store.where(key))
            except FormatError as exc:
                self.warn(f"ignored an unreadable gc tombstone: {exc}")
                continue
            if t.void(now) == void:
                out[key] = t
        for key in sorted(big):
            self.warn(f"ignored {self.store.where(key)}: too big to be a gc tombstone")
        return out

    def doomed(self, sid: str, packs: set[bytes]) -> list[str]:
        """Live tombstones naming the manifest ``sid`` or one of ``packs``."""
        hexes = {p.hex() for p in packs}
        return sorted(k for k, t in self.tombstones().items()
                      if sid in t.manifests or hexes.intersection(t.packs))

    def log(self, name: str) -> list[SnapshotInfo]:
        """A ref's history, newest first."""
        check_ref_name(name)
        objs, _ = self.objects(Layout.log_prefix(name))
        keys = sorted((o.key for o in objs if o.kind == kinds.LOG and o.ref == name),
                      reverse=True)
        got = self.store.get_many(keys)
        return [SnapshotInfo.from_json(got[k], self.store.where(k))  # type: ignore[arg-type]
                for k in keys if got.get(k) is not None]

    def resolve(self, ref: str | None, snapshot: str | None) -> str:
        """The snapshot id named by ``--snapshot`` (full id or unique prefix) or ``--ref``."""
        if snapshot and snapshot.strip().lower().startswith("git:"):
            from snapsync.local.git import resolve_git  # git:<commit> (docs: git pinning)

            return resolve_git(self, snapshot.strip(), [ref] if ref else None)
        if snapshot:
            snap = snapshot.lower()
            if len(snap) == 32 and all(c in "0123456789abcdef" for c in snap):
                return snap
            if len(snap) < 4 or not all(c in "0123456789abcdef" for c in snap):
                raise UsageError(f"--snapshot {snapshot!r}: give a hex id or a prefix of at "
                                 "least 4 characters")
            objs, _ = self.objects(Layout.manifest_prefix(snap))
            hits = sorted({o.id for o in objs if o.kind == kinds.MANIFEST
                           and o.id.startswith(snap)})  # type: ignore[union-attr]
            if not hits:
                raise NotFoundError(f"no snapshot {snapshot} in {self.store.display_url}")
            if len(hits) > 1:
                raise UsageError(f"--snapshot {snapshot} is ambiguous: {', '.join(hits[:5])}")
            return hits[0]  # type: ignore[return-value]
        name = ref or "latest"
        info = self.read_ref(name)
        if info is None:
            raise NotFoundError(f"ref {name!r} does not exist in {self.store.display_url}")
        return info.snapshot

    @staticmethod
    def known_locations(manifests: Iterable[Manifest]) -> dict[bytes, Location]:
        """Chunk locations that the given manifests prove to exist in the store."""
        out: dict[bytes, Location] = {}
        for m in manifests:
            out.update(m.locations)
        return out
