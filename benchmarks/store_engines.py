"""Store engines side by side on one SeaweedFS (not a test): obstore vs s3fs, and local.

    .venv/bin/python -m benchmarks.store_engines [--repeat 2]

Each measurement runs in a fresh process, through snapsync's own ``Backend`` (so it measures
what a push or pull gets), against one SeaweedFS started on free 127.0.0.1 ports:

* ``import+client``: interpreter start excluded; ``import snapsync.store`` + ``open_backend``
  + one small GET (so the client is really built and connected);
* ``ranges``: 1,024 ranged GETs of 32 KiB, spread over 5 packs of 16 MiB, 16 in flight;
  obstore once with one request per range and once with obstore's per-object ``get_ranges``;
* ``puts``: 4 x 16 MiB puts, one after another (as a push's pack uploads are each one PUT);
* ``local``: the same ranges and 1,000 small puts/gets on file:// with fsspec and with
  obstore's LocalStore (to decide which engine serves file://).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

PACK = 16 << 20
NPACKS = 5
NRANGES = 1024
RANGE = 32 << 10

CHILD = r"""
import json, os, random, sys, time
t0 = time.perf_counter()
from snapsync.store import open_backend
url, opts, what = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
b = open_backend(url, opts)
b.get("bench/small")
out = {"import+client": time.perf_counter() - t0}
if what == "ranges":
    rnd = random.Random(7)
    reqs = []
    for i in range(%(nranges)d):
        s = rnd.randrange(0, %(pack)d - %(range)d)
        reqs.append((f"bench/p{i %% %(npacks)d}.pack", s, s + %(range)d))
    t = time.perf_counter()
    got = b.get_ranges(reqs, 16)
    out["ranges"] = time.perf_counter() - t
    assert all(isinstance(g, bytes) and len(g) == %(range)d for g in got)
elif what == "puts":
    data = [os.urandom(%(pack)d) for _ in range(4)]
    t = time.perf_counter()
    for i, d in enumerate(data):
        b.put(f"bench/put{i}.pack", d)
    out["puts"] = time.perf_counter() - t
print(json.dumps(out))
""" % {"nranges": NRANGES, "pack": PACK, "range": RANGE, "npacks": NPACKS}  # noqa: UP031

LOCAL = r"""
import json, os, random, sys, time
engine, root = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if engine == "fsspec":
    from snapsync.store.fsspec_backend import FsspecBackend
    b = FsspecBackend.open("file://" + root, {})
else:
    from obstore.store import LocalStore
    from snapsync.store.obstore_backend import ObstoreBackend
    b = ObstoreBackend(LocalStore(root, mkdir=True), where="file://" + root)
out = {"open": time.perf_counter() - t0}
small = [os.urandom(4096) for _ in range(1000)]
t = time.perf_counter()
for i, d in enumerate(small):
    b.put(f"s/{i %% 50:02d}/{i}.bin", d)
out["1000 puts"] = time.perf_counter() - t
t = time.perf_counter()
got = b.get_many([f"s/{i %% 50:02d}/{i}.bin" for i in range(1000)], 16)
out["1000 gets"] = time.perf_counter() - t
assert got == small
big = os.urandom(%(pack)d)
for i in range(%(npacks)d):
    b.put(f"p{i}.pack", big)
rnd = random.Random(7)
reqs = []
for i in range(%(nranges)d):
    s = rnd.randrange(0, %(pack)d - %(range)d)
    reqs.append((f"p{i %% %(npacks)d}.pack", s, s + %(range)d))
t = time.perf_counter()
got = b.get_ranges(reqs, 16)
out["1024 ranges"] = time.perf_counter() - t
assert all(g == big[s:e] for g, (_, s, e) in zip(got, reqs))
print(json.dumps(out))
""" % {"nranges": NRANGES, "pack": PACK, "range": RANGE, "npacks": NPACKS}  # noqa: UP031


def run(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=False)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    from servers import SeaweedS3

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, SeaweedS3(Path(tmp) / "weed") as s3:
        s3.make_bucket("bench")
        client = s3.boto3_client()
        client.put_object(Bucket="bench", Key="bench/small", Body=b"x")
        pack = os.urandom(PACK)
        for i in range(NPACKS):
            client.put_object(Bucket="bench", Key=f"bench/p{i}.pack", Body=pack)
        opts = s3.storage_options
        engines = {
            "obstore (one GET per range)": ({**opts}, {"SNAPSYNC_OBSTORE_RANGES": "single"}),
            "obstore (get_ranges per object)": ({**opts}, {"SNAPSYNC_OBSTORE_RANGES": "object"}),
            "s3fs": ({**opts, "backend": "fsspec"}, {}),
        }
        env = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_METADATA_ENDPOINT": "http://127.0.0.1:9"}
        for _ in range(args.repeat):
            for name, (o, extra) in engines.items():
                for what in ("ranges", "puts"):
                    if what == "puts" and "per object" in name:
                        continue
                    rows.setdefault(f"{name} {what}", []).append(
                        run(CHILD, "s3://bench", json.dumps(o), what, env={**env, **extra}))
        for _ in range(args.repeat):
            for engine in ("fsspec", "obstore"):
                root = tempfile.mkdtemp(dir=tmp)
                rows.setdefault(f"local {engine}", []).append(run(LOCAL, engine, root))
    for name, runs in rows.items():
        cols = {k: " / ".join(f"{r[k]:.3f}" for r in runs) for k in runs[0]}
        print(f"{name:45s} " + "  ".join(f"{k}: {v} s" for k, v in cols.items()))


if __name__ == "__main__":
    main()
