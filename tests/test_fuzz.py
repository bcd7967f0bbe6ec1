"""Seeded fuzzing of a file:// store crafted from docs/format.md (issue 9).

Every object kind of the format (config, ref, log entry, manifest, pack) is damaged in many
ways, byte-level and structure-aware (the manifest's msgpack re-encoded and re-compressed, its
id recomputed so the damage reaches the decoder), and the CLI is run on it in-process. Each run
must end with an exit code from the documented table (an escaping exception fails the test with
its traceback), write nothing outside the target, leave the target as it was when it refuses,
and stay within a memory bound. Deterministic: fixed seeds and iteration counts.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tracemalloc
from pathlib import Path

import msgpack
import pytest
import zstandard
from boundutil import rle_frame
from treeutil import describe

import snapsync
from snapsync.cli import main
from snapsync.core.hashing import chunk_id
from snapsync.store import Layout

EXIT_CODES = {0, 2, 3, 4, 5, 6, 7, 8, 10}  # README's table, without diff's 1 and 130
PEAK_MIB = 64  # per CLI run; the honest store's whole content is ~1 MiB


def _project(root: Path) -> Path:
    rng = random.Random(7)
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    for i in range(6):
        (root / "pkg" / f"m{i}.py").write_text("".join(f"v{j} = {j * i}\n" for j in range(50)))
    (root / "pkg" / "sub" / "data.bin").write_bytes(rng.randbytes(3000))
    (root / "big.txt").write_text("line of text\n" * 120_000)  # > 1 MiB: FastCDC, zstd chunks
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "secret.key").write_text("k")
    os.chmod(root / "secret.key", 0o600)
    os.symlink("pkg/m0.py", root / "link.py")
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An honest store (two snapshots on `latest`, one on `feature/x`); returns (dir, sid)."""
    base = tmp_path_factory.mktemp("fuzz")
    src = _project(base / "src")
    url = (base / "store").as_uri()
    cache = base / "cache"
    snapsync.push(src, url, cache_dir=cache, use_default_ignore=False)
    (src / "pkg" / "m1.py").write_text("changed = 1\n")
    sid = snapsync.push(src, url, cache_dir=cache, use_default_ignore=False).snapshot_id
    snapsync.push(src, url, ref="feature/x", cache_dir=cache, use_default_ignore=False)
    return base / "store", sid


# ------------------------------------------------------------------ mutations


