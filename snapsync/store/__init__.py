"""The store edge (docs/design.md, layer 2): the only package that imports fsspec or a cloud SDK.

:func:`open_store` turns a URL and fsspec-shaped storage options into a :class:`Store`: a
facade (retries, counts, error translation) over one :class:`Backend`.
"""

from __future__ import annotations

import os
from typing import Any

from snapsync.errors import SnapsyncError, StoreError, UsageError
from snapsync.store.backend import Backend, IfMatch, ObjectMeta, PreconditionFailed, PutMode
from snapsync.store.layout import Key, Layout, check_ref_name
from snapsync.store.local_backend import LOCAL_SCHEMES, LocalBackend
from snapsync.store.store import RequestStats, RetryPolicy, Store, describe, redact_url

__all__ = ["Backend", "IfMatch", "Key", "Layout", "ObjectMeta", "PreconditionFailed",
           "PutMode", "RequestStats", "RetryPolicy", "Store", "as_store", "check_ref_name",
           "choose_engine", "open_backend", "open_store", "redact_url"]


# URL schemes the obstore engine serves by default. gs:// stays on gcsfs: obstore's GCS
# client writes through the XML API, which fake-gcs-server (our GCS test server) lacks.
OBSTORE_SCHEMES = frozenset({"s3", "s3a", "az", "abfs", "abfss", "azure"})
ENGINES = ("obstore", "fsspec")
BACKEND_ENV = "SNAPSYNC_BACKEND"


def choose_engine(protocol: str, options: dict[str, Any]) -> str:
    """``"obstore"``, ``"fsspec"`` or ``"local"`` for ``protocol``; pops the ``backend``
    option.

    ``-o backend=fsspec`` (or ``SNAPSYNC_BACKEND=fsspec``) sends s3:// and az:// through
    s3fs/adlfs as before, and file:// through fsspec's LocalFileSystem; the option wins over
    the variable. By default file:// (and plain paths) use the standard-library local
    backend, so a local push imports no fsspec. Other protocols always use fsspec, and
    asking for obstore there is a usage error.
    """
    given = options.pop("backend", None)
    source = "storage option backend"
    if given is None:
        given, source = os.environ.get(BACKEND_ENV) or None, BACKEND_ENV
    if given is None:
        if protocol in LOCAL_SCHEMES:
            return "local"
        return "obstore" if protocol in OBSTORE_SCHEMES else "fsspec"
    if not isinstance(given, str) or given.strip().lower() not in ENGINES:
        raise UsageError(f"{source} must be obstore or fsspec, got {given!r}")
    engine = given.strip().lower()
    if engine == "obstore" and protocol not in OBSTORE_SCHEMES:
        if source == BACKEND_ENV:
            # the variable picks the S3/Azure engine; others have one
            return "local" if protocol in LOCAL_SCHEMES else "fsspec"
        raise UsageError(f"storage option backend=obstore: {protocol}:// is served by fsspec "
                         "only (obstore: s3://, az://)")
    return engine


def open_backend(url: str, storage_options: dict[str, Any] | None = None) -> Backend:
    """The backend for ``url``, with provider errors at open time made snapsync errors.

    s3:// and az:// go through obstore unless ``backend=fsspec`` is given (option or
    ``SNAPSYNC_BACKEND``); file:// and plain paths through the local backend; everything
    else through fsspec. Only the chosen engine's packages are imported.
    """
    from snapsync.store.store import check_store_url

    url = check_store_url(url)
    shown = redact_url(url)
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    options = dict(storage_options or {})
    engine = choose_engine(protocol, options)
    try:
        if engine == "obstore":
            from snapsync.store.obstore_backend import ObstoreBackend

            return ObstoreBackend.open(url, options)
        if engine == "local":
            return LocalBackend.open(url, options)
        from snapsync.store.fsspec_backend import FsspecBackend

        return FsspecBackend.open(url, options)
    except SnapsyncError:
        raise
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
