"""The store edge: the only module that imports fsspec.

It owns the key layout (``Layout``), counts requests by kind, retries transient faults with
backoff and jitter, writes local objects atomically, and translates provider exceptions into
snapsync's own errors once, naming the URL or key at fault.
"""

from __future__ import annotations

import errno
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs

# Ref names are validated by the pure core; re-exported because callers import it from here.
from snapsync.core.names import check_ref_name as check_ref_name
from snapsync.errors import (
    NotFoundError,
    SnapsyncError,
    StoreAccessError,
    StoreError,
    UsageError,
)
from snapsync.local.tree import atomic_write

T = TypeVar("T")

# Test hook (tests/faults.py): applied to every file system a Store opens itself.
fs_wrapper: Callable[[Any], Any] | None = None

class Layout:
    """Every key in a store, relative to the store's root. Nothing else builds keys."""

    CONFIG = "snapsync.json"
    PACKS = "packs"
    MANIFESTS = "manifests"
    REFS = "refs"
    LOGS = "logs"
    SUPERSEDED = "superseded"

    @staticmethod
    def pack(pack_id: bytes) -> str:
        h = pack_id.hex()
        return f"packs/{h[:2]}/{h}.pack"

    @staticmethod
    def manifest(snapshot_id: str) -> str:
        return f"manifests/{snapshot_id[:2]}/{snapshot_id}.mf"

    @staticmethod
    def ref(name: str) -> str:
        return f"refs/{name}.json"

    @staticmethod
    def log(name: str, time_ns: int, snapshot_id: str) -> str:
        return f"logs/{name}/{time_ns:020d}-{snapshot_id}.json"

    @staticmethod
    def superseded(pack_id: bytes) -> str:
        """Marker written by gc when it repacked a pack's live chunks elsewhere (§8)."""
        h = pack_id.hex()
        return f"superseded/{h[:2]}/{h}.json"

    @staticmethod
    def pack_id_of(key: str) -> bytes | None:
        m = re.search(r"([0-9a-f]{32})\.pack$", key)
        return bytes.fromhex(m.group(1)) if m else None


