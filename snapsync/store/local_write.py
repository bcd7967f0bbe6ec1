"""Conditional writes of a ``file://`` store's objects: create-only and compare-and-swap.

Object stores offer ``If-None-Match: *`` and ``If-Match`` writes; a folder on a local or shared
file system gets the same two verbs here, so the repository's protocols (docs/format.md §5, §8)
work on the embedded default store too:

* **create-only**: the data goes to a temporary file beside the target, which is then
  ``link``-ed to the final name. ``link`` fails with ``EEXIST`` when the name is taken, so of
  two writers exactly one wins, and a reader never sees a partial object.
* **compare-and-swap**: the writer opens the current object, takes an exclusive ``flock`` on
  it, checks that the name still points at the inode it locked (a writer that replaced it
  meanwhile let go of an older inode) and that its content still has the expected version
  token, then renames the new object into place while holding the lock.

The version token of a local object is the xxh3-128 of its content: unlike an inode number or a
time it cannot come back for other content (no ABA), and refs are a few hundred bytes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

import xxhash

from snapsync.local.atomic import atomic_write, unlink_quietly, write_temp
from snapsync.store.backend import PreconditionFailed
from snapsync.store.local_read import read_whole

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def version_of(data: bytes) -> str:
    """The version token of a local object with this content."""
    return xxhash.xxh3_128_hexdigest(data)


def create_only(path: Path, data: bytes) -> str:
    """Write ``path`` only if nothing is there; ``FileExistsError`` otherwise."""
    tmp = write_temp(path, data)
    try:
        _link_create(tmp, path, data)
    finally:
        unlink_quietly(tmp)
    return version_of(data)


def _link_create(tmp: str, path: Path, data: bytes | None = None) -> None:
    """Give the file ``tmp`` the name ``path`` only if nothing has it (``FileExistsError``):
    link(2) is atomic and refuses an existing name, symlinks included. Where a file system
    has no hard links (vfat, some SMB/FUSE), the bytes (``data``, else read from ``tmp``)
    are written there with ``O_EXCL`` instead."""
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if data is None:
            with open(tmp, "rb") as f:
                data = f.read()
        _create_excl(path, data)


# link(2) failing for want of hard links, not because of the name.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def _create_excl(path: Path, data: bytes) -> None:
    """Create-only without link(2): ``O_EXCL`` still lets exactly one writer win; a reader may
    see the object before it is whole (readers verify every object they read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        unlink_quietly(str(path))
        raise
    os.close(fd)


def replace_if(path: Path, key: str, data: bytes, etag: str) -> str:
    """Replace ``path`` only if its current version is ``etag``; else ``PreconditionFailed``."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        raise PreconditionFailed(f"{key} no longer exists") from None
    except OSError as exc:  # a symlink (ELOOP) or a folder: not the object that was read
        raise PreconditionFailed(f"{key} is no longer the object that was read ({exc})") \
            from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            raise PreconditionFailed(f"{key} was deleted by another writer") from None
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            raise PreconditionFailed(f"{key} was replaced by another writer")
        if version_of(read_whole(str(path), key)) != etag:
            raise PreconditionFailed(f"{key} was changed by another writer")
        atomic_write(path, data)
    finally:
        os.close(fd)  # releases the lock
    return version_of(data)


class LocalUpload:
    """A local object written piece by piece, then published under its key at once.

    The pieces go to a temporary file (a dot name ending ``.tmp`` in ``folder``, as
    :func:`~snapsync.local.atomic.write_temp` makes them), so the writer holds no copy of the
    object; :meth:`commit` links it into place create-only (or renames it over the key), as
    ``put`` would. Not thread-safe.
    """

    def __init__(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=folder)
        self._fd = fd
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.size += len(data)

    def commit(self, path: Path, create: bool) -> None:
        """Publish the bytes written at ``path``: ``FileExistsError`` when ``create`` and
        something is there already."""
        os.close(self._fd)
        self._fd = -1
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not create:
                os.replace(self.tmp, path)
                return
            _link_create(self.tmp, path)
        finally:
            unlink_quietly(self.tmp)

    def abort(self) -> None:
        """Drop what was written (the key never appears)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        unlink_quietly(self.tmp)
