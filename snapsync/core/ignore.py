"""Ignore rules: ``.prefectignore`` with gitignore semantics, as Prefect reads it.

Pure apart from reading the rules file. Prefect builds ``pathspec.GitIgnoreSpec`` from the
stripped lines of the one file at the root; so do we. One difference, on purpose and as in git:
the walk never descends into an ignored directory, so ``!dir/file`` cannot re-include a file
under an ignored ``dir/`` (Prefect's per-file filter would ship it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snapsync.errors import IgnoreFileError

# Prefect 3.9.1's default template (prefect/.prefectignore), applied when no ignore file exists
# so that .git/, __pycache__/ and virtual envs never ship.
DEFAULT_PATTERNS: tuple[str, ...] = (
    ".prefectignore",
    "__pycache__/",
    "*.py[cod]",
    "*$py.class",
    "*.egg-info/",
    "*.egg",
    ".mypy_cache/",
    ".dmypy.json",
    "dmypy.json",
    ".pyre/",
    "profile_default/",
    "ipython_config.py",
    "*.ipynb_checkpoints/*",
    ".python-version",
    ".env",
    ".venv",
    "env/",
    "venv/",
    ".DS_Store",
    "dask-worker-space/",
    ".idea/",
    ".vscode/",
    ".git/",
    ".hg/",
)


DEFAULT_SOURCE = "Prefect's default .prefectignore template"


class IgnoreRules:
    """A compiled set of gitignore patterns. ``source`` says where they came from."""

    def __init__(self, patterns: list[str] | tuple[str, ...], source: str, *,
                 lazy: bool = False) -> None:
        """``lazy``: compile (and check) the patterns on first use, not now. A push whose
        stat cache holds the decisions made under these very rules never matches a path,
        and so never imports pathspec."""
        self._lines = patterns
        self.patterns = [p for p in (line.strip() for line in patterns)
                         if p and not p.startswith("#")]
        self.source = source
        # Directories the walk pruned with these rules, for the default template's note.
        self.pruned: list[str] = []
        self._spec: Any = None
        self._simple: Any = None
        self._dir_patterns: list[Any] = []
        if not lazy:
            self.compile()

    def compile(self) -> None:
        """Compile the patterns; ``IgnoreFileError`` naming the line of an invalid one."""
        if self._spec is not None:
            return
        import pathspec

        try:
            self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)
        except (ValueError, TypeError) as exc:  # pathspec's GitIgnorePatternError
            raise IgnoreFileError(f"{self.source}: {_bad_line(self._lines, exc)}") from None
        self._dir_patterns = [p for p in reversed(self._spec.patterns) if p.include is not None]

    @classmethod
    def none(cls) -> IgnoreRules:
        return cls([], "none")

    @classmethod
    def default(cls) -> IgnoreRules:
        return cls(DEFAULT_PATTERNS, DEFAULT_SOURCE)

    @classmethod
    def from_file(cls, path: str | Path, *, lazy: bool = False) -> IgnoreRules:
        """Read gitignore rules from ``path`` (UTF-8; a BOM is allowed, as git allows it)."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise IgnoreFileError(f"cannot read ignore file {p}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise IgnoreFileError(f"ignore file {p}: line {line} is not valid UTF-8 (byte "
                                  f"{raw[exc.start]:#04x}); save the file as UTF-8") from None
        return cls(text.splitlines(), str(p), lazy=lazy)

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether the posix relative path ``rel`` (a file, or a directory) is excluded.

        Files use ``GitIgnoreSpec`` exactly as Prefect does. A directory is decided as git
        decides it: the last pattern matching ``rel/`` wins. (``GitIgnoreSpec`` ranks a
        directory-only match below a wildcard one, so ``["*", "!flows/"]`` would prune
        ``flows/`` although Prefect ships ``flows/hello.py`` under those rules.)
        """
        if not self.patterns:
            return False
        if self._spec is None:
            self.compile()
        if not is_dir:
            try:
                return self._spec.match_file(rel)
            except UnicodeEncodeError:
                # RE2 takes UTF-8 only; a non-UTF-8 name (surrogate escapes) uses Python's re.
                if self._simple is None:
                    import pathspec

                    self._simple = pathspec.GitIgnoreSpec.from_lines(self.patterns,
                                                                     backend="simple")
                return self._simple.match_file(rel)
        path = rel + "/"
        for pat in self._dir_patterns:
            if pat.match_file(path):
                if pat.include:
                    self.pruned.append(path)
                return bool(pat.include)
        return False


def _bad_line(lines: list[str] | tuple[str, ...], exc: Exception) -> str:
    """Say which line of an ignore file pathspec refused, and why."""
    import pathspec

    for no, line in enumerate(lines, 1):
        p = line.strip()
        if not p or p.startswith("#"):
            continue
        try:
            pathspec.GitIgnoreSpec.from_lines([p])
        except (ValueError, TypeError):
            hint = (" (a lone '!' negates nothing)" if p == "!" else
                    " (a trailing '\\' escapes nothing; write '\\\\' for a backslash)"
                    if p.endswith("\\") else "")
            return f"line {no}: invalid pattern {p!r}{hint}"
    return f"invalid pattern ({exc})"


def default_ignore_note(note: str, rules: IgnoreRules, first: int = 5) -> str:
    """The default template's note, naming the folders it dropped (first few and a count)."""
    head, sep, tail = note.partition("; --no-default-ignore")
    if not rules.pruned:
        dropped = "it left out no folder"
    else:
        shown = ", ".join(sorted(rules.pruned)[:first])
        more = f" and {len(rules.pruned) - first} more" if len(rules.pruned) > first else ""
        n = len(rules.pruned)
        dropped = f"it left out {n} folder{'s' if n > 1 else ''}: {shown}{more}"
    return f"{head}; {dropped}{sep}{tail}"


def default_ignore_digest(rules: IgnoreRules) -> str:
    """A short digest of what the default template dropped: the note is repeated when the
    set of dropped folders changes, not on every push."""
    import hashlib

    return hashlib.sha256("\0".join(sorted(rules.pruned)).encode("utf-8",
                                                                   "surrogateescape")
                          ).hexdigest()[:16]


def resolve_rules(root: Path, ignore_file: str | Path | None,
                  use_default: bool = True, *, lazy: bool = False
                  ) -> tuple[IgnoreRules, str | None]:
    """Pick the rules for a push and return them with a note for the user, if any.

    ``ignore_file`` relative paths are taken relative to ``root``. When it is ``None`` the
    root's ``.prefectignore`` is used if present, else the default template (unless
    ``use_default`` is off). An explicitly named file that does not exist is an error.
    """
    if ignore_file is not None:
        p = Path(ignore_file)
        if not p.is_absolute():
            p = root / p
        if p.exists():
            return IgnoreRules.from_file(p, lazy=lazy), None
        if Path(ignore_file).name != ".prefectignore":
            raise IgnoreFileError(f"ignore file {p} does not exist (--ignore-file)")
    else:
        p = root / ".prefectignore"
        if p.exists():
            return IgnoreRules.from_file(p, lazy=lazy), None
    if use_default:
        return IgnoreRules(DEFAULT_PATTERNS, DEFAULT_SOURCE, lazy=lazy), (
            f"no {p.name} in {root}: using Prefect's default ignore template "
            "(.git/, __pycache__/, virtual envs...); --no-default-ignore turns this off")
    return IgnoreRules.none(), None
