"""Tree diff and path safety: pure functions over manifest entries and local observations.

``check_paths`` is the gate every manifest passes before a pull writes anything: paths must be
relative posix without ``.``/``..``/empty components, unique (also by case where the target
file system ignores case), and never pass through a symlink or file the same manifest creates.
``plan_pull`` compares a snapshot with what the target holds; ``diff_trees`` compares two
snapshots.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from snapsync.core.manifest import DIR, FILE, SYMLINK, Entry
from snapsync.errors import UnsafePathError


def check_paths(entries: Sequence[Entry], case_insensitive: bool | None = None,
                windows: bool | None = None) -> None:
    """Raise ``UnsafePathError`` naming the first path that could escape or collide."""
    if case_insensitive is None:
        case_insensitive = sys.platform in ("darwin", "win32")
    if windows is None:
        windows = sys.platform == "win32"
    leaves: dict[bytes, str] = {}
    folded: dict[bytes, bytes] = {}
    seen: set[bytes] = set()
    for e in entries:
        p = e.path
        shown = e.name
        if not p or p.startswith(b"/") or b"\x00" in p:
            raise UnsafePathError(f"manifest path {shown!r} is empty, absolute or has a NUL byte")
        if windows and (b"\\" in p or b":" in p):
            raise UnsafePathError(f"manifest path {shown!r} is not safe on Windows")
        parts = p.split(b"/")
        if any(part in (b"", b".", b"..") for part in parts):
            raise UnsafePathError(f"manifest path {shown!r} has an empty, '.' or '..' component")
        if p in seen:
            raise UnsafePathError(f"manifest path {shown!r} appears twice")
        seen.add(p)
        if case_insensitive:
            low = p.lower()
            if low in folded:
                raise UnsafePathError(f"manifest paths {shown!r} and {folded[low]!r} differ only "
                                      "in case; this file system cannot hold both")
            folded[low] = p
        if e.kind in (FILE, SYMLINK):
            leaves[p] = e.kind
    # No entry may live under a symlink or a file of the same manifest.
    for e in entries:
        parts = e.path.split(b"/")
        for i in range(1, len(parts)):
            kind = leaves.get(b"/".join(parts[:i]))
            if kind is not None:
                what = "a symlink" if kind == SYMLINK else "a file"
                raise UnsafePathError(f"manifest path {e.name!r} passes through "
                                      f"{b'/'.join(parts[:i]).decode('utf-8', 'replace')!r}, "
                                      f"which is {what} in the same snapshot")


@dataclass(frozen=True, slots=True)
class Seen:
    """What the target holds at a manifest path (``chunks`` only for files, when known)."""

    kind: str  # FILE, SYMLINK, DIR, or "" for missing / not reachable safely
    mode: int = 0
    size: int = 0
    chunks: tuple[bytes, ...] | None = None
    target: bytes = b""


@dataclass
class PullPlan:
    """What a pull must do to make the target equal to the snapshot."""

    write: list[Entry] = field(default_factory=list)  # files and symlinks to (re)create
    chmod: list[Entry] = field(default_factory=list)  # same content, different mode
    mkdir: list[Entry] = field(default_factory=list)  # empty directories to create
    unchanged: int = 0


def plan_pull(entries: Iterable[Entry], seen: dict[bytes, Seen]) -> PullPlan:
    plan = PullPlan()
    for e in entries:
        s = seen.get(e.path) or Seen("")
        if e.kind == DIR:
            if s.kind == DIR:
                plan.unchanged += 1
            else:
                plan.mkdir.append(e)
        elif e.kind == SYMLINK:
            if s.kind == SYMLINK and s.target == e.target:
                plan.unchanged += 1
            else:
                plan.write.append(e)
        elif s.kind == FILE and s.size == e.size and s.chunks == e.chunks:
            if s.mode == e.mode:
                plan.unchanged += 1
            else:
                plan.chmod.append(e)
        else:
            plan.write.append(e)
    return plan


@dataclass
class TreeDiff:
    """Paths added, removed and modified (content, mode, kind or link target)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified}


def diff_trees(old: Iterable[Entry], new: Iterable[Entry]) -> TreeDiff:
    a = {e.path: e for e in old}
    b = {e.path: e for e in new}
    d = TreeDiff()
    for p in sorted(a.keys() | b.keys()):
        if p not in a:
            d.added.append(b[p].name)
        elif p not in b:
            d.removed.append(a[p].name)
        elif a[p] != b[p]:
            d.modified.append(b[p].name)
    return d
