"""Measure ``serve``'s periodic pull: SnapsyncStorage against Prefect's RemoteStorage.

Same SeaweedFS server (127.0.0.1), same tree: RemoteStorage's copy is the tree as plain
objects (what ``fs.put`` makes), snapsync's is a store. Two cases per storage, each timed
``--repeat`` times (median reported): a periodic pull when nothing changed, and one after a
one-file change. Run from a checkout: ``.venv/bin/python -m benchmarks.serve_pull``.
Measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:9/api")  # offline (no server)


def make_tree(root: Path, files: int) -> None:
    rnd = __import__("random").Random(7)
    for i in range(files):
        p = root / f"pkg{i % 20}" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(rnd.randint(500, 8000)))


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import fsspec
    from prefect.runner.storage import RemoteStorage
    from servers import SeaweedS3

    import snapsync
    from snapsync.prefect import SnapsyncStorage

    with tempfile.TemporaryDirectory() as tmp_s, SeaweedS3(Path(tmp_s) / "weed") as server:
        tmp = Path(tmp_s)
        os.environ["SNAPSYNC_CACHE_DIR"] = str(tmp / "cache")
        server.make_bucket("bench")
        opts = server.storage_options
        src = tmp / "src"
        make_tree(src, args.files)
        fs = fsspec.filesystem("s3", **opts)
        fs.put(str(src) + "/", "bench/plain/", recursive=True)
        snapsync.push(src, "s3://bench/snap", storage_options=opts)

        remote = RemoteStorage("s3://bench/plain", pull_interval=60, **opts)
        remote.set_base_path(tmp / "r")
        ours = SnapsyncStorage("s3://bench/snap", storage_options=opts)
        ours.set_base_path(tmp / "s")
        asyncio.run(remote.pull_code())
        asyncio.run(ours.pull_code())

        rows = []
        rows.append(("unchanged", "RemoteStorage",
                     timed(lambda: asyncio.run(remote.pull_code()), args.repeat)))
        rows.append(("unchanged", "SnapsyncStorage",
                     timed(lambda: asyncio.run(ours.pull_code()), args.repeat)))

        changed = src / "pkg3" / "mod3.py"
        counter = [0]

        def change_remote() -> None:
            counter[0] += 1
            changed.write_text(f"# change {counter[0]}\n")
            fs.put(str(changed), "bench/plain/pkg3/mod3.py")
            t0 = time.perf_counter()
            asyncio.run(remote.pull_code())
            change_remote.t = time.perf_counter() - t0  # type: ignore[attr-defined]

        def change_ours() -> None:
            counter[0] += 1
            changed.write_text(f"# change {counter[0]}\n")
            snapsync.push(src, "s3://bench/snap", storage_options=opts)
            t0 = time.perf_counter()
            asyncio.run(ours.pull_code())
            change_ours.t = time.perf_counter() - t0  # type: ignore[attr-defined]

        for name, fn in (("RemoteStorage", change_remote), ("SnapsyncStorage", change_ours)):
            ts = []
            for _ in range(args.repeat):
                fn()
                ts.append(fn.t)  # type: ignore[attr-defined]
            rows.append(("one file changed", name, statistics.median(ts)))
        assert (tmp / "s" / "bench" / "snap" / "pkg3" / "mod3.py").read_text() == \
            changed.read_text()
        print(f"tree: {args.files} files, median of {args.repeat}")
        for case, name, t in rows:
            print(f"{case:<18} {name:<16} {t * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
