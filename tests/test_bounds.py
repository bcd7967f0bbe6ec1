"""A store is untrusted input: modes, decompression bombs and claimed sizes are bounded by what
the format allows, and refused (exit 7) before memory is spent on them."""

from __future__ import annotations

import gc
import os
import stat
import tracemalloc

import msgpack
import pytest
import zstandard
from boundutil import rle_frame, run_cli_measured
from test_hostile import Hostile, _file, _refused, env  # noqa: F401  (env is a fixture)
from treeutil import describe

import snapsync
from snapsync.core.codec import Codec
from snapsync.core.hashing import chunk_id
from snapsync.core.manifest import FILE, MANIFEST_MAGIC, TREE_MAGIC, Entry
from snapsync.core.manifest_decode import decode_manifest, decode_tree
from snapsync.core.manifest_encode import encode_manifest
from snapsync.core.pack import parse_trailer
from snapsync.errors import FormatError, IntegrityError
from snapsync.local.listing import normal_mode
from snapsync.repository.config import manifest_limit

GIB = 1 << 30


def _peak_mib(fn) -> tuple[float, BaseException | None]:
    """Run ``fn`` under tracemalloc; return (peak MiB allocated, the exception it raised)."""
    gc.collect()
    tracemalloc.start()
    err = None
    try:
        fn()
    except BaseException as exc:
        err = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / (1 << 20), err


# ------------------------------------------------------------------ modes (format.md §4)


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1755, 0o7777, 0o666, 0o775, 0o640, 0])
def test_modes_outside_the_format_refused(env, mode):  # noqa: F811
    h, sandbox, target = env
    e, locs = _file(h, b"evil.sh")
    h.manifest([Entry(e.path, FILE, mode, e.size, e.chunks)], locs)
    err = _refused(h, sandbox, target, FormatError, "does not allow")
    assert f"{mode:#o}" in str(err) and "evil.sh" in str(err) and err.exit_code == 7


def test_setuid_manifest_exits_7_on_the_cli(env, capsys):  # noqa: F811
    from snapsync.cli import main

    h, sandbox, target = env
    e, locs = _file(h, b"evil.sh")
    h.manifest([Entry(e.path, FILE, 0o4755, e.size, e.chunks)], locs)
    before = describe(sandbox)
    assert main(["pull", h.url, str(target), "--ref", "evil", "--no-cache"]) == 7
    assert "0o4755" in capsys.readouterr().err
    assert describe(sandbox) == before


