"""Build and describe small trees for tests."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path
from typing import Any


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run the snapsync CLI in-process; return (exit code, stdout, stderr)."""
    from snapsync.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_project(root: Path, seed: int = 1, files: int = 40) -> Path:
    """A small project: sources, an executable, a symlink, an empty dir, a larger binary."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        p = root / "pkg" / f"sub{i % 5}" / f"mod{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"x{j} = {rng.random()!r}\n" for j in range(rng.randint(1, 200))))
    (root / "README.md").write_text("hello\n")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o755)
    os.symlink("pkg/sub0/mod0.py", root / "entry.py")
    os.symlink("pkg", root / "pkglink")
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "assets" / "blob.bin").write_bytes(rng.randbytes(2_500_000))
    (root / "assets" / "zero.bin").write_bytes(b"")
    return root


def describe(root: Path) -> dict[str, tuple]:
    """path -> (kind, mode or target, bytes) for every entry, without following links."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode) & 0o111 != 0,
                            Path(p).read_bytes())
    return out


def backdate(root: Path, seconds: int = 60) -> None:
    """Make every mtime older, so the stat cache does not treat files as racy."""
    import time

    past = time.time() - seconds
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.utime(p, (past, past))
