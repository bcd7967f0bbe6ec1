"""Check engine: is every snapshot a ref or log entry names complete and intact?

Follows refs and log entries to manifests (decoded, id-checked, paths checked), manifests to
packs (present, large enough for every chunk location). With ``read_data`` every referenced
pack is downloaded: its id and trailer are checked and every chunk is verified by the
repository's chunk reader (decoded, hashed, and MAC-checked with ``SNAPSYNC_KEY``). Packs and
manifests that nothing refers to are garbage for ``gc``, reported as notes. Never prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.keyed import Keyring
from snapsync.core.manifest import Location, Manifest
from snapsync.core.pack import TAIL_SIZE, parse_pack
from snapsync.core.plan import check_paths
from snapsync.errors import FormatError, IntegrityError, NotFoundError
from snapsync.repository import Repository
from snapsync.repository.reader import ChunkReader
from snapsync.store import Layout, Store, as_store

PACKS_AT_ONCE = 4  # packs read whole at a time by --read-data: bounds memory to 4 x pack size


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


def check(url: str | Store, read_data: bool = False, *,
          storage_options: dict[str, Any] | None = None) -> CheckReport:
    """Check the store at ``url`` (a URL or an open Store); see the module docstring."""
    t0 = time.perf_counter()
    store = as_store(url, storage_options)
    keyring = Keyring.from_env()
    repo = Repository(store, None, keyring)
    repo.open(create=False)
    rep = CheckReport(url=store.display_url, read_data=read_data)
    problems = rep.problems

    listing = repo.listing()
    refs, bad_refs = repo.read_refs()
    rep.refs, rep.log_entries = len(refs), len(listing.logs)
    rep.manifests, rep.packs = len(listing.manifests), len(listing.packs)
    for name, err in bad_refs.items():
        problems.append(f"ref {name}: {err}")
    for key in listing.stray:
        rep.notes.append(f"unexpected object {store.where(key)}")

    # Roots: ref heads and log entries, re-read when their manifest is missing (a concurrent
    # gc may have moved things between our listing and our reads).
    wanted: dict[str, str] = {}
    for name, info in refs.items():
        wanted.setdefault(info.snapshot, f"ref {name}")
    for e in listing.logs:
        wanted.setdefault(e.id, f"log entry {e.key}")  # type: ignore[arg-type]
    orphans = sorted(set(listing.manifests) - set(wanted))
    loaded = repo.fetch_manifests([*wanted, *orphans])
    manifests: dict[str, Manifest] = {}
    macs: dict[bytes, bytes] = {}

    def take(sid: str, why: str) -> None:
        m = loaded[sid]
        if isinstance(m, NotFoundError):
            if _still_referenced(repo, sid):
                problems.append(f"{why} names snapshot {sid}, whose manifest is missing")
            return
        if isinstance(m, Exception):
            problems.append(f"snapshot {sid} ({why}): {m}")
            return
        try:
            check_paths(m, case_insensitive=False, windows=False)
        except FormatError as exc:
            problems.append(f"snapshot {sid}: {exc}")
        if keyring is not None:
            try:
                macs.update(keyring.verify_manifest(m))
            except IntegrityError as exc:
                problems.append(f"snapshot {sid}: {exc}")
        manifests[sid] = m

    for sid, why in sorted(wanted.items()):
        take(sid, why)
    rep.unreferenced_manifests = len(orphans)
    for sid in orphans:
        take(sid, "unreferenced manifest")
    rep.snapshots = len(manifests)

    # Manifests to packs: every location must lie inside an existing pack.
    used: dict[bytes, dict[bytes, Location]] = {}
    needed_by: dict[bytes, str] = {}
    for sid, m in manifests.items():
        ix = m.index
        for r in m.chunk_rows():  # rows of the index's columns: no id lookups
            cid, loc = ix.cids[r], ix.at(r)
            used.setdefault(loc.pack, {})[cid] = loc
            needed_by.setdefault(loc.pack, sid)
    rep.packs_referenced = len(used)
    rep.chunks = sum(len(v) for v in used.values())
    packs = {pid: o.size for pid, o in listing.packs.items()}
    if any(p not in packs for p in used):  # confirm with a fresh listing before blaming
        packs.update((pid, o.size) for pid, o in repo.packs().items())
    for pid, locs in sorted(used.items()):
        size = packs.get(pid)
        if size is None:
            problems.append(f"pack {pid.hex()} is missing; snapshot {needed_by[pid]} needs "
                            f"{len(locs)} chunks from it")
            continue
        for cid, loc in locs.items():
            if loc.offset + loc.length > size - TAIL_SIZE:
                problems.append(f"chunk {cid.hex()} lies outside pack {pid.hex()} "
                                f"({loc.offset}+{loc.length} > {size} bytes)")
                break
    rep.unreferenced_packs = len(set(packs) - set(used))
    if rep.unreferenced_packs or orphans:
        rep.notes.append(f"{rep.unreferenced_packs} packs and {len(orphans)} manifests are not "
                         "referenced by any ref or log entry (left by interrupted pushes or "
                         "dropped snapshots; `snapsync gc` deletes them)")

    if read_data:
        _read_data(repo, used, packs, rep, keyring, macs)
    rep.requests = store.stats.as_dict()["requests"]
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _still_referenced(repo: Repository, sid: str) -> bool:
    """After a manifest turned out missing: is it still named by a ref or a log entry?"""
    repo.store.invalidate()
    refs, _ = repo.read_refs()
    if any(i.snapshot == sid for i in refs.values()):
        return True
    objs, _ = repo.objects(Layout.LOGS)
    return any(o.id == sid for o in objs)


def _read_data(repo: Repository, used: dict[bytes, dict[bytes, Location]],
               packs: dict[bytes, int], rep: CheckReport, keyring: Keyring | None,
               macs: dict[bytes, bytes]) -> None:
    store = repo.store
    # The packs' bytes are the readers' only source here: nothing is cached. Chunks with a
    # MAC (from a verified manifest) are checked with the key too.
    locations = {cid: loc for locs in used.values() for cid, loc in locs.items()}
    plain = ChunkReader(store, locations, Codec())
    keyed = plain if keyring is None else ChunkReader(
        store, locations, keyring.wrap_codec(Codec(), macs))
    pids = [p for p in sorted(used) if p in packs]
    for i in range(0, len(pids), PACKS_AT_ONCE):
        batch = pids[i:i + PACKS_AT_ONCE]
        got = store.get_many([Layout.pack(p) for p in batch], batch_size=PACKS_AT_ONCE)
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
                trailer = parse_pack(data, store.where(key), pack_id=pid)
            except FormatError as exc:
                rep.problems.append(str(exc))
                trailer = {}
            view = memoryview(data)
            for cid, loc in used[pid].items():
                t = trailer.get(cid)
                if trailer and (t is None or (t.offset, t.length, t.raw_size) !=
                                (loc.offset, loc.length, loc.raw_size)):
                    rep.problems.append(f"chunk {cid.hex()}: manifest location disagrees with "
                                        f"the trailer of pack {pid.hex()}")
                try:
                    (keyed if cid in macs else plain).verify(
                        cid, view[loc.offset:loc.offset + loc.length])
                    rep.chunks_verified += 1
                except FormatError as exc:
                    rep.problems.append(f"pack {pid.hex()}: {exc}")
