"""Git as a file selector and as snapshot metadata: what ``push --git`` ships and records.

``push --git`` ships exactly the files git tracks under the pushed folder (``git ls-files``),
plus, on request, untracked files that ``.gitignore`` does not exclude. So ``.gitignore`` is
honoured without a ``.prefectignore``, and a tracked file that Prefect's default template
would drop (``.env``, ``.python-version``) still ships, because git says it is code.

``git:<commit-prefix>`` as a snapshot name resolves, from the refs' logs, to the newest
snapshot whose log entry recorded that commit and a clean tree; ``git:<prefix>+dirty`` also
accepts snapshots pushed from a tree with uncommitted changes (a clean one still wins).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapsync.errors import LocalFileError, NotFoundError, UsageError

if TYPE_CHECKING:
    from snapsync.core.ignore import IgnoreRules
    from snapsync.repository import Repository, SnapshotInfo

GIT_PREFIX = "git:"
DIRTY_SUFFIX = "+dirty"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              timeout=60, check=False)
    except FileNotFoundError:
        raise LocalFileError("push --git needs the git command, and it is not on PATH") \
            from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalFileError(f"git failed in {root}: {exc}") from None


def _git_text(root: Path, *args: str) -> str:
    out = _git(root, *args)
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip().splitlines()
        raise LocalFileError(f"{root}: git {' '.join(args)} failed: "
                             f"{msg[-1] if msg else out.returncode}")
    return out.stdout.decode(errors="surrogateescape").strip()


def git_info(root: Path) -> dict[str, object]:
    """Commit, branch and dirtiness of the git work tree that tracks ``root``, else ``{}``.

    Only when git tracks the folder itself (it is in HEAD's tree): a folder that merely lies
    inside some repository (ignored, untracked, a build dir) records nothing, or the log would
    name a commit that does not hold the pushed files. ``path`` says which folder of the work
    tree was pushed ("" for its top).
    """

    def git(*args: str) -> str | None:  # best effort: a plain push never fails for git
        try:
            out = _git(root, *args)
        except (LocalFileError, ValueError):
            return None
        return out.stdout.decode(errors="surrogateescape").strip() \
            if out.returncode == 0 else None

    if git("rev-parse", "--is-inside-work-tree") != "true":
        return {}
    commit = git("rev-parse", "--verify", "-q", "HEAD")
    prefix = git("rev-parse", "--show-prefix")
    if not commit or prefix is None:
        return {}
    prefix = prefix.rstrip("/")
    if prefix and not git("rev-parse", "--verify", "-q", f"HEAD:{prefix}"):
        return {}  # inside a work tree, but not a folder that git tracks
    status = git("status", "--porcelain", "--untracked-files=normal", "--", ".")
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD") or "",
            "dirty": bool(status), "path": prefix}


def git_files(root: str | os.PathLike[str], *, untracked: bool = False) -> list[str]:
    """The files git tracks under ``root`` (relative posix paths), sorted.

    Args:
        root: a folder inside a git work tree (the project folder; may be a subfolder).
        untracked: also list untracked files that ``.gitignore`` does not exclude.

    Returns:
        Paths relative to ``root``. Tracked files deleted from the work tree are left out
        (the snapshot is of the work tree); submodules (gitlinks) are left out too.

    Raises:
        LocalFileError: ``root`` is not inside a git work tree, or git is missing.
    """
    rootp = Path(root).resolve()
    probe = _git(rootp, "rev-parse", "--is-inside-work-tree")
    if probe.returncode != 0 or probe.stdout.strip() != b"true":
        raise LocalFileError(f"{rootp} is not inside a git work tree (push --git needs one)")
    # -z: names are not quoted; --full-name is not used: paths come relative to root.
    args = ["ls-files", "-z", "--cached", "--stage"]
    staged = _git(rootp, *args, "--", ".")
    if staged.returncode != 0:
        raise LocalFileError(f"{rootp}: git ls-files failed: "
                             f"{staged.stderr.decode(errors='replace').strip()}")
    out: set[str] = set()
    for rec in staged.stdout.split(b"\0"):
        if not rec:
            continue
        meta, _, name = rec.partition(b"\t")
        if meta.startswith(b"160000"):
            continue  # a submodule: its files are another repository's
        out.add(os.fsdecode(name))
    if untracked:
        extra = _git(rootp, "ls-files", "-z", "--others", "--exclude-standard", "--", ".")
        out.update(os.fsdecode(n) for n in extra.stdout.split(b"\0") if n)
    # Deleted but still in the index: the work tree is what is shipped.
    return sorted((p for p in out if os.path.lexists(rootp / p)), key=os.fsencode)


def git_facts(root: str | os.PathLike[str], *, untracked: bool = False) -> dict[str, Any]:
    """Commit, branch and dirtiness of what ``push --git`` ships from ``root``.

    ``dirty`` is true when a shipped file differs from the commit: a tracked file changed or
    staged, or (with ``untracked``) an untracked file is shipped too. Untracked files that
    are not shipped do not make the snapshot dirty, unlike a plain push's facts.
    """
    rootp = Path(root).resolve()
    commit = _git_text(rootp, "rev-parse", "HEAD")
    branch = _git(rootp, "rev-parse", "--abbrev-ref", "HEAD").stdout.decode().strip()
    mode = "--untracked-files=normal" if untracked else "--untracked-files=no"
    status = _git_text(rootp, "status", "--porcelain", mode, "--", ".")
    return {"commit": commit, "branch": branch, "dirty": bool(status),
            "files": "tracked+untracked" if untracked else "tracked"}


class SelectedFiles:
    """Ignore rules that admit exactly ``paths`` (and the folders leading to them).

    Duck-types :class:`snapsync.core.ignore.IgnoreRules` for the walk, which then prunes every
    folder holding no selected file (a ``.venv`` is never entered). ``patterns`` and
    ``source`` are the base rules', so a later ``pull --delete`` still spares local paths
    such as ``.venv/`` that the project's ignore rules name.
    """

    def __init__(self, paths: Iterable[str], base: IgnoreRules, source: str) -> None:
        self.files = set(paths)
        self.dirs = {p.rsplit("/", i)[0] for p in self.files
                     for i in range(1, p.count("/") + 1)}
        self.patterns = base.patterns
        self.source = source

    def ignored(self, rel: str, is_dir: bool) -> bool:
        return rel not in (self.dirs if is_dir else self.files)


# ------------------------------------------------------------------- git:<commit> names


def parse_git_name(name: str) -> tuple[str, bool]:
    """``git:<prefix>[+dirty]`` -> (lower-case prefix, dirty allowed)."""
    body = name[len(GIT_PREFIX):].strip()
    allow_dirty = body.endswith(DIRTY_SUFFIX)
    if allow_dirty:
        body = body[:-len(DIRTY_SUFFIX)]
    prefix = body.lower()
    if len(prefix) < 4 or len(prefix) > 40 or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"snapshot {name!r}: git:<commit> needs a hex commit id or a prefix "
                         "of at least 4 characters (optionally +dirty)")
    return prefix, allow_dirty


def matches_commit(info: SnapshotInfo, prefix: str) -> bool:
    """Whether a log entry recorded a commit starting with ``prefix``."""
    commit = str((info.git or {}).get("commit") or "").lower()
    return bool(commit) and commit.startswith(prefix.lower())


def resolve_git(repo: Repository, name: str, refs: Collection[str] | None = None) -> str:
    """The snapshot id ``git:<prefix>[+dirty]`` names in ``repo``.

    Args:
        repo: an opened repository.
        name: ``git:<commit-prefix>``, optionally with ``+dirty``.
        refs: the refs whose logs are searched (default: every ref).

    Returns:
        The newest snapshot (by log time) recorded with that commit and a clean tree; with
        ``+dirty``, the newest dirty one when no clean one exists.

    Raises:
        UsageError: a malformed name, or a prefix matching several commits.
        NotFoundError: no log entry recorded that commit (the message says when only
            snapshots of a dirty tree did).
    """
    prefix, allow_dirty = parse_git_name(name)
    names = list(refs) if refs else sorted(repo.list_refs())
    hits = [e for ref in names for e in repo.log(ref) if matches_commit(e, prefix)]
    where = repo.store.display_url
    if not hits:
        raise NotFoundError(f"no snapshot in {where} recorded git commit {prefix} "
                            f"(refs searched: {', '.join(names) or 'none'})")
    commits = sorted({str(e.git.get("commit")) for e in hits})
    if len(commits) > 1:
        raise UsageError(f"snapshot {name!r} is ambiguous: commits {', '.join(commits[:5])}")
    clean = [e for e in hits if not e.git.get("dirty")]
    pick = clean or (hits if allow_dirty else [])
    if not pick:
        raise NotFoundError(f"commit {commits[0][:12]} was pushed to {where} only from a "
                            f"dirty tree; use git:{prefix}{DIRTY_SUFFIX} to accept that")
    return max(pick, key=lambda e: e.time_ns).snapshot
