"""Bad local input: unreadable files, files changing while pushed, a file larger than the memory
push may use, odd names, invalid URLs, missing buckets and wrong credentials.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from treeutil import describe, make_project

import snapsync
from snapsync.cli import main
from snapsync.errors import LocalFileError, UsageError
from snapsync.local.tree import stat_sig
from snapsync.repository import Repository
from snapsync.store import open_store

push_mod = importlib.import_module("snapsync.engine.push")  # the module, not the function
tree_mod = importlib.import_module("snapsync.local.tree")  # reads large files (read_file)


def _unreadable(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make ``path`` unreadable: chmod 000, or (as root, who reads anyway) fail its open()."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real = os.open
    target = os.fsencode(path)

    def fake(p, flags, *a, **k):  # type: ignore[no-untyped-def]
        if os.fsencode(p) == target:
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", fake)


def test_unreadable_file_named_then_skipped(tmp_path, monkeypatch, capsys):
    src = make_project(tmp_path / "src", files=3)
    secret = src / "pkg" / "secret.py"
    secret.write_text("x = 1\n")
    _unreadable(monkeypatch, secret)
    url = (tmp_path / "store").as_uri()
    with pytest.raises(LocalFileError, match="secret.py"):
        snapsync.push(src, url)
    assert main(["push", str(src), url, "-q"]) == LocalFileError.exit_code
    assert "secret.py" in capsys.readouterr().err
    warned: list[str] = []
    r = snapsync.push(src, url, skip_unreadable=True, on_warning=warned.append)
    assert any("secret.py" in w and "skipped" in w for w in warned)
    monkeypatch.undo()
    snapsync.pull(url, tmp_path / "dst")
    assert not (tmp_path / "dst" / "pkg" / "secret.py").exists()
    regular = [p for p in src.rglob("*") if p.is_file() and not p.is_symlink()]
    assert r.files == len(regular) - 1


def test_file_changing_while_pushed_is_read_again(tmp_path, monkeypatch):
    src = make_project(tmp_path / "src", files=3)
    hot = src / "hot.log"
    hot.write_bytes(b"a" * 5000)
    real = push_mod.read_small_into
    calls = {"n": 0}

    def racing(path, buf):  # type: ignore[no-untyped-def]
        got = real(path, buf)
        if path.endswith("hot.log") and calls["n"] < 1:
            calls["n"] += 1
            with open(path, "ab") as f:  # a writer appends between our read and our fstat
                f.write(b"b" * 3000)
            return got[0], stat_sig(os.lstat(path))  # what that fstat would then see
        return got

    monkeypatch.setattr(push_mod, "read_small_into", racing)
    r = snapsync.push(src, (tmp_path / "store").as_uri())
    assert calls["n"] == 1
    snapsync.pull((tmp_path / "store").as_uri(), tmp_path / "dst")
    assert (tmp_path / "dst" / "hot.log").read_bytes() == b"a" * 5000 + b"b" * 3000
    m = Repository(open_store((tmp_path / "store").as_uri()), None).load_manifest(r.snapshot_id)
    assert next(e for e in m.entries if e.path == b"hot.log").size == 8000


def test_file_that_never_settles_is_an_error(tmp_path, monkeypatch):
    src = make_project(tmp_path / "src", files=2)
    (src / "hot.log").write_bytes(b"a")
    real = tree_mod.read_chunks

    def racing(path, size, chunker, **kw):  # type: ignore[no-untyped-def]
        yield from real(path, size, chunker, **kw)
        if path.endswith("hot.log"):
            with open(path, "ab") as f:
                f.write(b"more")

    real_small = push_mod.read_small_into

    def racing_small(path, buf):  # type: ignore[no-untyped-def]
        got = real_small(path, buf)
        if path.endswith("hot.log"):
            with open(path, "ab") as f:  # between the read and the fstat
                f.write(b"more")
            return got[0], stat_sig(os.lstat(path))
        return got

    monkeypatch.setattr(tree_mod, "read_chunks", racing)
    monkeypatch.setattr(push_mod, "read_small_into", racing_small)
    with pytest.raises(LocalFileError, match="hot.log keeps changing"):
        snapsync.push(src, (tmp_path / "store").as_uri())


_MEASURE = """
import json, sys, threading, time
def anon():  # anonymous memory only: the mmap'ed file's page cache does not count
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
peak, stop = [0], []
def sample():
    while not stop:
        peak[0] = max(peak[0], anon())
        time.sleep(0.005)
