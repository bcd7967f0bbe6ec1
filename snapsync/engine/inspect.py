"""Read-only views of a store: a ref's log, a snapshot's entries, diffs.

Thin engines over the repository; they never print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from snapsync.core.chunking import Chunker
from snapsync.core.ignore import resolve_rules
from snapsync.core.manifest import FILE, SYMLINK, Entry
from snapsync.core.names import ref_name_problem
from snapsync.core.plan import TreeDiff, diff_trees
from snapsync.errors import LocalFileError, NotFoundError
from snapsync.local.tree import default_cache_dir, read_chunks, scan
from snapsync.repository import Repository, SnapshotInfo
from snapsync.store import as_store

_KIND_NAMES = {"f": "file", "l": "symlink", "d": "dir"}


def _repo(url: str, storage_options: dict[str, Any] | None) -> Repository:
    repo = Repository(as_store(url, storage_options), default_cache_dir())
    repo.open(create=False)
    return repo


def log(url: str, ref: str = "latest",
        storage_options: dict[str, Any] | None = None) -> list[SnapshotInfo]:
    """The snapshots a ref has pointed to, newest first."""
    return _repo(url, storage_options).log(ref)


def list_entries(url: str, ref: str | None = None, snapshot: str | None = None,
                 storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The entries of a snapshot as plain dicts (path, kind, mode, size, chunks, target)."""
    repo = _repo(url, storage_options)
    m = repo.load_manifest(repo.resolve(ref, snapshot))
    return [{"path": e.name, "kind": _KIND_NAMES[e.kind], "mode": e.mode, "size": e.size,
             "chunks": len(e.chunks),
             "target": os.fsdecode(e.target) if e.kind == SYMLINK else None}
            for e in m.tree]


def diff(url: str, a: str, b: str = ".",
         storage_options: dict[str, Any] | None = None) -> TreeDiff:
    """Compare two trees; each side is a local folder, ``ref:NAME``, a ref, a snapshot id or
    ``git:<commit>``."""
    repo = _repo(url, storage_options)
    return diff_trees(_side(repo, a), _side(repo, b))


def _side(repo: Repository, spec: str) -> list[Entry]:
    if spec.startswith("ref:"):
        return repo.load_manifest(repo.resolve(spec[4:], None)).entries
    if spec.strip().lower().startswith("git:"):  # git:<commit>[+dirty], from the refs' logs
        return repo.load_manifest(repo.resolve(None, spec)).entries
    if os.path.isdir(spec):
        return local_entries(Path(spec), Chunker(repo.config.chunker))  # type: ignore[union-attr]
    if os.path.lexists(spec):
        raise LocalFileError(f"diff: {spec} is not a folder")
    hexish = all(c in "0123456789abcdef" for c in spec.lower()) and len(spec) >= 4
    problem = None if hexish else ref_name_problem(spec)
    if problem is not None:
        # Most likely a mistyped folder (./srcc): say that, not "invalid ref name".
        raise LocalFileError(f"diff: no folder {spec} (and it is not a ref name: {problem})")
    info = None if hexish else repo.read_ref(spec)
    if info is None and not hexish:
        raise NotFoundError(f"diff: {spec!r} is neither a folder nor a ref of "
                            f"{repo.store.display_url}")
    sid = info.snapshot if info else repo.resolve(None, spec)
    return repo.load_manifest(sid).entries


def local_entries(root: Path, chunker: Chunker) -> list[Entry]:
    """A local folder as manifest entries (reads every file), with the push's ignore rules."""
    rules, _ = resolve_rules(root.resolve(), None, True)
    out = []
    for e in scan(root.resolve(), rules, lambda _m: None):
        path = os.fsencode(e.path)
        if e.kind == FILE:
            ids = tuple(c for c, _ in read_chunks(os.path.join(root, e.path), e.size, chunker))
            out.append(Entry(path, FILE, e.mode, e.size, ids))
        else:
            out.append(Entry(path, e.kind, e.mode, 0, (), e.target))
    return out
