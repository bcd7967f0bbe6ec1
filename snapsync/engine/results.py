"""What push and pull report: the results the CLI, the Prefect steps and callers render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PushResult:
    """What a push did. ``unchanged`` means the ref already named this exact tree."""

    snapshot_id: str
    ref: str
    url: str
    parent_id: str | None
    unchanged: bool
    dry_run: bool
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_scanned: int = 0
    files_read: int = 0
    bytes_read: int = 0
    chunks: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_new: int = 0
    bytes_uploaded: int = 0
    bytes_packs: int = 0  # of bytes_uploaded: packs; the rest is metadata (manifest, log, ref)
    bytes_metadata: int = 0
    packs_uploaded: int = 0
    # Compare-and-swap rounds the ref update took (more than 1: other pushes moved the ref
    # while this one ran, and it was rebuilt on their snapshot: ``parent_id`` names it).
    ref_attempts: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PullResult:
    """What a pull did."""

    snapshot_id: str
    url: str
    directory: str
    files: int = 0
    bytes: int = 0
    unchanged: int = 0
    files_written: int = 0
    bytes_written: int = 0
    symlinks_written: int = 0
    dirs_created: int = 0
    modes_changed: int = 0
    deleted: int = 0
    chunks_needed: int = 0
    chunks_cached: int = 0
    chunks_from_target: int = 0
    chunks_downloaded: int = 0
    bytes_downloaded: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
