"""What gc keeps: its defaults, the grace rule and retention (docs/format.md §8).

Light on purpose: the CLI reads the defaults for its help text without loading gc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snapsync.repository import SnapshotInfo
    from snapsync.repository.repo import Listing, StoredObject

DEFAULT_GRACE = 24 * 3600.0
DEFAULT_REPACK_BELOW = 0.5


def young(t: float | None, now: float, grace: float) -> bool:
    # Unknown age counts as young: never delete what we cannot date.
    return t is None or now - t < grace


def retained(refs: dict[str, SnapshotInfo], lst: Listing, keep_last: int,
              keep_within: float | None, grace: float, now: float) -> set[str]:
    """Snapshot ids that retention, ref heads or the grace period keep."""
    keep = {info.snapshot for info in refs.values()}
    by_ref: dict[str, list[StoredObject]] = {}
    for e in lst.logs:
        by_ref.setdefault(e.ref, []).append(e)  # type: ignore[arg-type]
    for entries in by_ref.values():
        entries.sort(key=lambda e: e.time_ns or 0, reverse=True)
        distinct: list[str] = []
        newer_ns: int | None = None  # when the entry above replaced this one as head
        for e in entries:
            sid, ns = e.id, e.time_ns or 0
            t = ns / 1e9
            if sid not in distinct:
                distinct.append(sid)  # type: ignore[arg-type]
            if sid in distinct[:keep_last]:
                keep.add(sid)  # type: ignore[arg-type]
            if keep_within is not None and now - t < keep_within:
                keep.add(sid)  # type: ignore[arg-type]
            # Head less than `grace` ago: a running push may reuse its chunks.
            if newer_ns is None or young(newer_ns / 1e9, now, grace) or young(t, now, grace):
                keep.add(sid)  # type: ignore[arg-type]
            newer_ns = ns
    for sid, o in lst.manifests.items():
        if young(o.mtime, now, grace):
            keep.add(sid)  # a push may be about to write its log entry and ref
    return keep
