"""Tamper-evident mode: manifests signed and chunks MACed with a key from ``SNAPSYNC_KEY``.

xxh3-128 ids detect accidents, not attackers: anyone who can write to the store can plant a
chunk with a colliding id, or rewrite a manifest and its ref. With a key set, push records a
keyed BLAKE2b MAC (128 bits) of every chunk's raw bytes in the manifest, and signs tree, index,
MACs and ignore rules with another keyed BLAKE2b (256 bits); both keys are derived from the
secret. Pull verifies the signature before anything is written and every chunk's MAC as it is
decoded; an unsigned or wrongly signed manifest is refused. The signature lives under the
optional ``auth`` key of the manifest's info map, outside the snapshot id (docs/format.md,
"Tamper-evident mode"), so stores stay readable by snapsync without a key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from snapsync.core.codec import Codec
from snapsync.core.manifest import (
    Entry,
    Location,
    Manifest,
    TreeColumns,
    as_tree,
    encode_json_like,
    split_ids,
)
from snapsync.core.manifest_encode import encode_index_ids, encode_tree_columns
from snapsync.errors import FormatError, IntegrityError, UsageError

ENV = "SNAPSYNC_KEY"
AUTH_VERSION = 1
AUTH_ALG = "blake2b-256/blake2b-128"
MAC_SIZE = 16
MIN_SECRET = 16


def _derive(secret: bytes, purpose: bytes) -> bytes:
    import hashlib  # here, not at import: only tamper-evident mode needs it (start-up time)

    return hashlib.blake2b(secret, digest_size=32, person=b"snapsync-kdf-v1",
                           salt=purpose.ljust(16, b"\0")[:16]).digest()


def index_order(entries: Manifest | TreeColumns | Iterable[Entry]) -> list[bytes]:
    """Chunk ids in first-use order: the order of the index section and of the MAC column."""
    return list(dict.fromkeys(split_ids(as_tree(entries).ids)))


class Keyring:
    """Keys derived from one secret; signs and verifies manifests, MACs chunks."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET:
            raise UsageError(f"{ENV} must be at least {MIN_SECRET} characters long")
        self._chunk_key = _derive(secret, b"chunk")
        self._sign_key = _derive(secret, b"manifest")
        import hashlib
        import hmac

        self._blake2b, self._compare = hashlib.blake2b, hmac.compare_digest
        # Names the key in signatures without revealing it (for "wrong key" messages).
        self.key_id = self._blake2b(b"key-id", key=_derive(secret, b"key-id"),
                                      digest_size=8).hexdigest()

    @classmethod
    def from_env(cls) -> Keyring | None:
        """The keyring for ``$SNAPSYNC_KEY``, or ``None`` when it is unset or empty."""
        secret = os.environ.get(ENV)
        return cls(secret.encode("utf-8", "surrogateescape")) if secret else None

    # ---- chunks ---------------------------------------------------------------------------
    def chunk_mac(self, data: bytes | memoryview) -> bytes:
        return self._blake2b(data, key=self._chunk_key, digest_size=MAC_SIZE).digest()

    def check_chunk(self, cid: bytes, data: bytes | memoryview, mac: bytes) -> None:
        if not self._compare(self.chunk_mac(data), mac):
            raise IntegrityError(f"chunk {cid.hex()}: keyed MAC does not match; the chunk was "
                                 "tampered with or written without this key")

    # ---- manifests ------------------------------------------------------------------------
    def _signature(self, tree: TreeColumns, locations: Mapping[bytes, Location],
                   info: Mapping[str, Any], macs: bytes) -> bytes:
        body = encode_json_like([b"snapsync-auth", AUTH_VERSION, encode_tree_columns(tree),
                                 encode_index_ids(tree.ids, locations)[0], macs,
                                 list(info.get("ignore") or []),
                                 str(info.get("ignore_source") or "")])
        return self._blake2b(body, key=self._sign_key, digest_size=32).digest()

    def sign(self, entries: TreeColumns | Iterable[Entry], locations: Mapping[bytes, Location],
             info: Mapping[str, Any], macs: Mapping[bytes, bytes]) -> dict[str, Any]:
        """The ``auth`` value for a manifest's info map. ``macs`` must cover every chunk."""
        tree = as_tree(entries)
        order = index_order(tree)
        missing = [c for c in order if c not in macs]
        if missing:
            raise AssertionError(f"no MAC for chunk {missing[0].hex()}")
        col = b"".join(macs[c] for c in order)
        return {"v": AUTH_VERSION, "alg": AUTH_ALG, "key_id": self.key_id, "macs": col,
                "sig": self._signature(tree, locations, info, col)}

    def verify_manifest(self, m: Manifest) -> dict[bytes, bytes]:
        """Check ``m``'s signature; return its chunk MACs. Raises ``IntegrityError``."""
        auth = m.info.get("auth")
        where = f"snapshot {m.id}"
        if not isinstance(auth, dict):
            raise IntegrityError(f"{where} is not signed, and {ENV} is set: refusing it "
                                 "(push it again with the key)")
        if auth.get("v") != AUTH_VERSION or auth.get("alg") != AUTH_ALG:
            raise IntegrityError(f"{where}: unknown signature scheme {auth.get('alg')!r}")
        col, sig = auth.get("macs"), auth.get("sig")
        order = index_order(m.tree)
        if not (isinstance(col, bytes) and isinstance(sig, bytes)
                and len(col) == MAC_SIZE * len(order)):
            raise IntegrityError(f"{where}: malformed signature")
        good = self._signature(m.tree, m.index, m.info, col)
        if not self._compare(good, sig):
            other = auth.get("key_id")
            hint = f" (signed with key {other}, this key is {self.key_id})" \
                if other != self.key_id else ""
            raise IntegrityError(f"{where}: signature does not verify; the manifest was "
                                 f"tampered with or signed with another key{hint}")
        return {c: col[i * MAC_SIZE:(i + 1) * MAC_SIZE] for i, c in enumerate(order)}

    def signed(self, m: Manifest | None) -> bool:
        """Whether ``m`` carries a valid signature by this key."""
        if m is None:
            return False
        try:
            self.verify_manifest(m)
        except IntegrityError:
            return False
        return True

    def macs_of(self, manifests: Iterable[Manifest],
                warn: Callable[[str], None] | None = None) -> dict[bytes, bytes]:
        """Chunk MACs from those manifests whose signature verifies (others are skipped)."""
        out: dict[bytes, bytes] = {}
        for m in manifests:
            try:
                out.update(self.verify_manifest(m))
            except IntegrityError as exc:
                if warn and "not signed" not in str(exc):
                    warn(str(exc))
        return out

    def wrap_codec(self, codec: Codec, macs: Mapping[bytes, bytes]) -> Codec:
        """A codec whose ``decode`` also checks each chunk's MAC."""
        return _MacCodec(codec.level, self, macs)


class _MacCodec(Codec):
    def __init__(self, level: int, keyring: Keyring, macs: Mapping[bytes, bytes]) -> None:
        super().__init__(level)
        self._keyring = keyring
        self._macs = macs

    def decode(self, blob: bytes | memoryview, raw_size: int, expect_id: bytes,
               copy: bool = True) -> bytes | memoryview:
        data = super().decode(blob, raw_size, expect_id, copy)
        mac = self._macs.get(expect_id)
        if mac is None:
            raise FormatError(f"chunk {expect_id.hex()} has no MAC in the signed manifest")
        self._keyring.check_chunk(expect_id, data, mac)
        return data