def test_owner_only_files_stay_private(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, mode in (("key.pem", 0o600), ("run-private", 0o700), ("shared.txt", 0o640),
                       ("tool", 0o750), ("ro-secret", 0o400)):
        (src / name).write_text(name)
        os.chmod(src / name, mode)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    dst = tmp_path / "dst"
    snapsync.pull(url, dst)

    def mode(p):
        return stat.S_IMODE(os.lstat(p).st_mode)

    assert mode(dst / "key.pem") == 0o600
    assert mode(dst / "run-private") == 0o700
    assert mode(dst / "ro-secret") == 0o600
    assert mode(dst / "shared.txt") == 0o644  # group-readable is not owner-only
    assert mode(dst / "tool") == 0o755


def test_normal_mode():
    assert normal_mode(0o100644) == 0o644 and normal_mode(0o100664) == 0o644
    assert normal_mode(0o100755) == 0o755 and normal_mode(0o100711) == 0o755
    assert normal_mode(0o100600) == 0o600 and normal_mode(0o100400) == 0o600
    assert normal_mode(0o100700) == 0o700 and normal_mode(0o104700) == 0o700


# ------------------------------------------------------------------ decompression bombs


def test_chunk_declaring_more_than_its_raw_size_is_refused_before_allocating():
    data = b"x" * 1000
    bomb = b"\x01" + rle_frame(int(1.25 * GIB), int(1.25 * GIB))
    assert len(bomb) < 50_000
    peak, err = _peak_mib(lambda: Codec().decode(bomb, len(data), chunk_id(data)))
    assert isinstance(err, IntegrityError) and "declares" in str(err)
    assert peak < 16


def test_chunk_without_declared_size_is_bounded_by_its_raw_size():
    data = b"x" * 1000
    bomb = b"\x01" + rle_frame(int(1.25 * GIB), None)
    peak, err = _peak_mib(lambda: Codec().decode(bomb, len(data), chunk_id(data)))
    assert isinstance(err, IntegrityError) and "inflates past" in str(err)
    assert peak < 16


@pytest.mark.parametrize("declared", [True, False])
def test_manifest_bound_holds_however_the_frame_is_built(declared):
    # A valid manifest, followed by padding: it really is 1.25 GiB of valid-looking data.
    size = int(1.25 * GIB)
    bomb = rle_frame(size, size if declared else None)
    limit = manifest_limit(bomb)
    assert limit < 64 << 20
    peak, err = _peak_mib(lambda: Codec().decompress_blob(bomb, "manifest", limit))
    assert isinstance(err, IntegrityError) and ("declares" in str(err) or "past" in str(err))
    assert peak < limit / (1 << 20) + 8


def test_valid_manifest_declaring_a_huge_size_is_not_accepted(env):  # noqa: F811
    """The issue's case: valid msgpack inside a frame whose header claims 1.25 GiB."""
    h, sandbox, target = env
    e, locs = _file(h, b"x.txt")
    _sid, raw = encode_manifest([e], locs)
    # A frame with the true content, a false content size is refused by zstd itself; a
    # frame of RLE padding after the manifest claims the size for real.
    blob = zstandard.ZstdCompressor().compress(raw)
    h.manifest([e], locs, blob=blob)  # the honest one works ...
    snapsync.pull(h.url, sandbox / "ok", ref="evil", use_cache=False)
    h.manifest([e], locs, blob=rle_frame(int(1.25 * GIB), int(1.25 * GIB)))
    _refused(h, sandbox, target, IntegrityError, "declares")


def test_pull_of_a_chunk_bomb_stays_small(env, tmp_path):  # noqa: F811
    h, sandbox, target = env
    data = b"y" * 4096
    cid = chunk_id(data)
    locs = h.pack([(cid, b"\x01" + rle_frame(int(1.25 * GIB), int(1.25 * GIB)), len(data))])
    h.manifest([Entry(b"bomb.bin", FILE, 0o644, len(data), (cid,))], locs)
    before = describe(sandbox)
    code, err, rss, tb = run_cli_measured(
        ["pull", h.url, str(target), "--ref", "evil", "--no-cache"],
        env={"SNAPSYNC_CACHE_DIR": str(tmp_path / "cache")})
    assert not tb and code == 7 and "declares" in err, err
    assert rss < 150, rss  # the bomb asked for 1.25 GiB
    assert describe(sandbox) == before


# ------------------------------------------------------------------ memory before refusal


def _claiming_tree(n: int) -> bytes:
    """A tree whose path column claims ``n`` two-byte paths and holds them (cheap to zstd)."""
    head = msgpack.packb([TREE_MAGIC, 1], use_bin_type=True)[1:]  # drop the 2-element header
    out = bytearray(b"\x99") + head  # fixarray of 9
    out += b"\xdd" + n.to_bytes(4, "big")  # array32 of n paths
    out += b"\xc4\x02ab" * n
    out += msgpack.packb(b"f" * n) + b"\x90" * 5 + b"\xc4\x00" + b"\x90"
    return bytes(out)


def test_tree_claiming_10m_paths_is_refused_cheaply():
    tree = _claiming_tree(10_000_000)  # 40 MB of msgpack; ~5 KB once compressed
    peak, err = _peak_mib(lambda: decode_tree(tree, "manifest"))
    assert isinstance(err, FormatError) and "not valid msgpack" in str(err)
    assert peak < 8, peak  # the old decoder built 10M paths first (646 MB)


def test_manifest_claiming_10m_paths_refused_at_decompression(env, tmp_path):  # noqa: F811
    h, sandbox, target = env
    tree = _claiming_tree(10_000_000)
    raw = msgpack.packb([MANIFEST_MAGIC, 1, tree, b"", {}], use_bin_type=True)
    blob = zstandard.ZstdCompressor(level=19).compress(raw)
    assert len(blob) < 20_000
    h.manifest([], None, tree=tree, blob=blob)  # type: ignore[arg-type]
    del raw, tree
    before = describe(sandbox)
    code, err, rss, tb = run_cli_measured(
        ["pull", h.url, str(target), "--ref", "evil", "--no-cache"],
        env={"SNAPSYNC_CACHE_DIR": str(tmp_path / "cache")})
    assert not tb and code == 7 and "may hold" in err, err
    assert rss < 150, rss
    assert describe(sandbox) == before


def test_index_and_trailer_columns_bounded_by_their_size():
    # An index whose offsets column claims a million entries in a few bytes.
    index = msgpack.packb([[b"p" * 16], b"i" * 16, [0]], use_bin_type=True)[:-1]
    index = b"\x96" + index[1:] + b"\xdc\x00\x01\x00" + b"\x00" + b"\x91\x00" * 2
    with pytest.raises(FormatError):
        decode_manifest(msgpack.packb([MANIFEST_MAGIC, 1, msgpack.packb(
            [TREE_MAGIC, 1, [], b"", [], [], [], b"", []]), index, {}], use_bin_type=True))
    trailer = (b"\x95\x01" + msgpack.packb(b"i" * 16 * 1000, use_bin_type=True)
               + b"\xdd" + (50_000_000).to_bytes(4, "big") + b"\x00" * 100)
    peak, err = _peak_mib(lambda: parse_trailer(trailer, 1 << 30, b"p" * 16, "pack"))
    assert isinstance(err, FormatError) and peak < 8


def test_unsorted_and_empty_paths_say_which():
    def tree(paths):
        return msgpack.packb([TREE_MAGIC, 1, paths, b"f" * len(paths), [0o644] * len(paths),
                              [0] * len(paths), [0] * len(paths), b"", [b""] * len(paths)],
                             use_bin_type=True)

    with pytest.raises(FormatError, match="entry 0 has an empty path"):
        decode_tree(tree([b""]), "m")
    with pytest.raises(FormatError, match=r"entry 1: b'a' does not sort after b'b'"):
        decode_tree(tree([b"b", b"a"]), "m")
    with pytest.raises(FormatError, match="not a byte string"):
        decode_tree(tree(["text"]), "m")
