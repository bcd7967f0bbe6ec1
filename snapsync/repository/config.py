"""What the store's small JSON objects say: the config (``snapsync.json``) and a ref or log entry.

Pure parsing and rendering; the repository reads and writes them (docs/format.md §2, §5).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from snapsync.core.chunking import ChunkerParams
from snapsync.core.codec import CODEC_NAME
from snapsync.core.hashing import HASH_NAME
from snapsync.errors import FormatError, NotAStoreError
from snapsync.version import __version__

STORE_FORMAT = "snapsync"
STORE_VERSION = 1
DEFAULT_PACK_SIZE = 16 << 20


def manifest_limit(blob: bytes) -> int:
    """How far a stored manifest may inflate: a small hostile object cannot ask for GiBs.

    Real manifests compress a few times (chunk ids are random bytes); 256x is far beyond that.
    """
    return max(64 << 20, 256 * len(blob))


@dataclass(frozen=True)
class StoreConfig:
    """The store config object: format version and every algorithm parameter."""

    version: int = STORE_VERSION
    hash: str = HASH_NAME
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    codec: str = CODEC_NAME
    pack_size: int = DEFAULT_PACK_SIZE

    def to_json(self) -> bytes:
        doc = {"format": STORE_FORMAT, "version": self.version, "hash": self.hash,
               "chunker": self.chunker.to_dict(), "codec": self.codec,
               "pack_size": self.pack_size, "created_by": f"snapsync {__version__}"}
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> StoreConfig:
        try:
            doc = json.loads(data)
        except ValueError:
            raise FormatError(f"{where}: store config is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            raise NotAStoreError(f"{where}: not a snapsync store config")
        version = doc.get("version")
        if version != STORE_VERSION:
            raise FormatError(f"{where}: store format version {version} is not supported by "
                              f"snapsync {__version__} (it reads version {STORE_VERSION}); "
                              "upgrade snapsync")
        if doc.get("hash") != HASH_NAME or doc.get("codec") != CODEC_NAME:
            raise FormatError(f"{where}: unknown hash {doc.get('hash')!r} or codec "
                              f"{doc.get('codec')!r}")
        return cls(version, doc["hash"], ChunkerParams.from_dict(doc.get("chunker") or {}),
                   doc["codec"], int(doc.get("pack_size") or DEFAULT_PACK_SIZE))


@dataclass
class SnapshotInfo:
    """What a ref (or one of its log entries) says about a snapshot."""

    snapshot: str
    ref: str
    time: str
    time_ns: int
    parent: str | None = None
    host: str = ""
    version: str = __version__
    message: str = ""
    totals: dict[str, int] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    # xxh3-128 (hex) of the stored manifest object: the snapshot id covers the tree only, and
    # a tree pushed again after gc may get another index, so cached copies are checked.
    manifest: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> SnapshotInfo:
        try:
            doc = json.loads(data)
            info = cls(**{k: doc[k] for k in doc if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError) as exc:
            raise FormatError(f"{where}: malformed ref ({exc})") from None
        if not (isinstance(info.snapshot, str) and len(info.snapshot) == 32
                and all(c in "0123456789abcdef" for c in info.snapshot)):
            raise FormatError(f"{where}: ref names an invalid snapshot id")
        return info
