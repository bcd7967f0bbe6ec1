"""The local backend: a ``file://`` store (or a plain path) with the standard library only.

Why not fsspec's ``LocalFileSystem``: snapsync already read and wrote local objects itself
(bounded, ``O_NOFOLLOW`` reads in :mod:`~snapsync.store.local_read`, atomic writes); fsspec was
left only for listing, deleting and the root check, and importing it cost ~30 ms of every
push and pull to a local store. Listing never follows a symlink (a store is untrusted: a
linked folder could lead anywhere); a symlink, FIFO or device inside is listed as what it
is, and reading it is refused (:class:`~snapsync.store.backend.BadObject`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snapsync.local.atomic import atomic_write
from snapsync.store.backend import Backend, IfMatch, ObjectMeta, PutMode
from snapsync.store.local_read import read_range, read_range_into, read_whole
from snapsync.store.local_write import LocalUpload, create_only, replace_if, version_of
from snapsync.store.options.common import opt_bool

LOCAL_SCHEMES = ("file", "local")


def local_path(url: str) -> str:
    """The absolute folder of a ``file://`` / ``local://`` URL or a plain path (as fsspec
    reads them: no percent-decoding, relative paths from the current folder)."""
    if "://" in url:
        url = url.split("://", 1)[1]
    return os.path.abspath(url)


class LocalBackend(Backend):
    """A store root in a local folder."""

    name = "local"
    local = True
    conditional = True  # create-only and compare-and-swap: snapsync/store/local_write.py

    def __init__(self, root: str, *, auto_mkdir: bool = True) -> None:
        self.root = root.rstrip("/") or "/"
        self.local_root = self.root
        # Accepted for compatibility with fsspec's option; writes create folders anyway
        # (atomic_write), as they did through fsspec.
        self.auto_mkdir = auto_mkdir

    @classmethod
    def open(cls, url: str, options: dict[str, Any]) -> LocalBackend:
        """The backend for ``url``; the only option is ``auto_mkdir`` (refuses others)."""
        from snapsync.errors import UsageError

        opts = dict(options)
        auto = opt_bool(opts.pop("auto_mkdir"), "auto_mkdir") if "auto_mkdir" in opts else True
        for key in opts:
            scheme = url.split("://", 1)[0] if "://" in url else "file"
            raise UsageError(f"storage option {key} is not used by {scheme}:// stores "
                             "(known: backend, auto_mkdir)")
        return cls(local_path(url), auto_mkdir=auto)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def get(self, key: str) -> bytes:
        return read_whole(self._path(key), key)

    def get_many(self, keys: Sequence[str], concurrency: int) -> list[bytes | BaseException]:
        return [_or_error(read_whole, self._path(k), k) for k in keys]

    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   concurrency: int) -> list[bytes | BaseException]:
        return [_or_error(read_range, self._path(k), k, s, e) for k, s, e in reqs]

    def get_ranges_into(self, reqs: Sequence[tuple[str, int, int]],
                        outs: Sequence[memoryview]) -> list[memoryview | BaseException]:
        """:meth:`get_ranges` into the caller's buffers (``outs[i]`` for ``reqs[i]``)."""
        return [_or_error(read_range_into, self._path(k), k, s, e, out)
                for (k, s, e), out in zip(reqs, outs, strict=True)]

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        data = self.get(key)
        return data, version_of(data)

    def put(self, key: str, data: bytes | memoryview,
            mode: PutMode = "overwrite") -> str | None:
        path = Path(self._path(key))
        if mode == "create":  # link(2) refuses a taken name (local_write.py)
            return create_only(path, data)
        if isinstance(mode, IfMatch):  # flock + inode and content check
            return replace_if(path, key, data, mode.etag)
        if mode != "overwrite":
            raise NotImplementedError(f"put mode {mode!r}")
        atomic_write(path, data)
        return version_of(data)

    def open_upload(self, folder: str) -> _Upload:
        """An object written piece by piece (a temporary file in ``folder``), for a writer
        that would otherwise hold the whole object in memory (a pack: see ``Store``)."""
        return _Upload(self, self._path(folder.strip("/")))

    def list(self, prefix: str) -> list[ObjectMeta]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        out: list[ObjectMeta] = []
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted since scandir saw it (gc, a lost log entry): not listed
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
                    continue
                rel = os.path.relpath(e.path, self.root).replace(os.sep, "/")
                out.append(ObjectMeta(rel, st.st_size, st.st_mtime))
        return out

    def delete(self, key: str) -> None:
        os.unlink(self._path(key))

    def root_exists(self) -> bool:
        return os.path.isdir(self.root)


def _or_error(fn: Any, *args: Any) -> bytes | BaseException:
    """``fn(*args)``, or the exception it raised (bulk verbs return failures per item)."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


class _Upload(LocalUpload):
    """A :class:`LocalUpload` that publishes under a key of its backend."""

    def __init__(self, backend: LocalBackend, folder: str) -> None:
        super().__init__(folder)
        self._backend = backend

    def publish(self, key: str, mode: PutMode) -> None:
        if mode not in ("create", "overwrite"):
            raise NotImplementedError(f"upload mode {mode!r}")
        self.commit(Path(self._backend._path(key)), create=mode == "create")