def _flip(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _byte_level(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind == 0 or not data:
        return _flip(rng, data)
    if kind == 1:
        return data[:rng.randrange(len(data))]  # truncated
    if kind == 2:
        at = rng.randrange(len(data))
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
    if kind == 3:
        at = rng.randrange(len(data))
        return data[:at] + bytes([rng.randrange(256)]) * rng.randint(1, 64) + data[at + 1:]
    if kind == 4:
        return rng.randbytes(rng.randint(0, 64))
    return data + rng.randbytes(rng.randint(1, 32))


_ODD_VALUES = [None, True, -1, 0, 2**64, 1.5, "", "x" * 300, [], {}, [1, [2]], {"a": 1},
               "../../etc", "\x00", 0o4755, "feature/../x"]


def _mutate_obj(rng: random.Random, obj: object, depth: int = 0) -> object:
    """Replace one value somewhere in a decoded JSON/msgpack structure."""
    if isinstance(obj, dict) and obj and depth < 4:
        key = rng.choice(list(obj))
        if rng.random() < 0.15:
            obj.pop(key)
        else:
            obj[key] = _mutate_obj(rng, obj[key], depth + 1)
        return obj
    if isinstance(obj, list) and obj and depth < 4:
        i = rng.randrange(len(obj))
        r = rng.random()
        if r < 0.1:
            obj.pop(i)
        elif r < 0.2:
            obj.append(obj[i])
        else:
            obj[i] = _mutate_obj(rng, obj[i], depth + 1)
        return obj
    if isinstance(obj, bytes) and obj and rng.random() < 0.7:
        return _byte_level(rng, obj)
    if isinstance(obj, int) and not isinstance(obj, bool) and rng.random() < 0.6:
        return rng.choice([obj + 1, obj - 1, obj * 1000, -obj, obj ^ 0o4000, 1 << 40])
    return rng.choice([*_ODD_VALUES, b"", b"\x00" * 16, os.urandom(16)])


def _mutate_json(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.4:
        return _byte_level(rng, data)
    doc = json.loads(data)
    return json.dumps(_mutate_obj(rng, doc), default=lambda o: o.hex()).encode()


def _mutate_manifest(rng: random.Random, store: Path, sid: str) -> None:
    """Structure-aware: damage the tree or index inside, re-compress, re-key by the new id."""
    key = store / Layout.manifest(sid)
    raw = zstandard.ZstdDecompressor().decompress(key.read_bytes())
    parts = msgpack.unpackb(raw, raw=False)
    section = rng.choice([2, 2, 3, 4])
    if section in (2, 3):
        inner = msgpack.unpackb(parts[section], raw=False)
        parts[section] = msgpack.packb(_mutate_obj(rng, inner), use_bin_type=True)
    else:
        parts[4] = _mutate_obj(rng, parts[4])
    blob = zstandard.ZstdCompressor().compress(msgpack.packb(parts, use_bin_type=True))
    new_sid = chunk_id(parts[2]).hex() if isinstance(parts[2], bytes) else sid
    new_key = store / Layout.manifest(new_sid)
    new_key.parent.mkdir(parents=True, exist_ok=True)
    key.unlink()
    new_key.write_bytes(blob)
    ref = store / Layout.ref("latest")
    doc = json.loads(ref.read_bytes())
    doc["snapshot"], doc["manifest"] = new_sid, chunk_id(blob).hex()
    ref.write_text(json.dumps(doc))


def _damage(rng: random.Random, store: Path, sid: str) -> str:
    """Damage one object of ``store``; return what was done (for failure messages)."""
    objects = {
        "config": [store / Layout.CONFIG],
        "ref": sorted((store / "refs").rglob("*.json")),
        "log": sorted((store / "logs").rglob("*.json")),
        "manifest": [store / Layout.manifest(sid)],
        "pack": sorted((store / "packs").rglob("*.pack")),
    }
    what = rng.choice(["config", "ref", "ref", "log", "manifest", "manifest", "manifest",
                       "pack", "pack", "bomb"])
    if what == "bomb":  # a manifest or a chunk frame that asks for far more than it holds
        path = store / Layout.manifest(sid)
        size = rng.choice([1 << 30, 5 << 30, 100 << 20])
        path.write_bytes(rle_frame(size, rng.choice([size, None, 1000])))
        return f"bomb {size} in {path.name}"
    if what == "manifest" and rng.random() < 0.6:
        _mutate_manifest(rng, store, sid)
        return "manifest (structure)"
    path = rng.choice(objects[what])
    data = path.read_bytes()
    if what in ("config", "ref", "log"):
        path.write_bytes(_mutate_json(rng, data))
    elif what == "pack" and rng.random() < 0.5:
        # the trailer and its tail, where the columns and their lengths live
        cut = max(0, len(data) - rng.randint(12, 200))
        path.write_bytes(data[:cut] + _byte_level(rng, data[cut:]))
    else:
        path.write_bytes(_byte_level(rng, data))
    return f"{what} {path.relative_to(store)}"


# ------------------------------------------------------------------ the property


def _run(argv: list[str]) -> tuple[int, float]:
    """Run the CLI in-process; return (exit code, peak MiB allocated during the run)."""
    tracemalloc.reset_peak()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse only; every argument here is valid
        code = exc.code if isinstance(exc.code, int) else 2
    _, peak = tracemalloc.get_traced_memory()
    return code, peak / (1 << 20)


@pytest.mark.parametrize("seed", range(4))
def test_damaged_store_fails_cleanly(pristine, tmp_path, capsys, seed):
    store_src, sid = pristine
    rng = random.Random(1000 + seed)
    sandbox = tmp_path / "sandbox"
    (sandbox / "outside").mkdir(parents=True)
    (sandbox / "outside" / "bystander.txt").write_text("do not touch\n")
    seen_codes: dict[int, int] = {}
    tracemalloc.start()
    try:
        for i in range(25):
            store = tmp_path / f"store{i}"
            shutil.copytree(store_src, store, symlinks=True)
            what = _damage(rng, store, sid)
            url = store.as_uri()
            target = sandbox / f"target{i}"
            target.mkdir()
            (target / "keep.txt").write_text("mine\n")
            outside = describe(sandbox / "outside")
            before = describe(target)
            code, peak = _run(["pull", url, str(target), "--no-cache", "-q"])
            _out, err = capsys.readouterr()
            ctx = f"seed {seed} run {i}: {what}: exit {code}: {err.strip()[:300]}"
            assert code in EXIT_CODES, ctx
            assert "Traceback" not in err, ctx
            assert peak < PEAK_MIB, f"{ctx}: peak {peak:.0f} MiB"
            assert describe(sandbox / "outside") == outside, ctx
            assert sorted(os.listdir(sandbox)) == sorted(
                ["outside", *(f"target{j}" for j in range(i + 1))]), ctx
            if code != 0:
                assert describe(target) == before, ctx
            for argv in (["check", url, "--read-data"], ["ls", url], ["log", url],
                         ["log", url, "--ref", "feature/x"]):
                if rng.random() < 0.5:
                    continue
                code2, peak2 = _run([*argv, "-q"])
                _, err2 = capsys.readouterr()
                ctx2 = f"seed {seed} run {i}: {what}: {argv[0]} exit {code2}: {err2[:300]}"
                assert code2 in EXIT_CODES and "Traceback" not in err2, ctx2
                assert peak2 < PEAK_MIB, f"{ctx2}: peak {peak2:.0f} MiB"
            seen_codes[code] = seen_codes.get(code, 0) + 1
            shutil.rmtree(store)
    finally:
        tracemalloc.stop()
    assert set(seen_codes) - {0}, seen_codes  # the damage was noticed at least sometimes
