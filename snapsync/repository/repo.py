"""The repository layer: store config, manifests, refs and their logs, over a ``Store``.

Write order for a snapshot is packs, then manifest, then log entry, then ref: a crash at any
point leaves every ref naming a complete snapshot. Refs follow "last writer wins, with
history": each update first writes an immutable log entry, then overwrites the ref object.
"""

from __future__ import annotations

from pathlib import Path

from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import Location, Manifest, decode_manifest
from snapsync.errors import FormatError, NotAStoreError, NotFoundError, UsageError
from snapsync.local.cache import ManifestCache
from snapsync.repository.config import SnapshotInfo, StoreConfig, manifest_limit
from snapsync.store.store import Layout, Store, check_ref_name


class Repository:
    """Content-addressed view of a store. ``cache_dir=None`` disables the manifest cache."""

    def __init__(self, store: Store, cache_dir: Path | None) -> None:
        self.store = store
        self.codec = Codec(3)
        self.manifests = ManifestCache(cache_dir) if cache_dir is not None else None
        self.config: StoreConfig | None = None
        self.digests: dict[str, str] = {}  # sid -> digest of the manifest object used
        self.expected: dict[str, str] = {}  # sid -> digest that a ref read says it has
        self.from_cache: set[str] = set()  # sids whose last load came from the local cache

    # ---- config ---------------------------------------------------------------------------
    def open(self, create: bool = False, want: StoreConfig | None = None) -> StoreConfig:
        """Read the store config; create it when ``create`` and the store is new."""
        raw = self.store.get_optional(Layout.CONFIG)
        if raw is None:
            if not create:
                if not self.store.local and not self.store.bucket_exists():
                    raise NotFoundError(f"{self.store.display_url}: bucket or container does "
                                        "not exist")
                raise NotAStoreError(f"{self.store.display_url}: no snapsync store here "
                                     f"(no {Layout.CONFIG}); push to it first")
            cfg = want or StoreConfig()
            self.store.put(Layout.CONFIG, cfg.to_json())
            raw = self.store.get(Layout.CONFIG)  # a concurrent first push may have won
        self.config = StoreConfig.from_json(raw, self.store.where(Layout.CONFIG))
        return self.config

    # ---- manifests ------------------------------------------------------------------------
    def load_manifest(self, sid: str) -> Manifest:
        """Fetch (or take from the local cache), decompress, verify and decode a manifest."""
        where = self.store.where(Layout.manifest(sid))
        blob = self.manifests.get(sid) if self.manifests else None
        expect = self.expected.get(sid)
        if blob is not None and expect and chunk_id(blob).hex() != expect:
            blob = None  # the store holds another manifest of this tree: the cache is stale
        cached = blob is not None
        if blob is None:
            try:
                blob = self.store.get(Layout.manifest(sid))
            except NotFoundError:
                raise NotFoundError(f"snapshot {sid} not found in {self.store.display_url}")\
                    from None
        try:
            m = decode_manifest(self.codec.decompress_blob(blob, where, manifest_limit(blob)),
                                sid, where)
        except FormatError:
            if cached and self.manifests:
                self.manifests.drop(sid)  # a corrupt cache entry: fetch it fresh
                return self.load_manifest(sid)
            raise
        if not cached and self.manifests:
            self.manifests.put(sid, blob)
        if cached:
            self.from_cache.add(sid)
        else:
            self.from_cache.discard(sid)
        self.digests[sid] = chunk_id(blob).hex()
        return m

    def save_manifest(self, sid: str, raw: bytes) -> int:
        blob = self.codec.compress_blob(raw)
        self.store.put(Layout.manifest(sid), blob)
        self.digests[sid] = chunk_id(blob).hex()
        if self.manifests:
            self.manifests.put(sid, blob)
        return len(blob)

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

    def list_refs(self) -> dict[str, SnapshotInfo]:
        """All refs with what they point to: one LIST plus one concurrent batch of GETs."""
        keys = [k for k in self.store.list(Layout.REFS + "/") if k.endswith(".json")]
        out: dict[str, SnapshotInfo] = {}
        for key, raw in self.store.get_many(keys).items():
            if raw is not None:
                name = key[len(Layout.REFS) + 1:-len(".json")]
                out[name] = self._expect(SnapshotInfo.from_json(raw, self.store.where(key)))
        return out

    def write_ref(self, info: SnapshotInfo) -> None:
        """Publish ``info``: an immutable log entry first, then the mutable ref."""
        if not info.manifest:
            info.manifest = self.digests.get(info.snapshot, "")
        data = info.to_json()
        self.store.put(Layout.log(info.ref, info.time_ns, info.snapshot), data)
        self.store.put(Layout.ref(info.ref), data)

    def log(self, name: str) -> list[SnapshotInfo]:
        """A ref's history, newest first."""
        check_ref_name(name)
        keys = sorted(self.store.list(f"{Layout.LOGS}/{name}/"), reverse=True)
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
            keys = self.store.list(f"{Layout.MANIFESTS}/{snap[:2]}/")
            hits = sorted({k.rsplit("/", 1)[-1][:-3] for k in keys
                           if k.rsplit("/", 1)[-1].startswith(snap)})
            if not hits:
                raise NotFoundError(f"no snapshot {snapshot} in {self.store.display_url}")
            if len(hits) > 1:
                raise UsageError(f"--snapshot {snapshot} is ambiguous: {', '.join(hits[:5])}")
            return hits[0]
        name = ref or "latest"
        info = self.read_ref(name)
        if info is None:
            raise NotFoundError(f"ref {name!r} does not exist in {self.store.display_url}")
        return info.snapshot

    def known_locations(self, manifests: list[Manifest]) -> dict[bytes, Location]:
        """Chunk locations that the given manifests prove to exist in the store."""
        out: dict[bytes, Location] = {}
        for m in manifests:
            out.update(m.locations)
        return out

