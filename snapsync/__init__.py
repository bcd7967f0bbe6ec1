"""snapsync: content-addressed code snapshots in bucket storage.

Push a project folder to any fsspec store (S3, GCS, Azure, ``file://``), sending only the
chunks the store lacks; pull it back verified, touching only what changed.

    >>> import snapsync
    >>> r = snapsync.push("project", "s3://bucket/code")       # doctest: +SKIP
    >>> snapsync.pull("s3://bucket/code", "/tmp/run", snapshot=r.snapshot_id)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from snapsync.errors import (
    ConflictError,
    FormatError,
    IgnoreFileError,
    IntegrityError,
    LocalFileError,
    NotAStoreError,
    NotFoundError,
    SnapsyncError,
    StoreAccessError,
    StoreError,
    UnsafePathError,
    UsageError,
)
from snapsync.version import __version__

if TYPE_CHECKING:
    from snapsync.engine.pull import pull
    from snapsync.engine.push import push
    from snapsync.engine.results import PullResult, PushResult

# The engines load on first use: `snapsync --version`, `log` or a Prefect step that only
# pulls need not import the push engine, and `import snapsync` stays cheap (PEP 562).
_LAZY = {"push": "snapsync.engine.push", "PushResult": "snapsync.engine.results",
         "pull": "snapsync.engine.pull", "PullResult": "snapsync.engine.results"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'snapsync' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "ConflictError",
    "FormatError",
    "IgnoreFileError",
    "IntegrityError",
    "LocalFileError",
    "NotAStoreError",
    "NotFoundError",
    "PullResult",
    "PushResult",
    "SnapsyncError",
    "StoreAccessError",
    "StoreError",
    "UnsafePathError",
    "UsageError",
    "__version__",
    "pull",
    "push",
]
