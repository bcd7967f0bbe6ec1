"""Hostile or broken stores: hand-crafted manifests and packs. Pull must refuse with a clear
error, write nothing outside the target, and leave the target as it was.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import msgpack
import pytest
import zstandard
from treeutil import describe, make_project

import snapsync
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import DIR, FILE, MANIFEST_MAGIC, SYMLINK, TREE_MAGIC, Entry, Location
from snapsync.core.manifest_encode import encode_index
from snapsync.core.pack import PackBuilder
from snapsync.core.plan import check_paths
from snapsync.errors import FormatError, IntegrityError, SnapsyncError, StoreError, UnsafePathError
from snapsync.store import Layout, open_store

_KIND = {FILE: ord("f"), SYMLINK: ord("l"), DIR: ord("d")}


class Hostile:
    """A real store (one honest push) into which a test plants crafted objects."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "store"
        self.url = self.root.as_uri()
        snapsync.push(make_project(tmp / "honest", files=3), self.url)
        self.store = open_store(self.url)

    def pack(self, chunks: list[tuple[bytes, bytes, int]]) -> dict[bytes, Location]:
        """Upload a pack of ``(id, stored blob, raw size)``; return its locations."""
        b = PackBuilder()
        for cid, blob, raw in chunks:
            b.add(cid, blob, raw)
        pid, data, locs = b.finish()
        self.store.put(Layout.pack(pid), data)
        return locs

    def chunk(self, data: bytes) -> tuple[bytes, Location]:
        cid = chunk_id(data)
        return cid, self.pack([(cid, b"\x00" + data, len(data))])[cid]

    def manifest(self, entries: list[Entry], locations: dict[bytes, Location],
                 tree: bytes | None = None, sid: str | None = None,
                 blob: bytes | None = None) -> str:
        """Plant a manifest (raw columns, no validation) and point ref ``evil`` at it."""
        if tree is None:
            tree = msgpack.packb([
                TREE_MAGIC, 1, [e.path for e in entries], bytes(_KIND[e.kind] for e in entries),
                [e.mode for e in entries], [e.size for e in entries],
                [len(e.chunks) for e in entries], b"".join(c for e in entries for c in e.chunks),
                [e.target for e in entries]], use_bin_type=True)
        index = encode_index(entries, locations) if locations is not None else b""
        raw = msgpack.packb([MANIFEST_MAGIC, 1, tree, index, {}], use_bin_type=True)
        sid = sid or chunk_id(tree).hex()
        self.store.put(Layout.manifest(sid), blob if blob is not None
                       else zstandard.ZstdCompressor().compress(raw))
        info = {"snapshot": sid, "ref": "evil", "time": "2026-01-01T00:00:00Z",
                "time_ns": 1, "parent": None}
        self.store.put(Layout.ref("evil"), json.dumps(info).encode())
        return sid


@pytest.fixture
def env(tmp_path: Path) -> tuple[Hostile, Path, Path]:
    """(store, sandbox, target): the target lives in the sandbox, next to a bystander."""
    h = Hostile(tmp_path)
    sandbox = tmp_path / "sandbox"
    target = sandbox / "target"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("mine\n")
    (sandbox / "outside").mkdir()
    (sandbox / "outside" / "bystander.txt").write_text("do not touch\n")
    return h, sandbox, target


def _refused(h: Hostile, sandbox: Path, target: Path, err: type[Exception],
             words: str) -> SnapsyncError:
    before = describe(sandbox)
    with pytest.raises(err) as ei:
        snapsync.pull(h.url, target, ref="evil", use_cache=False)
    assert words in str(ei.value), str(ei.value)
    assert describe(sandbox) == before  # nothing written, inside or outside the target
    return ei.value  # type: ignore[return-value]


def _file(h: Hostile, path: bytes, data: bytes = b"evil\n") -> tuple[Entry, dict]:
    cid, loc = h.chunk(data)
    return Entry(path, FILE, 0o644, len(data), (cid,)), {cid: loc}


EVIL = f"/tmp/snapsync-evil-{uuid.uuid4().hex}"


@pytest.mark.parametrize("path,words", [
    (EVIL.encode(), "absolute"),
    (b"../evil.txt", "'..'"),
    (b"a/../../evil.txt", "'..'"),
    (b"a//b", "empty"),
    (b"./a", "'.'"),
    (b"a\x00b", "NUL"),
])
def test_unsafe_paths_refused(env, path, words):
    h, sandbox, target = env
    e, locs = _file(h, path)
    h.manifest([e], locs)
    _refused(h, sandbox, target, UnsafePathError, words)
    assert not os.path.exists(EVIL)


def test_duplicate_and_unsorted_paths_refused(env):
    h, sandbox, target = env
    e, locs = _file(h, b"same.txt")
    h.manifest([e, e], locs)
    _refused(h, sandbox, target, FormatError, "duplicated")
    b, locs2 = _file(h, b"b.txt")
    h.manifest([e, b], {**locs, **locs2})
    _refused(h, sandbox, target, FormatError, "unsorted")


