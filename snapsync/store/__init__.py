"""The store edge (docs/design.md, layer 2): the only package that imports fsspec or a cloud SDK.

:func:`open_store` turns a URL and fsspec-shaped storage options into a :class:`Store`: a
facade (retries, counts, error translation) over one :class:`Backend`.
"""

from __future__ import annotations

from typing import Any

from snapsync.errors import StoreError, UsageError
from snapsync.store.backend import Backend, IfMatch, ObjectMeta, PreconditionFailed, PutMode
from snapsync.store.layout import Key, Layout, check_ref_name
from snapsync.store.store import RequestStats, RetryPolicy, Store, describe, redact_url

__all__ = ["Backend", "IfMatch", "Key", "Layout", "ObjectMeta", "PreconditionFailed",
           "PutMode", "RequestStats", "RetryPolicy", "Store", "as_store", "check_ref_name",
           "open_backend", "open_store", "redact_url"]


def open_backend(url: str, storage_options: dict[str, Any] | None = None) -> Backend:
    """The backend for ``url``, with provider errors at open time made snapsync errors."""
    from snapsync.store.fsspec_backend import FsspecBackend
    from snapsync.store.store import check_store_url

    url = check_store_url(url)
    shown = redact_url(url)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        return FsspecBackend.open(url, dict(storage_options or {}))
    except ImportError as exc:
        raise UsageError(f"{shown}: the {protocol}:// protocol needs a package that is not "
                         f"installed ({exc})") from None
    except ValueError as exc:
        raise UsageError(f"{shown}: not a usable store URL ({exc})") from None
    except TypeError as exc:
        raise UsageError(f"{shown}: bad storage option for {protocol}:// (-o KEY=VALUE): "
                         f"{exc}") from None
    except Exception as exc:
        raise StoreError(f"{shown}: cannot open store: {describe(exc)}") from None


def as_store(target: str | Store, storage_options: dict[str, Any] | None = None) -> Store:
    """``target`` itself when it is a :class:`Store` already, else the store at that URL."""
    if isinstance(target, Store):
        return target
    return open_store(target, storage_options)


def open_store(url: str, storage_options: dict[str, Any] | None = None, **kw: Any) -> Store:
    """Open the store at ``url`` (``s3://``, ``gs://``, ``az://``, ``file://``, a path...).

    ``storage_options`` are fsspec-shaped (``endpoint_url``, ``key``, ``secret``...); ``kw``
    goes to :class:`Store` (``retry``, ``io``).
    """
    return Store(url, open_backend(url, storage_options), **kw)
