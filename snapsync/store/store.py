"""The store facade: one backend, with retries, request counts and error translation.

Engines and the repository talk to a :class:`Store`; it talks to a
:class:`~snapsync.store.backend.Backend`. Retrying (backoff with jitter, per item in bulk
calls) is written once, in :meth:`Store._attempt`, and provider errors become snapsync errors
once, in :meth:`Store.translate`, naming the URL or key at fault.

An endpoint that answers nothing at all (every request times out) is retried only until it
has been silent for the backend's ``retry_timeout`` (10 s by default), so an unreachable
store fails in about that time, not after the whole backoff schedule of long attempts. Each
retry is reported to ``on_retry`` (the CLI prints it), so a user waiting sees why.
"""

from __future__ import annotations

import errno
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from snapsync.concurrency import DEFAULT_IO
from snapsync.errors import (
    AlreadyExistsError,
    FormatError,
    LocalFileError,
    NotFoundError,
    PreconditionError,
    RootNotFoundError,
    SnapsyncError,
    StoreAccessError,
    StoreError,
    TruncatedObjectError,
    UsageError,
)
from snapsync.store.backend import (
    Backend,
    BadObject,
    MissingRoot,
    ObjectMeta,
    PreconditionFailed,
    PutMode,
    status_pattern,
)


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


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more tries after the first, sleeping ``base`` seconds doubling to ``cap``,
    each scaled by a random factor in [0.5, 1.5) so that clients do not retry in step.
    ``sleep`` is injectable so tests can record the schedule instead of waiting."""

    retries: int = 4
    base: float = 0.1
    cap: float = 5.0
    sleep: Callable[[float], None] | None = None

    def delays(self) -> Iterator[float]:
        d = self.base
        for _ in range(self.retries):
            yield d * (0.5 + random.random())
            d = min(d * 2, self.cap)

    def wait(self, seconds: float) -> None:
        (self.sleep or time.sleep)(seconds)


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen: ``attempt`` (2, 3, ...) of at most ``attempts`` of
    ``what`` (a verb and the URL, or a count of items), after ``delay`` seconds, because of
    ``reason`` (the provider's error, credentials redacted)."""

    what: str
    attempt: int
    attempts: int
    reason: str
    delay: float

    def message(self) -> str:
        """``retrying <what> (attempt k of n): <reason>``, as the CLI prints it."""
        return f"retrying {self.what} (attempt {self.attempt} of {self.attempts}): {self.reason}"