def test_path_through_symlink_of_same_manifest_refused(env):
    h, sandbox, target = env
    link = Entry(b"link", SYMLINK, 0o777, 0, (), os.fsencode(sandbox / "outside"))
    e, locs = _file(h, b"link/bystander.txt", b"overwritten\n")
    h.manifest([link, e], locs)
    _refused(h, sandbox, target, UnsafePathError, "symlink")
    assert (sandbox / "outside" / "bystander.txt").read_text() == "do not touch\n"


def test_path_through_file_of_same_manifest_refused(env):
    h, sandbox, target = env
    f, locs = _file(h, b"f")
    g, locs2 = _file(h, b"f/g")
    h.manifest([f, g], {**locs, **locs2})
    _refused(h, sandbox, target, UnsafePathError, "a file")


def test_symlink_already_in_target_is_replaced_not_followed(env):
    h, sandbox, target = env
    os.symlink(sandbox / "outside", target / "sub")
    e, locs = _file(h, b"sub/bystander.txt", b"overwritten\n")
    h.manifest([e], locs)
    snapsync.pull(h.url, target, ref="evil", use_cache=False)
    assert (sandbox / "outside" / "bystander.txt").read_text() == "do not touch\n"
    assert not (target / "sub").is_symlink()
    assert (target / "sub" / "bystander.txt").read_text() == "overwritten\n"


def test_case_only_and_windows_names_refused_where_they_matter():
    a = Entry(b"Readme.md", FILE)
    b = Entry(b"README.md", FILE)
    with pytest.raises(UnsafePathError, match="differ only in case"):
        check_paths([b, a], case_insensitive=True)
    check_paths([b, a], case_insensitive=False)  # fine where case matters
    for p in (b"a\\b", b"c:evil"):
        with pytest.raises(UnsafePathError, match="Windows"):
            check_paths([Entry(p, FILE)], windows=True)


def test_chunk_not_matching_its_id_refused(env):
    h, sandbox, target = env
    cid = chunk_id(b"what the manifest promises\n")
    locs = h.pack([(cid, b"\x00" + b"something else entirely!!!\n", 27)])
    h.manifest([Entry(b"x.txt", FILE, 0o644, 27, (cid,))], locs)
    _refused(h, sandbox, target, IntegrityError, "does not match its id")


def _one_file_store(h: Hostile) -> tuple[Path, bytes]:
    data = os.urandom(5000)
    e, locs = _file(h, b"x.bin", data)
    h.manifest([e], locs)
    loc = next(iter(locs.values()))
    return h.root / Layout.pack(loc.pack), data


@pytest.mark.parametrize("damage,err,words", [
    (lambda b: b[:len(b) // 3], StoreError, "truncated"),
    (lambda b: b[:3000] + bytes([b[3000] ^ 0xFF]) + b[3001:], IntegrityError, "does not match"),
    (lambda b: b"\x07" + b[1:], IntegrityError, "unknown codec"),
])
def test_truncated_or_garbled_pack_refused(env, damage, err, words):
    h, sandbox, target = env
    pack, _ = _one_file_store(h)
    pack.write_bytes(damage(pack.read_bytes()))
    _refused(h, sandbox, target, err, words)


@pytest.mark.parametrize("damage,words", [
    (lambda b: b[:len(b) // 2], "corrupt"),
    (lambda b: os.urandom(len(b)), "corrupt"),
    (lambda b: zstandard.ZstdCompressor().compress(b"\x93\x01\x02\x03"), "not a snapsync"),
    (lambda b: zstandard.ZstdCompressor().compress(os.urandom(200)), ""),
])
def test_truncated_or_garbled_manifest_refused(env, damage, words):
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt")
    sid = h.manifest([e], locs)
    path = h.root / Layout.manifest(sid)
    path.write_bytes(damage(path.read_bytes()))
    _refused(h, sandbox, target, FormatError, words)


def test_manifest_under_another_id_refused(env):
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt")
    real = h.manifest([e], locs)
    blob = (h.root / Layout.manifest(real)).read_bytes()
    h.manifest([e], locs, sid="0" * 32, blob=blob)
    _refused(h, sandbox, target, IntegrityError, "not to its id")


@pytest.mark.parametrize("mutate,words", [
    (lambda e, loc: (e.__class__(e.path, FILE, 0o644, e.size + 1, e.chunks), loc), "add up"),
    (lambda e, loc: (e.__class__(e.path, FILE, 0o644, 1 << 60, e.chunks), loc), "invalid value"),
    (lambda e, loc: (e, Location(loc.pack, loc.offset, loc.length, 1 << 40)), "invalid value"),
    (lambda e, loc: (e, Location(loc.pack, 1 << 45, loc.length, loc.raw_size)),
     "invalid value"),
    (lambda e, loc: (e.__class__(e.path, DIR, 0o755, e.size, e.chunks), loc), "non-file"),
])
def test_sizes_that_do_not_add_up_or_are_absurd_refused(env, mutate, words):
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt", b"twelve bytes")
    (cid, loc), = locs.items()
    e2, loc2 = mutate(e, loc)
    h.manifest([e2], {cid: loc2})
    _refused(h, sandbox, target, FormatError, words)


def test_offset_past_the_pack_end_refused(env):
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt", b"twelve bytes")
    (cid, loc), = locs.items()
    h.manifest([e], {cid: Location(loc.pack, loc.offset + 10_000, loc.length, loc.raw_size)})
    _refused(h, sandbox, target, StoreError, "truncated")


def test_offset_past_the_pack_end_is_corrupt_data_at_once(env):
    # Exit 7 (corrupt data), not 4 (store trouble); a local file is not read five times.
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt", b"twelve bytes")
    (cid, loc), = locs.items()
    h.manifest([e], {cid: Location(loc.pack, loc.offset + 10_000, loc.length, loc.raw_size)})
    store = open_store(h.url)
    err = _refused_on(store, sandbox, target)
    assert isinstance(err, StoreError) and isinstance(err, FormatError)
    assert err.exit_code == 7 and "truncated" in str(err) and Layout.pack(loc.pack) in str(err)
    assert store.stats.counts.get("RETRY", 0) == 0


def _refused_on(store, sandbox: Path, target: Path) -> SnapsyncError:
    before = describe(sandbox)
    with pytest.raises(SnapsyncError) as ei:
        snapsync.pull(store, target, ref="evil", use_cache=False)
    assert describe(sandbox) == before
    return ei.value


def _plant(path: Path, how: str) -> None:
    path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "zero":
        path.symlink_to("/dev/zero")
    else:  # a symlink to an honest-looking regular file outside the store
        real = path.parent / "elsewhere"
        real.write_bytes(b"{}")
        path.symlink_to(real)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("what", ["ref", "manifest", "config"])
@pytest.mark.parametrize("how", ["fifo", "zero", "link"])
def test_non_regular_objects_in_a_local_store_refused(env, what, how):
    # A FIFO used to hang pull forever, /dev/zero to read until MemoryError.
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt")
    sid = h.manifest([e], locs)
    key = {"ref": Layout.ref("evil"), "manifest": Layout.manifest(sid),
           "config": Layout.CONFIG}[what]
    _plant(h.root / key, how)
    err = _refused(h, sandbox, target, FormatError, key)
    assert err.exit_code == 7 and "not a stored object" in str(err)


def test_oversized_ref_in_a_local_store_refused(env):
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt")
    h.manifest([e], locs)
    with open(h.root / Layout.ref("evil"), "ab") as f:
        f.truncate(17 << 20)  # sparse: 17 MiB of NULs after the JSON
    err = _refused(h, sandbox, target, FormatError, "more than the")
    assert err.exit_code == 7 and Layout.ref("evil") in str(err)


@pytest.mark.parametrize("path,words", [
    (b"a.txt\n" + b"n" * 300, "name longer"),  # one component over NAME_MAX (255)
    (b"/".join([b"d" * 100] * 45) + b"/f.txt", "too long"),  # 4.5 KB: over PATH_MAX
])
def test_paths_this_file_system_refuses_are_refused_before_staging(env, path, words):
    # They used to fail mid-commit (exit 3), leaving earlier entries or ~460 folders behind.
    h, sandbox, target = env
    early, locs = _file(h, b"a.txt", b"early\n")
    e, more = _file(h, path)
    h.manifest(sorted([early, e], key=lambda x: x.path), {**locs, **more})
    err = _refused(h, sandbox, target, UnsafePathError, words)
    assert err.exit_code == 7


def test_decompression_bomb_chunk_refused_without_allocating(env):
    h, sandbox, target = env
    bomb = b"\x01" + zstandard.ZstdCompressor().compress(b"\0" * (200 << 20))
    cid = chunk_id(b"\0" * 100)
    locs = h.pack([(cid, bomb, 100)])  # claims 100 bytes, inflates to 200 MiB
    h.manifest([Entry(b"x.bin", FILE, 0o644, 100, (cid,))], locs)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(h, sandbox, target, IntegrityError, cid.hex())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100 << 10  # KiB


def test_hostile_ref_refused(env):
    h, sandbox, target = env
    for doc in ({"snapshot": "../../etc/passwd"}, {"snapshot": 5}, "nonsense"):
        h.store.put(Layout.ref("evil"), json.dumps(doc).encode())
        _refused(h, sandbox, target, FormatError, "ref")


def test_check_flags_hostile_manifest(env):
    from snapsync.engine.check import check

    h, _sandbox, _target = env
    e, locs = _file(h, b"../escape")
    h.manifest([e], locs)
    rep = check(h.url)
    assert not rep.ok and any("'..'" in p for p in rep.problems)




def test_manifest_decompression_bomb_refused_without_allocating(env):
    """A 10 KB manifest object that inflates to 300 MiB: refused before it is inflated."""
    h, sandbox, target = env
    c = zstandard.ZstdCompressor().compressobj()  # streamed: no content size in the header
    bomb = b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(300)) + c.flush()
    assert len(bomb) < 20_000
    h.manifest([], {}, tree=b"whatever", blob=bomb)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(h, sandbox, target, IntegrityError, "manifest")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100 << 10  # KiB
