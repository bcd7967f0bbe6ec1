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
from array import array
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path

from snapsync.core.chunking import Chunker
from snapsync.core.hashing import chunk_id
from snapsync.core.ignore import IgnoreRules
from snapsync.errors import LocalFileError
from snapsync.local.listing import (
    IGNORED_DIR,
    IGNORED_FILE,
    KEEP_DIR,
    KEEP_FILE,
    KEEP_LINK,
    OTHER,
    OWN_DIR,
    STAGING,
    DirMemo,
    DirScan,
    Listing,
    LocalEntry,
)

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


_IFMT, _IFREG = 0o170000, stat.S_IFREG

# Directories are opened relative to the root and listed through their fd: each stat is then
# an fstatat of a short name instead of a lookup of the whole path (less system time).
_BY_FD = (os.scandir in os.supports_fd and os.stat in os.supports_dir_fd
          and os.open in os.supports_dir_fd and os.readlink in os.supports_dir_fd)
_DIR_OPEN = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))


def scan(root: Path, rules: IgnoreRules, warn: Warn, *,
         exclude: Iterable[str | os.PathLike[str]] = (),
         skip: Warn | None = None) -> list[LocalEntry]:
    """Walk ``root`` and return its entries sorted by path bytes (see :func:`walk`)."""
    return walk(root, rules, warn, exclude=exclude, skip=skip).entries()


def walk(root: Path, rules: IgnoreRules, warn: Warn, *,
         exclude: Iterable[str | os.PathLike[str]] = (),
         skip: Warn | None = None,
         memo: dict[str, DirMemo] | None = None, reuse: bool = False) -> Listing:
    """Walk ``root`` directory by directory; prune ignored directories (git's rule).

    ``exclude``: directories never walked nor recorded (a store or cache inside the root),
    matched by device and inode, so any spelling of the path works. ``skip``: when given,
    entries that cannot be listed, stat'ed or read (unreadable directories, files deleted
    mid-walk) are left out and described to it, one message each, for the caller to
    summarize; without it they are errors. ``memo``: the stat cache's rows (their chunk ids
    serve files whose signature matches). With ``reuse`` (the rows were made under the same
    rules and exclusions), a directory listing the same names reuses their decisions (no
    ignore matching, no name checks): an unchanged directory costs its listing and one stat
    per kept name. The walk is iterative: a legal path of a few thousand bytes
    nests deeper than Python's recursion limit.
    """
    root_s = str(root)
    root_real = os.path.realpath(root)
    excluded = dir_ids(exclude)
    excluded_inos = {ino for _dev, ino in excluded}

    def failed(what: str, exc: OSError) -> None:
        msg = f"{what}: {exc.strerror or exc}"
        if skip is None:
            raise LocalFileError(msg) from None
        skip(msg)

    root_fd = -1
    if _BY_FD:
        try:
            root_fd = os.open(root_s, _DIR_OPEN)
        except OSError as exc:
            raise LocalFileError(f"cannot list directory {root_s}: {exc.strerror}") from None
    dirs: list[DirScan] = []
    matched = 0
    todo: list[tuple[str, int]] = [("", -1)]
    try:
        while todo:
            rel_dir, parent = todo.pop()
            abs_dir = os.path.join(root_s, rel_dir) if rel_dir else root_s
            fd = -1
            try:
                if root_fd >= 0:
                    fd = os.open(rel_dir, _DIR_OPEN, dir_fd=root_fd) if rel_dir else \
                        os.dup(root_fd)
                    with os.scandir(fd) as it:
                        items = list(it)
                else:
                    with os.scandir(abs_dir) as it:
                        items = list(it)
            except OSError as exc:
                if fd >= 0:
                    os.close(fd)
                if parent < 0:
                    raise LocalFileError(f"cannot list directory {abs_dir}: {exc.strerror}") \
                        from None
                failed(f"cannot list directory {abs_dir}", exc)
                continue
            try:
                d = DirScan(rel_dir, parent)
                d.names = [de.name for de in items]
                row = d.old = memo.get(rel_dir) if memo is not None else None
                if reuse and row is not None and not row.lint and \
                        d.names_key() == row.names and \
                        _reuse(d, items, row, fd, abs_dir, rules, excluded_inos):
                    matched += d.clean
                else:
                    _decide(d, items, fd, abs_dir, root_real, rules, excluded, warn, failed)
            finally:
                if fd >= 0:
                    os.close(fd)
            idx = len(dirs)
            dirs.append(d)
            if parent >= 0:
                dirs[parent].filled = True
            prefix = rel_dir + "/" if rel_dir else ""
            todo.extend((prefix + name, idx) for name in d.subdirs)
    finally:
        if root_fd >= 0:
            os.close(root_fd)
    # A directory is filled by a kept file or link, or by a listed subdirectory (set above,
    # as each child is listed); the others are recorded as empty directories.
    unchanged = reuse and memo is not None and matched == len(dirs) == len(memo)
    return Listing(dirs, unchanged)


