"""The pull target edge: look at the folder, stage new entries, commit them, delete extras.

Nothing here reads or writes through a symlink: a path whose parent chain holds a symlink or
a file is treated as absent and replaced. New files are staged in a folder inside the target
and renamed into place at commit; an empty target is written in place instead (no old tree to
protect) and emptied again on failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from snapsync.core.chunking import Chunker
from snapsync.core.ignore import IgnoreRules
from snapsync.core.manifest import (
    DIR,
    FILE,
    FILE_B,
    SYMLINK,
    Entry,
    Manifest,
    TreeColumns,
    as_tree,
    path_text,
)
from snapsync.core.plan import PullPlan, Seen
from snapsync.errors import LocalFileError, UnsafePathError
from snapsync.local.atomic import keep_newest
from snapsync.local.listing import normal_mode
from snapsync.local.stage import make_dirs, staged_name
from snapsync.local.statcache import StatCache
from snapsync.local.tree import STAGING_PREFIX, dir_ids, file_chunk_ids, stat_sig
from snapsync.local.undo import Undo


@contextlib.contextmanager
def locked(destp: Path) -> Iterator[None]:
    """One pull at a time into ``destp`` on this machine: an exclusive ``flock`` on the
    folder itself (no lock file to show up in the tree). Two pulls into one empty folder
    would otherwise both write in place, and the loser's cleanup would empty the winner's
    files. Where the file system has no ``flock``, pulls go unlocked, as before."""
    try:
        fd = os.open(destp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise LocalFileError(f"cannot open target folder {destp}: {exc.strerror}") from None
    try:
        with contextlib.suppress(OSError):  # no flock here (some network file systems)
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def is_empty(destp: Path) -> bool:
    with os.scandir(destp) as it:
        return not any(True for _ in it)


def empty_again(destp: Path, keep: Path) -> None:
    """Undo a failed direct write: the target was empty, so it is emptied again."""
    with os.scandir(destp) as it:
        for de in it:
            if de.path == str(keep):
                continue
            if de.is_dir(follow_symlinks=False):
                shutil.rmtree(de.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(de.path)


def check_fits(destp: Path, entries: Manifest | TreeColumns | Iterable[Entry]) -> None:
    """Refuse, before anything is written, paths this file system cannot hold: a name longer
    than its ``NAME_MAX``, a path (or symlink target) of ``PATH_MAX`` bytes or more.

    Pure arithmetic per entry (a path shorter than ``NAME_MAX`` is not even split): the fast
    path gains no system call. ``UnsafePathError`` (exit 7): the manifest is at fault.
    """
    name_max = _pathconf(destp, "PC_NAME_MAX", 255)
    path_max = _pathconf(destp, "PC_PATH_MAX", 4096)
    room = path_max - len(os.fsencode(destp)) - 1  # staged names are short and flat
    tree = as_tree(entries)
    paths, targets = tree.paths, tree.targets
    # Two C passes find the common case (nothing near a limit); the loop names a culprit.
    if max(map(len, paths), default=0) < min(name_max, room) and \
            max(map(len, targets), default=0) < path_max:
        return
    for p, target in zip(paths, targets, strict=True):
        if len(p) > name_max and any(len(part) > name_max for part in p.split(b"/")):
            raise UnsafePathError(f"manifest path {path_text(p)!r} has a name longer than this "
                                  f"file system allows ({name_max} bytes) in {destp}")
        if len(p) >= room:
            raise UnsafePathError(f"manifest path {path_text(p)!r} is {len(p)} bytes long: too "
                                  f"long for {destp} on this file system (paths < {path_max} "
                                  "bytes)")
        if len(target) >= path_max:
            raise UnsafePathError(f"symlink {path_text(p)!r} has a target of {len(target)} bytes, "
                                  f"more than this file system allows ({path_max - 1})")


def _pathconf(destp: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(destp, name)
    except (OSError, ValueError, AttributeError):  # unknown here (Windows, some FUSE)
        return default
    return value if value and value > 0 else default


def remove_stale_staging(destp: Path) -> None:
    """A pull killed mid-way leaves its staging folder; the next pull removes it."""
    with contextlib.suppress(OSError), os.scandir(destp) as it:
        for de in it:
            if de.name.startswith(STAGING_PREFIX) and de.is_dir(follow_symlinks=False):
                shutil.rmtree(de.path, ignore_errors=True)


class SafeDirs:
    """Answers "is this relative directory a real directory inside the target?" (memoized).

    A path whose parent chain holds a symlink or a file is treated as absent: it will be
    replaced, and nothing is ever read or written through a symlink.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._ok: dict[bytes, bool] = {b"": True}

    def ok(self, rel_dir: bytes) -> bool:
        hit = self._ok.get(rel_dir)
        if hit is not None:
            return hit
        parent, _, _ = rel_dir.rpartition(b"/")
        good = self.ok(parent)
        if good:
            try:
                st = os.lstat(os.path.join(os.fsencode(self.root), rel_dir))
                good = stat.S_ISDIR(st.st_mode)
            except OSError:
                good = False
        self._ok[rel_dir] = good
        return good


