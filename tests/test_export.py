"""export writes a deterministic tar of a snapshot; exec pulls then runs a command there."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from treeutil import run_cli as run


def project(root: Path) -> Path:
    (root / "flows" / "sub").mkdir(parents=True)
    (root / "flows" / "hello.py").write_text("print('hello from the snapshot')\n")
    (root / "flows" / "sub" / "deep.txt").write_text("deep\n")
    (root / "flows-extra").mkdir()
    (root / "flows-extra" / "x.txt").write_text("sorts between flows and flows/ by bytes\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "link.py").symlink_to("flows/hello.py")
    (root / "empty").mkdir()
    (root / ("é" * 60 + ".txt")).write_text("long non-ascii name\n")  # needs pax
    (root / ".prefectignore").write_text("*.log\n")
    (root / "junk.log").write_text("ignored\n")
    return root


def test_export_is_deterministic_and_faithful(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = project(tmp_path / "src")
    url = (tmp_path / "store").as_uri()
    assert run(capsys, "push", str(src), url, "-q")[0] == 0
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    code, _, err = run(capsys, "export", url, "--output", str(a))
    assert code == 0 and "exported snapshot" in err
    # Same snapshot, another cache and a second source tree with other mtimes and umask.
    os.utime(src / "flows" / "hello.py", (1, 1))
    code, _, err = run(capsys, "export", url, "--output", str(b), "--cache-dir",
                       str(tmp_path / "other-cache"))
    assert code == 0, err
    assert a.read_bytes() == b.read_bytes()

    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [".prefectignore", "empty", "flows", "flows/hello.py", "flows/sub",
                     "flows/sub/deep.txt", "flows-extra", "flows-extra/x.txt", "link.py", "run.sh",
                     "é" * 60 + ".txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    by = {m.name: m for m in members}
    assert by["run.sh"].mode == 0o755 and by["flows/hello.py"].mode == 0o644
    assert by["empty"].isdir() and by["flows"].mode == 0o755
    assert by["link.py"].issym() and by["link.py"].linkname == "flows/hello.py"
    # A snapshot's tar extracts to the same tree that was pushed.
    out = tmp_path / "x"
    with tarfile.open(a) as tar:
        tar.extractall(out, filter="tar")
    assert (out / "flows" / "sub" / "deep.txt").read_text() == "deep\n"
    assert os.access(out / "run.sh", os.X_OK)


def test_export_with_dockerfile_to_stdout(tmp_path: Path) -> None:
    src = project(tmp_path / "src")
    url = (tmp_path / "store").as_uri()
    env = {**os.environ, "SNAPSYNC_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-m", "snapsync", "push", str(src), url, "-q"], check=True,
                   env=env, timeout=120)
    dockerfile = tmp_path / "Dockerfile.snapsync"
    dockerfile.write_text("FROM python:3.11-slim\nCOPY . /app\nWORKDIR /app\n")
    out = subprocess.run([sys.executable, "-m", "snapsync", "export", url, "--output", "-",
                          "--dockerfile", str(dockerfile)], capture_output=True, env=env,
                         timeout=120, check=True)
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        first = tar.next()
        assert first is not None and first.name == "Dockerfile"
        assert tar.extractfile(first).read() == dockerfile.read_bytes()  # type: ignore[union-attr]
    again = subprocess.run([sys.executable, "-m", "snapsync", "export", url, "--output", "-",
                            "--dockerfile", str(dockerfile)], capture_output=True, env=env,
                           timeout=120, check=True)
    assert again.stdout == out.stdout


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = project(tmp_path / "src")
    (src / "Dockerfile").write_text("FROM scratch\n")
    url = (tmp_path / "store").as_uri()
    assert run(capsys, "push", str(src), url, "-q")[0] == 0
    code, _, err = run(capsys, "export", url, "--output", str(tmp_path / "t.tar"),
                       "--dockerfile", str(src / "Dockerfile"))
    assert code == 2 and "already has a Dockerfile" in err
    assert not (tmp_path / "t.tar").exists()
    code, _, err = run(capsys, "export", url, "--output", str(tmp_path / "t.tar"),
                       "--dockerfile", str(tmp_path / "missing"))
    assert code == 3 and "missing" in err
    code, _, err = run(capsys, "export", url, "--output", str(tmp_path / "t.tar"),
                       "--snapshot", "abcd1234")
    assert code == 5 and "abcd1234" in err
    code, _, err = run(capsys, "export", url, "--output", str(tmp_path / "no" / "t.tar"))
    assert code == 3 and "t.tar" in err


def test_exec_pulls_then_runs_the_command_in_the_folder(tmp_path: Path) -> None:
    """The container entrypoint, as a Dockerfile's ENTRYPOINT would run it."""
    src = project(tmp_path / "src")
    url = (tmp_path / "store").as_uri()
    cache = tmp_path / "volume" / "cache"  # a mounted volume in a container
    env = {**os.environ, "SNAPSYNC_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "-m", "snapsync", "push", str(src), url, "-q"], check=True,
                   env=env, timeout=120)
    app = tmp_path / "app"
    (app).mkdir()
    (app / "stale.txt").write_text("left by an older image\n")
    cmd = [sys.executable, "-m", "snapsync", "exec", url, "--dir", str(app), "--",
           sys.executable, "-c", "import os; print(os.getcwd()); "
           "exec(open('flows/hello.py').read()); print(os.path.exists('stale.txt'))"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(app), "hello from the snapshot", "False"]
    assert "pulled snapshot" in out.stderr and "downloaded" in out.stderr
    # A restart (a new container, same cache volume, empty folder) downloads nothing.
    fresh = tmp_path / "app2"
    out = subprocess.run([*cmd[:6], str(fresh), *cmd[7:]], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert " 0 downloaded" in out.stderr
    # The command's exit code is the container's.
    out = subprocess.run([sys.executable, "-m", "snapsync", "exec", url, "--dir", str(app),
                          "--", sys.executable, "-c", "raise SystemExit(7)"], env=env,
                         capture_output=True, timeout=120)
    assert out.returncode == 7
    out = subprocess.run([sys.executable, "-m", "snapsync", "exec", url, "--dir", str(app),
                          "--", "no-such-command-xyz"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 127 and "command not found: no-such-command-xyz" in out.stderr
    out = subprocess.run([sys.executable, "-m", "snapsync", "exec", url, "--dir", str(app)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "needs a command" in out.stderr
    out = subprocess.run([sys.executable, "-m", "snapsync", "exec", url, "--", "true"],
                         env={**env, "SNAPSYNC_DIR": ""}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "needs --dir" in out.stderr
