"""The local tree edge: walk a project, read files into chunks, the stat cache, atomic writes.

Walks with ``os.scandir`` and prunes ignored directories (git's rule). Regular files keep their
executable bit (modes are normalised to 0644/0755 as git does, or 0600/0700 for owner-only
files, so a umask of 022 or 002 does not change the snapshot id), symlinks are kept as links
and never followed, empty directories are recorded, and fifos, sockets and devices are skipped
with a warning.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from snapsync.core.chunking import Chunker
from snapsync.core.hashing import chunk_id
from snapsync.core.ignore import IgnoreRules
from snapsync.core.manifest import DIR, FILE, SYMLINK
from snapsync.errors import LocalFileError

Warn = Callable[[str], None]

# Where a pull stages new files inside its target (pull.py); the walk never ships these.
STAGING_PREFIX = ".snapsync-staging-"

# Windows cannot create these names; warned about at push time so users learn before a pull.
_WIN_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                 *(f"lpt{i}" for i in range(1, 10))}
_WIN_BAD_CHARS = set('<>:"\\|?*') | {chr(i) for i in range(32)}


def default_cache_dir() -> Path:
    """``$SNAPSYNC_CACHE_DIR``, else the platform's user cache directory."""
    env = os.environ.get("SNAPSYNC_CACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "snapsync" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "snapsync"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snapsync"


def normal_mode(st_mode: int) -> int:
    """Git-like file mode: 0755 when the owner may execute, else 0644.

    A file that neither group nor others may access is "owner only" and keeps that: 0700 or
    0600, so a private file (a key, a .netrc) stays private on the worker (format.md §4).
    """
    owner_only = not st_mode & 0o077
    if st_mode & stat.S_IXUSR:
        return 0o700 if owner_only else 0o755
    return 0o600 if owner_only else 0o644


@dataclass(slots=True)
class LocalEntry:
    """One entry found by the walk. ``path`` is relative posix text."""

    path: str
    kind: str
    mode: int
    size: int
    sig: tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, st_mode
    target: bytes = b""


def scan(root: Path, rules: IgnoreRules, warn: Warn, *,
         exclude: Iterable[str | os.PathLike[str]] = (),
         skip: Warn | None = None) -> list[LocalEntry]:
    """Walk ``root`` and return its entries sorted by path bytes.

    ``exclude``: directories never walked nor recorded (a store or cache inside the root),
    matched by device and inode, so any spelling of the path works. ``skip``: when given,
    entries that cannot be listed, stat'ed or read (unreadable directories, files deleted
    mid-walk) are left out and described to it, one message each, for the caller to
    summarize; without it they are errors. The walk is iterative: a legal path of a few
    thousand bytes nests deeper than Python's recursion limit.
    """
    out: list[LocalEntry] = []
    lower_seen: dict[str, str] = {}
    root_real = os.path.realpath(root)
    excluded = dir_ids(exclude)

    def failed(what: str, exc: OSError) -> None:
        msg = f"{what}: {exc.strerror or exc}"
        if skip is None:
            raise LocalFileError(msg) from None
        skip(msg)

    # Directories in the order found; a child's index is always greater than its parent's,
    # so one backwards pass tells which directories ended up empty (recorded as entries).
    dirs: list[tuple[str, int, tuple[int, int, int, int, int] | None]] = [("", -1, None)]
    listed: list[bool] = [False]
    filled: list[bool] = [False]
    todo: list[tuple[str, str, int]] = [(str(root), "", 0)]
    while todo:
        abs_dir, rel_dir, idx = todo.pop()
        try:
            with os.scandir(abs_dir) as it:
                items = list(it)
        except OSError as exc:
            if idx == 0:
                raise LocalFileError(f"cannot list directory {abs_dir}: {exc.strerror}") \
                    from None
            failed(f"cannot list directory {abs_dir}", exc)
            continue
        listed[idx] = True
        for de in items:
            if de.name.startswith(STAGING_PREFIX):
                continue  # a killed pull's leftovers: never part of the project
            rel = f"{rel_dir}{de.name}"
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as exc:
                failed(f"cannot stat {de.path}", exc)
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if rules.ignored(rel, True) or (st.st_dev, st.st_ino) in excluded:
                    continue
                _lint_name(rel, lower_seen, warn)
                dirs.append((rel, idx, stat_sig(st)))
                listed.append(False)
                filled.append(False)
                todo.append((de.path, rel + "/", len(dirs) - 1))
                continue
            if rules.ignored(rel, False):
                continue
            _lint_name(rel, lower_seen, warn)
            if stat.S_ISREG(mode):
                out.append(LocalEntry(rel, FILE, normal_mode(mode), st.st_size, stat_sig(st)))
            elif stat.S_ISLNK(mode):
                try:
                    target = os.readlink(os.fsencode(de.path))
                except OSError as exc:
                    failed(f"cannot read symlink {de.path}", exc)
                    continue
                _check_link(root_real, de.path, rel, target, warn)
                out.append(LocalEntry(rel, SYMLINK, 0o777, 0, stat_sig(st), target))
            else:
                warn(f"skipping {rel}: not a regular file, directory or symlink")
                continue
            filled[idx] = True
    for i in range(len(dirs) - 1, 0, -1):
        if not listed[i]:
            continue  # unreadable and skipped: neither an entry nor content of its parent
        rel, parent, sig = dirs[i]
        if not filled[i]:
            out.append(LocalEntry(rel, DIR, 0o755, 0, sig))  # type: ignore[arg-type]
        filled[parent] = True
    out.sort(key=lambda e: os.fsencode(e.path))
    return out


def dir_ids(paths: Iterable[str | os.PathLike[str]]) -> set[tuple[int, int]]:
    """(device, inode) of each path that is an existing directory (others are left out)."""
    out = set()
    for p in paths:
        try:
            st = os.stat(p)
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(st.st_mode):
            out.add((st.st_dev, st.st_ino))
    return out


def own_dirs(cache_root: str | os.PathLike[str], store_root: str | None = None) -> list[str]:
    """snapsync's own folders that a walk must leave out: the cache, and a local store's root.

    Pushing a folder that holds its own store (``snapsync push . store``) would otherwise
    ship the store into itself, growing on every push; ``pull --delete`` must spare both.
    """
    return [os.fspath(cache_root)] + ([store_root] if store_root else [])


def summarize(what: str, items: list[str], first: int = 3) -> str:
    """One line for many similar problems: the count, the first few, and how many more."""
    shown = "; ".join(items[:first])
    more = f"; and {len(items) - first} more" if len(items) > first else ""
    return f"{what} ({len(items)}): {shown}{more}"


def stat_sig(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """A file's stat signature, as the stat caches record it: size, mtime, ctime, inode, mode.

    Any write, rename over or chmod changes one of them, so an equal signature means the
    content is the one read last time (unless racy: see ``StatCache``).
    """
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


def _check_link(root_real: str, abs_path: str, rel: str, target: bytes, warn: Warn) -> None:
    text = os.fsdecode(target)
    if os.path.isabs(text):
        warn(f"symlink {rel} points outside the project (absolute target {text}); kept as a link")
        return
    resolved = os.path.normpath(os.path.join(os.path.dirname(os.path.join(root_real, rel)), text))
    if resolved != root_real and not resolved.startswith(root_real + os.sep):
        warn(f"symlink {rel} points outside the project ({text}); kept as a link")


def _lint_name(rel: str, lower_seen: dict[str, str], warn: Warn) -> None:
    """Warn about names that will not survive a pull on Windows or macOS."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        warn(f"{rel!r}: file name is not valid UTF-8; it is kept as bytes but other systems "
             "may not be able to create it")
    low = rel.lower()
    other = lower_seen.get(low)
    if other is not None and other != rel:
        warn(f"{rel} and {other} differ only in case; they collide on Windows and macOS")
    lower_seen[low] = rel
    name = rel.rsplit("/", 1)[-1]
    if (name.split(".", 1)[0].lower() in _WIN_RESERVED or name.endswith((" ", "."))
            or _WIN_BAD_CHARS.intersection(name)):
        warn(f"{rel}: name is not valid on Windows")


def read_chunks(abs_path: str, size_hint: int, chunker: Chunker
                ) -> Iterator[tuple[bytes, memoryview]]:
    """Yield ``(chunk id, bytes)`` for a file, streaming large files in bounded memory.

    Raises ``LocalFileError`` naming the file when it cannot be read or changes while read.
    """
    try:
        fd = os.open(abs_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise LocalFileError(f"cannot read {abs_path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_size <= chunker.params.threshold:
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:
                raise LocalFileError(f"{abs_path} changed while it was read")
            if data:
                yield chunk_id(data), memoryview(data)
            return
        # Large files stream through a reused buffer, not mmap: mapped pages count towards
        # RSS, so a 2 GB file would cost 2 GB of resident memory. Each chunk is copied out
        # because the chunker's buffer is reused for the next one.
        total = 0
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            for piece in chunker.cut_stream(f):
                data = bytes(piece)
                total += len(data)
                yield chunk_id(data), memoryview(data)
        if total != st.st_size:
            raise LocalFileError(f"{abs_path} changed while it was read")
    except OSError as exc:
        raise LocalFileError(f"cannot read {abs_path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def file_chunk_ids(abs_path: str, chunker: Chunker) -> tuple[bytes, ...]:
    """The chunk ids of a local file (used to compare a pull target with a snapshot)."""
    return tuple(cid for cid, _ in read_chunks(abs_path, 0, chunker))
