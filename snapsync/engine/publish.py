"""Push's last step: store the manifest, then move the ref (docs/format.md §5, §6).

The protocol itself (compare-and-swap rounds, gc tombstones) is the repository's
(:mod:`snapsync.repository.publish`); this builds the log entry and says what the snapshot
depends on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from snapsync.core.keyed import Keyring
from snapsync.core.manifest import Manifest
from snapsync.repository import Repository, SnapshotInfo
from snapsync.repository.publish import Published
from snapsync.version import __version__


def publish_snapshot(repo: Repository, ref: str, sid: str, raw_manifest: bytes, needs: set[bytes],
             existed: set[bytes], head_manifest: Manifest | None, resign: bool,
             keyring: Keyring | None, stats: dict[str, int], totals: dict[str, int],
             message: str, git: dict[str, Any], by_commit: bool) -> Published | None:
    """Store the manifest (unless a ref head has it), then move the ref (docs/format.md §5)."""
    confirm = set(existed)  # old objects relied on: seen in a listing before the ref moves
    if head_manifest is not None and not resign:
        stored: Manifest | None = head_manifest
    else:
        size, stored = repo.save_manifest(sid, raw_manifest, rewrite=resign)
        if stored is not None and keyring is not None and not keyring.signed(stored):
            size, stored = repo.save_manifest(sid, raw_manifest, rewrite=True)
        stats["uploaded"] += size
        if stored is not None:  # an old manifest of this tree, adopted: all it names is old
            confirm = stored.index.used_packs()
    if stored is not None:  # what the snapshot depends on: the packs its stored manifest names
        needs = stored.index.used_packs()

    def make(head: SnapshotInfo | None) -> SnapshotInfo | None:
        if (head is not None and head.snapshot == sid and not resign
                and (not by_commit or head.git == git)):
            return None  # the ref names this tree already (another push put it there)
        when, ns = _now()
        return SnapshotInfo(snapshot=sid, ref=ref, time=when, time_ns=ns,
                            parent=head.snapshot if head else None, host=_hostname(),
                            version=__version__, message=message, totals=totals, git=git)

    return repo.publish(ref, make, needs, confirm & needs)


def _now() -> tuple[str, int]:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9)), ns


def git_facts_of(root: Path) -> dict[str, Any]:
    from snapsync.local.git import git_info  # ~7 ms to import: only a push that publishes

    return git_info(root)


def _hostname() -> str:
    import socket  # ~7 ms to import: only a push that writes a snapshot needs it

    return socket.gethostname()