# What providers say when the bucket or container itself is missing (s3fs, adlfs, botocore).
_MISSING_ROOT_WORDS = ("nosuchbucket", "bucket does not exist", "containernotfound",
                       "container does not exist")


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` and query string (SAS tokens, signatures) from a URL."""
    url = re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1***@", url)
    return re.sub(r"\?.*$", "?***", url)


def _scrub(text: str) -> str:
    """Redact credentials in URLs that provider error messages may quote."""
    text = re.sub(r"([a-z0-9+.-]+://)[^/@\s'\"]*@", r"\1***@", text)
    return re.sub(r"(://[^\s'\"?]*)\?[^\s'\"]*", r"\1?***", text)


def check_store_url(url: str) -> str:
    """Refuse URLs that would silently name the wrong place; return it without a trailing /."""
    # "s3://" would otherwise become the local folder "s3:", and "" the current one.
    if not url.strip():
        raise UsageError("the store URL is empty")
    if "://" in url and not url.split("://", 1)[1].strip("/"):
        raise UsageError(f"{redact_url(url)}: the store URL names no bucket or path")
    return url.rstrip("/") or url


class Store:
    """A snapsync store: one URL, one backend. Safe to use from many threads.

    Open one with :func:`snapsync.store.open_store`, or pass ``backend`` yourself (tests wrap
    a backend to inject faults). ``io`` is the default number of requests in flight;
    ``on_retry`` is called (from the retrying thread) before each retry's backoff.
    """

    def __init__(self, url: str, backend: Backend, *, retry: RetryPolicy | None = None,
                 io: int = DEFAULT_IO,
                 on_retry: Callable[[RetryEvent], None] | None = None) -> None:
        self.url = check_store_url(url)
        self.display_url = redact_url(self.url)
        self.backend = backend
        self.retry = retry or RetryPolicy()
        self.io = io
        self.on_retry = on_retry
        self.stats = RequestStats()
        # When the endpoint last answered anything (a result or an error that is no
        # timeout), for the silence budget; shared by every thread using the store.
        self._answered: float | None = None

    @property
    def local(self) -> bool:
        """Whether the objects are files on this machine."""
        return self.backend.local

    @property
    def reads_into(self) -> bool:
        """Whether :meth:`get_ranges` fills the caller's buffers (``into=``) here."""
        return hasattr(self.backend, "get_ranges_into")

    @property
    def conditional(self) -> bool:
        """Whether writes can be create-only or compare-and-swap."""
        return self.backend.conditional

    def where(self, key: str) -> str:
        return f"{self.display_url}/{key}"

    # ---- retries and translation, once ---------------------------------------------------
    def _attempt(self, n: int, call: Callable[[list[int]], Sequence[Any]],
                 short: Callable[[int, Any], bool] | None = None, what: str = "") -> list[Any]:
        """Run ``call`` on item indices until each succeeds or fails for good.

        ``call(todo)`` returns one value or exception per index in ``todo`` (an exception
        raised by the call itself counts for all of them). Items that failed transiently, or
        that ``short`` says came back incomplete (a dropped connection), are tried again after
        a backoff; the rest keep their result. Timeouts stop being retried once the endpoint
        has answered nothing for ``backend.retry_timeout`` seconds. Returns the last result of
        every item. ``what`` names the request in retry reports.
        """
        out: list[Any] = [None] * n
        todo = list(range(n))
        delays = self.retry.delays()
        first = time.monotonic()
        attempt = 1
        while True:
            try:
                got = list(call(todo))
            except Exception as exc:  # the whole call failed
                got = [exc] * len(todo)
            now = time.monotonic()
            timeouts = [isinstance(v, BaseException) and self.backend.is_timeout(v)
                        for v in got]
            if not all(timeouts):
                self._answered = now  # something answered: the endpoint is alive
            answered = self._answered
            silent = now - max(first, answered if answered is not None else first)
            give_up_timeouts = silent >= self.backend.retry_timeout
            again = []
            for i, val, timed_out in zip(todo, got, timeouts, strict=True):
                out[i] = val
                if isinstance(val, SnapsyncError):
                    continue
                if timed_out and give_up_timeouts:
                    if attempt > 1:
                        out[i] = _gave_up(val, silent)
                    continue
                if (self.backend.is_transient(val) if isinstance(val, BaseException)
                        else short is not None and short(i, val)):
                    again.append(i)
            delay = next(delays, None) if again else None
            if delay is None:
                return out
            self.stats.add("RETRY", len(again))
            attempt += 1
            if self.on_retry is not None:
                self.on_retry(self._event(what, n, again, out, attempt, delay))
            self.retry.wait(delay)
            todo = again

    def _event(self, what: str, n: int, again: list[int], out: list[Any], attempt: int,
               delay: float) -> RetryEvent:
        """The report of one retry: which request(s), why (the first failure's reason)."""
        first = out[again[0]]
        reason = describe(first) if isinstance(first, BaseException) else "short read"
        if n > 1:
            what = f"{len(again)} of {n} {what}" if what else f"{len(again)} of {n} requests"
        return RetryEvent(what or self.display_url, attempt, self.retry.retries + 1, reason,
                          delay)

    def _one(self, what: str, fn: Callable[[], Any], verb: str = "") -> Any:
        val = self._attempt(1, lambda _todo: [fn()], what=f"{verb} {what}" if verb else what)[0]
        if isinstance(val, BaseException):
            raise self.translate(val, what) from None
        return val

    def translate(self, exc: BaseException, what: str) -> SnapsyncError:
        """Map a backend exception to a snapsync error that names ``what``."""
        if isinstance(exc, SnapsyncError):
            return exc
        desc = describe(exc)
        low = desc.lower()
        if isinstance(exc, FileExistsError):
            return AlreadyExistsError(f"{what}: already exists")
        if isinstance(exc, PreconditionFailed):
            return PreconditionError(f"{what}: changed by another writer")
        if isinstance(exc, BadObject):
            return FormatError(f"{what}: unsupported store object: {exc}")
        # Only the provider's own words count: a URL or key quoted in a message may well
        # contain "bucket" (s3://my-bucket/...) without anything being wrong with the bucket.
        if isinstance(exc, MissingRoot) or any(w in low for w in _MISSING_ROOT_WORDS):
            return RootNotFoundError(f"{what}: bucket or container does not exist ({desc})")
        if isinstance(exc, FileNotFoundError):
            return NotFoundError(f"{what}: not found")
        if isinstance(exc, PermissionError) or any(w in low for w in (
                "accessdenied", "access denied", "forbidden", "invalidaccesskeyid",
                "signaturedoesnotmatch", "nocredentials", "unable to locate credentials",
                "authenticationfailed", "authorizationfailure")) or _DENIED_STATUS.search(low):
            return StoreAccessError(f"{what}: access denied, check the credentials ({desc})")
        return StoreError(f"{what}: {desc}")

    # ---- object verbs --------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        """Read a whole object; ``NotFoundError`` when missing."""
        data = self._one(self.where(key), lambda: self.backend.get(key), "GET")
        self.stats.add("GET", received=len(data))
        return data

    def get_optional(self, key: str) -> bytes | None:
        """Read a whole object; ``None`` when it is missing (a missing bucket still raises)."""
        try:
            return self.get(key)
        except RootNotFoundError:
            raise
        except NotFoundError:
            self.stats.add("GET")
            return None

    def get_versioned(self, key: str) -> tuple[bytes, str | None] | None:
        """An object and its version token, or ``None`` when it is missing."""
        try:
            data, etag = self._one(self.where(key), lambda: self.backend.get_versioned(key),
                                   "GET")
        except RootNotFoundError:
            raise
        except NotFoundError:
            self.stats.add("GET")
            return None
        self.stats.add("GET", received=len(data))
        return data, etag

    def get_many(self, keys: Sequence[str], batch_size: int | None = None
                 ) -> dict[str, bytes | None]:
        """Read many small objects concurrently; missing ones map to ``None``."""
        if not keys:
            return {}
        io = batch_size or self.io
        vals = self._attempt(len(keys), lambda todo: self.backend.get_many(
            [keys[i] for i in todo], io), what=f"GETs from {self.display_url}")
        result: dict[str, bytes | None] = {}
        for key, val in zip(keys, vals, strict=True):
            if isinstance(val, FileNotFoundError):
                result[key] = None
                self.stats.add("GET")
            elif isinstance(val, BaseException):
                raise self.translate(val, self.where(key))
            else:
                result[key] = val
                self.stats.add("GET", received=len(val))
        return result

    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   batch_size: int | None = None,
                   into: Sequence[memoryview] | None = None) -> list[bytes | memoryview]:
        """Read ``(key, start, end)`` byte ranges of many objects in one concurrent batch.

        ``into``: buffers (``into[i]`` at least as long as range ``i``) that a backend able
        to read in place (a local store) fills, returning views of them; others ignore it.
        """
        if not reqs:
            return []
        io = batch_size or self.io
        # A local file that ends early will not grow back: its short reads are not retried.
        short = None if self.backend.local else (
            lambda i, v: len(v) != reqs[i][2] - reqs[i][1])
        read_into = self.backend.get_ranges_into if into and self.reads_into else None  # type: ignore[attr-defined]

        def call(todo: list[int]) -> Sequence[Any]:
            picked = [reqs[i] for i in todo]
            if read_into is not None:
                assert into is not None
                return read_into(picked, [into[i] for i in todo])
            return self.backend.get_ranges(picked, io)

        vals = self._attempt(len(reqs), call, short=short,
                             what=f"range reads from {self.display_url}")
        result = []
        for (key, start, end), val in zip(reqs, vals, strict=True):
            if isinstance(val, BaseException):
                err = self.translate(val, self.where(key))
                if (type(err) is StoreError and not self.backend.is_transient(val)
                        and _past_the_end(describe(val))):
                    raise TruncatedObjectError(f"{err}; the object is truncated (a range "
                                               f"[{start}, {end}) past its end)") from None
                raise err
            if len(val) != end - start:
                # Retries did not help: the object is shorter than the manifest says.
                raise TruncatedObjectError(
                    f"{self.where(key)}: short read ({len(val)} of {end - start} bytes at "
                    f"offset {start}); the object is truncated")
            self.stats.add("GET", received=len(val))
            result.append(val)
        return result

    def put(self, key: str, data: bytes | memoryview,
            mode: PutMode = "overwrite") -> str | None:
        """Write one object (atomically on local stores); return its version token if known.

        ``mode="create"`` raises ``AlreadyExistsError`` when the key exists; ``IfMatch``
        raises ``PreconditionError`` when another writer changed it (only where
        :attr:`conditional`).
        """
        etag = self._one(self.where(key), lambda: self.backend.put(key, data, mode), "PUT")
        self.stats.add("PUT", sent=len(data))
        return etag

    @property
    def can_stream(self) -> bool:
        """Whether :meth:`open_upload` gives uploads here (local stores, and S3 and Azure
        through obstore)."""
        return hasattr(self.backend, "open_upload")

    def open_upload(self, folder: str) -> Upload | None:
        """An object written piece by piece and published under its key at the end, where
        the backend can (local stores: a temporary file in ``folder``, then a link; obstore:
        an unlinked temporary file, then a multipart upload); ``None`` elsewhere (fsspec
        stores take whole objects: use :meth:`put`). A pack writer then needs no pack-size
        buffer."""
        opener = getattr(self.backend, "open_upload", None)
        if opener is None:
            return None
        try:
            return Upload(self, opener(folder), folder)
        except OSError as exc:
            raise _spill_error(exc) if not self.local else self.translate(
                exc, self.where(folder)) from None

    def delete(self, keys: Sequence[str]) -> None:
        """Remove objects; missing ones are fine."""
        for key in keys:
            try:
                self._one(self.where(key), lambda k=key: self.backend.delete(k), "DELETE")
            except NotFoundError:
                pass
            self.stats.add("DELETE")

    def list(self, prefix: str) -> list[ObjectMeta]:
        """Objects under ``prefix`` (a folder relative to the store root, ending in ``/``)."""
        try:
            found = self._one(self.where(prefix), lambda: self.backend.list(prefix), "LIST")
        except NotFoundError:
            found = []
        self.stats.add("LIST")
        return found

    def root_exists(self) -> bool:
        """Whether the store's bucket or top directory exists (for clear errors)."""
        try:
            return bool(self._one(self.display_url, self.backend.root_exists, "HEAD"))
        except StoreAccessError:
            raise
        except SnapsyncError:
            return False

    def invalidate(self) -> None:
        """Drop any listing cache so listings see other writers."""
        self.backend.invalidate()


def _gave_up(exc: BaseException, silent: float) -> TimeoutError:
    """A timeout that exhausted the silence budget, saying so (and how to change it)."""
    out = TimeoutError(f"{describe(exc)}; no answer for {silent:.0f} s, giving up "
                       "(storage option retry_timeout)")
    return out


# What providers say when a range starts past an object's end (HTTP 416).
_PAST_END_WORDS = ("invalidrange", "invalid range", "not satisfiable")
_PAST_END_STATUS = status_pattern(416)
_DENIED_STATUS = status_pattern(401, 403)


def _past_the_end(desc: str) -> bool:
    low = desc.lower()
    return any(w in low for w in _PAST_END_WORDS) or bool(_PAST_END_STATUS.search(low))


def describe(exc: BaseException) -> str:
    """A one-line description of a provider exception, with credentials in URLs redacted."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, OSError) and exc.errno and not text:
        text = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{type(exc).__name__}: {_scrub(text)}" if text else type(exc).__name__


class Upload:
    """One object being written to a store piece by piece (:meth:`Store.open_upload`).

    Errors are the store's (naming the store and key); after one, or :meth:`abort`, nothing
    appears under the key.
    """

    def __init__(self, store: Store, up: Any, folder: str) -> None:
        self._store = store
        self._up = up
        self._folder = folder
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        try:
            self._up.write(data)
        except OSError as exc:
            self._up.abort()
            if not self._store.local:  # the local temporary file, not the store, failed
                raise _spill_error(exc) from None
            raise self._store.translate(exc, self._store.where(self._folder)) from None
        self.size += len(data)

    def publish(self, key: str, mode: PutMode = "overwrite") -> None:
        """Make the bytes written the object ``key`` (``mode`` as :meth:`Store.put`'s).
        To a remote store this is an upload, retried like :meth:`Store.put`."""
        store = self._store
        if store.local:
            try:
                self._up.publish(key, mode)
            except OSError as exc:
                self._up.abort()
                raise store.translate(exc, store.where(key)) from None
        else:
            try:
                store._one(store.where(key), lambda: self._up.publish(key, mode), "PUT")
            finally:
                self._up.abort()  # uploaded or failed for good: the temporary file goes
        store.stats.add("PUT", sent=self.size)

    def abort(self) -> None:
        self._up.abort()


def _spill_error(exc: OSError) -> LocalFileError:
    """A remote store's upload could not write its local temporary file (a full disk)."""
    return LocalFileError(f"{tempfile.gettempdir()}: cannot write a temporary file for an "
                          f"upload ({describe(exc)}); TMPDIR names another folder")
