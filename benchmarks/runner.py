"""One benchmark *session*: one backend, its corpora, every tool, interleaved repetitions.

The scenarios, in order, for every (corpus, repetition), each tool taking its turn at each
step before the next step starts (the tool order rotates between repetitions):

``first-push``  push the first tree into an empty store
``noop-push``   push it again unchanged (``stat-walk``: the bare walk floor)
``<step>``      each later corpus step: ``edit-one-file``, ``insert-100B`` (100 bytes into the
                large file), or the next release of a real project
``pull-cold``   latest snapshot into an empty folder, empty local cache
``pull-warm``   into another empty folder with the cache the cold pull left (``cp -r`` floor)
``pull-prev``   into a folder holding the previous version, empty cache

A session runs in this process for ``file`` and ``s3``; for ``s3-latency`` the whole session
runs inside the benchmark's network namespace (see ``cli.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import corpora
from .backends import Backend, FileBackend, S3Backend, counter_delta
from .corpora import Corpus
from .tools import CopyTree, Ctx, Measure, Snapsync, StatWalk, Tool, all_tools

# Tools that move every byte on every push are slow; in quick mode they run these only.
LIMITED_SCENARIOS = ("first-push", "noop-push", "pull-cold")


def load_corpus(spec: str) -> Corpus:
    kind, _, rest = spec.partition(":")
    if kind == "gen":
        return corpora.generated(corpora.GenSpec().scaled(float(rest or 1)))
    if kind == "gen100k":
        k = float(rest or 1)
        return corpora.generated_flat(corpora.GEN100K if k == 1 else
                                      corpora.GEN100K.scaled(k))
    if kind == "stdlib":
        return corpora.stdlib()
    if kind == "site-packages":
        return corpora.site_packages()
    if kind == "history":
        project, _, versions = rest.partition(":")
        return corpora.history(project, versions.split(","))
    raise ValueError(f"unknown corpus {spec!r}")


def make_backend(spec: dict[str, Any], root: Path) -> Backend:
    name = spec["backend"]
    if name == "file":
        return FileBackend(root)
    if name == "s3":
        return S3Backend(root)
    if name == "s3-latency":
        return S3Backend(root, delay_ms=spec.get("delay_ms", 10.0), note=spec.get("note", ""))
    raise ValueError(name)


def _verify(dest: Path, expect: Path) -> bool:
    """Every file of ``expect`` is in ``dest`` with the same size (cheap, catches layout bugs)."""
    for dirpath, _dirs, files in os.walk(expect):
        for f in files:
            src = os.path.join(dirpath, f)
            rel = os.path.relpath(src, expect)
            try:
                if os.lstat(os.path.join(dest, rel)).st_size != os.lstat(src).st_size:
                    return False
            except OSError:
                return False
    return True


class Session:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.root = Path(spec["root"])
        self.backend = make_backend(spec, self.root)
        self.records: list[dict[str, Any]] = []
        self.store_rows: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.startup: dict[str, Any] = {}
        self.log = spec.get("verbose", True)

    # ---- recording -----------------------------------------------------------------------
    def _record(self, corpus: str, scenario: str, tool: Tool, rep: int, m: Measure,
                delta: dict[str, int] | None, verified: bool | None = None) -> None:
        row: dict[str, Any] = {
            "backend": self.backend.name, "corpus": corpus, "scenario": scenario,
            "tool": tool.name, "rep": rep, "ok": m.ok, "wall": round(m.wall, 4),
            "cpu": round(m.cpu, 4), "rss_mb": round(m.rss_mb, 1)}
        if m.user is not None:
            row["user"], row["sys"] = round(m.user, 4), round(m.sys or 0.0, 4)
        if m.rss_tree_mb is not None:
            row["rss_single_mb"] = round(m.rss_single_mb or 0.0, 1)
            row["rss_tree_mb"] = round(m.rss_tree_mb, 1)
            row["procs"] = m.procs
        if delta is not None:
            row["server"] = delta
        if m.extra:
            row["tool_stats"] = {k: v for k, v in m.extra.items() if k != "trace"}
        if verified is not None:
            row["verified"] = verified
        if not m.ok:
            row["error"] = m.error[-600:]
        self.records.append(row)
        if self.log:
            status = "ok" if m.ok else f"FAILED {m.error[:200]}"
            req = ""
            if delta:
                req = " ".join(f"{k}={v}" for k, v in delta.items() if k.isupper())
            print(f"  [{self.backend.name}] {corpus:>18} {scenario:>16} {tool.name:>15} "
                  f"r{rep} {m.wall:8.3f}s cpu {m.cpu:7.2f}s rss {m.rss_mb:6.0f}MB {req} "
                  f"{status}", flush=True)

    def _timed(self, ctx: Ctx, fn: Any) -> tuple[Measure, dict[str, int] | None]:
        before = self.backend.counters()
        m = fn()
        after = self.backend.counters()
        return m, counter_delta(before, after, ctx.bucket)

    # ---- the matrix ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        tools = [t for t in all_tools(self.spec.get("jobs")) if t.name in self.spec["tools"]]
        active: list[Tool] = []
        for t in tools:
            ok, why = t.available()
            if t.name in (self.spec.get("skip_tools") or []):
                self.skipped[t.name] = (f"not run on {self.backend.name} in this preset (it "
                                        "does what prefect-aws does, one request per file)")
            elif not ok:
                self.skipped[t.name] = why
            elif not t.supports(self.backend):
                self.skipped[t.name] = f"does not support the {self.backend.name} backend"
            else:
                active.append(t)
        floors, cp = [StatWalk("find"), StatWalk("py-walk")], CopyTree()
        t0 = time.time()
        self.backend.start()
        try:
            for t in active:
                t.start()
            for cspec in self.spec["corpora"]:
                corpus = load_corpus(cspec)
                reps = (self.spec.get("corpus_reps") or {}).get(cspec, self.spec["reps"])
                for rep in range(reps):
                    k = rep % len(active)
                    order = active[k:] + active[:k]  # rotate: nobody always goes first
                    self._one(corpus, rep, order, floors, cp)
            sweeps = {}
            if self.spec.get("sweeps"):
                from .sweeps import run_sweeps

                lib = Snapsync(self.spec.get("jobs"))
                lib.start()
                try:
                    sweeps = run_sweeps(self, lib, self.spec["sweeps"])
                finally:
                    lib.stop()
            if self.spec.get("startup"):
                from .startup import run_startup

                self.startup = run_startup(self, self.spec["startup"])
        finally:
            for t in active:
                with contextlib.suppress(Exception):
                    t.stop()
            self.backend.stop()
        info = {"name": self.backend.name, "note": self.backend.note,
                "seconds": round(time.time() - t0, 1)}
        if isinstance(self.backend, S3Backend):
            info["delay_ms_each_way"] = self.backend.delay_ms
            info["proxy_stats"] = self.backend.proxy_stats
            if self.backend.delay_ms:
                info["rate_mbit"] = self.spec.get("rate_mbit")
        return {"backend": info, "records": self.records, "store": self.store_rows,
                "skipped": self.skipped, "sweeps": sweeps, "startup": self.startup}

    def _wants(self, scenario: str) -> bool:
        want = self.spec.get("scenarios")
        return not want or scenario in want or (
            scenario.startswith(("next-release", "edit", "insert")) and "steps" in want)

    def _one(self, corpus: Corpus, rep: int, order: list[Tool], floors: list[StatWalk],
             cp: CopyTree) -> None:
        base = self.root / "runs" / f"{corpus.name}-r{rep}"
        shutil.rmtree(base, ignore_errors=True)
        # Pulled trees (and the pull-side caches) may go elsewhere, e.g. tmpfs for the
        # 100k sweep, where creating and deleting 100k files on this disk would decide.
        pull_root = Path(self.spec["pull_dir"]) / f"{corpus.name}-r{rep}" if self.spec.get(
            "pull_dir") else base / "pull"
        delete_pulled = bool(self.spec.get("pull_dir"))
        ctxs: dict[str, Ctx] = {}
        works: dict[str, Path] = {}
        alive: list[Tool] = []
        limited = set(self.spec.get("limited", []))
        max_files = self.spec.get("max_files") or {}
        # A corpus with one step is never edited: every tool reads the cached tree itself
        # (no 100k-file copies per tool and repetition).
        shared = len(corpus.steps) == 1
        for t in order:
            if t.name in limited and rep >= (self.spec.get("limited_reps") or 99):
                continue
            if corpus.files > max_files.get(t.name, 1 << 60):
                self.skipped[f"{t.name} at {corpus.name}"] = (
                    f"run up to {max_files[t.name]:,} files only (time budget)")
                continue
            ctx = Ctx(self.backend, f"bench-{t.name}", f"{corpus.name}-r{rep}",
                      base / "state" / t.name, pull_root / "state" / t.name)
            ctx.state.mkdir(parents=True, exist_ok=True)
            ctx.pstate.mkdir(parents=True, exist_ok=True)
            if shared:
                works[t.name] = corpus.steps[0].dir
            else:
                works[t.name] = base / "work" / t.name
                corpora.checkout(corpus.steps[0], works[t.name])
            try:
                t.prepare(ctx)
            except Exception as exc:
                self._record(corpus.name, "prepare", t, rep, Measure(ok=False, error=str(exc)),
                             None)
                continue
            ctxs[t.name] = ctx
            alive.append(t)
        last_step: dict[str, int] = {}

        lim_scen = self.spec.get("limited_scenarios") or LIMITED_SCENARIOS
        lim_reps = self.spec.get("limited_reps") or 99
        replay = corpus.name.startswith("history") and len(corpus.steps) > 1

        only = self.spec.get("tool_scenarios") or {}

        def runs(t: Tool, scenario: str) -> bool:
            base_scen = (scenario.rstrip("-0123456789") if scenario.startswith("pull-prev-")
                         else scenario)
            if t not in alive or not self._wants(base_scen):
                return False
            if t.name in only and base_scen not in only[t.name]:
                return False
            return t.name not in limited or (scenario in lim_scen and rep < lim_reps)

        def push_all(scenario: str, step_index: int) -> None:
            for t in order:
                # The first push always runs (every later scenario needs its store); it is
                # recorded only where the run asks for it.
                if not runs(t, scenario) and not (scenario == "first-push" and t in alive):
                    continue
                if step_index and last_step.get(t.name) != step_index:
                    corpora.advance(corpus.steps[step_index], works[t.name])
                ctx = ctxs[t.name]
                m, delta = self._timed(ctx, lambda t=t, ctx=ctx: t.push(ctx, works[t.name]))
                if runs(t, scenario):
                    self._record(corpus.name, scenario, t, rep, m, delta)
                if m.ok:
                    last_step[t.name] = step_index
                else:
                    alive.remove(t)

        def pull_one(t: Tool, scenario: str, mode: str, dest: Path, expect: Path) -> None:
            ctx = ctxs[t.name]
            m, delta = self._timed(ctx, lambda: t.pull(ctx, dest, mode))
            self._record(corpus.name, scenario, t, rep, m, delta,
                         _verify(dest, expect) if m.ok else None)

        push_all("first-push", 0)
        if self._wants("noop-push"):
            push_all("noop-push", 0)
            if ctxs:
                first = next(iter(ctxs))
                for fl in floors:  # the floors, on the same tree, after the tools
                    self._record(corpus.name, "noop-push", fl, rep, fl.walk(works[first]),
                                 None)
        # The real-history replay: a deployed tree per tool, pulled by the tool itself, then
        # after each next release is pushed, pulled again into the same tree (incremental).
        deployed: dict[str, Path] = {}
        if replay and self._wants("pull-prev"):
            for t in order:
                if t in alive and t.name in last_step and t.name not in limited and (
                        t.name not in only or "pull-prev" in only[t.name]):
                    dest = pull_root / "deploy" / t.name
                    dest.mkdir(parents=True, exist_ok=True)
                    m = t.pull(ctxs[t.name], dest, "deploy")  # untimed: the starting point
                    if m.ok:
                        deployed[t.name] = dest
        for i, step in enumerate(corpus.steps[1:], start=1):
            name = step.name if not corpus.name.startswith("history") else f"next-release-{i}"
            push_all(name, i)
            for t in order:
                if t.name in deployed and last_step.get(t.name) == i:
                    pull_one(t, f"pull-prev-{i}", "deploy", deployed[t.name], step.dir)
        for t in order:
            if t.name in ctxs and t.name in last_step:
                objs, size = self.backend.usage(ctxs[t.name].bucket, ctxs[t.name].prefix)
                self.store_rows.append({"backend": self.backend.name, "corpus": corpus.name,
                                        "tool": t.name, "rep": rep, "objects": objs,
                                        "bytes": size, "versions": last_step[t.name] + 1})
        warm_tools = self.spec.get("warm_tools")
        for mode in ("cold", "warm", "prev"):
            if mode == "prev" and (len(corpus.steps) < 2 or replay):
                continue
            scenario = f"pull-{mode}"
            for t in order:
                if not runs(t, scenario) or t.name not in last_step:
                    continue
                if mode == "warm" and warm_tools is not None and t.name not in warm_tools:
                    continue
                dest = pull_root / t.name / mode
                shutil.rmtree(dest, ignore_errors=True)
                expect = corpus.steps[last_step[t.name]].dir
                if mode == "prev":
                    if last_step[t.name] < 1:
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    subprocess.run(["cp", "-a", str(corpus.steps[last_step[t.name] - 1].dir),
                                    str(dest)], check=True)
                else:
                    dest.mkdir(parents=True)
                pull_one(t, scenario, mode, dest, expect)
                # On disk, pulled trees stay until the repetition ends: on ext4 with discard,
                # creating files right after a mass delete stalls (limits.md §6), which would
                # tax whichever tool pulls next. On tmpfs they go at once.
                if delete_pulled:
                    shutil.rmtree(dest, ignore_errors=True)
            if mode == "warm" and self._wants("pull-warm"):
                dest = pull_root / "cp"
                shutil.rmtree(dest, ignore_errors=True)
                dest.parent.mkdir(parents=True, exist_ok=True)
                m = cp.copy(corpus.steps[-1].dir, dest)
                self._record(corpus.name, scenario, cp, rep, m, None)
                if delete_pulled:
                    shutil.rmtree(dest, ignore_errors=True)
        # Free local disk before the next repetition. Buckets stay (each repetition has its own
        # prefix): deleting a SeaweedFS bucket costs about a second, and the server's data
        # folder goes at the end of the session anyway. sync so the next repetition does not
        # start in the middle of the delete's writeback.
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(pull_root, ignore_errors=True)
        if isinstance(self.backend, FileBackend):
            # file:// stores of this repetition (packs, or rclone's plain copy) go too.
            for t in ctxs.values():
                shutil.rmtree(self.backend.path(t.bucket, t.prefix), ignore_errors=True)
        os.sync()


def run_session_file(spec_path: str, out_path: str) -> None:
    """Entry for the session child run inside the network namespace."""
    spec = json.loads(Path(spec_path).read_text())
    result = Session(spec).run()
    Path(out_path).write_text(json.dumps(result, default=str))
