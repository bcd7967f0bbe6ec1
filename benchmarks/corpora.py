"""Benchmark corpora: generated (seeded), stdlib and site-packages, and real release history.

A corpus is a list of *steps*: step 0 is the first tree, every later step is the next version
(the files it changes and removes relative to the step before). Tools work in their own copy
of step 0 and move it forward step by step, the way a checkout moves from commit to commit:
only changed files are rewritten, so unchanged files keep their mtime and inode.

Nothing here is committed: generated trees and downloaded sdists live in ``benchmarks/.cache``
(git-ignored) and are rebuilt when missing.
"""

from __future__ import annotations

import filecmp
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from . import CACHE_DIR

FIXED_MTIME = 1_704_067_200  # 2024-01-01: old enough that no stat cache calls it "racy"
_GEN_VERSION = 3  # bump when the generator changes, so cached trees are rebuilt


@dataclass
class Step:
    name: str
    dir: Path
    changed: list[str] = field(default_factory=list)  # added or modified, relative paths
    removed: list[str] = field(default_factory=list)


@dataclass
class Corpus:
    name: str
    description: str
    steps: list[Step]
    files: int = 0
    bytes: int = 0
    large_file: str | None = None  # relative path of the file the insert step edits

    def summary(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "files": self.files,
                "bytes": self.bytes, "steps": [s.name for s in self.steps]}


