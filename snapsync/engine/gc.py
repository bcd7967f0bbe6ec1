"""GC engine: drop snapshots outside retention, delete what no kept snapshot needs, repack.

Plan, then execute: :func:`plan_gc` looks at the store and returns a :class:`GcPlan` — what
would be deleted and repacked, and why — without writing anything; ``gc --dry-run`` shows
exactly that plan, and :func:`execute_gc` carries it out. Never prints.

GC takes no lock (docs/format.md §8). A push learns what the store holds from the manifests of
the ref heads it read when it started, and uploads packs before the manifest that names them.
So gc keeps, besides what retention keeps:

* every ref head, re-read right before the plan is final;
* every snapshot that was a ref head less than ``grace`` ago, and every manifest younger than
  ``grace``;
* every pack younger than ``grace`` (packs of pushes still running) and every pack a kept
  manifest names, including manifests that appeared while gc ran.

Packs that are mostly dead are repacked: their live chunks are copied into new packs and the
kept manifests rewritten at the same key; the old packs get a ``superseded`` marker and are
deleted by a later run, once the marker is older than ``grace`` and no ref head still records
the manifest version that named them (a cached copy of it may still be trusted). Right before
each kind of delete, execute looks once more and spares objects rewritten meanwhile.

Safe as long as no push runs longer than ``grace`` (default 24 h) and clocks are within
``grace`` of the store's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from snapsync.core.manifest import Location, Manifest
from snapsync.engine.policy import DEFAULT_GRACE, DEFAULT_REPACK_BELOW, retained, young
from snapsync.engine.repack import RepackCandidate, execute_repack, plan_repack
from snapsync.errors import FormatError, NotFoundError, SnapsyncError, UsageError
from snapsync.repository import Repository
from snapsync.repository.config import TOMBSTONE_TTL
from snapsync.store import Layout, Store, as_store
from snapsync.store import layout as kinds


@dataclass
class GcPlan:
    """What gc will do. ``--dry-run`` renders this; :func:`execute_gc` carries it out."""

    url: str
    keep_last: int
    keep_within: float | None
    grace: float
    snapshots_kept: list[str] = field(default_factory=list)
    snapshots_dropped: list[str] = field(default_factory=list)
    log_entries: list[str] = field(default_factory=list)  # keys to delete
    manifests: list[str] = field(default_factory=list)  # snapshot ids whose manifest goes
    packs: list[str] = field(default_factory=list)  # pack ids (hex) to delete
    bytes_freed: int = 0
    packs_kept: int = 0
    packs_young: int = 0
    packs_superseded_kept: int = 0
    markers: list[str] = field(default_factory=list)  # superseded markers whose pack is gone
    repack: list[RepackCandidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What execute needs, not part of the rendered plan:
    _kept: dict[str, Manifest] = field(default_factory=dict, repr=False)
    _live: dict[bytes, dict[bytes, Location]] = field(default_factory=dict, repr=False)
    _digests: dict[str, str] = field(default_factory=dict, repr=False)
    _logs_seen: set[str] = field(default_factory=set, repr=False)  # log keys the plan saw
    _void_tombstones: list[str] = field(default_factory=list, repr=False)
    _now: float = 0.0

    @property
    def manifests_rewritten(self) -> int:
        return len({s for c in self.repack for s in c.snapshots})

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        out["repack"] = [c.__dict__ for c in self.repack]
        out["manifests_rewritten"] = self.manifests_rewritten
        return out


@dataclass
class GcReport:
    """What ``gc`` did (or, with ``dry_run``, would do): the plan and the counts.

    What the plan decided (snapshots kept and dropped, packs kept) is read through to
    ``plan``; the fields here count what was carried out.
    """

    plan: GcPlan
    dry_run: bool
    log_entries_deleted: int = 0
    manifests_deleted: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0
    packs_repacked: int = 0
    bytes_repacked: int = 0
    packs_superseded: int = 0
    packs_written: int = 0
    manifests_rewritten: int = 0
    markers_deleted: int = 0
    snapshots_spared: list[str] = field(default_factory=list)  # pushed again while gc ran
    notes: list[str] = field(default_factory=list)  # the plan's, then execution's
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    # What the plan decided, read through (one source of truth).
    _FROM_PLAN = ("url", "keep_last", "keep_within", "grace", "snapshots_kept",
                  "snapshots_dropped", "packs_kept", "packs_young", "packs_superseded_kept")

    def __getattr__(self, name: str) -> Any:
        if name in GcReport._FROM_PLAN:
            return getattr(self.plan, name)
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self.plan, k) for k in self._FROM_PLAN}
        out.update({k: v for k, v in self.__dict__.items() if k != "plan"})
        out["plan"] = self.plan.as_dict()
        return out


def _check_args(keep_last: int, keep_within: float | None, grace: float,
                repack_below: float) -> None:
    if keep_last < 1:
        raise UsageError(f"--keep-last must be at least 1, got {keep_last}")
    if grace < 0 or (keep_within is not None and keep_within < 0):
        raise UsageError("--grace and --keep-within must not be negative")
    if not 0 <= repack_below <= 1:
        raise UsageError(f"--repack-below must be between 0 and 1, got {repack_below}")


def plan_gc(repo: Repository, keep_last: int, keep_within: float | None = None,
            grace: float = DEFAULT_GRACE, *, repack: bool = True,
            repack_below: float = DEFAULT_REPACK_BELOW,
            on_progress: Callable[[str], None] | None = None) -> GcPlan:
    """Look at the store and decide what gc deletes and repacks; writes nothing."""
    _check_args(keep_last, keep_within, grace, repack_below)
    say = on_progress or (lambda _m: None)
    store = repo.store
    plan = GcPlan(url=store.display_url, keep_last=keep_last, keep_within=keep_within,
                  grace=grace, _now=time.time())
    now = plan._now

    say("listing the store")
    lst = repo.listing()
    refs, bad = repo.read_refs()
    if bad:
        # A ref we cannot read might name anything: refuse rather than guess.
        raise FormatError("gc stopped: unreadable refs: " + "; ".join(bad.values()))
    keep = retained(refs, lst, keep_last, keep_within, grace, now)
    known = set(lst.manifests) | {e.id for e in lst.logs}
    live: set[bytes] = set()
    loaded: set[str] = set()

    def mark(sids: Iterable[str]) -> None:
        """Load kept manifests; their packs are live. A kept manifest that cannot be read
        stops gc: its packs are unknown, so nothing can be called dead."""
        todo = sorted(set(sids) - loaded)
        for sid, m in repo.fetch_manifests(todo).items():
            loaded.add(sid)
            if isinstance(m, NotFoundError):
                if sid in lst.manifests or any(i.snapshot == sid for i in refs.values()):
                    raise SnapsyncError(f"gc stopped: kept snapshot {sid} has no manifest "
                                        "(run `snapsync check`)") from None
                continue
            if isinstance(m, Exception):
                raise m
            plan._kept[sid] = m
            live.update(m.index.used_packs())

    say(f"reading {len(keep)} kept manifests")
    mark(keep)

    # Re-check the roots right before deciding: refs and manifests that appeared meanwhile
    # are kept, and their packs are live.
    say("re-reading refs")
    again = repo.listing()
    refs, bad = repo.read_refs()
    if bad:
        raise FormatError("gc stopped: unreadable refs: " + "; ".join(bad.values()))
    drop = known - keep
    new_roots = {i.snapshot for i in refs.values()} | (set(again.manifests) - set(lst.manifests))
    new_roots |= retained(refs, again, keep_last, keep_within, grace, time.time()) & drop
    keep |= new_roots
    mark(new_roots)
    drop -= keep
    plan._digests = dict(repo.digests)

    # Superseded packs (repacked by an earlier run) wait for their marker to age past
    # `grace`, and for every ref head whose snapshot gc rewrote to record the rewritten
    # manifest: until a push moves such a ref, clients may trust a cached copy of the old
    # manifest (its digest still matches the ref), and that copy names the old packs.
    markers = repo.read_markers(again.markers)
    replaced: dict[str, set[str]] = {}  # sid -> digests of manifest versions gc replaced
    for doc in markers.values():
        for sid, old in (doc.get("snapshots") or {}).items():
            replaced.setdefault(sid, set()).add(str(old))
    stale: set[str] = set()  # snapshots some ref head names with another manifest digest
    unexplained: list[str] = []
    for name, info in sorted(refs.items()):
        if info.manifest == repo.digests.get(info.snapshot):
            continue
        stale.add(info.snapshot)
        if info.manifest and info.manifest not in replaced.get(info.snapshot, set()):
            unexplained.append(name)
    if unexplained:
        # A ref records a manifest version the store no longer holds, and no repack explains
        # it (two pushes of one tree raced): clients may trust that version from their
        # caches, and its packs are unknown. Delete no unreferenced pack until the ref moves.
        plan.notes.append(f"refs {', '.join(unexplained)} record a manifest digest that "
                          "differs from the stored manifest; no unreferenced pack is deleted "
                          "until they are pushed again")

    for pid, o in sorted(lst.packs.items()):
        marker = again.markers.get(pid)
        if pid in live:
            plan.packs_kept += 1
        elif young(o.mtime, now, grace):
            plan.packs_young += 1
        elif marker is not None and (
                young(marker.mtime, now, grace)
                or stale & set((markers.get(pid) or {}).get("snapshots") or {})
                or pid not in markers):
            plan.packs_superseded_kept += 1
        elif unexplained:
            plan.packs_kept += 1
        elif pid in again.packs:
            plan.packs.append(pid.hex())
            plan.bytes_freed += o.size
    gone = set(plan.packs) | {p.hex() for p in again.markers if p not in again.packs}
    plan.markers = sorted(p.hex() for p in again.markers if p.hex() in gone)

    if repack:
        say("looking for mostly dead packs")
        old = {p: o for p, o in again.packs.items() if not young(o.mtime, now, grace)}
        plan.repack, plan._live = plan_repack(
            {s: plan._kept[s] for s in sorted(keep) if s in plan._kept}, old, repack_below,
            plan.notes)
    plan.snapshots_kept = sorted(keep & known)  # type: ignore[operator]
    plan.snapshots_dropped = sorted(drop)  # type: ignore[arg-type]
    drop_set = set(drop)
    plan._logs_seen = {e.key for e in again.logs}
    plan._void_tombstones = sorted(repo.tombstones(void=True))
    plan.log_entries = sorted(e.key for e in again.logs if e.id in drop_set)
    plan.manifests = [s for s in plan.snapshots_dropped if s in again.manifests
                      and not young(again.manifests[s].mtime, now, grace)]
    if plan.packs_young:
        plan.notes.append(f"{plan.packs_young} unreferenced packs are younger than the grace "
                          "period and were kept (a push may still need them)")
    if plan.packs_superseded_kept:
        plan.notes.append(f"{plan.packs_superseded_kept} repacked packs were kept: superseded "
                          "less than the grace period ago, or a ref head still records the "
                          "manifest version that names them (they go after its next push)")
    return plan


def execute_gc(repo: Repository, plan: GcPlan, report: GcReport,
               on_progress: Callable[[str], None] | None = None) -> None:
    """Carry out ``plan``: repack, then delete log entries, manifests, packs and markers.

    Deletes run in the reverse of the push's write order, so a gc stopped half-way leaves
    only unreferenced objects behind; each kind is listed once more right before its delete.
    """
    say = on_progress or (lambda _m: None)
    store, now, grace = repo.store, plan._now, plan.grace
    if plan.repack:
        say(f"repacking {len(plan.repack)} mostly dead packs")
        done = execute_repack(repo, plan.repack, plan._live, plan._kept, plan._digests)
        report.notes += done.notes
        report.packs_written, report.bytes_repacked = done.packs_written, done.bytes_repacked
        report.packs_repacked = report.packs_superseded = done.packs_repacked
        report.manifests_rewritten = done.manifests_rewritten
        # A new pack may be byte for byte a dead one (the same live chunks, copied again):
        # written create-only, it is that pack, which now must stay.
        repacked = done.written
    else:
        repacked = set()
    # Tombstones first: a push that publishes after this point sees them and backs off; one
    # that published before it is in the listing below, and what it needs is spared (§8).
    say("writing tombstones")
    doomed = [p for p in plan.packs if bytes.fromhex(p) not in repacked]
    tombs: list[str] = []  # filled as they are written: a failed write leaves none behind
    written = time.time()
    try:
        if plan.manifests or doomed:
            repo.write_tombstones(plan.manifests, doomed, tombs)
        say("re-reading refs and logs")
        spared_logs, spared_manifests, spared_packs = _spared(repo, plan, report)

        def in_time() -> bool:
            # Tombstones are void after TOMBSTONE_TTL: stop deleting well before.
            if time.time() - written < TOMBSTONE_TTL / 2:
                return True
            report.notes.append("gc stopped deleting: its tombstones are about to expire; "
                                "run it again for the rest")
            return False

        log_entries = [k for k in plan.log_entries if k not in spared_logs]
        say(f"deleting {len(log_entries)} log entries, {len(plan.manifests)} manifests, "
            f"{len(plan.packs)} packs")
        store.delete(log_entries)
        report.log_entries_deleted = len(log_entries)
        if not in_time():
            return
        # Stores without conditional writes let a push rewrite a dropped tree's manifest and
        # pack keys in place (ids are content hashes): spare the ones rewritten since.
        fresh_m = repo.manifest_objects()
        dead_manifests = [s for s in plan.manifests if s not in spared_manifests
                          and s in fresh_m and not young(fresh_m[s].mtime, now, grace)]
        store.delete([Layout.manifest(s) for s in dead_manifests])
        report.manifests_deleted = len(dead_manifests)
        if not in_time():
            return
        fresh_p = repo.packs()
        dead = {bytes.fromhex(p) for p in plan.packs} - spared_packs - repacked
        dead_packs = [p for p in sorted(dead)
                      if p in fresh_p and not young(fresh_p[p].mtime, now, grace)]
        store.delete([Layout.pack(p) for p in dead_packs])
        report.packs_deleted = len(dead_packs)
        report.bytes_freed = sum(fresh_p[p].size for p in dead_packs)
        # Markers of packs that are gone (deleted now or earlier) have done their job.
        deleted = set(dead_packs)
        dead_markers = [p for p in (bytes.fromhex(m) for m in plan.markers)
                        if p in deleted or p not in fresh_p]
        store.delete([Layout.superseded(p) for p in dead_markers])
        report.markers_deleted = len(dead_markers)
    finally:
        # Done, not deleted: a push that lists tombstones late still sees what went (§8).
        repo.finish_tombstones(tombs)
        store.delete(plan._void_tombstones)


def _spared(repo: Repository, plan: GcPlan, report: GcReport
            ) -> tuple[set[str], set[str], set[bytes]]:
    """What pushes that published while gc planned need: ref heads and snapshots with log
    entries the plan did not see. Read after gc's tombstones are written, so every push
    either is seen here or sees them. Returns log keys, manifests and packs to spare."""
    refs, bad = repo.read_refs()
    if bad:
        raise FormatError("gc stopped: unreadable refs: " + "; ".join(bad.values()))
    objs, _ = repo.objects(Layout.LOGS)
    fresh = {o.id for o in objs if o.kind == kinds.LOG and o.key not in plan._logs_seen}
    roots = ({i.snapshot for i in refs.values()} | fresh) - set(plan._kept)
    roots.discard(None)  # type: ignore[arg-type]
    if not roots:
        return set(), set(), set()
    packs: set[bytes] = set()
    for m in repo.fetch_manifests(roots).values():
        if isinstance(m, NotFoundError):
            continue  # no manifest: nothing of it to spare (check reports the ref)
        if isinstance(m, Exception):
            raise m
        packs.update(m.index.used_packs())
    report.snapshots_spared = sorted(roots)  # type: ignore[arg-type]
    if roots & set(plan.snapshots_dropped):
        report.notes.append(f"{len(roots)} snapshots published while gc ran were kept")
    logs = {o.key for o in objs if o.kind == kinds.LOG and o.id in roots}
    return logs, set(roots), packs  # type: ignore[arg-type]


def gc(url: str | Store, keep_last: int, keep_within: float | None = None,
       dry_run: bool = False, grace: float = DEFAULT_GRACE, *, repack: bool = True,
       repack_below: float = DEFAULT_REPACK_BELOW,
       storage_options: dict[str, Any] | None = None,
       on_progress: Callable[[str], None] | None = None) -> GcReport:
    """Drop snapshots outside retention and delete what no kept snapshot needs.

    Args:
        url: the store (a URL or an open Store).
        keep_last: per ref, keep the newest N distinct snapshots of its log (at least 1).
        keep_within: per ref, also keep snapshots logged less than this many seconds ago.
        dry_run: plan only: report what would be deleted and repacked, change nothing.
        grace: seconds; nothing younger is deleted and snapshots that were ref heads less
            than this long ago are kept (see the module docstring for why).
        repack: copy the live chunks of mostly dead packs into new packs and point the kept
            manifests at them; the old packs go in a later run.
        repack_below: a pack is mostly dead when its live bytes are below this fraction.
        storage_options: passed to the store.
        on_progress: called with a short line per phase.

    Returns:
        A :class:`GcReport` whose ``plan`` is what was (or would be) carried out.
    """
    _check_args(keep_last, keep_within, grace, repack_below)
    t0 = time.perf_counter()
    store = as_store(url, storage_options)
    repo = Repository(store, None)
    repo.open(create=False)
    plan = plan_gc(repo, keep_last, keep_within, grace, repack=repack,
                   repack_below=repack_below, on_progress=on_progress)
    rep = GcReport(plan=plan, dry_run=dry_run, notes=list(plan.notes))
    if dry_run:
        rep.log_entries_deleted = len(plan.log_entries)
        rep.manifests_deleted = len(plan.manifests)
        rep.packs_deleted = len(plan.packs)
        rep.bytes_freed = plan.bytes_freed
        rep.markers_deleted = len(plan.markers)
        rep.packs_repacked = rep.packs_superseded = len(plan.repack)
        rep.bytes_repacked = sum(c.live_bytes for c in plan.repack)
        rep.manifests_rewritten = plan.manifests_rewritten
    else:
        execute_gc(repo, plan, rep, on_progress)
    rep.requests = store.stats.as_dict()["requests"]
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep
