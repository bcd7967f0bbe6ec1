"""Start-up and small-tree costs, one fresh process per command (issue 12's budget).

Runs inside the ``s3`` session (the SeaweedFS server is up), side by side and interleaved,
with the order rotating between repetitions:

``python -c pass``           the interpreter's own start-up (floor)
``import snapsync.cli``      ``python -c 'import snapsync.cli'``
``snapsync --version``       the console script, nothing else
``noop-push <engine>``       ``snapsync push`` of an unchanged tree, for each S3 engine
``find`` / ``py-walk``       the floors: a bare stat walk of the same tree, process start
                             included (``find -printf``; ``python -c`` scandir + lstat)

and once per engine, ``python -X importtime`` of the same no-op push and of a no-op pull: the
summed top-level import time minus that of ``python -c pass`` is what importing the CLI and
everything the command needs costs; the cloud SDK modules it loaded are listed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import Any

from .tools import Ctx, Measure, SnapsyncCLI, StatWalk, run_external, snapsync_argv, snapsync_env

# Top-level packages that belong to a cloud SDK or a store engine: which of them a command
# imported shows whether it loaded only what its URL needs.
SDK_PACKAGES = ("obstore", "s3fs", "aiobotocore", "botocore", "boto3", "aiohttp", "gcsfs",
                "google", "adlfs", "azure", "fsspec")

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def import_profile(argv: list[str]) -> dict[str, Any]:
    """Run ``python -X importtime ARGV``: summed top-level import µs and the SDKs loaded."""
    res = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                         text=True, env=snapsync_env(), check=False)
    total = 0
    pkgs: set[str] = set()
    for line in res.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        name = m.group(4)
        top = name.split(".")[0]
        if top in SDK_PACKAGES:
            pkgs.add(top)
        if len(m.group(3)) <= 1:  # a top-level import (nested ones are inside its figure)
            total += int(m.group(2))
    return {"import_us": total, "sdk": sorted(pkgs), "rc": res.returncode,
            "error": res.stderr[-400:] if res.returncode else ""}


def _row(m: Measure) -> dict[str, Any]:
    return {"wall": round(m.wall, 4), "user": round(m.user or 0.0, 4),
            "sys": round(m.sys or 0.0, 4), "rss_mb": round(m.rss_mb, 1), "ok": m.ok,
            **({"error": m.error[-300:]} if not m.ok else {})}


def run_startup(session: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Measure the start-up rows on ``session``'s (S3) backend; see the module docstring."""
    from .runner import load_corpus

    corpus = load_corpus(spec.get("corpus", "gen100k:0.05"))
    reps = int(spec.get("reps", 5))
    backend = session.backend
    tree = corpus.steps[0].dir
    engines = [SnapsyncCLI(None), SnapsyncCLI("fsspec")]
    ctxs: dict[str, Ctx] = {}
    base = session.root / "startup"
    shutil.rmtree(base, ignore_errors=True)
    out: dict[str, Any] = {"corpus": corpus.name, "files": corpus.files,
                           "mb": round(corpus.bytes / 1e6, 1), "reps": reps, "rows": {},
                           "imports": {}}
    rows: dict[str, list[dict[str, Any]]] = out["rows"]
    bucket = "bench-startup"
    backend.make_bucket(bucket)
    for e in engines:
        ctx = Ctx(backend, bucket, f"{corpus.name}-{e.name}", base / e.name)
        ctx.state.mkdir(parents=True, exist_ok=True)
        ctxs[e.name] = ctx
        m = e.push(ctx, tree)  # the first push, so that the timed pushes are no-ops
        rows.setdefault(f"first-push {e.name}", []).append(_row(m))
        dest = base / "pull" / e.name
        dest.mkdir(parents=True, exist_ok=True)
        m = e.pull(ctx, dest, "cold")
        rows.setdefault(f"pull-cold {e.name}", []).append(_row(m))
    py = sys.executable
    items: list[tuple[str, Any]] = [
        ("python -c pass", lambda: run_external([py, "-c", "pass"])),
        ("import snapsync.cli", lambda: run_external([py, "-c", "import snapsync.cli"],
                                                     env=snapsync_env())),
        ("snapsync --version", lambda: run_external([*snapsync_argv(), "--version"],
                                                    env=snapsync_env())),
        *[(f"noop-push {e.name}", lambda e=e: e.push(ctxs[e.name], tree)) for e in engines],
        *[(fl.name, lambda fl=fl: fl.walk(tree)) for fl in (StatWalk("find"),
                                                             StatWalk("py-walk"))],
    ]
    for rep in range(reps):
        k = rep % len(items)
        for name, fn in items[k:] + items[:k]:
            rows.setdefault(name, []).append(_row(fn()))
    base_imports = import_profile(["-c", "pass"])
    script = snapsync_argv()
    script = script[1:] if script[0] == sys.executable else script  # -m snapsync or the file
    for e in engines:
        ctx = ctxs[e.name]
        opts = e._opts(ctx)
        url = e.url(ctx)
        push = import_profile([*script, "push", str(tree), url, "--no-default-ignore",
                               "--cache-dir", str(ctx.state / "push-cache"), "--json", *opts])
        pull = import_profile([*script, "pull", url, str(base / "pull" / e.name),
                               "--cache-dir", str(ctx.pstate / "pull-cache"), "--json", *opts])
        out["imports"][e.name] = {
            "push_import_ms": round((push["import_us"] - base_imports["import_us"]) / 1000, 1),
            "pull_import_ms": round((pull["import_us"] - base_imports["import_us"]) / 1000, 1),
            "push_sdk": push["sdk"], "pull_sdk": pull["sdk"],
            "errors": [x["error"] for x in (push, pull) if x["rc"]]}
    out["imports"]["python -c pass"] = {"import_ms": round(base_imports["import_us"] / 1000, 1)}
    shutil.rmtree(base, ignore_errors=True)
    if session.log:
        for name, rs in rows.items():
            walls = sorted(r["wall"] for r in rs)
            print(f"  [startup] {name:>28}: median {walls[len(walls) // 2]:.3f} s "
                  f"({walls[0]:.3f}-{walls[-1]:.3f}), rss {max(r['rss_mb'] for r in rs):.0f} MB",
                  flush=True)
        for name, v in out["imports"].items():
            print(f"  [startup] imports {name}: {v}", flush=True)
    return out
