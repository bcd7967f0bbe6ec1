"""Export a snapshot as a deterministic tar: a ``docker build -`` context or an image layer.

The same snapshot always gives the same bytes: entries in path order (every folder before
what is in it, implied folders included), mtime 0, owner and group 0 with no names, the
snapshot's modes (0644/0755 files, 0755 folders, 0777 links), symlinks as links, empty
folders kept, POSIX.1-2001 (pax) format so long and non-ASCII names survive. An optional
Dockerfile is put first, so the tar is a complete build context.

The snapshot is pulled (verified, through the chunk cache) into a temporary folder and
streamed from there; only the public ``pull`` and the repository's manifests are used.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from snapsync.core.manifest import DIR, FILE, SYMLINK, Entry
from snapsync.errors import LocalFileError, UsageError

DOCKERFILE = "Dockerfile"


@dataclass
class ExportResult:
    """What an export wrote."""

    snapshot_id: str
    url: str
    entries: int
    bytes: int  # tar bytes written

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Counter(io.RawIOBase):
    """Counts what passes through to ``out`` (a pipe cannot be asked for its size)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.n = out, 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.out.write(b)
        self.n += len(b)
        return len(b)


def _info(name: str, kind: bytes, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, target
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
    return ti


def tar_entries(entries: list[Entry]) -> list[tuple[str, Entry]]:
    """Every tar member of a tree, folders first, in a fixed order.

    Sorting by the tuple of path components puts ``a`` before ``a/b`` and ``a/b`` before
    ``a-c`` in every case, which plain byte order does not (``-`` sorts before ``/``).
    """
    members: dict[bytes, Entry] = {}
    for e in entries:
        parts = e.path.split(b"/")
        for i in range(1, len(parts)):
            d = b"/".join(parts[:i])
            members.setdefault(d, Entry(d, DIR, 0o755))
        members[e.path] = e
    order = sorted(members, key=lambda p: p.split(b"/"))
    return [(os.fsdecode(p), members[p]) for p in order]


def write_tar(out: IO[bytes], root: Path, entries: list[Entry],
              dockerfile: bytes | None = None) -> int:
    """Write the deterministic tar of ``entries`` (contents read under ``root``) to ``out``.

    Returns:
        The number of members written.
    """
    count = 0
    # "w|": a stream, so stdout works; the pax format gets the same bytes for the same input.
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tar:
        if dockerfile is not None:
            tar.addfile(_info(DOCKERFILE, tarfile.REGTYPE, 0o644, len(dockerfile)),
                        io.BytesIO(dockerfile))
            count += 1
        for name, e in tar_entries(entries):
            if e.kind == DIR:
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
            elif e.kind == SYMLINK:
                tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, 0, os.fsdecode(e.target)))
            elif e.kind == FILE:
                path = os.path.join(os.fsencode(root), e.path)
                with open(path, "rb") as f:
                    tar.addfile(_info(name, tarfile.REGTYPE, e.mode, e.size), f)
            count += 1
    return count


def export(url: str | Any, out: IO[bytes], *, storage_options: dict[str, Any] | None = None,
           ref: str | None = None, snapshot: str | None = None,
           dockerfile: str | os.PathLike[str] | None = None,
           cache_dir: str | os.PathLike[str] | None = None) -> ExportResult:
    """Write a snapshot of the store at ``url`` to ``out`` as a deterministic tar.

    Args:
        url: the store's fsspec URL.
        out: a binary stream (a file, or ``sys.stdout.buffer``).
        storage_options: passed to fsspec as they are.
        ref / snapshot: what to export (default: ref ``latest``); ``snapshot`` takes an id,
            a unique prefix or ``git:<commit>``.
        dockerfile: a local file put first in the tar as ``Dockerfile``.
        cache_dir: the local cache (default: user cache dir).

    Returns:
        An :class:`ExportResult`.

    Raises:
        UsageError: the Dockerfile collides with one in the snapshot.
        LocalFileError: the Dockerfile cannot be read.
        SnapsyncError: any store or data failure, naming the URL or object.
    """
    from snapsync.engine.pull import pull
    from snapsync.local.tree import default_cache_dir
    from snapsync.repository import Repository
    from snapsync.store import as_store

    docker = None
    if dockerfile is not None:
        try:
            docker = Path(dockerfile).read_bytes()
        except OSError as exc:
            raise LocalFileError(f"--dockerfile {dockerfile}: {exc.strerror}") from None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tmp = Path(tempfile.mkdtemp(prefix="snapsync-export-"))
    try:
        pulled = pull(url, tmp, storage_options=storage_options, ref=ref, snapshot=snapshot,
                      cache_dir=cache)
        manifest = Repository(as_store(url, storage_options), cache).load_manifest(
            pulled.snapshot_id)
        if docker is not None and DOCKERFILE.encode() in manifest.tree.paths:
            raise UsageError(f"--dockerfile {dockerfile}: snapshot {pulled.snapshot_id} "
                             f"already has a {DOCKERFILE}; drop the option to use that one")
        counted = _Counter(out)
        n = write_tar(counted, tmp, manifest.entries, docker)  # type: ignore[arg-type]
        out.flush()
        return ExportResult(pulled.snapshot_id, pulled.url, n, counted.n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
