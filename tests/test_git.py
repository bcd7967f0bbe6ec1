"""push --git ships git's file list; git:<commit> names resolve through the refs' logs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from treeutil import run_cli as run

from snapsync.local.git import git_files


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True, env=env, timeout=60).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "hello.py").write_text("print('v1')\n")
    (root / ".env").write_text("TRACKED=1\n")  # Prefect's template would drop it; git ships it
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "link.py").symlink_to("flows/hello.py")
    (root / ".gitignore").write_text("build/\n*.log\n.venv/\n")
    (root / "build").mkdir()
    (root / "build" / "out.bin").write_bytes(b"x")
    (root / "debug.log").write_text("noise\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "site.py").write_text("")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    (root / "notes.txt").write_text("untracked, not ignored\n")
    return root


def ls(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> set[str]:
    code, out, err = run(capsys, "ls", url, "--json", *extra)
    assert code == 0, err
    return {e["path"] for e in json.loads(out)["entries"]}


def test_git_files_lists_tracked_and_optionally_untracked(repo: Path) -> None:
    assert git_files(repo) == [".env", ".gitignore", "flows/hello.py", "link.py", "run.sh"]
    assert "notes.txt" in git_files(repo, untracked=True)
    assert "debug.log" not in git_files(repo, untracked=True)
    assert git_files(repo / "flows") == ["hello.py"]  # relative to a subfolder


def test_push_git_ships_exactly_the_tracked_files(repo: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "store").as_uri()
    code, out, err = run(capsys, "push", str(repo), url, "--git", "--json")
    assert code == 0, err
    assert "default ignore template" not in err
    assert ls(capsys, url) == {".env", ".gitignore", "flows/hello.py", "link.py", "run.sh"}
    code, out, err = run(capsys, "log", url, "--json")
    [entry] = json.loads(out)["entries"]
    assert entry["git"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert entry["git"]["dirty"] is False  # an untracked file that is not shipped
    # pulled back with the exec bit and the link
    dst = tmp_path / "dst"
    assert run(capsys, "pull", url, str(dst))[0] == 0
    assert os.access(dst / "run.sh", os.X_OK) and os.readlink(dst / "link.py") == "flows/hello.py"

    code, out, err = run(capsys, "push", str(repo), url, "--git", "--untracked", "--json",
                         "--ref", "withnotes")
    assert code == 0, err
    assert "notes.txt" in ls(capsys, url, "--ref", "withnotes")
    code, out, _ = run(capsys, "log", url, "--ref", "withnotes", "--json")
    assert json.loads(out)["entries"][0]["git"]["dirty"] is True


def test_pull_by_commit_never_picks_a_dirty_tree_unless_asked(
        repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "store").as_uri()
    c1 = git(repo, "rev-parse", "HEAD")
    assert run(capsys, "push", str(repo), url, "--git", "-q")[0] == 0
    (repo / "flows" / "hello.py").write_text("print('v2')\n")
    assert run(capsys, "push", str(repo), url, "--git", "-q")[0] == 0  # dirty push of c1
    git(repo, "commit", "-q", "-am", "v2")
    c2 = git(repo, "rev-parse", "HEAD")
    assert run(capsys, "push", str(repo), url, "--git", "-q")[0] == 0

    dst = tmp_path / "dst"
    assert run(capsys, "pull", url, str(dst), "--snapshot", f"git:{c1[:8]}")[0] == 0
    assert (dst / "flows" / "hello.py").read_text() == "print('v1')\n"
    assert run(capsys, "pull", url, str(dst), "--snapshot", f"git:{c2[:8].upper()}")[0] == 0
    assert (dst / "flows" / "hello.py").read_text() == "print('v2')\n"

    # log shows the commits and filters by one
    code, out, _ = run(capsys, "log", url)
    assert f"git {c2[:10]}" in out and f"git {c1[:10]}+dirty" in out
    code, out, _ = run(capsys, "log", url, "--commit", c1[:7], "--json")
    assert [e["git"]["dirty"] for e in json.loads(out)["entries"]] == [True, False]

    # a commit pushed only from a dirty tree: refused unless +dirty
    (repo / "flows" / "hello.py").write_text("print('v3 dirty')\n")
    assert run(capsys, "push", str(repo), url, "--git", "-q", "--ref", "wip")[0] == 0
    code, _, err = run(capsys, "pull", url, str(dst), "--snapshot", f"git:{c2[:8]}")
    assert code == 0  # latest's clean c2 snapshot wins over wip's dirty one
    assert (dst / "flows" / "hello.py").read_text() == "print('v2')\n"
    code, _, err = run(capsys, "pull", url, str(dst), "--snapshot", "git:deadbeef")
    assert code == 5 and "git commit deadbeef" in err


def test_git_name_errors(repo: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "store").as_uri()
    (repo / "flows" / "hello.py").write_text("print('dirty')\n")
    assert run(capsys, "push", str(repo), url, "--git", "-q")[0] == 0
    head = git(repo, "rev-parse", "HEAD")
    code, _, err = run(capsys, "pull", url, str(tmp_path / "d"), "--snapshot",
                       f"git:{head[:8]}")
    assert code == 5 and "dirty tree" in err and "+dirty" in err
    code, _, err = run(capsys, "pull", url, str(tmp_path / "d"), "--snapshot",
                       f"git:{head[:8]}+dirty")
    assert code == 0, err
    code, _, err = run(capsys, "pull", url, str(tmp_path / "d"), "--snapshot", "git:xyz")
    assert code == 2 and "git:<commit>" in err
    code, _, err = run(capsys, "push", str(tmp_path), url, "--git")
    assert code == 3 and "not inside a git work tree" in err
    code, _, err = run(capsys, "push", str(repo), url, "--untracked")
    assert code == 2 and "--untracked needs --git" in err


def test_diff_takes_git_names(repo: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    url = (tmp_path / "store").as_uri()
    c1 = git(repo, "rev-parse", "HEAD")
    assert run(capsys, "push", str(repo), url, "--git", "-q")[0] == 0
    (repo / "flows" / "hello.py").write_text("print('v2')\n")
    git(repo, "commit", "-q", "-am", "v2")
    c2 = git(repo, "rev-parse", "HEAD")
    assert run(capsys, "push", str(repo), url, "--git", "-q")[0] == 0
    code, out, err = run(capsys, "diff", url, f"git:{c1[:8]}", f"git:{c2[:8]}")
    assert code == 1 and "M flows/hello.py" in out, err  # 1: the trees differ
    assert run(capsys, "diff", url, f"git:{c2[:8]}", f"git:{c2[:8]}")[0] == 0