def observe(destp: Path, entries: Manifest | TreeColumns | Iterable[Entry],
            stat_cache: StatCache, chunker: Chunker) -> dict[bytes, Seen]:
    root = os.fsencode(destp)
    dirs = SafeDirs(str(destp))
    seen: dict[bytes, Seen] = {}
    tree = as_tree(entries)
    kinds, sizes = tree.kinds, tree.sizes
    for i, path in enumerate(tree.paths):
        parent = path.rpartition(b"/")[0]
        if not dirs.ok(parent):
            continue
        abs_path = os.path.join(root, path)
        try:
            st = os.lstat(abs_path)
        except OSError:
            continue
        m = st.st_mode
        if stat.S_ISDIR(m):
            seen[path] = Seen(DIR)
        elif stat.S_ISLNK(m):
            seen[path] = Seen(SYMLINK, target=os.readlink(abs_path))
        elif stat.S_ISREG(m):
            chunks = None
            if kinds[i] == FILE_B and st.st_size == sizes[i]:
                sig = stat_sig(st)
                chunks = stat_cache.lookup(path_text(path), sig)
                if chunks is None:
                    try:
                        chunks = file_chunk_ids(os.fsdecode(abs_path), chunker)
                    except LocalFileError:
                        chunks = None
            seen[path] = Seen(FILE, normal_mode(m), st.st_size, chunks)
        else:
            seen[path] = Seen("other")
    return seen




def set_mode(path: bytes, mode: int, copy: bytes | None, undo: Undo | None = None) -> None:
    """Give the file at ``path`` ``mode`` without changing any other name's file.

    Opened without following a symlink; a file with other hard links (``st_nlink > 1``: a
    name outside the target may share the inode) is copied to ``copy`` (in the staging
    folder), and the copy, with its mode, renamed over ``path``. A pull never writes into
    or changes a shared inode: new content is always a new file renamed into place.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:  # an owner-unreadable file (its cached ids matched): by name
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise
        os.chmod(path, mode)
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since the plan: leave it
            return
        if st.st_nlink <= 1 or copy is None:
            os.fchmod(fd, mode)
            if undo is not None:
                undo.chmodded(path, stat.S_IMODE(st.st_mode))
            return
        out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                buf = os.read(fd, 1 << 20)
                if not buf:
                    break
                view = memoryview(buf)
                while view:
                    view = view[os.write(out, view):]
            os.fchmod(out, mode)
        finally:
            os.close(out)
        if undo is not None:
            undo.stash(path)  # the shared inode keeps its name outside; ours comes back
            os.rename(copy, path)
            undo.created(path)
        else:
            os.replace(copy, path)
    finally:
        os.close(fd)


def commit(destp: Path, plan: PullPlan, direct: bool = False,
           staging: Path | None = None) -> int:
    """Move staged entries into place (already there when ``direct``), then modes, dirs and
    the planned deletions (deepest first); return how many entries were deleted.

    With ``staging`` (the pull's staging folder: copies of hard-linked files whose mode
    changes, :func:`set_mode`, and the backup of what the commit replaces), a failure puts the
    old tree back before the error is raised: the target is as it was, or — for a ``direct``
    write into an empty target — the caller empties it again.
    """
    root = os.fsencode(destp)
    made: set[bytes] = set()
    deleted = 0
    undo = Undo(os.path.join(os.fsencode(staging), b"backup")) if staging and not direct \
        else None
    try:
        # Direct: every entry was written in place. Else only paths are needed (no Entry each).
        for n, path in enumerate(() if direct else plan.write.paths()):
            assert staging is not None
            make_dirs(root, path.rpartition(b"/")[0], made, undo)
            final = os.path.join(root, path)
            if undo is not None:
                if os.path.lexists(final):
                    undo.stash(final)  # a file, link or whole folder in the way
                os.replace(staged_name(staging, n), final)
                undo.created(final)
            else:
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISDIR(os.lstat(final).st_mode):
                        shutil.rmtree(final)
                os.replace(staged_name(staging, n), final)
        for n, e in enumerate(plan.chmod):
            set_mode(os.path.join(root, e.path), e.mode,
                     os.path.join(os.fsencode(staging), b"mode-%08d" % n) if staging else None,
                     undo)
        for e in plan.mkdir:
            make_dirs(root, e.path, made, undo)
        for rel, is_dir in plan.delete:
            path = os.path.join(root, rel)
            try:
                if is_dir:
                    mode = stat.S_IMODE(os.lstat(path).st_mode)
                    os.rmdir(path)
                    if undo is not None:
                        undo.removed_dir(path, mode)
                elif undo is not None:
                    undo.stash(path)
                else:
                    os.unlink(path)
                deleted += 1
            except OSError as exc:
                # Gone already, or a folder that gained entries since the plan: leave it.
                if not isinstance(exc, FileNotFoundError) and exc.errno != errno.ENOTEMPTY:
                    raise
    except BaseException as exc:
        if undo is not None:
            undo.rollback()
        if isinstance(exc, OSError):
            back = "; the folder was put back as it was" if undo is not None else ""
            raise LocalFileError(f"cannot update {destp}: {exc.strerror or exc} "
                                 f"({os.fsdecode(exc.filename or b'')}){back}") from None
        raise
    return deleted


def save_target_cache(destp: Path, manifest: Manifest, stat_cache: StatCache,
                      written: tuple[PullPlan, array[int]] | None = None) -> None:
    """Record what the target's files are now (stat signature and chunk ids), so the next
    pull into it reads only what changed. ``written``: a ``direct`` pull's plan and the
    signatures :func:`stage` recorded (every file of the snapshot, no ``lstat`` needed).
    Rows are streamed to the file from the manifest's columns: no per-file objects kept."""
    if stat_cache.path is None:
        return
    tree = manifest.tree
    paths, kinds, sizes, blob = tree.paths, tree.kinds, tree.sizes, tree.chunk_blob
    if written is not None:
        plan, sigs = written
        idx = plan.write.idx
        stat_cache.save_rows(
            sum(1 for i in idx if kinds[i] == FILE_B),
            ((paths[i], tuple(sigs[5 * n:5 * n + 5]), blob(i))
             for n, i in enumerate(idx) if kinds[i] == FILE_B))
        return
    root = os.fsencode(destp)

    def rows() -> Iterator[tuple[bytes, tuple[int, ...], bytes]]:
        for i in tree.indexes(FILE):
            try:
                st = os.lstat(os.path.join(root, paths[i]))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == sizes[i]:
                yield paths[i], stat_sig(st), blob(i)

    stat_cache.save_rows(len(tree), rows())


