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
from snapsync.core.manifest import ChainLocations, Manifest
from snapsync.core.manifest_decode import decode_manifest
from snapsync.errors import (
    AlreadyExistsError,
    FormatError,
    NotAStoreError,
    NotFoundError,
    SnapsyncError,
    UsageError,
)
from snapsync.local.cache import ManifestCache
from snapsync.repository.config import (
    SnapshotInfo,
    StoreConfig,
    manifest_limit,
)
from snapsync.repository.publish import Publishing
from snapsync.store import Key, Layout, PutMode, Store, check_ref_name
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


class Repository(Publishing):
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
    def known_locations(manifests: Iterable[Manifest]) -> ChainLocations:
        """Chunk locations that the given manifests prove to exist in the store (a view of
        their indexes, not a copy; :meth:`ChainLocations.setdefault` adds more)."""
        return ChainLocations(m.index for m in manifests)
