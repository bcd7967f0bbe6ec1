"""snapsync: content-addressed code snapshots in bucket storage.

Push a project folder to any fsspec store (S3, GCS, Azure, ``file://``), sending only the
chunks the store lacks; pull it back verified, touching only what changed.

    >>> import snapsync
    >>> r = snapsync.push("project", "s3://bucket/code")       # doctest: +SKIP
    >>> snapsync.pull("s3://bucket/code", "/tmp/run", snapshot=r.snapshot_id)  # doctest: +SKIP
"""

from __future__ import annotations

from snapsync.engine.pull import PullResult, pull
from snapsync.engine.push import PushResult, push
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
