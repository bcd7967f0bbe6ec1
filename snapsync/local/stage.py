"""Writing a pull's new entries: where each is staged, the folders they need, and the
:class:`Stager` that writes files on worker threads as their chunks become ready.

A new entry is written under a short flat name in a staging folder inside the target and
renamed into place at commit (``target.commit``); an empty target is written in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path

from snapsync.core.manifest import LINK_B
from snapsync.core.plan import PullPlan
from snapsync.errors import LocalFileError
from snapsync.local.tree import stat_sig
from snapsync.local.undo import Undo
from snapsync.progress import Progress


def staged_name(staging: Path | bytes, n: int) -> bytes:
    """Where the ``n``-th entry of ``plan.write`` is staged (a short, flat name)."""
    return os.path.join(os.fsencode(staging), b"%08d" % n)


Fill = Callable[[int, int], None]  # (fd, tree index): writes that file's content into fd


STAGE_UNIT = 64  # entries per write task: a task costs ~12 µs, a small file ~40 µs


class Stager:
    """Writes entries of ``plan.write`` (by index) on ``ex``'s threads as the caller hands
    them in, so a pull can write the files whose chunks are ready while later chunks are
    still downloading. The ``n``-th entry goes to :func:`staged_name` in ``staging``, or with
    ``direct`` (an empty target) to its final path there; ``fill(fd, i)`` writes file ``i``'s
    content; with ``sigs`` (5 ints per entry of ``plan.write``) each file's final stat
    signature is recorded there (for the target's stat cache, without a second ``lstat``).
    With ``mkdirs`` (and ``direct``) every folder of the plan is created first, on this
    thread (mkdir races between threads).

    :meth:`wait` collects every task (the first error as ``LocalFileError``); after any
    failure the caller calls :meth:`cancel`, which returns only when no task is running, so
    nothing is written into the target after it (an empty target is emptied again next).
    """

    def __init__(self, staging: Path, plan: PullPlan, fill: Fill, ex: Executor, prog: Progress,
                 direct: Path | None = None, sigs: array[int] | None = None, *,
                 mkdirs: bool = True, width: int | None = None) -> None:
        # At most ``width`` tasks write at once until :meth:`widen` (all of ``ex``'s threads).
        self._gate = threading.Semaphore(width) if width is not None else None
        self.staging = staging
        self.plan = plan
        self.fill = fill
        self.ex = ex
        self.prog = prog
        self.direct = direct
        self.sigs = sigs
        self._futs: list[Future[None]] = []
        self._stopped = False  # set by cancel: running tasks stop at their next entry
        self._root = os.fsencode(direct) if direct is not None else b""
        if direct is not None and mkdirs:
            made: set[bytes] = set()
            for path in plan.write.paths():  # paths only: no entry made per file
                d = path.rpartition(b"/")[0]
                if d and d not in made:  # most files share their folder with the last
                    make_dirs(self._root, d, made)

    def submit(self, todo: Sequence[int], again: bool = False) -> None:
        """Write the entries ``todo`` (indexes into ``plan.write``); with ``again``, replace
        what an earlier call wrote there. Raises the error of a task already failed."""
        self._reap()
        for i in range(0, len(todo), STAGE_UNIT):
            self._futs.append(self.ex.submit(self._write, todo[i:i + STAGE_UNIT], again))

    def widen(self, by: int) -> None:
        """Let ``by`` more tasks write at once (a pull's download has ended)."""
        if self._gate is not None and by > 0:
            self._gate.release(by)

    def wait(self) -> None:
        """Return when every submitted entry is written."""
        try:
            for f in self._futs:
                f.result()
        except OSError as exc:
            raise LocalFileError(f"cannot write into {self.staging.parent}: "
                                 f"{exc.strerror or exc}") from None
        self._futs = []

    def cancel(self) -> None:
        """Drop what has not started; stop what has at its next entry and wait for it (its
        errors are dropped too)."""
        self._stopped = True
        for f in self._futs:
            f.cancel()
        for f in self._futs:
            with contextlib.suppress(BaseException):
                f.result()
        self._futs = []

    def _reap(self) -> None:
        # Finished tasks leave the list; a failed one stops the pull now, not at the end.
        k = 0
        while k < len(self._futs) and self._futs[k].done():
            k += 1
        if k:
            done, self._futs = self._futs[:k], self._futs[k:]
            try:
                for f in done:
                    f.result()
            except OSError as exc:
                raise LocalFileError(f"cannot write into {self.staging.parent}: "
                                     f"{exc.strerror or exc}") from None

    def _write(self, items: Iterable[int], again: bool) -> None:
        if self._gate is None:
            self._write_all(items, again)
            return
        with self._gate:
            self._write_all(items, again)

    def _write_all(self, items: Iterable[int], again: bool) -> None:
        # Straight from the tree's columns: no Entry (and tuple of chunk ids) per file.
        idx, tree = self.plan.write.idx, self.plan.write.tree
        paths, kinds, modes, sizes, targets = (tree.paths, tree.kinds, tree.modes, tree.sizes,
                                               tree.targets)
        direct, staging = self.direct, self.staging
        prefix = self._root if self._root.endswith(b"/") else self._root + b"/"
        fill, sigs = self.fill, self.sigs
        mode_of, fstat = stat.S_IMODE, os.fstat
        done = 0  # bytes written: reported once per task, not per file
        try:
            for n in items:
                if self._stopped:
                    return
                i = idx[n]
                # A manifest path is relative and checked (check_paths): joined by hand, as
                # os.path.join would, at a fraction of its cost per file.
                name = prefix + paths[i] if direct is not None else staged_name(staging, n)
                if again:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name)
                if kinds[i] == LINK_B:
                    os.symlink(targets[i], name)
                    continue
                mode = modes[i]
                # Created with its mode (the umask or a default ACL may take bits away: then
                # fchmod); an fstat is cheaper than an fchmod, which dirties the inode again.
                fd = os.open(name, _CREATE, mode)
                try:
                    fill(fd, i)
                    st = fstat(fd)
                    if mode_of(st.st_mode) != mode:
                        os.fchmod(fd, mode)
                        st = fstat(fd)
                    if sigs is not None:
                        sigs[5 * n:5 * n + 5] = array("q", stat_sig(st))
                finally:
                    os.close(fd)
                done += sizes[i]
        finally:
            if done:
                self.prog.advance(done)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def make_dirs(root: bytes, rel_dir: bytes, made: set[bytes], undo: Undo | None = None) -> None:
    """Create ``rel_dir`` under ``root``, replacing any file or symlink in the way (moved
    aside into ``undo``'s backup when given, so that a failed commit can put it back)."""
    if not rel_dir or rel_dir in made:
        return
    make_dirs(root, rel_dir.rpartition(b"/")[0], made, undo)
    p = os.path.join(root, rel_dir)
    try:
        st = os.lstat(p)
        if not stat.S_ISDIR(st.st_mode):
            if undo is not None:
                undo.stash(p)
            else:
                os.unlink(p)
            _mkdir(p, undo)
    except FileNotFoundError:
        _mkdir(p, undo)
    made.add(rel_dir)


def _mkdir(path: bytes, undo: Undo | None) -> None:
    os.mkdir(path)
    if undo is not None:
        undo.created(path)
