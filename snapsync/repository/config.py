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
MIN_PACK_SIZE, MAX_PACK_SIZE = 1 << 16, 1 << 32


def manifest_limit(blob: bytes) -> int:
    """How far a stored manifest may inflate: a small hostile object cannot ask for GiBs.

    Real manifests compress a few times (chunk ids are random bytes), ~70x at most for a tree
    of empty files with regular names; 256x is far beyond that. The floor is small so that a
    few-KB object cannot claim a tree of millions of entries (issue 9).
    """
    return max(4 << 20, 256 * len(blob))


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
        doc = _json_object(data, where, "store config", NotAStoreError)
        if doc.get("format") != STORE_FORMAT:
            raise NotAStoreError(f"{where}: not a snapsync store config")
        version = doc.get("version")
        if type(version) is not int:
            raise FormatError(f"{where}: store format version must be an integer, got "
                              f"{version!r}")
        if version != STORE_VERSION:
            raise FormatError(f"{where}: store format version {version} is not supported by "
                              f"snapsync {__version__} (it reads version {STORE_VERSION}); "
                              "upgrade snapsync")
        if doc.get("hash") != HASH_NAME or doc.get("codec") != CODEC_NAME:
            raise FormatError(f"{where}: unknown hash {doc.get('hash')!r} or codec "
                              f"{doc.get('codec')!r}")
        pack_size = doc.get("pack_size", DEFAULT_PACK_SIZE)
        if type(pack_size) is not int or not MIN_PACK_SIZE <= pack_size <= MAX_PACK_SIZE:
            raise FormatError(f"{where}: pack_size must be an integer from {MIN_PACK_SIZE} to "
                              f"{MAX_PACK_SIZE}, got {pack_size!r}")
        return cls(version, doc["hash"], ChunkerParams.from_dict(doc.get("chunker", {}), where),
                   doc["codec"], pack_size)


def _json_object(data: bytes, where: str, what: str,
                 not_object: type[Exception] = FormatError) -> dict[str, Any]:
    """Parse a small JSON document that must be an object; every failure names ``where``."""
    try:
        doc = json.loads(data)
    except RecursionError:  # nested thousands deep: Python's parser gives up
        raise FormatError(f"{where}: {what} is nested too deeply to be valid") from None
    except ValueError as exc:  # includes invalid UTF-8
        raise FormatError(f"{where}: {what} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise not_object(f"{where}: {what} must be a JSON object, got a JSON "
                         f"{_JSON_TYPES.get(type(doc), type(doc).__name__)}")
    return doc


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


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
        doc = _json_object(data, where, "ref")
        missing = [k for k in ("snapshot", "ref", "time", "time_ns") if k not in doc]
        if missing:
            raise FormatError(f"{where}: malformed ref: missing {', '.join(missing)}")
        for key, types in _REF_TYPES.items():
            if key in doc and not (isinstance(doc[key], types) and
                                   not isinstance(doc[key], bool)):
                raise FormatError(f"{where}: malformed ref: {key} has the wrong type "
                                  f"({_JSON_TYPES.get(type(doc[key]), 'value')})")
        totals, git = doc.get("totals", {}), doc.get("git", {})
        if not all(type(v) is int for v in totals.values()) or not all(
                isinstance(git.get(k, ""), str) for k in ("commit", "branch", "path")):
            raise FormatError(f"{where}: malformed ref: totals or git hold values of the "
                              "wrong type")
        if doc["time_ns"] < 0 or doc["time_ns"] >= 10 ** 20:
            raise FormatError(f"{where}: malformed ref: time_ns {doc['time_ns']} is out of range")
        info = cls(**{k: doc[k] for k in doc if k in cls.__dataclass_fields__})
        if not (isinstance(info.snapshot, str) and len(info.snapshot) == 32
                and all(c in "0123456789abcdef" for c in info.snapshot)):
            raise FormatError(f"{where}: ref names an invalid snapshot id")
        return info


# The JSON types of a ref's keys (docs/format.md §5); unknown keys are ignored.
_REF_TYPES: dict[str, type | tuple[type, ...]] = {
    "snapshot": str, "ref": str, "time": str, "time_ns": int, "parent": (str, type(None)),
    "host": str, "version": str, "message": str, "totals": dict, "git": dict, "manifest": str}


# A tombstone is void this long after gc wrote it (docs/format.md §8): a gc that crashed
# before removing its tombstones blocks nobody for longer, and gc itself stops deleting after
# half of it. Far above any one gc's delete phase, far below the grace period.
TOMBSTONE_TTL = 3600.0
# Ids per tombstone object: 100,000 of 32 hex digits stay ~3.5 MB, under the small-object bound.
TOMBSTONE_IDS_MAX = 100_000


@dataclass
class Tombstone:
    """What one gc run is about to delete: manifests (snapshot ids) and packs (hex ids)."""

    time_ns: int
    host: str = ""
    manifests: list[str] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)
    done: bool = False  # gc finished its deletes; kept until void so late pushes can tell

    def to_json(self) -> bytes:
        return json.dumps({"format": "snapsync-tombstone", **asdict(self)},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Tombstone:
        doc = _json_object(data, where, "tombstone")
        ids = [doc.get("manifests"), doc.get("packs")]
        if (doc.get("format") != "snapsync-tombstone" or type(doc.get("time_ns")) is not int
                or not all(isinstance(v, list) and all(isinstance(i, str) for i in v)
                           for v in ids)
                or sum(len(v) for v in ids) > TOMBSTONE_IDS_MAX):  # type: ignore[arg-type]
            raise FormatError(f"{where}: malformed tombstone")
        return cls(doc["time_ns"], str(doc.get("host", "")), doc["manifests"], doc["packs"],
                   doc.get("done") is True)

    def void(self, now: float) -> bool:
        """Older than :data:`TOMBSTONE_TTL`: its gc is long gone."""
        return now - self.time_ns / 1e9 > TOMBSTONE_TTL
