"""Reads of a ``file://`` store's objects: regular files only, never through a final symlink,
never past a bound.

A store is untrusted input (docs/format.md §4), and on a local file system an object may be
something no bucket can hold: a FIFO (``open`` blocks until a writer comes, forever), a
symlink to ``/dev/zero`` (reads never end), a device. Each object is opened with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO opens at once instead of waiting) and ``fstat``-ed before
a byte is read: anything but a regular file raises :class:`~snapsync.store.backend.BadObject`.
Small kinds (config, refs, log entries, markers) are refused above ``SMALL_OBJECT_MAX``; a
whole read never reads past the size ``fstat`` gave, a ranged read only what was asked.
"""

from __future__ import annotations

import errno
import os
import stat

from snapsync.store.backend import BadObject
from snapsync.store.layout import Layout

# Config, refs, log entries and superseded markers are JSON documents of a few hundred bytes;
# 16 MiB is far beyond any honest one and still harmless to hold (docs/design.md, "Bounds").
SMALL_OBJECT_MAX = 16 << 20
_SMALL_PREFIXES = (Layout.REFS, Layout.LOGS, Layout.SUPERSEDED, Layout.TOMBSTONES)

_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
          | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))


def small_object_limit(key: str) -> int | None:
    """The size bound of ``key``'s kind, ``None`` for manifests and packs (their own size)."""
    if key == Layout.CONFIG or key.startswith(_SMALL_PREFIXES):
        return SMALL_OBJECT_MAX
    return None


def _open(path: str, key: str) -> tuple[int, int]:
    """An fd on the regular file at ``path`` and its size; ``BadObject`` for anything else."""
    if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # Windows: no O_NOFOLLOW
        raise BadObject(f"{key} is a symlink, not a stored object")
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise BadObject(f"{key} is a symlink, not a stored object") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadObject(f"{key} is not a regular file (a FIFO, device, socket or "
                            "folder), not a stored object")
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _pread(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset``: fewer only at the end of the file."""
    parts = []
    while n > 0:
        got = os.pread(fd, n, offset)
        if not got:
            break
        parts.append(got)
        n -= len(got)
        offset += len(got)
    return b"".join(parts)


def read_whole(path: str, key: str) -> bytes:
    """The object at ``path`` (store key ``key``), bounded by its kind and its size."""
    fd, size = _open(path, key)
    try:
        limit = small_object_limit(key)
        if limit is not None and size > limit:
            raise BadObject(f"{key} holds {size} bytes, more than the {limit} such an "
                            "object may")
        return _pread(fd, size, 0)
    finally:
        os.close(fd)


_PREADV = getattr(os, "preadv", None)


def read_range_into(path: str, key: str, start: int, end: int, out: memoryview) -> memoryview:
    """Bytes ``[start, end)`` of the object read into ``out`` (at least ``end - start``
    long); the part of ``out`` filled (shorter if the object ends first: the caller checks).
    Into a buffer the caller reuses: no fresh memory (and page faults) per range."""
    fd, size = _open(path, key)
    try:
        n = max(0, min(end, size) - start)
        if _PREADV is None:  # Windows, older macOS: a read and a copy
            data = _pread(fd, n, start)
            out[:len(data)] = data
            return out[:len(data)]
        done = 0
        while done < n:
            got = _PREADV(fd, [out[done:n]], start + done)
            if not got:
                break
            done += got
        return out[:done]
    finally:
        os.close(fd)


def read_range(path: str, key: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the object, fewer if it ends first (the caller checks)."""
    fd, size = _open(path, key)
    try:
        return _pread(fd, max(0, min(end, size) - start), start)
    finally:
        os.close(fd)
