"""The repository layer: content-addressed objects over a store (docs/design.md, layer 3)."""

from snapsync.repository.config import DEFAULT_PACK_SIZE, SnapshotInfo, StoreConfig
from snapsync.repository.repo import Repository

__all__ = ["DEFAULT_PACK_SIZE", "Repository", "SnapshotInfo", "StoreConfig"]
