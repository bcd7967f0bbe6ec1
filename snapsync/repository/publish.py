"""Publishing a snapshot, and gc's side of it: the ref update by compare-and-swap and the
tombstones that close gc's delete window (docs/format.md §5, §8).

A part of :class:`~snapsync.repository.repo.Repository` (it uses its store, log and manifest
bookkeeping); kept apart because the protocol is the subtlest code of the repository.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snapsync.errors import (
    AlreadyExistsError,
    ConflictError,
    FormatError,
    GcRaceError,
    SnapsyncError,
)
from snapsync.repository.config import TOMBSTONE_IDS_MAX, TOMBSTONE_TTL, SnapshotInfo, Tombstone
from snapsync.store import IfMatch, Layout, PutMode, check_ref_name
from snapsync.store import layout as kinds

if TYPE_CHECKING:
    from snapsync.repository.repo import Repository

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


def _deleting(live: dict[str, Tombstone], doomed: list[str]) -> bool:
    """Whether one of the ``doomed`` tombstones is still there and its gc not done."""
    return any(k in live and not live[k].done for k in doomed)


class Publishing:
    """Ref updates and gc tombstones; mixed into :class:`Repository`."""

    def publish(self: Repository, ref: str,
                make: Callable[[SnapshotInfo | None], SnapshotInfo | None],
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

    def _outlast_gc(self: Repository, sid: str, needs: set[bytes]) -> None:
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
            live = self.tombstones()
            if _deleting(live, doomed):
                self.warn(f"gc is deleting objects in {self.store.display_url}; this push "
                          f"waits for it to finish ({self.store.where(doomed[0])})")
            while _deleting(live, doomed):
                if time.monotonic() > deadline:
                    raise GcRaceError(
                        f"gc is still deleting objects that snapshot {sid} needs after "
                        f"{GC_WAIT:.0f} s ({self.store.where(doomed[0])}); nothing was "
                        "published: push again later", doomed)
                _sleep(0.5)
                live = self.tombstones()
            missing = self._missing(sid, needs)
            if missing:
                raise GcRaceError(
                    f"gc deleted {self.store.where(missing[0])}, which snapshot {sid} needs, "
                    "while this push ran; nothing was published: push again (it uploads what "
                    "gc took)", doomed)
            seen.update(doomed)  # those gc runs are over and left what we need: look for others
            doomed = [k for k in self.doomed(sid, needs) if k not in seen]

    def _missing(self: Repository, sid: str, packs: set[bytes]) -> list[str]:
        """Keys of the manifest ``sid`` and of ``packs`` that are not in the store (one LIST
        per key folder: only after a race with gc)."""
        want = [Layout.manifest(sid)] + [Layout.pack(p) for p in sorted(packs)]
        folders = sorted({k.rsplit("/", 1)[0] + "/" for k in want})
        self.store.invalidate()
        have = {m.key for f in folders for m in self.store.list(f)}
        return [k for k in want if k not in have]

    def _write_log(self: Repository, info: SnapshotInfo) -> str:
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
    def write_tombstones(self: Repository, manifests: Iterable[str], packs: Iterable[str],
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

    def finish_tombstones(self: Repository, keys: Iterable[str]) -> None:
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

    def tombstones(self: Repository, void: bool = False) -> dict[str, Tombstone]:
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

    def doomed(self: Repository, sid: str, packs: set[bytes]) -> list[str]:
        """Live tombstones naming the manifest ``sid`` or one of ``packs``."""
        hexes = {p.hex() for p in packs}
        return sorted(k for k, t in self.tombstones().items()
                      if sid in t.manifests or hexes.intersection(t.packs))