def tree_stats(root: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            n += 1
            size += st.st_size
    return n, size


def _freeze_mtimes(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


# ---------------------------------------------------------------------------- generated


@dataclass(frozen=True)
class GenSpec:
    """Size mix of the generated project; ``scaled`` is the --scale knob."""

    small: int = 5000  # source files, 0.5-40 KB of real Python text
    medium: int = 100  # assets, 64 KB-2 MB, half compressible
    large: int = 5  # binaries, 4-16 MB, incompressible
    huge_mb: int = 128  # the one 100 MB+ file (incompressible)
    seed: int = 42

    def scaled(self, k: float) -> GenSpec:
        return GenSpec(max(50, int(self.small * k)), max(2, int(self.medium * k)),
                       max(1, int(self.large * k)), max(8, int(self.huge_mb * k)), self.seed)

    @property
    def key(self) -> str:
        return (f"gen-v{_GEN_VERSION}-{self.small}-{self.medium}-{self.large}-{self.huge_mb}"
                f"-{self.seed}")


def _text_pool() -> bytes:
    """Real Python source to cut small files from (deterministic for a Python version)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[bytes] = []
    total = 0
    for p in sorted(stdlib.glob("*.py")):
        data = p.read_bytes()
        parts.append(data)
        total += len(data)
        if total > 8 << 20:
            break
    return b"".join(parts)


def _build_generated(spec: GenSpec, root: Path) -> str:
    rng = random.Random(spec.seed)
    pool = _text_pool()
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_pkgs = max(4, spec.small // 60)
    pkgs = [f"src/pkg{i:03d}" + ("/sub" if i % 3 == 0 else "") for i in range(n_pkgs)]
    for i in range(spec.small):
        # Log-normal sizes: median ~5 KB, long tail to ~40 KB, like a real source tree.
        size = int(min(40_000, max(200, rng.lognormvariate(8.5, 1.0))))
        off = rng.randrange(0, len(pool) - size)
        d = tmp / pkgs[i % n_pkgs]
        d.mkdir(parents=True, exist_ok=True)
        head = f"# module {i} generated for snapsync benchmarks\n".encode()
        (d / f"mod{i:05d}.py").write_bytes(head + pool[off:off + size])
    (tmp / "assets").mkdir()
    for i in range(spec.medium):
        size = int(min(2 << 20, max(64 << 10, rng.lognormvariate(12.5, 1.0))))
        half = size // 2
        off = rng.randrange(0, len(pool) - half)
        data = rng.randbytes(half) + pool[off:off + size - half]
        (tmp / "assets" / f"asset{i:03d}.bin").write_bytes(data)
    (tmp / "bin").mkdir()
    for i in range(spec.large):
        (tmp / "bin" / f"tool{i}.so").write_bytes(rng.randbytes(rng.randrange(4 << 20, 16 << 20)))
    (tmp / "data").mkdir()
    huge = "data/model.bin"
    with open(tmp / huge, "wb") as f:
        for _ in range(spec.huge_mb):
            f.write(rng.randbytes(1 << 20))
    (tmp / "README.md").write_text("Generated benchmark project.\n")
    _freeze_mtimes(tmp)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return huge


def _derive(prev: Path, new: Path, edit: dict[str, bytes]) -> None:
    """``new`` = ``prev`` hard-linked, with the files in ``edit`` replaced (new inodes)."""
    shutil.rmtree(new, ignore_errors=True)
    subprocess.run(["cp", "-al", str(prev), str(new)], check=True)
    for rel, data in edit.items():
        p = new / rel
        p.unlink()
        p.write_bytes(data)
        os.utime(p, (FIXED_MTIME + 86400, FIXED_MTIME + 86400))


# The 100k-file tree of issue 11: 100,000 source-like files (log-normal, median ~5 KB), 10
# assets, 9 binaries and one big file: 100,020 files, ~1.6 GB. ``gen100k:K`` scales every
# count by K (0.01 -> ~1k files, 0.1 -> ~10k), for the file-count sweep.
GEN100K = GenSpec(small=100_000, medium=9, large=9, huge_mb=768, seed=100)


def _count_label(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 1000 else str(n)


def generated_flat(spec: GenSpec) -> Corpus:
    """One seeded tree, no later steps (the scale sweep pushes and pulls it as it is)."""
    root = CACHE_DIR / spec.key / "v0"
    meta = CACHE_DIR / spec.key / "meta-flat.json"
    if not meta.exists():
        _build_generated(spec, root)
        n, size = tree_stats(root)
        meta.write_text(json.dumps({"files": n, "bytes": size}))
    info = json.loads(meta.read_text())
    return Corpus(name=f"gen{_count_label(info['files'])}",
                  description=(f"seeded project: {spec.small} source files, {spec.medium} "
                               f"assets, {spec.large} binaries, one {spec.huge_mb} MB file"),
                  steps=[Step("v0", root)], files=info["files"], bytes=info["bytes"])


def generated(spec: GenSpec) -> Corpus:
    base = CACHE_DIR / spec.key
    v0, v1, v2 = base / "v0", base / "v1-edit", base / "v2-insert"
    meta = base / "meta.json"
    if not meta.exists():
        huge = _build_generated(spec, v0)
        edit_rel = "src/pkg001/mod00001.py"
        edited = (v0 / edit_rel).read_bytes() + b"\nVALUE = 'edited for the benchmark'\n"
        _derive(v0, v1, {edit_rel: edited})
        big = (v1 / huge).read_bytes()
        at = min(len(big) // 3, 1 << 20) + 12345  # a little way into the file
        inserted = big[:at] + random.Random(7).randbytes(100) + big[at:]
        del big
        _derive(v1, v2, {huge: inserted})
        n, size = tree_stats(v0)
        meta.write_text(json.dumps({"huge": huge, "edit": edit_rel, "files": n, "bytes": size}))
    info = json.loads(meta.read_text())
    return Corpus(
        name="generated",
        description=(f"seeded project: {spec.small} source files, {spec.medium} assets, "
                     f"{spec.large} binaries, one {spec.huge_mb} MB file"),
        steps=[Step("v0", v0), Step("edit-one-file", v1, [info["edit"]]),
               Step("insert-100B", v2, [info["huge"]])],
        files=info["files"], bytes=info["bytes"], large_file=info["huge"])


# ---------------------------------------------------------------------------- real trees


def stdlib() -> Corpus:
    """Python's standard library (without its site-packages), as installed."""
    src = Path(sysconfig.get_paths()["stdlib"])
    dst = CACHE_DIR / f"stdlib-{sys.version_info.major}.{sys.version_info.minor}"
    if not (dst / ".done").exists():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst / "tree", symlinks=True,
                        ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
        _freeze_mtimes(dst / "tree")
        (dst / ".done").touch()
    n, size = tree_stats(dst / "tree")
    return Corpus("stdlib", f"CPython {sys.version_info.major}.{sys.version_info.minor} "
                  "standard library (no __pycache__)", [Step("v0", dst / "tree")], n, size)


def site_packages() -> Corpus:
    """The benchmark venv's site-packages (prefect, boto3, matplotlib...): a real big tree."""
    src = Path(sysconfig.get_paths()["purelib"])
    dst = CACHE_DIR / "site-packages"
    if not (dst / ".done").exists():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst / "tree", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        _freeze_mtimes(dst / "tree")
        (dst / ".done").touch()
    n, size = tree_stats(dst / "tree")
    return Corpus("site-packages", "this venv's site-packages (no __pycache__)",
                  [Step("v0", dst / "tree")], n, size)


def _diff(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """Files added or changed from tree ``a`` to tree ``b``, and files removed."""

    def files(root: Path) -> set[str]:
        out = set()
        for dirpath, _dirs, names in os.walk(root):
            for f in names:
                out.add(os.path.relpath(os.path.join(dirpath, f), root))
        return out

    fa, fb = files(a), files(b)
    changed = sorted(p for p in fb if p not in fa or not filecmp.cmp(a / p, b / p, shallow=False))
    return changed, sorted(fa - fb)


def history(project: str, versions: list[str]) -> Corpus:
    """Consecutive sdists of a real project from PyPI, each one the next "commit"."""
    base = CACHE_DIR / f"history-{project}"
    sdists = base / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []
    for v in versions:
        tree = base / f"{project}-{v}"
        done = base / f"{project}-{v}.done"
        if not done.exists():
            found = [p for p in sdists.iterdir() if p.name.lower().startswith(
                f"{project.lower()}-{v}.") and p.name.endswith(".tar.gz")]
            if not found:
                # pip is the registry's ordinary client; sdist only, no dependencies.
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                "--no-binary", ":all:", "-d", str(sdists), f"{project}=={v}"],
                               check=True)
                found = [p for p in sdists.iterdir() if p.name.lower().startswith(
                    f"{project.lower()}-{v}.") and p.name.endswith(".tar.gz")]
            shutil.rmtree(tree, ignore_errors=True)
            tmp = base / "extract"
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(found[0]) as tf:
                tf.extractall(tmp, filter="data")
            (top,) = list(tmp.iterdir())
            top.rename(tree)
            shutil.rmtree(tmp, ignore_errors=True)
            _freeze_mtimes(tree)
            done.touch()
        steps.append(Step(v, tree))
    for prev, step in itertools.pairwise(steps):
        step.changed, step.removed = _diff(prev.dir, step.dir)
    n, size = tree_stats(steps[0].dir)
    return Corpus(f"history-{project}", f"{project} sdists {', '.join(versions)} from PyPI, "
                  "pushed in order", steps, n, size)


# ---------------------------------------------------------------------------- working copies


def checkout(step: Step, work: Path) -> None:
    """Make ``work`` a fresh, real copy (own inodes) of a step's tree."""
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(step.dir), str(work)], check=True)


def advance(step: Step, work: Path) -> None:
    """Move a working copy to ``step``, rewriting only what changed (new mtimes, like an edit)."""
    for rel in step.removed:
        p = work / rel
        if p.exists() or p.is_symlink():
            p.unlink()
    for rel in step.changed:
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        data = (step.dir / rel).read_bytes()
        with open(dst, "wb") as f:  # in place, as an editor or git checkout would
            f.write(data)
