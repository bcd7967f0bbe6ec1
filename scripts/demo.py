"""`make demo`: push a sample project to a file:// store in .demo/, pull it, push again.

Shows the three things snapsync is for: a first push, a pull that verifies every byte and
keeps modes and symlinks, and a re-push that sends nothing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"


def make_project(root: Path) -> None:
    rng = random.Random(7)
    words = ["flow", "task", "retry", "bucket", "deploy", "worker", "state", "cache"]
    for pkg in range(6):
        for mod in range(25):
            p = root / "flows" / f"pkg{pkg}" / f"mod{mod}.py"
            p.parent.mkdir(parents=True, exist_ok=True)
            body = "\n".join(f"def {rng.choice(words)}_{i}():\n    return {rng.random()!r}"
                             for i in range(rng.randint(5, 60)))
            p.write_text(body + "\n")
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "model.bin").write_bytes(rng.randbytes(3 << 20))
    run = root / "run.sh"
    run.write_text("#!/bin/sh\nexec python -m flows\n")
    run.chmod(0o755)
    os.symlink("flows/pkg0/mod0.py", root / "entrypoint.py")
    (root / "logs").mkdir(exist_ok=True)  # an empty directory
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "junk.pyc").write_bytes(b"ignored by the default template")


def settle(root: Path) -> None:
    """Date the files a minute back, as in a real checkout (not edited this very second)."""
    import time

    past = time.time() - 60
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.utime(p, (past, past))


def snapsync(*args: str) -> None:
    cmd = [sys.executable, "-m", "snapsync", *args]
    print("\n$ snapsync " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "SNAPSYNC_CACHE_DIR": str(DEMO / "cache")})


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    project, store = DEMO / "project", DEMO / "store"
    project.mkdir(parents=True)
    make_project(project)
    settle(project)
    url = store.as_uri()
    snapsync("push", str(project), url, "-m", "first deploy")
    snapsync("pull", url, str(DEMO / "pulled"))
    snapsync("diff", url, "ref:latest", str(DEMO / "pulled"))
    snapsync("push", str(project), url, "-m", "nothing changed")
    (project / "flows" / "pkg1" / "mod3.py").write_text("def changed():\n    return 1\n")
    snapsync("push", str(project), url, "-m", "one file changed")
    snapsync("pull", url, str(DEMO / "pulled"))
    snapsync("log", url)
    print(f"\nThe store is in {store}; the pulled tree in {DEMO / 'pulled'}.")


if __name__ == "__main__":
    main()