def _reuse(d: DirScan, items: list[os.DirEntry[str]], row: DirMemo, fd: int, abs_dir: str,
           rules: IgnoreRules, excluded_inos: set[int]) -> bool:
    """Take the memo's decisions for a directory listing the same names; stat what is kept.

    False when an entry's kind changed (a file became a directory...) or cannot be stat'ed:
    the caller then decides the directory afresh, which reports the problem. This loop is
    the whole per-file cost of a no-op push: a stat and five ints.
    """
    flags = row.flags
    flat: list[int] = []
    targets: dict[int, bytes] = {}
    subdirs: list[str] = []
    pruned: list[str] = []
    try:
        for de, fl in zip(items, flags, strict=True):
            if fl == KEEP_FILE:
                st = de.stat(follow_symlinks=False)
                mode = st.st_mode
                if mode & _IFMT != _IFREG:
                    return False  # no longer a regular file
                flat += (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode)
            elif fl == KEEP_DIR:
                if not de.is_dir(follow_symlinks=False) or de.inode() in excluded_inos:
                    return False
                subdirs.append(de.name)
            elif fl == KEEP_LINK:  # a link's target is read again: links are few
                st = de.stat(follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    return False
                targets[len(flat) // 5] = os.fsencode(
                    os.readlink(de.name, dir_fd=fd) if fd >= 0 else
                    os.readlink(os.path.join(abs_dir, de.name)))
                flat += (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)
            elif fl == IGNORED_DIR:
                if not de.is_dir(follow_symlinks=False):
                    return False
                pruned.append(de.name)
            elif fl == IGNORED_FILE:
                if de.is_dir(follow_symlinks=False):
                    return False
            elif fl not in (STAGING, OWN_DIR):
                return False  # OTHER (fifo...): decided again, so its warning is repeated
    except (OSError, ValueError):  # ValueError: flags and names of different lengths
        return False
    d.flags = flags
    d.sigs = array("q", flat)
    d.targets = targets
    d.subdirs = subdirs
    d.memo = row
    d.filled = KEEP_FILE in flags or KEEP_LINK in flags
    d.clean = d.sigs.tobytes() == row.sigs
    if pruned and hasattr(rules, "pruned"):
        prefix = d.rel + "/" if d.rel else ""
        rules.pruned.extend(f"{prefix}{name}/" for name in pruned)
    return True


def _decide(d: DirScan, items: list[os.DirEntry[str]], fd: int, abs_dir: str, root_real: str,
            rules: IgnoreRules, excluded: set[tuple[int, int]], warn: Warn,
            failed: Callable[[str, OSError], None]) -> None:
    """Decide every name of a directory with the rules, check names, stat what is kept."""
    flags = bytearray()
    flat = array("q")
    names: list[str] = []
    targets: dict[int, bytes] = {}
    lower_seen: dict[str, str] = {}
    subdirs: list[str] = []
    prefix = d.rel + "/" if d.rel else ""
    lint = False
    for de in items:
        name = de.name
        if name.startswith(STAGING_PREFIX):
            names.append(name)
            flags.append(STAGING)  # a killed pull's leftovers: never part of the project
            continue
        rel = prefix + name
        try:
            st = de.stat(follow_symlinks=False)
        except OSError as exc:
            failed(f"cannot stat {os.path.join(abs_dir, name)}", exc)
            continue  # left out of the names too: decided again next time
        mode = st.st_mode
        names.append(name)
        if stat.S_ISDIR(mode):
            if rules.ignored(rel, True):
                flags.append(IGNORED_DIR)
                continue
            if (st.st_dev, st.st_ino) in excluded:
                flags.append(OWN_DIR)
                continue
            lint |= _lint_name(rel, name, lower_seen, warn)
            flags.append(KEEP_DIR)
            subdirs.append(name)
            continue
        if rules.ignored(rel, False):
            flags.append(IGNORED_FILE)
            continue
        if stat.S_ISREG(mode):
            lint |= _lint_name(rel, name, lower_seen, warn)
            flags.append(KEEP_FILE)
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=fd) if fd >= 0 else \
                    os.readlink(os.path.join(abs_dir, name))
            except OSError as exc:
                failed(f"cannot read symlink {os.path.join(abs_dir, name)}", exc)
                names.pop()
                continue
            target_b = os.fsencode(target)
            _check_link(root_real, rel, target_b, warn)
            lint |= _lint_name(rel, name, lower_seen, warn)
            targets[len(flat) // 5] = target_b
            flags.append(KEEP_LINK)
        else:
            warn(f"skipping {rel}: not a regular file, directory or symlink")
            flags.append(OTHER)
            continue
        flat.extend((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode))
    d.names = names
    d.flags = bytes(flags)
    d.sigs = flat
    d.targets = targets
    d.lint = lint
    d.subdirs = subdirs
    d.filled = KEEP_FILE in flags or KEEP_LINK in flags


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


def _check_link(root_real: str, rel: str, target: bytes, warn: Warn) -> None:
    text = os.fsdecode(target)
    if os.path.isabs(text):
        warn(f"symlink {rel} points outside the project (absolute target {text}); kept as a link")
        return
    resolved = os.path.normpath(os.path.join(os.path.dirname(os.path.join(root_real, rel)), text))
    if resolved != root_real and not resolved.startswith(root_real + os.sep):
        warn(f"symlink {rel} points outside the project ({text}); kept as a link")


def _lint_name(rel: str, name: str, lower_seen: dict[str, str], warn: Warn) -> bool:
    """Warn about names that will not survive a pull on Windows or macOS; True if it did.

    Case collisions are looked for among the names of one directory: two paths that differ
    only in case first differ in one directory's names, where that pair is reported.
    """
    warned = False
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            warn(f"{rel!r}: file name is not valid UTF-8; it is kept as bytes but other "
                 "systems may not be able to create it")
            warned = True
    low = name.lower()
    other = lower_seen.get(low)
    if other is not None and other != name:
        warn(f"{rel} and {rel[:len(rel) - len(name)]}{other} differ only in case; they "
             "collide on Windows and macOS")
        warned = True
    lower_seen[low] = name
    if (name.split(".", 1)[0].lower() in _WIN_RESERVED or name.endswith((" ", "."))
            or not _WIN_BAD_CHARS.isdisjoint(name)):
        warn(f"{rel}: name is not valid on Windows")
        warned = True
    return warned


def read_small_into(abs_path: str, buf: memoryview
                    ) -> tuple[int, tuple[int, int, int, int, int]] | None:
    """Read a small file into ``buf``; return its length and its signature after reading.

    Into a caller's reused buffer, not a new ``bytes`` per file: ``None`` when the file fills
    ``buf`` (it is larger than the caller expected: read it as a large or changed file). Raises
    ``LocalFileError`` naming the file when it cannot be read.
    """
    try:
        fd = os.open(abs_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise LocalFileError(f"cannot read {abs_path}: {exc.strerror}") from None
    try:
        n = os.readv(fd, (buf,))
        if n >= len(buf):
            return None
        return n, stat_sig(os.fstat(fd))
    except OSError as exc:
        raise LocalFileError(f"cannot read {abs_path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_chunks(abs_path: str, size_hint: int, chunker: Chunker, *, copy: bool = True
                ) -> Iterator[tuple[bytes, memoryview]]:
    """Yield ``(chunk id, bytes)`` for a file, streaming large files in bounded memory.

    ``copy=False``: a large file's chunks are views of the chunker's reused window
    (:meth:`Chunker.cut_readinto`), valid only until the next one is asked for (the caller
    copies what it keeps).

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
        if not copy:  # into the chunker's own window, reused for every file
            for piece in chunker.cut_readinto(lambda view: os.readv(fd, (view,))):
                total += len(piece)
                yield chunk_id(piece), piece
        else:
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


def read_file(abs_path: str, sig: tuple[int, ...], chunker: Chunker,
              known: Container[bytes],
              pending: Container[bytes],
              on_chunk: Callable[[bytes, memoryview], None] | None = None,
              on_fresh: Callable[[bytes, memoryview], None] | None = None,
              ) -> tuple[tuple[bytes, ...], tuple[int, ...], list[tuple[bytes, bytes]]]:
    """Read one file into chunk ids; return ids, its stat signature and the chunks neither
    ``known`` nor ``pending`` holds (handed to ``on_fresh`` instead, when given).

    The file is re-stat'ed after reading: if it changed meanwhile it is read again (three
    tries), so a manifest never records content that differs from what was read.
    """
    before = sig  # from the walk; a change since shows up in `after`
    for _ in range(3):
        ids: list[bytes] = []
        fresh: list[tuple[bytes, bytes]] = []
        seen_here: set[bytes] = set()
        total = 0
        # Without ``on_fresh`` the fresh chunks are kept, so they must be copies.
        for cid, data in read_chunks(abs_path, before[0], chunker, copy=on_fresh is None):
            ids.append(cid)
            total += len(data)
            if on_chunk is not None:
                on_chunk(cid, data)
            if cid not in known and cid not in pending and cid not in seen_here:
                seen_here.add(cid)
                if on_fresh is not None:  # streamed (it copies); the returned list stays empty
                    on_fresh(cid, data)
                else:
                    fresh.append((cid, bytes(data)))
        after = _sig_of(abs_path)
        if before == after and total == after[0]:
            return tuple(ids), after, fresh
        before = after
    raise LocalFileError(f"{abs_path} keeps changing while it is read; try again when it is "
                         "quiet")


def _sig_of(path: str) -> tuple[int, int, int, int, int]:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise LocalFileError(f"cannot stat {path}: {exc.strerror}") from None
    return stat_sig(st)
