"""The pull commit's journal: what it replaced, created, chmod-ed or removed, so that a
failure half-way puts the old tree back (docs/design.md, "plan, then execute")."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any


class Undo:
    """What a commit changed in the target, so that a failure can put the old tree back.

    Whatever a commit replaces or deletes is renamed into ``backup`` (a folder in the staging
    folder, so on the same file system) instead of being removed; created names, changed
    modes and removed folders are recorded. :meth:`rollback` replays it all backwards. On
    success the backup goes with the staging folder.
    """

    def __init__(self, backup: bytes) -> None:
        self.backup = backup
        self.steps: list[tuple[str, bytes, Any]] = []
        os.makedirs(backup, exist_ok=True)

    def stash(self, path: bytes) -> None:
        """Move the entry at ``path`` aside."""
        dst = os.path.join(self.backup, b"%08d" % len(self.steps))
        os.rename(path, dst)
        self.steps.append(("stashed", path, dst))

    def created(self, path: bytes) -> None:
        self.steps.append(("created", path, None))

    def chmodded(self, path: bytes, old_mode: int) -> None:
        self.steps.append(("mode", path, old_mode))

    def removed_dir(self, path: bytes, mode: int) -> None:
        self.steps.append(("rmdir", path, mode))

    def rollback(self) -> None:
        """Undo every recorded step, newest first; best effort, never raises."""
        for kind, path, arg in reversed(self.steps):
            with contextlib.suppress(OSError):
                if kind in ("created", "stashed"):
                    _remove(path)  # what the commit put there, if anything
                if kind == "stashed":
                    os.rename(arg, path)
                elif kind == "mode" and stat.S_ISREG(os.lstat(path).st_mode):
                    os.chmod(path, arg)
                elif kind == "rmdir":
                    os.mkdir(path, arg)
        self.steps.clear()


def _remove(path: bytes) -> None:
    """Remove what a commit put at ``path``: a file or link, or a folder it made (by then
    emptied by the steps undone before; a folder holding anything else is left)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(path)
    else:
        os.unlink(path)
