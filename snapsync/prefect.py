"""Prefect integration beyond ``prefect.yaml``: a ``RunnerStorage`` for ``flow.from_source``.

``SnapsyncStorage`` satisfies ``prefect.runner.storage.RunnerStorage``, so it works with
``flow.from_source(...)``, ``.deploy(...)`` and ``.serve(...)``::

    from prefect import flow
    from snapsync.prefect import SnapsyncStorage

    storage = SnapsyncStorage("s3://my-bucket/my-project")
    storage.push(".")                                  # optional: push, pin what was pushed
    flow.from_source(storage, entrypoint="flows/hello.py:hello").deploy(
        name="hello", work_pool_name="my-pool")

How a pull works, and why:

- The destination is a symlink to a *generation* folder ``.<name>.snapsync/<snapshot>.<ns>``.
  A new snapshot is pulled into a new generation, seeded with hard links to the current one
  (no file is copied or downloaded twice: snapsync replaces files by rename and never writes
  into a linked file; a file whose mode changes is copied, not linked), then the symlink is
  swapped with one ``rename``. A flow run that starts meanwhile sees the old tree or the new
  one, never a mix, and keeps its tree while it runs (two older generations are kept).
- A periodic pull (``serve``) whose ref still names the current snapshot costs one small GET.
- Pulls into one destination take a file lock, so two runners or threads serialize.
- ``to_pull_step()`` emits ``snapsync.steps.pull`` pinned to a snapshot id: the one given,
  else the one :meth:`SnapsyncStorage.push` pushed, else the ref's head at deploy time. Block
  values in ``storage_options`` become ``{{ prefect.blocks... }}`` placeholders, as
  ``RemoteStorage`` does; plain strings under secret-looking keys are refused.

This module imports Prefect; the rest of snapsync never does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from prefect.logging.loggers import get_logger
from prefect.utilities.collections import visit_collection

import snapsync
from snapsync.credentials import is_secret_name
from snapsync.errors import LocalFileError, UsageError

__all__ = ["SnapsyncStorage", "step_log"]

PULL_STEP = "snapsync.steps.pull"
KEEP_OLD_GENERATIONS = 2
_GEN_DIR = ".{}.snapsync"  # next to the destination, on the same file system (rename, link)


def step_log(level: int, msg: str) -> None:
    """Log a step's summary or error where a Prefect user looks.

    In a flow run (``PREFECT__FLOW_RUN_ID`` set by the worker) the record goes to the flow
    run's logger, so it is shipped to the run's logs in the UI; otherwise (``prefect
    deploy``, a script) to Prefect's console logger ``prefect.snapsync``.
    """
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if run_id:
        try:
            from prefect.logging.loggers import flow_run_logger

            flow_run_logger(flow_run_id=uuid.UUID(run_id)).log(level, msg)
            return
        except ValueError:
            pass  # not a run id: fall back to the console logger
    get_logger("snapsync").log(level, msg)


def _block_value(obj: Any) -> Any:
    # Like RemoteStorage: a Secret gives .get(), a String .value, other blocks their fields.
    if isinstance(obj, Block):
        if get := getattr(obj, "get", None):
            return get()
        if hasattr(obj, "value"):
            return obj.value
        return obj.model_dump()
    return obj


def _block_placeholder(obj: Any) -> Any:
    if isinstance(obj, Block):
        return f"{{{{ {obj.get_block_placeholder()} }}}}"
    return obj


def _plain_secrets(options: Any, path: str = "") -> list[str]:
    """Names of storage options that would put a secret in the deployment as plain text."""
    found: list[str] = []
    if isinstance(options, dict):
        for k, v in options.items():
            name = f"{path}.{k}" if path else str(k)
            if isinstance(v, dict):
                found += _plain_secrets(v, name)
            elif is_secret_name(k) and isinstance(v, str) and v and "{{" not in v:
                found.append(name)
    return found


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, across processes and threads (flock per open file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.name == "nt":  # pragma: no cover
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _clone(src: Path, dst: Path, modes: dict[str, int]) -> None:
    """Mirror ``src`` into the new folder ``dst`` with hard links (copies where a mode changes).

    A linked file must never be written in place: snapsync's pull replaces files by rename,
    but changes modes with chmod, so a file whose exec bit the new snapshot flips is copied.
    Files the new snapshot lacks are left out (the pull would delete them anyway).
    """
    dst.mkdir()
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        out_dir = dst if rel_dir == "." else dst / rel_dir
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                os.symlink(os.readlink(p), out_dir / name)
            else:
                (out_dir / name).mkdir()
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(p), out_dir / name)
                continue
            want = modes.get(rel)
            if want is None or not stat.S_ISREG(st.st_mode):
                continue
            if bool(want & 0o100) != bool(st.st_mode & stat.S_IXUSR):
                shutil.copy2(p, out_dir / name)
                continue
            try:
                os.link(p, out_dir / name)
            except OSError:  # a file system without hard links: a copy does the same job
                shutil.copy2(p, out_dir / name)


class SnapsyncStorage:
    """Flow code in a snapsync store, for ``flow.from_source``, ``.deploy`` and ``.serve``.

    Args:
        url: the store's fsspec URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``).
        storage_options: passed to fsspec; values may be Prefect blocks (e.g.
            ``Secret.load("aws-secret")``), resolved at pull time and written to a
            deployment's pull step as block placeholders.
        ref: the ref to follow (default ``latest``).
        snapshot: pin a snapshot (id, unique prefix or ``git:<commit>``) instead of
            following the ref.
        pull_interval: seconds between pulls under ``serve`` (``None``: pull once).
        name: the destination folder's name under the base path (default: from the URL,
            as ``RemoteStorage`` does).
        cache_dir: snapsync's local cache (default ``$SNAPSYNC_CACHE_DIR`` or the user cache
            dir); the chunk cache there makes a pull into a fresh folder download nothing.

    Raises:
        UsageError: an empty URL.
    """

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None,
                 ref: str = "latest", snapshot: str | None = None,
                 pull_interval: int | None = 60, name: str | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        if not str(url or "").strip():
            raise UsageError("SnapsyncStorage: url must not be empty")
        self._url = str(url)
        self._storage_options = dict(storage_options or {})
        self._ref = ref or "latest"
        self._snapshot = snapshot or None
        self._pull_interval = pull_interval
        self._name = name
        self._cache_dir = str(cache_dir) if cache_dir is not None else None
        self._base = Path.cwd()
        self._pinned: str | None = None
        self._logger = get_logger("snapsync.storage")

    # ---- RunnerStorage ----------------------------------------------------------------
    def set_base_path(self, path: Path) -> None:
        """Set the folder the destination lives in (Prefect calls this)."""
        self._base = Path(path)

    @property
    def pull_interval(self) -> int | None:
        """Seconds between pulls under ``serve``; ``None`` pulls once."""
        return self._pull_interval

    @property
    def destination(self) -> Path:
        """Where the code is: a symlink to the current generation folder."""
        if self._name:
            return self._base / self._name
        _, netloc, path, _, _ = urlsplit(self._url)
        rel = Path(netloc) / path.lstrip("/")
        return self._base / (rel if str(rel) not in ("", ".") else "snapsync")

    @property
    def pinned(self) -> str | None:
        """The snapshot the last :meth:`push` made (what ``to_pull_step`` pins)."""
        return self._pinned

    async def pull_code(self) -> None:
        """Make :attr:`destination` hold the snapshot (incremental, atomic, locked)."""
        await asyncio.to_thread(self.pull)

    def to_pull_step(self) -> dict[str, Any]:
        """``snapsync.steps.pull`` pinned to a snapshot id, credentials as block placeholders.

        Raises:
            UsageError: a secret-looking storage option is a plain string.
        """
        plain = _plain_secrets(self._storage_options)
        if plain:
            raise UsageError(
                f"SnapsyncStorage({self._url}): storage option(s) {', '.join(plain)} would be "
                "written into the deployment as plain text; pass a block instead, e.g. "
                "Secret.load('name'), or leave credentials to the worker's environment")
        step: dict[str, Any] = {"requires": "snapsync", "url": self._url,
                                "snapshot": self._pin()}
        if self._storage_options:
            step["storage_options"] = visit_collection(
                self._storage_options, _block_placeholder, return_data=True)
        return {PULL_STEP: step}

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, SnapsyncStorage):
            return False
        return (self._url, self._storage_options, self._ref, self._snapshot, self._name) == (
            other._url, other._storage_options, other._ref, other._snapshot, other._name)

    __hash__ = None  # type: ignore[assignment]  # mutable, like Prefect's storages

    def __repr__(self) -> str:
        pin = f", snapshot={self._snapshot!r}" if self._snapshot else ""
        return f"SnapsyncStorage(url={self._url!r}, ref={self._ref!r}{pin})"

    # ---- push side ----------------------------------------------------------------------
    def push(self, root: str | os.PathLike[str] = ".", *, message: str = "",
             git: bool = False, untracked: bool = False,
             ignore_file: str | os.PathLike[str] | None = None) -> snapsync.PushResult:
        """Push ``root`` to the store's ref and pin the result for :meth:`to_pull_step`.

        Args:
            root: the project folder.
            message: stored with the snapshot.
            git: ship exactly the files git tracks (``push --git``).
            untracked: with ``git``, also untracked files ``.gitignore`` does not exclude.
            ignore_file: gitignore-style rules (default ``root/.prefectignore``).

        Returns:
            The :class:`snapsync.PushResult`; ``snapshot_id`` is now :attr:`pinned`.
        """
        only = facts = None
        if git:
            from snapsync.local.git import git_facts, git_files

            only, facts = git_files(root, untracked=untracked), git_facts(root,
                                                                          untracked=untracked)
        result = snapsync.push(root, self._url, storage_options=self._options(), ref=self._ref,
                               message=message, ignore_file=ignore_file,
                               cache_dir=self._cache_dir, only=only, git_facts=facts)
        self._pinned = result.snapshot_id
        step_log(logging.INFO, f"snapsync: pushed {Path(root).resolve()} to {result.url} as "
                               f"snapshot {result.snapshot_id[:12]} (ref {result.ref}): "
                               f"{result.files} files, {result.bytes_uploaded} bytes uploaded"
                               f"{' (unchanged)' if result.unchanged else ''}")
        return result

    # ---- internals ----------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return visit_collection(self._storage_options, _block_value, return_data=True)

    def _repository(self, options: dict[str, Any]) -> Any:
        # The one place this module reaches below the public API (ref and manifest reads).
        from snapsync.local.tree import default_cache_dir
        from snapsync.repository import Repository
        from snapsync.store import open_store

        cache = Path(self._cache_dir) if self._cache_dir else default_cache_dir()
        return Repository(open_store(self._url, options), cache)

    def _pin(self) -> str:
        if self._snapshot is None and self._pinned:
            return self._pinned
        repo = self._repository(self._options())
        return str(repo.resolve(None if self._snapshot else self._ref, self._snapshot))

    def pull(self) -> snapsync.PullResult | None:
        """The synchronous pull behind :meth:`pull_code`; ``None`` when already current."""
        dest = self.destination
        home = dest.parent / _GEN_DIR.format(dest.name)
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalFileError(f"cannot create {home}: {exc.strerror}") from None
        with _file_lock(home / "lock"):
            return self._pull_locked(dest, home)

    def _pull_locked(self, dest: Path, home: Path) -> snapsync.PullResult | None:
        t0 = time.perf_counter()
        options = self._options()
        repo = self._repository(options)
        sid = str(repo.resolve(None if self._snapshot else self._ref, self._snapshot))
        current = dest.parent / os.readlink(dest) if dest.is_symlink() else None
        if current is not None and current.name.split(".")[0] == sid and current.is_dir():
            self._logger.debug("snapsync: %s already holds snapshot %s", dest, sid[:12])
            return None
        if current is None and dest.exists():
            # A plain folder from before (or a user's): it becomes the seed generation.
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            else:
                legacy = home / f"legacy.{time.time_ns()}"
                os.replace(dest, legacy)
                current = legacy
        for stale in home.glob("tmp-*"):  # a crashed pull's leftovers (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = home / f"tmp-{uuid.uuid4().hex}"
        if current is not None and current.is_dir():
            modes = {e.name: e.mode for e in repo.load_manifest(sid).files()}
            _clone(current, tmp, modes)
        # The store this pull resolved the snapshot with (config and ref already read).
        result = snapsync.pull(repo.store, tmp, snapshot=sid, delete=True,
                               cache_dir=self._cache_dir)
        gen = home / f"{sid}.{time.time_ns()}"
        os.rename(tmp, gen)
        link = dest.parent / f".{dest.name}.link-{uuid.uuid4().hex}"
        os.symlink(os.path.join(home.name, gen.name), link)
        os.replace(link, dest)  # the atomic switch: old tree or new tree, never a mix
        self._prune(home, gen)
        step_log(logging.INFO,
                 f"snapsync: pulled snapshot {sid[:12]} from {result.url} into {dest}: "
                 f"{result.files} files, {result.files_written} written, {result.deleted} "
                 f"removed, {result.bytes_downloaded} bytes downloaded, "
                 f"{time.perf_counter() - t0:.2f} s")
        return result

    @staticmethod
    def _prune(home: Path, keep: Path) -> None:
        """Drop generations beyond the current one and the two before it."""
        gens = sorted((p for p in home.iterdir() if p.is_dir() and "." in p.name
                       and not p.name.startswith("tmp-") and p != keep),
                      key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
        for old in gens[KEEP_OLD_GENERATIONS:]:
            shutil.rmtree(old, ignore_errors=True)
