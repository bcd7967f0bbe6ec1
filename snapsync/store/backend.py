"""The backend contract: keys to bytes under one store root, and nothing more.

A backend knows one provider library (fsspec, obstore...). It never retries, never counts and
never raises snapsync errors: it raises builtin exceptions with these meanings, and the
:class:`~snapsync.store.store.Store` facade above it retries and translates them once.

* ``FileNotFoundError``: the key does not exist; :class:`MissingRoot` (a subclass) when the
  bucket or container itself does not;
* ``PermissionError``: access denied or bad credentials;
* ``FileExistsError``: a ``mode="create"`` write found the key already there;
* :class:`PreconditionFailed`: an ``IfMatch`` write found another version;
* :class:`BadObject`: the key holds something that is not a readable object;
* ``NotImplementedError``: a conditional mode this backend cannot honour;
* anything else: provider trouble; :meth:`Backend.is_transient` says whether to retry.

Bulk reads return one result per item, an exception in place of a failed item, so the facade
can retry just those (fsspec's ``on_error="return"``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """One listed object: ``key`` relative to the store root, ``mtime`` in epoch seconds
    (``None`` when the provider does not say), ``etag`` a version token when it has one."""

    key: str
    size: int
    mtime: float | None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class IfMatch:
    """Write only if the object's current version is ``etag`` (compare-and-swap)."""

    etag: str


PutMode = Literal["overwrite", "create"] | IfMatch


class MissingRoot(FileNotFoundError):
    """The bucket, container or top folder of the store does not exist."""


class PreconditionFailed(Exception):
    """An ``IfMatch`` write lost: another writer changed the object first."""


class BadObject(Exception):
    """The object is there but is no object snapsync can read: a FIFO, device or symlink in
    a local store, or bigger than its kind allows. Never retried; corrupt data (exit 7)."""


def status_pattern(*codes: int) -> re.Pattern[str]:
    """An HTTP status standing alone in a message, not digits inside a port, bucket or id.

    Found with tests/fault_proxy.py: a 503 from 127.0.0.1:41673 read as a truncation (416),
    one from 127.0.0.1:40149 as bad credentials (401).
    """
    alts = "|".join(str(c) for c in codes)
    # Followed by ":" or "." only where a sentence goes on ("Error 401: Unauthorized",
    # "status 503."), not a port, host or name ("401.pack", ":4010/").
    return re.compile(rf"(?<![\w.:/-])(?:{alts})(?![\w/-]|[.:][\w/])")


# Words in provider errors that mean "try again": connection trouble, timeouts, throttling, 5xx.
TRANSIENT_WORDS = ("slowdown", "throttl", "timeout", "timed out", "temporarily", "connection",
                   "reset by peer", "service unavailable", "internal error",
                   "too many requests", "serverdisconnected")
_TRANSIENT_STATUS = status_pattern(500, 502, 503, 504, 429)

_PERMANENT = (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
              NotADirectoryError, PreconditionFailed, BadObject, NotImplementedError,
              ValueError, TypeError)


_TIMEOUT_WORDS = ("timeout", "timed out", "deadline has elapsed")


def looks_like_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` says the endpoint did not answer in time (connect or read timeout):
    ``TimeoutError`` (asyncio's and aiohttp's too) or a provider error whose type or text says
    so (botocore's ``ReadTimeoutError``/``ConnectTimeoutError``)."""
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, _PERMANENT):
        return False
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in _TIMEOUT_WORDS)


def looks_transient(exc: BaseException) -> bool:
    """The default classification: timeouts, connection errors and 5xx/throttling texts."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in TRANSIENT_WORDS) or bool(_TRANSIENT_STATUS.search(text))


class Backend(ABC):
    """Keys to bytes under one root. Implementations must be safe to use from many threads.

    ``local`` says the keys are files on this machine (under ``local_root``); ``conditional``
    that ``put`` honours
    ``"create"`` and :class:`IfMatch` (otherwise it raises ``NotImplementedError`` for them);
    ``retry_timeout`` how long the facade retries an endpoint that does not answer at all.
    """

    name: str = "backend"
    local: bool = False
    conditional: bool = False
    local_root: str | None = None  # the folder holding the objects, when ``local``
    # How long the facade keeps retrying an endpoint that answers nothing at all (connect or
    # read timeouts, nothing else answered meanwhile): the storage option ``retry_timeout``.
    retry_timeout: float = 10.0

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object."""

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        """The whole object and its version token (``None`` when unknown)."""
        return self.get(key), None

    @abstractmethod
    def get_many(self, keys: Sequence[str], concurrency: int) -> list[bytes | BaseException]:
        """Whole objects, read concurrently; one result (or exception) per key, in order."""

    @abstractmethod
    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   concurrency: int) -> list[bytes | BaseException]:
        """``[start, end)`` byte ranges ``(key, start, end)``, read concurrently, in order."""

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview,
            mode: PutMode = "overwrite") -> str | None:
        """Write one object whole; return its new version token when the provider gives one."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectMeta]:
        """Every object whose key starts with ``prefix`` (a folder, ending in ``/``)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing one raises ``FileNotFoundError``."""

    @abstractmethod
    def root_exists(self) -> bool:
        """Whether the bucket, container or top folder exists (for clear errors)."""

    def invalidate(self) -> None:  # noqa: B027 - most backends cache nothing
        """Forget any listing cache, so the next listing sees other writers."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` from this backend is worth retrying."""
        return looks_transient(exc)

    def is_timeout(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the endpoint did not answer in time (the facade gives up on
        those once the endpoint has been silent for ``retry_timeout`` seconds)."""
        return looks_like_timeout(exc)

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""
