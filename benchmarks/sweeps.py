"""Tuning sweeps: one engine parameter varied at a time, everything else at its default.

Each point pushes the generated corpus into a fresh store (the parameters of a store are fixed
when it is created), then pushes the 100-byte-insert step (dedup quality), then pulls the
latest snapshot into an empty folder with an empty cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from . import corpora
from .tools import Ctx, Measure, Snapsync

KiB, MiB = 1 << 10, 1 << 20

# name -> list of (label, push kwargs, jobs)
POINTS: dict[str, list[tuple[str, dict[str, Any], int | None]]] = {
    "chunker": [
        ("thr 128K, 32K/96K/512K", {"chunker": {"threshold": 128 * KiB, "min_size": 32 * KiB,
                                                "avg_size": 96 * KiB, "max_size": 512 * KiB}},
         None),
        ("thr 512K, 128K/384K/2M", {"chunker": {"threshold": 512 * KiB, "min_size": 128 * KiB,
                                                "avg_size": 384 * KiB, "max_size": 2 * MiB}},
         None),
        ("thr 1M, 256K/768K/4M", {"chunker": {"threshold": 1 * MiB, "min_size": 256 * KiB,
                                              "avg_size": 768 * KiB, "max_size": 4 * MiB}}, None),
        ("thr 4M, 1M/3M/8M", {"chunker": {"threshold": 4 * MiB, "min_size": 1 * MiB,
                                          "avg_size": 3 * MiB, "max_size": 8 * MiB}}, None),
    ],
    "pack": [(f"{n} MiB", {"pack_size": n * MiB}, None) for n in (1, 4, 16, 64)],
    "level": [(f"zstd {n}", {"level": n}, None) for n in (1, 3, 6, 9)],
    "jobs": [(f"jobs {n}", {}, n) for n in (1, 4, 8, 16, 32)],
}

DEFAULTS = {"chunker": "thr 1M, 256K/768K/4M", "pack": "16 MiB", "level": "zstd 3",
            "jobs": "jobs 16"}


def _point_value(name: str, label: str) -> int | str:
    """The number a sweep point is named by (``16 MiB`` -> 16), or the label itself."""
    word = label.split()[-2 if name == "pack" else -1]
    return int(word) if word.isdigit() else label


def run_sweeps(session: Any, snap: Snapsync, names: list[str]) -> dict[str, Any]:
    """Run the named sweeps on the session's backend; return rows per sweep."""
    assert snap.worker is not None
    corpus = session.spec.get("sweep_corpus", "gen:0.2")
    from .runner import load_corpus

    c = load_corpus(corpus)
    insert = next((i for i, s in enumerate(c.steps) if s.name == "insert-100B"), None)
    out: dict[str, Any] = {}
    backend = session.backend
    base = session.root / "sweeps"
    for name in names:
        rows = []
        keep = (session.spec.get("sweep_points") or {}).get(name)
        points = [pt for pt in POINTS[name]
                  if keep is None or _point_value(name, pt[0]) in keep]
        for i, (label, kw, jobs) in enumerate(points):
            ctx = Ctx(backend, "bench-sweep", f"{name}-{i}", base / f"{name}-{i}")
            ctx.state.mkdir(parents=True, exist_ok=True)
            backend.make_bucket(ctx.bucket)
            work = base / "work"
            corpora.checkout(c.steps[0], work)
            url = backend.url(ctx.bucket, ctx.prefix)
            opts = backend.storage_options

            def push(kw: dict[str, Any] = kw, jobs: int | None = jobs, ctx: Ctx = ctx,
                     url: str = url, work: Path = work,
                     opts: dict[str, Any] = opts) -> Measure:
                return snap.worker.call(  # type: ignore[union-attr]
                    "snapsync_push", root=str(work), url=url, storage_options=opts,
                    cache_dir=str(ctx.state / "push-cache"), jobs=jobs, **kw)

            first, d1 = session._timed(ctx, push)
            row: dict[str, Any] = {"label": label, "default": label == DEFAULTS[name],
                                   "first_push": round(first.wall, 3),
                                   "first_cpu": round(first.cpu, 3),
                                   "stored_bytes": backend.usage(ctx.bucket, ctx.prefix)[1],
                                   "first_requests": d1 or first.extra.get("requests"),
                                   "ok": first.ok}
            if insert is not None and first.ok:
                corpora.advance(c.steps[1], work)  # edit step, untimed, so insert is isolated
                push()
                corpora.advance(c.steps[insert], work)
                ins, _ = session._timed(ctx, push)
                row["insert_push"] = round(ins.wall, 3)
                row["insert_uploaded"] = ins.extra.get("bytes_uploaded")
            if first.ok:
                dest = base / "pull"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.rmtree(ctx.state / "pull-cache", ignore_errors=True)
                pull, d2 = session._timed(ctx, lambda ctx=ctx, url=url, jobs=jobs, dest=dest,
                                          opts=opts: (
                    snap.worker.call("snapsync_pull", url=url, dest=str(dest),  # type: ignore
                                     storage_options=opts,
                                     cache_dir=str(ctx.state / "pull-cache"), jobs=jobs)))
                row["cold_pull"] = round(pull.wall, 3)
                row["pull_requests"] = d2 or pull.extra.get("requests")
                row["pull_rss_mb"] = round(pull.rss_mb)
                shutil.rmtree(dest, ignore_errors=True)
            row["push_rss_mb"] = round(first.rss_mb)
            if not first.ok:
                row["error"] = first.error[-300:]
            rows.append(row)
            if session.log:
                print(f"  [{backend.name}] sweep {name:>8} {label:>24}: {row}", flush=True)
        out[name] = {"backend": backend.name, "corpus": c.name, "rows": rows}
        if hasattr(backend, "remove_bucket"):
            backend.remove_bucket("bench-sweep")
    shutil.rmtree(base, ignore_errors=True)
    return out