TARGET_CACHES = 64  # pull stat caches kept (a worker pulls into a new folder every run)


def prune_target_caches(folder: Path, keep: int = TARGET_CACHES) -> None:
    """Keep the ``keep`` most recently written pull stat caches in ``folder``: one per
    target folder, and a worker's every flow run has a new one, which would pile up."""
    keep_newest(folder, ".msgpack", keep)


def scan_extras(destp: Path, rules: IgnoreRules,
                exclude: Iterable[str | os.PathLike[str]] = ()
                ) -> tuple[list[tuple[bytes, bool]], set[bytes]]:
    """What the target holds, for planning deletions: ``(path, is_dir)`` of every entry the
    rules do not protect, and the folders that hold protected entries. Folders in
    ``exclude`` (snapsync's own cache, a local store) are protected whatever the rules say;
    they are matched by device and inode, so any spelling of their path (a symlink, a bind
    mount, a relative path, another case) is recognised."""
    root = os.fsencode(destp)
    # One lstat per folder (DirEntry caches it), never a realpath per folder: the walk
    # follows no symlink, and device and inode also see through bind mounts and a case-
    # insensitive file system's other spellings, where comparing paths would not.
    spared = dir_ids(exclude)
    found: list[tuple[bytes, bool]] = []
    held: set[bytes] = set()
    stack = [b""]
    try:
        while stack:
            rel = stack.pop()
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                items = list(it)
            for de in items:
                if not rel and de.name.startswith(STAGING_PREFIX.encode()):
                    held.add(rel)
                    continue
                path = rel + b"/" + de.name if rel else de.name
                is_dir = de.is_dir(follow_symlinks=False)
                if rules.ignored(os.fsdecode(path), is_dir) or (
                        is_dir and _is_one_of(de, spared)):
                    held.add(rel)
                    continue
                found.append((path, is_dir))
                if is_dir:
                    stack.append(path)
    except OSError as exc:
        raise LocalFileError(f"cannot list {destp} to find stale files: "
                             f"{exc.strerror or exc}") from None
    return found, held


def _is_one_of(de: os.DirEntry[bytes], ids: set[tuple[int, int]]) -> bool:
    """Whether the directory ``de`` is one of ``ids`` (device, inode)."""
    if not ids:
        return False
    try:
        st = de.stat(follow_symlinks=False)
    except OSError:
        return False  # gone since the listing: nothing to spare
    return (st.st_dev, st.st_ino) in ids
