"""The CLI maps arguments to the library, renders results and maps errors to exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from treeutil import describe, make_project
from treeutil import run_cli as run

from snapsync.cli import main


def test_help_and_version():
    for argv in (["--help"], ["push", "--help"], ["pull", "--help"], ["log", "--help"]):
        out = subprocess.run([sys.executable, "-m", "snapsync", *argv], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "usage: snapsync" in out.stdout
    out = subprocess.run([sys.executable, "-m", "snapsync", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.startswith("snapsync ")


def test_push_pull_json_and_exit_codes(tmp_path, capsys):
    src = make_project(tmp_path / "src")
    url = (tmp_path / "store").as_uri()
    code, out, err = run(capsys, "push", str(src), url, "--json", "-m", "hi")
    assert code == 0, err
    pushed = json.loads(out)
    assert pushed["files"] == 44 and pushed["chunks_new"] > 0 and pushed["unchanged"] is False
    assert "default ignore template" in err  # said once, on stderr

    code, out, err = run(capsys, "pull", url, str(tmp_path / "dst"), "--json")
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["snapshot_id"] == pushed["snapshot_id"]
    assert describe(tmp_path / "dst") == describe(src)

    code, out, _ = run(capsys, "push", str(src), url)
    assert code == 0 and "unchanged" in out

    code, out, _ = run(capsys, "log", url, "--json")
    entries = json.loads(out)["entries"]
    assert code == 0 and entries[0]["message"] == "hi" and entries[0]["totals"]["files"] == 44

    code, out, _ = run(capsys, "ls", url)
    assert code == 0 and "symlink 0777" in out and "run.sh" in out

    (src / "README.md").write_text("changed\n")
    code, out, _ = run(capsys, "diff", url, "ref:latest", str(src))
    assert code == 1 and out.strip() == "M README.md"  # 1: the trees differ


def test_error_exit_codes(tmp_path, capsys):
    code, _, err = run(capsys, "pull", (tmp_path / "nothing").as_uri(), str(tmp_path / "d"))
    assert code == 5 and "no snapsync store" in err and str(tmp_path / "nothing") in err
    code, _, err = run(capsys, "push", str(tmp_path / "missing"), (tmp_path / "s").as_uri())
    assert code == 3 and "missing" in err
    code, _, err = run(capsys, "push", str(tmp_path), "s3://b/x", "-o", "novalue")
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run(capsys, "push", str(tmp_path), "nosuchproto://x/y")
    assert code == 2 and "nosuchproto" in err
    src = make_project(tmp_path / "src")
    url = (tmp_path / "store").as_uri()
    assert run(capsys, "push", str(src), url, "-q")[0] == 0
    code, _, err = run(capsys, "pull", url, str(tmp_path / "d"), "--ref", "nope")
    assert code == 5 and "nope" in err
    code, _, err = run(capsys, "pull", url, str(tmp_path / "d"), "--snapshot", "zz")
    assert code == 2 and "--snapshot" in err
    with pytest.raises(SystemExit) as exc:
        main(["pull"])
    assert exc.value.code == 2


def test_push_defaults_to_current_directory(tmp_path, capsys, monkeypatch):
    src = make_project(tmp_path / "src")
    monkeypatch.chdir(src)
    url = (tmp_path / "store").as_uri()
    code, out, _ = run(capsys, "push", url, "--json")
    assert code == 0 and json.loads(out)["files"] == 44
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert run(capsys, "pull", url, "-q")[0] == 0
    assert describe(tmp_path / "here") == describe(src)
