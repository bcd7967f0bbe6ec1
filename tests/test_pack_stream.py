"""Packs streamed into a local store (no pack buffer) and push's reused read buffers."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from treeutil import describe, make_project

import snapsync
from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.pack import PackBuilder, new_buffer, parse_pack
from snapsync.engine.check import check
from snapsync.errors import StoreError
from snapsync.repository import StoreConfig
from snapsync.store import local_write


def _blobs(n: int) -> list[tuple[bytes, bytes, int]]:
    rng = random.Random(2)
    codec = Codec(3)
    out = []
    for i in range(n):
        raw = rng.randbytes(rng.randint(1, 300_000)) if i % 3 else b"x" * rng.randint(1, 9000)
        out.append((chunk_id(raw), codec.encode(raw), len(raw)))
    return out


@pytest.mark.parametrize("stage", [4096, 1 << 20])
def test_a_streamed_pack_is_the_buffered_pack(stage):
    """Same bytes, id and locations, whatever the staging size (blobs larger than it pass
    straight through)."""
    blobs = _blobs(40)
    buffered = PackBuilder(new_buffer(1 << 20))
    sent: list[bytes] = []
    streamed = PackBuilder(new_buffer(stage), sink=lambda v: sent.append(bytes(v)))
    for cid, blob, raw in blobs:
        buffered.add(cid, blob[1:], raw, blob[:1])
        streamed.add(cid, blob[1:], raw, blob[:1])
    pid, data, locs = buffered.seal()
    spid, size = streamed.seal_streamed()
    assert (spid, size) == (pid, len(data))
    assert b"".join(sent) == bytes(data)
    assert streamed.locations(spid) == locs == parse_pack(bytes(data))


def _tmp_files(store: Path) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(store) for f in fs if f.endswith(".tmp")]


def test_push_streams_many_packs_into_a_local_store(tmp_path):
    src = make_project(tmp_path / "src", files=60)
    rng = random.Random(4)
    (src / "big.bin").write_bytes(rng.randbytes(3 << 20))
    store = tmp_path / "store"
    r = snapsync.push(src, store.as_uri(), pack_size=1 << 16,
                      config=StoreConfig(pack_size=1 << 16), cache_dir=tmp_path / "c")
    assert r.packs_uploaded > 3 and r.bytes_packs == sum(
        p.stat().st_size for p in (store / "packs").rglob("*.pack"))
    assert _tmp_files(store) == []
    assert check(store.as_uri(), read_data=True).ok
    snapsync.pull(store.as_uri(), tmp_path / "dst", cache_dir=tmp_path / "c2")
    assert describe(tmp_path / "dst") == describe(src)


def test_a_failed_pack_write_leaves_no_pack_no_temp_and_no_ref(tmp_path, monkeypatch):
    src = make_project(tmp_path / "src", files=60)
    store = tmp_path / "store"
    real = local_write.LocalUpload.write
    calls = {"n": 0}

    def full_disk(self, data):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(local_write.LocalUpload, "write", full_disk)
    with pytest.raises(StoreError, match="No space left"):
        snapsync.push(src, store.as_uri(), pack_size=1 << 16,
                      config=StoreConfig(pack_size=1 << 16), cache_dir=tmp_path / "c")
    assert _tmp_files(store) == []
    assert not (store / "refs").exists() or not any((store / "refs").iterdir())
    monkeypatch.undo()  # the next push resumes and publishes
    r = snapsync.push(src, store.as_uri(), cache_dir=tmp_path / "c")
    assert check(store.as_uri(), read_data=True).ok and r.snapshot_id


def test_the_parked_stat_cache_rows_never_stay_behind(tmp_path, monkeypatch):
    """push parks the stat cache's rows in a temporary file while it builds the manifest:
    written into the cache on success, removed when publishing fails."""
    import snapsync.engine.push as push_mod

    src = make_project(tmp_path / "src", files=20)
    cache = tmp_path / "c"
    store = (tmp_path / "store").as_uri()

    def refused(*a, **k):  # type: ignore[no-untyped-def]
        raise StoreError("refused by the test")

    monkeypatch.setattr(push_mod, "publish_snapshot", refused)
    with pytest.raises(StoreError, match="refused"):
        snapsync.push(src, store, cache_dir=cache)
    assert _tmp_files(cache) == [] and not list((cache / "stat").glob("*.msgpack"))
    monkeypatch.undo()
    snapsync.push(src, store, cache_dir=cache)
    assert _tmp_files(cache) == [] and len(list((cache / "stat").glob("*.msgpack"))) == 1
    again = snapsync.push(src, store, cache_dir=cache)
    assert again.unchanged and again.files_read == 0
