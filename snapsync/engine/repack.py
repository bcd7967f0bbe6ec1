"""Repacking for gc: copy the live chunks of mostly dead packs into new packs and rewrite the
kept manifests that used them, at the same keys (the snapshot id covers the tree only).

The old packs stay, each behind a ``superseded`` marker naming the rewritten snapshots and the
manifest versions they replace; gc deletes them in a later run, once no reader can still trust
a cached copy of an old version (docs/format.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import Location, Manifest
from snapsync.core.manifest_encode import encode_manifest_columns
from snapsync.core.pack import parse_pack
from snapsync.errors import FormatError, IntegrityError, NotFoundError
from snapsync.repository import DEFAULT_PACK_SIZE, Repository
from snapsync.repository.packer import PackWriter
from snapsync.repository.reader import ChunkReader
from snapsync.repository.repo import StoredObject
from snapsync.store import Layout

REPACK_SINGLE_BELOW = 0.1  # one lone candidate is repacked only when it is this empty


@dataclass
class RepackCandidate:
    """A mostly dead pack: its live chunks (by the kept manifests) and who uses them."""

    pack: str
    size: int
    live_bytes: int
    snapshots: list[str]


@dataclass
class RepackResult:
    """What a repack wrote."""

    packs_repacked: int = 0
    packs_written: int = 0
    bytes_repacked: int = 0
    manifests_rewritten: int = 0
    written: set[bytes] = field(default_factory=set)  # ids of the packs written
    notes: list[str] = field(default_factory=list)


def plan_repack(manifests: dict[str, Manifest], packs: dict[bytes, StoredObject],
                below: float, notes: list[str]
                ) -> tuple[list[RepackCandidate], dict[bytes, dict[bytes, Location]]]:
    """Choose the mostly dead packs to repack, and the live chunks of each.

    ``manifests`` are the kept ones, ``packs`` those old enough to touch. Candidates: packs
    whose live bytes (the stored lengths of the chunks
    kept manifests use) are below ``below`` of their size, none of whose users is signed (the
    signature covers chunk locations, and gc holds no key). Repacking is worth a request only
    when it merges at least two candidates, or frees a pack at least 90% dead.
    """
    live: dict[bytes, dict[bytes, Location]] = {}
    users: dict[bytes, set[str]] = {}
    conflicted: set[bytes] = set()
    for sid, m in manifests.items():
        ix = m.index
        for r in m.chunk_rows():  # rows of the index's columns: no id lookups
            cid, loc = ix.cids[r], ix.at(r)
            seen = live.setdefault(loc.pack, {}).setdefault(cid, loc)
            if seen != loc:
                conflicted.add(loc.pack)
            users.setdefault(loc.pack, set()).add(sid)
    cands: list[RepackCandidate] = []
    signed = 0
    for pid, locs in sorted(live.items()):
        o = packs.get(pid)
        if o is None or pid in conflicted or o.size <= 0:
            continue
        live_bytes = sum(loc.length for loc in locs.values())
        if live_bytes >= below * o.size:
            continue
        if any("auth" in manifests[s].info for s in users[pid]):
            signed += 1
            continue
        cands.append(RepackCandidate(pid.hex(), o.size, live_bytes, sorted(users[pid])))
    if signed:
        notes.append(f"{signed} mostly dead packs are used by signed snapshots and were "
                          "not repacked (their signatures cover chunk locations)")
    if not cands or (len(cands) == 1 and cands[0].live_bytes
                     >= REPACK_SINGLE_BELOW * cands[0].size):
        return [], {}
    return cands, {bytes.fromhex(c.pack): live[bytes.fromhex(c.pack)] for c in cands}


def execute_repack(repo: Repository, cands: list[RepackCandidate],
                   live: dict[bytes, dict[bytes, Location]], kept: dict[str, Manifest],
                   digests: dict[str, str]) -> RepackResult:
    """Copy the live chunks of ``cands`` into new packs; rewrite the kept manifests.

    ``digests`` are the stored manifest versions gc read (they go into the markers).

    Order: new packs, then a ``superseded`` marker per old pack (naming the rewritten
    snapshots and the manifest digests they replace), then the manifests at the same keys.
    The old packs stay: a later gc deletes them once unreferenced and the marker rules allow.
    """
    store = repo.store
    pack_size = repo.config.pack_size if repo.config else DEFAULT_PACK_SIZE
    rep = RepackResult()
    done: list[RepackCandidate] = []
    queued: set[bytes] = set()
    with PackWriter(store, pack_size) as writer:
        for c in cands:
            pid = bytes.fromhex(c.pack)
            key = Layout.pack(pid)
            chunks = live[pid]
            reader = ChunkReader(store, chunks, Codec())
            try:
                data = store.get(key)
                if chunk_id(data) != pid:
                    raise IntegrityError(f"{store.where(key)}: content does not hash to its id")
                trailer = parse_pack(data, store.where(key), pack_id=pid)
                blobs = []
                for cid, loc in sorted(chunks.items(), key=lambda kv: kv[1].offset):
                    t = trailer.get(cid)
                    if t is None or (t.offset, t.length, t.raw_size) != (
                            loc.offset, loc.length, loc.raw_size):
                        raise FormatError(f"chunk {cid.hex()}: manifest location disagrees "
                                          f"with the trailer of {store.where(key)}")
                    blob = data[loc.offset:loc.offset + loc.length]
                    reader.verify(cid, blob)  # copy only what proves to be the chunk
                    blobs.append((cid, blob, loc.raw_size))
            except (NotFoundError, FormatError) as exc:
                rep.notes.append(f"pack {c.pack} not repacked: {exc} (run `snapsync check`)")
                continue
            del data
            for cid, blob, raw in blobs:
                if cid in queued:
                    continue  # the same chunk in two candidates: one copy
                queued.add(cid)
                writer.add(cid, blob, raw)
                rep.bytes_repacked += len(blob)
            done.append(c)
        moved = writer.finish()
    rep.packs_written = writer.packs
    rep.written = {loc.pack for loc in moved.values()}
    if not done:
        return rep
    gone = {bytes.fromhex(c.pack) for c in done}
    for c in done:  # markers before manifests: a crash leaves the old packs referenced
        pid = bytes.fromhex(c.pack)
        snaps = {s: digests.get(s, "") for s in c.snapshots}
        # A pack repacked before (and named again by a push meanwhile) keeps what its old
        # marker knew: those manifest versions may still be cached somewhere.
        prev = repo.read_markers([pid]).get(pid, {}).get("snapshots") or {}
        snaps.update({s: d for s, d in prev.items() if s not in snaps})
        repo.write_marker(pid, snaps)
    rewrite = sorted({s for c in done for s in c.snapshots})
    for sid in rewrite:
        m = kept[sid]
        ix = m.index
        locs = {ix.cids[r]: moved[ix.cids[r]] if ix.packs[ix.pack_idx[r]] in gone else ix.at(r)
                for r in m.chunk_rows()}
        new_sid, raw, _n, _packs = encode_manifest_columns(m.tree, locs, m.info)
        if new_sid != sid:
            raise AssertionError(f"repacking changed snapshot id {sid} to {new_sid}")
        repo.save_manifest(sid, raw, rewrite=True)
    rep.packs_repacked = len(done)
    rep.manifests_rewritten = len(rewrite)
    return rep
