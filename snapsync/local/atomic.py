"""Atomic local writes: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

Data = bytes | bytearray | list[bytes | bytearray]  # a list: its parts, one after another


def write_temp(path: Path, data: Data) -> str:
    """``data`` in a new temporary file beside ``path`` (created with its folders); its path.
    A list is written part by part (a big body is not copied to put a header before it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in data if isinstance(data, list) else (data,):
                f.write(part)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return tmp


def unlink_quietly(path: str) -> None:
    """Remove a temporary file that may already be gone."""
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: Path, data: Data) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def keep_newest(folder: Path, suffix: str, keep: int) -> None:
    """Remove all but the ``keep`` most recently written ``*suffix`` files in ``folder``
    (caches that only save work: failures to list or remove are ignored)."""
    try:
        with os.scandir(folder) as it:
            found = [(de.stat(follow_symlinks=False).st_mtime_ns, de.path) for de in it
                     if de.name.endswith(suffix) and de.is_file(follow_symlinks=False)]
    except OSError:
        return
    found.sort(reverse=True)
    for _mtime, path in found[keep:]:
        with contextlib.suppress(OSError):
            os.unlink(path)