@dataclass
class RequestStats:
    """Requests by kind and bytes moved, for summaries and benchmarks."""

    counts: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, n: int = 1, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + n
            self.bytes_sent += sent
            self.bytes_received += received

    def as_dict(self) -> dict[str, Any]:
        return {"requests": dict(sorted(self.counts.items())), "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received}


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` and query string (SAS tokens, signatures) from a URL."""
    url = re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1***@", url)
    return re.sub(r"\?.*$", "?***", url)


def _scrub(text: str) -> str:
    """Redact credentials in URLs that provider error messages may quote."""
    text = re.sub(r"([a-z0-9+.-]+://)[^/@\s'\"]*@", r"\1***@", text)
    return re.sub(r"(://[^\s'\"?]*)\?[^\s'\"]*", r"\1?***", text)


# Exceptions that mean "try again": connection trouble, timeouts, throttling, 5xx.
_TRANSIENT_WORDS = ("slowdown", "throttl", "timeout", "timed out", "temporarily", "connection",
                    "reset by peer", "service unavailable", "internal error", "503", "500",
                    "502", "504", "too many requests", "429", "serverdisconnected")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                        NotADirectoryError, SnapsyncError, ValueError, TypeError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__.lower()
    text = f"{name} {exc}".lower()
    return any(w in text for w in _TRANSIENT_WORDS)


class Store:
    """A snapsync store at one fsspec URL.

    ``storage_options`` go to fsspec as they are (for example ``endpoint_url`` for s3fs);
    providers' usual environment variables apply too. Safe to use from many threads.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, *,
                 retries: int = 4, fs: Any = None) -> None:
        # "s3://" would otherwise become the local folder "s3:", and "" the current one.
        if not url.strip():
            raise UsageError("the store URL is empty")
        if "://" in url and not url.split("://", 1)[1].strip("/"):
            raise UsageError(f"{redact_url(url)}: the store URL names no bucket or path")
        self.url = url.rstrip("/") or url
        self.display_url = redact_url(self.url)
        self.stats = RequestStats()
        self.retries = retries
        opts = dict(storage_options or {})
        if fs is not None:
            self.fs, self.root = fs, url.split("://", 1)[-1].rstrip("/")
        else:
            self.fs, self.root = self._connect(self.url, opts)
            if fs_wrapper is not None:
                self.fs = fs_wrapper(self.fs)
        self.local = "file" in _protocols(self.fs)

    def _connect(self, url: str, opts: dict[str, Any]) -> tuple[Any, str]:
        if "://" not in url:
            url = "file://" + os.path.abspath(url)
        protocol = url.split("://", 1)[0]
        if protocol == "file":
            opts.setdefault("auto_mkdir", True)
        try:
            fs, root = url_to_fs(url, **opts)
        except ImportError as exc:
            raise UsageError(f"{self.display_url}: the {protocol}:// protocol needs a package "
                             f"that is not installed ({exc})") from None
        except ValueError as exc:
            raise UsageError(f"{self.display_url}: not a usable store URL ({exc})") from None
        except TypeError as exc:
            raise UsageError(f"{self.display_url}: bad storage option for {protocol}:// "
                             f"(-o KEY=VALUE): {exc}") from None
        except Exception as exc:
            raise StoreError(f"{self.display_url}: cannot open store: {_describe(exc)}") from None
        return fs, root.rstrip("/")

    # ---- helpers -------------------------------------------------------------------------
    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def where(self, key: str) -> str:
        return f"{self.display_url}/{key}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one provider call with retries, translating its errors (``what`` names it)."""
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except SnapsyncError:
                raise
            except Exception as exc:
                if attempt < self.retries and _is_transient(exc):
                    self.stats.add("RETRY")
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 5.0)
                    continue
                raise self.translate(exc, what) from None
        raise AssertionError("unreachable")

    def translate(self, exc: BaseException, what: str) -> SnapsyncError:
        """Map a provider exception to a snapsync error that names ``what``."""
        desc = _describe(exc)
        low = desc.lower()
        if isinstance(exc, FileNotFoundError) or "nosuchbucket" in low or (
                "not found" in low and "bucket" in low):
            if "bucket" in low or "container" in low:
                return NotFoundError(f"{what}: bucket or container does not exist ({desc})")
            return NotFoundError(f"{what}: not found")
        if isinstance(exc, PermissionError) or any(w in low for w in (
                "accessdenied", "access denied", "forbidden", "invalidaccesskeyid",
                "signaturedoesnotmatch", "nocredentials", "unable to locate credentials",
                "authenticationfailed", "authorizationfailure", "401", "403")):
            return StoreAccessError(f"{what}: access denied, check the credentials ({desc})")
        return StoreError(f"{what}: {desc}")

    # ---- object verbs --------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """Read a whole object; ``NotFoundError`` when missing."""
        data = self._call(self.where(key), lambda: self.fs.cat_file(self.path(key)))
        self.stats.add("GET", received=len(data))
        return data

    def get_optional(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except NotFoundError as exc:
            if "bucket" in str(exc):
                raise
            self.stats.add("GET")
            return None

    def get_many(self, keys: Sequence[str], batch_size: int = 32) -> dict[str, bytes | None]:
        """Read many small objects concurrently; missing ones map to ``None``."""
        if not keys:
            return {}
        paths = [self.path(k) for k in keys]
        out: Any = {}
        todo = paths
        delay = 0.1
        for attempt in range(self.retries + 1):
            got = self._call(self.where(keys[0]), lambda todo=todo: self.fs.cat(
                todo, on_error="return", batch_size=batch_size))
            if not isinstance(got, dict):  # fsspec returns bare bytes for a single path
                got = {todo[0]: got}
            out.update(got)
            # Per-item transient failures come back as values: retry just those.
            todo = [p for p in todo if isinstance(got.get(p), BaseException)
                    and not isinstance(got.get(p), FileNotFoundError) and _is_transient(got[p])]
            if not todo or attempt == self.retries:
                break
            self.stats.add("RETRY", len(todo))
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
        result: dict[str, bytes | None] = {}
        for key, p in zip(keys, paths, strict=True):
            val = out.get(p)
            if isinstance(val, FileNotFoundError) or val is None:
                result[key] = None
                self.stats.add("GET")
            elif isinstance(val, BaseException):
                raise self.translate(val, self.where(key))
            else:
                result[key] = val
                self.stats.add("GET", received=len(val))
        return result

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]],
                   batch_size: int = 16) -> list[bytes]:
        """Read ``[start, end)`` byte ranges of one object, concurrently."""
        path = self.path(key)
        n = len(ranges)
        out = self._call(self.where(key), lambda: self.fs.cat_ranges(
            [path] * n, [r[0] for r in ranges], [r[1] for r in ranges],
            batch_size=batch_size))
        return self._check_ranges(key, ranges, out)

    def get_ranges_multi(self, reqs: Sequence[tuple[str, int, int]],
                         batch_size: int = 16) -> list[bytes]:
        """Read ranges of many objects in one concurrent batch: ``(key, start, end)``."""
        if not reqs:
            return []
        # Bulk verbs report per-item failures in their result instead of raising: retry the
        # items that failed transiently or came back short (a dropped connection).
        out: list[Any] = [None] * len(reqs)
        todo = list(range(len(reqs)))
        delay = 0.1
        for attempt in range(self.retries + 1):
            sub = [reqs[i] for i in todo]
            got = self._call(self.where(sub[0][0]), lambda sub=sub: self.fs.cat_ranges(
                [self.path(k) for k, _, _ in sub], [r[1] for r in sub], [r[2] for r in sub],
                batch_size=batch_size))
            again = []
            for i, val in zip(todo, got, strict=True):
                bad = _is_transient(val) if isinstance(val, BaseException) else \
                    len(val) != reqs[i][2] - reqs[i][1]
                if bad and attempt < self.retries:
                    again.append(i)
                out[i] = val
            if not again:
                break
            self.stats.add("RETRY", len(again))
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
            todo = again
        result = []
        for (key, start, end), val in zip(reqs, out, strict=True):
            result.extend(self._check_ranges(key, [(start, end)], [val]))
        return result

    def _check_ranges(self, key: str, ranges: Sequence[tuple[int, int]],
                      out: Sequence[Any]) -> list[bytes]:
        result: list[bytes] = []
        for (start, end), val in zip(ranges, out, strict=True):
            if isinstance(val, BaseException):
                raise self.translate(val, self.where(key))
            if len(val) != end - start:
                raise StoreError(f"{self.where(key)}: short read ({len(val)} of {end - start} "
                                 f"bytes at offset {start}); the object is truncated")
            self.stats.add("GET", received=len(val))
            result.append(val)
        return result

    def put(self, key: str, data: bytes) -> None:
        """Write one object (atomically on local file systems)."""
        if self.local:
            self._call(self.where(key), lambda: atomic_write(Path(self.path(key)), data))
        else:
            self._call(self.where(key), lambda: self.fs.pipe_file(self.path(key), data))
        self.stats.add("PUT", sent=len(data))

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._call(self.where(key), lambda k=key: self.fs.rm_file(self.path(k)))
            except NotFoundError:
                pass
            self.stats.add("DELETE")

    def list(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Keys under ``prefix`` (relative to the store root) with their info dicts."""
        base = self.path(prefix)
        try:
            found = self._call(self.where(prefix), lambda: self.fs.find(base, detail=True))
        except NotFoundError:
            found = {}
        self.stats.add("LIST")
        strip = len(self.path("")) if self.root else 0
        out = {}
        for p, info in found.items():
            p = p.lstrip("/") if not self.local else p
            root = self.path("").lstrip("/") if not self.local else self.path("")
            rel = p[len(root):] if p.startswith(root) else p[strip:]
            out[rel.lstrip("/")] = info
        return out

    def bucket_exists(self) -> bool:
        """Whether the store's bucket or top directory exists (for clear errors)."""
        top = self.root.split("/", 1)[0] if not self.local else self.root
        try:
            return bool(self._call(self.display_url, lambda: self.fs.exists(top)))
        except StoreAccessError:
            raise
        except SnapsyncError:
            return False

    def invalidate(self) -> None:
        """Drop fsspec's listing cache so listings see other writers."""
        try:
            self.fs.invalidate_cache()
        except Exception:
            pass


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, OSError) and exc.errno and not text:
        text = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{type(exc).__name__}: {_scrub(text)}" if text else type(exc).__name__


def available_protocols() -> list[str]:
    return sorted(fsspec.available_protocols())
