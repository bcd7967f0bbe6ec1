"""Every key in a store, built and parsed here and nowhere else (docs/format.md §1).

``Layout`` builds keys from ids; :func:`parse_key` is its inverse and the only code that reads
meaning into a key, so a change of layout is a change of this one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Ref names are validated by the pure core (git-like, hierarchical); re-exported for callers.
from snapsync.core.names import check_ref_name as check_ref_name

# Kinds of objects, as Layout.parse names them.
CONFIG = "config"
PACK = "pack"
MANIFEST = "manifest"
REF = "ref"
LOG = "log"
SUPERSEDED = "superseded"
TOMBSTONE = "tombstone"


@dataclass(frozen=True, slots=True)
class Key:
    """What a key means: its kind and the ids it carries (``None`` where the kind has none).

    ``id`` is the hex id of a pack, manifest (snapshot) or superseded marker's pack, and the
    snapshot id of a log entry; ``ref`` names the ref of a ref or log entry.
    """

    kind: str
    id: str | None = None
    ref: str | None = None
    time_ns: int | None = None

    @property
    def raw_id(self) -> bytes:
        """``id`` as 16 raw bytes (packs and markers)."""
        assert self.id is not None
        return bytes.fromhex(self.id)


_H32 = "[0-9a-f]{32}"
_PATTERNS = [
    (PACK, re.compile(rf"^packs/[0-9a-f]{{2}}/(?P<id>{_H32})\.pack$")),
    (MANIFEST, re.compile(rf"^manifests/[0-9a-f]{{2}}/(?P<id>{_H32})\.mf$")),
    (SUPERSEDED, re.compile(rf"^superseded/[0-9a-f]{{2}}/(?P<id>{_H32})\.json$")),
    # Ref names may be hierarchical (feature/x, docs/format.md §1): a log entry's ref is
    # everything up to its last '/', a ref's name everything between refs/ and .json. A name
    # component never ends in .json, so neither reading is ambiguous.
    (TOMBSTONE, re.compile(r"^tombstones/(?P<ns>\d{1,20})-(?P<id>[0-9a-f]{16})\.json$")),
    (LOG, re.compile(rf"^logs/(?P<ref>.+)/(?P<ns>\d{{1,20}})-(?P<id>{_H32})\.json$")),
    (REF, re.compile(r"^refs/(?P<ref>.+)\.json$")),
]


class Layout:
    """Builds every key, relative to the store's root."""

    CONFIG = "snapsync.json"
    PACKS = "packs/"
    MANIFESTS = "manifests/"
    REFS = "refs/"
    LOGS = "logs/"
    SUPERSEDED = "superseded/"
    TOMBSTONES = "tombstones/"

    @staticmethod
    def pack(pack_id: bytes) -> str:
        h = pack_id.hex()
        return f"packs/{h[:2]}/{h}.pack"

    @staticmethod
    def pack_prefix(pack_id: bytes) -> str:
        """The folder a pack lives in (journal resumes list just these)."""
        return f"packs/{pack_id.hex()[:2]}/"

    @staticmethod
    def manifest(snapshot_id: str) -> str:
        return f"manifests/{snapshot_id[:2]}/{snapshot_id}.mf"

    @staticmethod
    def manifest_prefix(snapshot_prefix: str) -> str:
        """The folder holding the manifests whose ids start with ``snapshot_prefix``."""
        return f"manifests/{snapshot_prefix[:2]}/"

    @staticmethod
    def ref(name: str) -> str:
        return f"refs/{name}.json"

    @staticmethod
    def log(name: str, time_ns: int, snapshot_id: str) -> str:
        return f"logs/{name}/{time_ns:020d}-{snapshot_id}.json"

    @staticmethod
    def log_prefix(name: str) -> str:
        return f"logs/{name}/"

    @staticmethod
    def superseded(pack_id: bytes) -> str:
        """Marker written by gc when it repacked a pack's live chunks elsewhere (§8)."""
        h = pack_id.hex()
        return f"superseded/{h[:2]}/{h}.json"

    @staticmethod
    def tombstone(time_ns: int, token: str) -> str:
        """What one gc run is about to delete (§8); ``token`` is 16 random hex digits."""
        return f"tombstones/{time_ns:020d}-{token}.json"

    @staticmethod
    def parse(key: str) -> Key | None:
        """What ``key`` is, or ``None`` for a key snapsync did not write (a stray object)."""
        if key == Layout.CONFIG:
            return Key(CONFIG)
        for kind, pat in _PATTERNS:
            m = pat.match(key)
            if m:
                d = m.groupdict()
                ns = d.get("ns")
                return Key(kind, d.get("id"), d.get("ref"), int(ns) if ns else None)
        return None
