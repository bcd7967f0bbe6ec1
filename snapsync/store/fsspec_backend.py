"""The fsspec backend: any fsspec file system (s3fs, gcsfs, adlfs, local, memory...).

The only module that imports fsspec. It maps the contract's verbs onto fsspec's bulk calls
(``cat``, ``cat_ranges`` with ``on_error="return"``, bounded by ``batch_size``), writes local
objects atomically, and turns the providers' listing dicts into :class:`ObjectMeta`.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from snapsync.errors import UsageError
from snapsync.local.atomic import atomic_write
from snapsync.store.backend import Backend, IfMatch, ObjectMeta, PreconditionFailed, PutMode
from snapsync.store.local_read import read_range, read_whole
from snapsync.store.local_write import create_only, replace_if, version_of
from snapsync.store.options.common import opt_bool
from snapsync.store.options.fsspec import (
    AZURE_PROTOCOLS,
    GCS_PROTOCOLS,
    S3_PROTOCOLS,
    fsspec_options,
)

# The options a file:// or memory:// store takes (snapsync's ``backend`` is taken out
# before): anything else is a typo or meant for another provider, refused, never ignored.
LOCAL_OPTIONS: dict[str, tuple[str, ...]] = {"file": ("auto_mkdir",), "memory": ()}

# memory:// lives in this process: one lock makes its conditional writes atomic.
_MEMORY_LOCK = threading.Lock()


class FsspecBackend(Backend):
    """A store root on an fsspec file system ``fs`` (``root`` is the path inside it)."""

    name = "fsspec"

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self.local = "file" in protocols
        self.local_root = self.root if self.local else None
        self.memory = "memory" in protocols
        # Local folders (link/flock, local_write.py) and memory:// (a lock) can honour
        # create-only and compare-and-swap; other fsspec file systems do not say they can.
        self.conditional = self.local or self.memory

    @classmethod
    def open(cls, url: str, options: dict[str, Any]) -> FsspecBackend:
        """Open ``url`` with fsspec; ``options`` go to the file system as they are.

        Raises ``ImportError`` (protocol package missing), ``ValueError`` / ``TypeError`` (bad
        URL or option) or the provider's own error, for the facade to translate.
        """
        from fsspec.core import url_to_fs

        if "://" not in url:
            url = "file://" + os.path.abspath(url)
        protocol = url.split("://", 1)[0].lower()
        # Timeouts and the retry budget become each provider's own knobs (options/fsspec.py).
        opts, retry_timeout = fsspec_options(protocol, options)
        check_local_options(protocol, opts)
        if url.startswith("file://"):
            opts.setdefault("auto_mkdir", True)
        if protocol in GCS_PROTOCOLS:
            # gcsfs logs each failed retry with a traceback at ERROR level; with no handler
            # configured, Python's last-resort handler would print it on stderr. An
            # application's own handlers (Prefect's) still receive the records.
            logger = logging.getLogger("gcsfs")
            if not logger.handlers:
                logger.addHandler(logging.NullHandler())
        fs, root = url_to_fs(url, **opts)
        if protocol in S3_PROTOCOLS and getattr(fs, "retries", 1) > 1:
            fs.retries = 1  # s3fs's own retry loop (5 tries, ~15 s on a silent endpoint)
        if protocol in AZURE_PROTOCOLS:
            _no_azure_retries(fs)
        backend = cls(fs, root)
        backend.retry_timeout = retry_timeout
        return backend

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def get(self, key: str) -> bytes:
        if self.local:  # regular files only, bounded (local_read.py)
            return read_whole(self._path(key), key)
        return self.fs.cat_file(self._path(key))

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        if not self.conditional:
            return self.get(key), None
        data = self.get(key)
        return data, version_of(data)

    def get_many(self, keys: Sequence[str], concurrency: int) -> list[bytes | BaseException]:
        if not keys:  # fsspec's cat([]) raises FileNotFoundError([])
            return []
        if self.local:  # fsspec reads local files one by one too
            return [_or_error(read_whole, self._path(k), k) for k in keys]
        paths = [self._path(k) for k in keys]
        got = self.fs.cat(paths, on_error="return", batch_size=concurrency)
        if not isinstance(got, dict):  # fsspec returns bare bytes for a single path
            got = {paths[0]: got}
        return [_missing_as_error(got.get(p), p) for p in paths]

    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   concurrency: int) -> list[bytes | BaseException]:
        if not reqs:
            return []
        if self.local:
            return [_or_error(read_range, self._path(k), k, s, e) for k, s, e in reqs]
        return list(self.fs.cat_ranges([self._path(k) for k, _, _ in reqs],
                                       [s for _, s, _ in reqs], [e for _, _, e in reqs],
                                       batch_size=concurrency, on_error="return"))

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str | None:
        if mode != "overwrite" and not isinstance(mode, IfMatch) and mode != "create":
            raise NotImplementedError(f"put mode {mode!r}")
        if mode != "overwrite" and not self.conditional:
            raise NotImplementedError(f"conditional writes through {self.fs.protocol}")
        if self.local:
            path = Path(self._path(key))
            if mode == "create":
                return create_only(path, data)
            if isinstance(mode, IfMatch):
                return replace_if(path, key, data, mode.etag)
            atomic_write(path, data)
            return version_of(data)
        if self.memory:
            with _MEMORY_LOCK:
                return self._put_memory(key, data, mode)
        self.fs.pipe_file(self._path(key), data)
        return None

    def _put_memory(self, key: str, data: bytes, mode: PutMode) -> str:
        path = self._path(key)
        if mode != "overwrite":
            try:
                current: bytes | None = self.fs.cat_file(path)
            except FileNotFoundError:
                current = None
            if mode == "create" and current is not None:
                raise FileExistsError(key)
            if isinstance(mode, IfMatch) and (current is None
                                              or version_of(current) != mode.etag):
                raise PreconditionFailed(f"{key} was changed by another writer")
        self.fs.pipe_file(path, data)
        return version_of(data)

    def list(self, prefix: str) -> list[ObjectMeta]:
        base = self._path(prefix)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        # Providers disagree on leading slashes; keys are whatever follows the root.
        root = self._path("").lstrip("/")
        out = []
        for p, info in found.items():
            p = p.lstrip("/")
            rel = p[len(root):] if p.startswith(root) else p
            out.append(ObjectMeta(rel.lstrip("/"), int(info.get("size") or 0), _mtime(info),
                                  _etag(info)))
        return out

    def delete(self, key: str) -> None:
        self.fs.rm_file(self._path(key))

    def root_exists(self) -> bool:
        top = self.root if self.local else self.root.split("/", 1)[0]
        return bool(self.fs.exists(top))

    def is_transient(self, exc: BaseException) -> bool:
        # s3fs turns S3's throttling and 5xx answers into bare errnos ("503 SlowDown" is
        # OSError(EBUSY, "Please reduce your request rate."), 500 is EREMOTEIO), whose
        # text has none of the usual words: found with tests/fault_proxy.py.
        if not self.local and isinstance(exc, OSError) and not isinstance(
                exc, FileNotFoundError | PermissionError | FileExistsError) and exc.errno in (
                errno.EBUSY, getattr(errno, "EREMOTEIO", -1)):
            return True
        return super().is_transient(exc)

    def invalidate(self) -> None:
        try:
            self.fs.invalidate_cache()
        except Exception:
            pass


def _no_azure_retries(fs: Any) -> None:
    """Switch off the Azure SDK's own retries under adlfs (3 retries after 15, 18 and 24 s:
    ~110 s on a silent endpoint); the Store facade retries. adlfs passes no retry settings
    through, so the client's retry policy is changed in place (a private attribute: if
    it moves, the SDK simply keeps retrying)."""
    policy = getattr(getattr(getattr(fs, "service_client", None), "_config", None),
                     "retry_policy", None)
    if policy is not None and hasattr(policy, "total_retries"):
        policy.total_retries = 0


def check_local_options(protocol: str, opts: dict[str, Any]) -> None:
    """Refuse options a ``file://`` or ``memory://`` store would silently ignore; type the
    rest (``-o auto_mkdir=false`` arrives as a string)."""
    allowed = LOCAL_OPTIONS.get("file" if protocol == "local" else protocol)
    if allowed is None:
        return
    for key in opts:
        if key not in allowed:
            raise UsageError(f"storage option {key} is not used by {protocol}:// stores "
                             f"(known: {', '.join(('backend', *allowed))})")
    if "auto_mkdir" in opts:
        opts["auto_mkdir"] = opt_bool(opts["auto_mkdir"], "auto_mkdir")


def _or_error(fn: Any, *args: Any) -> bytes | BaseException:
    """``fn(*args)``, or the exception it raised (bulk verbs return failures per item)."""
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def _missing_as_error(val: Any, path: str) -> bytes | BaseException:
    return FileNotFoundError(path) if val is None else val


# Where fsspec implementations put an object's modification time.
_TIME_KEYS = ("LastModified", "last_modified", "mtime", "updated", "created", "creation_time",
              "timeCreated")


def _mtime(info: dict[str, Any]) -> float | None:
    """An object's modification time (seconds since the epoch) from an fsspec info dict."""
    for key in _TIME_KEYS:
        v = info.get(key)
        if v is None or v == "":
            continue
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, datetime):
            return v.timestamp()
        if isinstance(v, str):
            try:
                return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _etag(info: dict[str, Any]) -> str | None:
    v = info.get("ETag") or info.get("etag")
    return str(v) if v else None
