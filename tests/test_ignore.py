"""Ignore rules behave as Prefect's own `.prefectignore` filter (pathspec GitIgnoreSpec).

Prefect's `filter_files` runs in a subprocess: importing prefect loads its settings once per
process, and the step-runner tests need them set differently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from snapsync.core.ignore import DEFAULT_PATTERNS, IgnoreRules, resolve_rules
from snapsync.local.tree import scan

FILES = [
    "flows/hello.py", "flows/sub/deep.txt", "flows/sub/deep/x.txt", "data/big.bin",
    "data/keep.csv", "keep/important.bin", "keep/other.bin", "run.sh", "anch", "sub/anch",
    "docs/a.md", "docs/x/y/b.md", "docs/x/c.txt", "__pycache__/m.pyc", "pkg/__pycache__/n.pyc",
    "mod.pyc", ".git/HEAD", ".venv/bin/python", "venv/x", "env/y", "my env/z", ".env",
    "name with spaces.py", "ünïcode.py", ".prefectignore", "a.egg-info/PKG-INFO",
    "notes.ipynb_checkpoints/x", ".idea/ws.xml", "src/.DS_Store",
]

CASES = {
    "default": list(DEFAULT_PATTERNS),
    "data": ["data/", "*.bin", "!keep/important.bin"],
    "star-negate": ["*", "!flows/", "!flows/*"],
    "star-negate-deep": ["*", "!flows/", "!flows/**"],
    "anchors": ["/anch", "**/deep/*.txt", "docs/**/*.md", "# comment", "", "my env/"],
    "negate-file": ["*.py", "!hello.py", "*.pyc"],
}

PREFECT_SCRIPT = """
import json, sys
from prefect.utilities.filesystem import filter_files
root, cases = sys.argv[1], json.loads(sys.argv[2])
out = {}
for name, patterns in cases.items():
    out[name] = sorted(filter_files(root, patterns, include_dirs=False, as_posix=True))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ignore-tree")
    for rel in FILES:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    return root


@pytest.fixture(scope="module")
def prefect_results(tree: Path) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", PREFECT_SCRIPT, str(tree), json.dumps(CASES)],
                         capture_output=True, text=True, timeout=120,
                         env={"PREFECT_API_URL": "http://127.0.0.1:9/api",
                              "PREFECT_HOME": str(tree.parent / "prefect-home"),
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ours(tree: Path, patterns: list[str]) -> list[str]:
    entries = scan(tree, IgnoreRules(patterns, "test"), lambda _m: None)
    return sorted(e.path for e in entries if e.kind == "f")


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_files_as_prefect(case, tree, prefect_results):
    assert _ours(tree, CASES[case]) == prefect_results[case]


def test_no_reinclude_under_an_excluded_directory(tree, prefect_results):
    """git's rule, on purpose: `!data/keep.csv` cannot re-include below an ignored `data/`."""
    ours = _ours(tree, ["data/", "!data/keep.csv"])
    assert "data/keep.csv" not in ours and "flows/hello.py" in ours


def test_resolve_rules(tmp_path):
    rules, note = resolve_rules(tmp_path, None)
    assert rules.source.startswith("Prefect's default") and note and ".prefectignore" in note
    rules, note = resolve_rules(tmp_path, None, use_default=False)
    assert rules.patterns == [] and note is None
    (tmp_path / ".prefectignore").write_text("*.log\n")
    rules, note = resolve_rules(tmp_path, None)
    assert rules.patterns == ["*.log"] and note is None
    (tmp_path / "custom.ignore").write_text("x/\n")
    rules, _ = resolve_rules(tmp_path, "custom.ignore")
    assert rules.ignored("x", True) and not rules.ignored("x", False)
    from snapsync.errors import IgnoreFileError

    with pytest.raises(IgnoreFileError, match="missing.ignore"):
        resolve_rules(tmp_path, "missing.ignore")
