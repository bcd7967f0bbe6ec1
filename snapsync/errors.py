"""One root error type, with subclasses that the CLI maps to exit codes.

Every error a user can cause names the file, the URL or the option at fault in its message.
Provider exceptions are translated into these once, at the store edge (``store/store.py``);
the CLI maps ``exit_code`` to the process's exit status.
"""

from __future__ import annotations


class SnapsyncError(Exception):
    """Root of every error snapsync raises on purpose."""

    exit_code = 1


class ProblemsFound(SnapsyncError):
    """``check`` finished and found problems (its report says which)."""

    exit_code = 10


class UsageError(SnapsyncError):
    """A bad option value or combination (names the option)."""

    exit_code = 2


class IgnoreFileError(UsageError):
    """The ignore file cannot be read."""


class LocalFileError(SnapsyncError):
    """A local file cannot be read or written (names the path)."""

    exit_code = 3


class StoreError(SnapsyncError):
    """Any failure talking to the store (names the URL or key)."""

    exit_code = 4


class NotAStoreError(StoreError):
    """The URL exists but holds no snapsync store."""

    exit_code = 5


class NotFoundError(StoreError, FileNotFoundError):
    """A store, bucket, ref, snapshot or object that is not there."""

    exit_code = 5


class RootNotFoundError(NotFoundError):
    """The bucket or container a store URL names does not exist."""


class StoreAccessError(StoreError, PermissionError):
    """Bad or missing credentials, or access denied."""

    exit_code = 6


class FormatError(SnapsyncError):
    """Stored bytes that do not decode: unknown version, garbled or truncated object."""

    exit_code = 7


class IntegrityError(FormatError):
    """Bytes that decode but do not match their id or their recorded size."""


class TruncatedObjectError(StoreError, FormatError):
    """An object shorter than what a manifest says it holds: corrupt data, not a flaky store.

    A ``StoreError`` (it names the key, and callers that catch store errors still do) whose
    exit code is corrupt data's (7), since retrying does not make the object longer.
    """

    exit_code = 7


class UnsafePathError(FormatError):
    """A manifest path that would write outside the target, or through a symlink."""


class ConflictError(SnapsyncError):
    """Another writer changed what this operation depends on."""

    exit_code = 8


class AlreadyExistsError(ConflictError):
    """A create-only write found the object already there."""


class PreconditionError(ConflictError):
    """A compare-and-swap write found another version of the object."""


class GcRaceError(ConflictError):
    """A gc run is deleting objects that the snapshot being published depends on."""

    def __init__(self, message: str, tombstones: list[str] | None = None) -> None:
        super().__init__(message)
        self.tombstones = tombstones or []


class CacheError(SnapsyncError):
    """The local cache lost or garbled an entry it promised (the store is not at fault)."""

    exit_code = 3