import snapsync
base = anon()
t = threading.Thread(target=sample, daemon=True)
t.start()
r = snapsync.push(sys.argv[1], sys.argv[2], use_default_ignore=False)
stop.append(1)
t.join()
print(json.dumps({"grew": peak[0] - base, "new": r.bytes_new}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_large_file_is_streamed_with_bounded_memory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    size = 320 << 20
    with open(src / "big.bin", "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(src),
                        (tmp_path / "store").as_uri()],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["new"] == size
    # Packs in flight and the compression window, not the file: well under its size.
    assert got["grew"] < 160 << 20, got
    out = tmp_path / "out"
    snapsync.pull((tmp_path / "store").as_uri(), out, use_cache=False)
    assert os.path.getsize(out / "big.bin") == size


def test_odd_names_warned_and_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = [b"caf\xe9.txt", b"Makefile", b"makefile", b"con.txt", b"a:b.txt", b"dot.",
             b"what?.txt"]
    for n in names:
        with open(os.path.join(os.fsencode(src), n), "wb") as f:
            f.write(n)
    warned: list[str] = []
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url, on_warning=warned.append)
    text = "\n".join(warned)
    assert "not valid UTF-8" in text
    assert "differ only in case" in text and "akefile" in text
    for n in ("con.txt", "a:b.txt", "dot.", "what?.txt"):
        assert f"{n}: name is not valid on Windows" in text, n
    snapsync.pull(url, tmp_path / "dst")
    assert sorted(os.listdir(os.fsencode(tmp_path / "dst"))) == sorted(names)
    assert describe(tmp_path / "dst") == describe(src)


@pytest.mark.parametrize("url,words", [
    ("", "empty"),
    ("s3://", "names no bucket"),
    ("gs:///", "names no bucket"),
    ("nosuchproto://bucket/x", "not a usable store URL"),
])
def test_invalid_urls(tmp_path, capsys, url, words):
    src = make_project(tmp_path / "src", files=1)
    with pytest.raises(UsageError, match=words):
        snapsync.push(src, url)
    assert main(["push", str(src), url, "-q"]) == UsageError.exit_code
    assert words in capsys.readouterr().err
    assert set(os.listdir(tmp_path)) <= {"snapsync-cache", "src"}  # nothing written


def test_missing_bucket_and_wrong_credentials_on_s3(s3_server, s3_bucket, tmp_path, capsys):
    src = make_project(tmp_path / "src", files=2)
    ep = ["-o", f"endpoint_url={s3_server.endpoint}", "-o",
          'config_kwargs={"s3": {"addressing_style": "path"}}']
    good = ["-o", f"key={s3_server.key}", "-o", f"secret={s3_server.secret}", *ep]
    assert main(["push", str(src), "s3://no-such-bucket-4242/x", "-q", *good]) == 5
    err = capsys.readouterr().err
    assert "no-such-bucket-4242" in err and "does not exist" in err
    assert main(["pull", "s3://no-such-bucket-4242/x", str(tmp_path / "d"), "-q", *good]) == 5
    capsys.readouterr()
    wrong = ["-o", f"key={s3_server.key}", "-o", "secret=wrong-secret", *ep]
    assert main(["push", str(src), f"{s3_bucket}/x", "-q", *wrong]) == 6
    err = capsys.readouterr().err
    assert "access denied" in err and "wrong-secret" not in err
    unknown = ["-o", "key=nobody", "-o", "secret=whatever", *ep]
    assert main(["pull", f"{s3_bucket}/x", str(tmp_path / "d"), "-q", *unknown]) == 6
    assert not (tmp_path / "d").exists() or not os.listdir(tmp_path / "d")


@pytest.mark.parametrize("name", ["my-bucket-store", "container-bucket"])
def test_store_named_like_a_bucket_is_not_a_missing_bucket(tmp_path, name, s3_server,
                                                            s3_bucket):
    """Words in a URL or key say nothing about the bucket: only the provider's error does."""
    src = make_project(tmp_path / "src", files=2)
    for url, opts in (((tmp_path / name).as_uri(), None),
                      (f"{s3_bucket}/{name}", s3_server.storage_options)):
        r = snapsync.push(src, url, storage_options=opts)
        snapsync.pull(url, tmp_path / f"out-{len(url)}", storage_options=opts)
        assert describe(tmp_path / f"out-{len(url)}") == describe(src)
        assert r.snapshot_id
