"""Careless hands: every user error is a clear message with the documented exit code, never a
traceback; the CLI reads command lines as people type them (issue 9)."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pytest
from boundutil import run_cli_measured
from treeutil import describe, make_project

import snapsync
from snapsync.cli import TqdmProgress, build_parser, main
from snapsync.core.chunking import ChunkerParams
from snapsync.errors import FormatError, IgnoreFileError, NotAStoreError, UsageError
from snapsync.local.git import git_info
from snapsync.local.tree import scan
from snapsync.repository.config import SnapshotInfo, StoreConfig
from snapsync.store import Layout


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def pushed(tmp_path):
    src = make_project(tmp_path / "src", files=5)
    url = (tmp_path / "store").as_uri()
    r = snapsync.push(src, url, message="first")
    return src, url, r.snapshot_id


# ------------------------------------------------------------------ ignore files


@pytest.mark.parametrize(("content", "says"), [
    (b"*.log\n\\\n", "line 2: invalid pattern '\\\\'"),
    (b"!\n", "line 1: invalid pattern '!'"),
    (b"ok.txt\n\n\xff\xfe.py\n", "line 3 is not valid UTF-8"),
])
def test_bad_ignore_file_is_a_usage_error_naming_file_and_line(tmp_path, capsys, content, says):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / ".prefectignore").write_bytes(content)
    code, _, err = run(capsys, "push", str(src), (tmp_path / "store").as_uri())
    assert code == 2 and says in err and ".prefectignore" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.mf"))


def test_ignore_file_with_bom_is_read():
    from snapsync.core.ignore import IgnoreRules

    assert IgnoreRules(["\ufeffx"], "t").patterns  # a BOM inside a pattern is not a crash


# ------------------------------------------------------------------ config and refs


@pytest.mark.parametrize(("edit", "says"), [
    (lambda d: d.update(pack_size="abc"), "pack_size must be an integer"),
    (lambda d: d.update(pack_size=0), "pack_size must be an integer"),
    (lambda d: d["chunker"].update(min_size=0, avg_size=0, max_size=0), "unusable"),
    (lambda d: d["chunker"].update(avg_size="big"), "avg_size must be an integer"),
    (lambda d: d["chunker"].update(min_size=1 << 20, avg_size=1 << 10), "min_size <= avg_size"),
    (lambda d: d.update(chunker=[1, 2]), "chunker must be a JSON object"),
    (lambda d: d.update(version="1"), "version must be an integer, got '1'"),
    (lambda d: d.update(version=2), "version 2 is not supported"),
])
def test_bad_config_values_are_format_errors(pushed, tmp_path, capsys, edit, says):
    _src, url, _ = pushed
    cfg = tmp_path / "store" / Layout.CONFIG
    doc = json.loads(cfg.read_bytes())
    edit(doc)
    cfg.write_text(json.dumps(doc))
    code, _, err = run(capsys, "pull", url, str(tmp_path / "dst"))
    assert code == 7 and says in err and "snapsync.json" in err, err
    assert not (tmp_path / "dst").exists()


def test_deeply_nested_json_config_and_ref(pushed, tmp_path, capsys):
    _src, url, _ = pushed
    deep = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(FormatError, match="nested too deeply"):
        StoreConfig.from_json(deep, "snapsync.json")
    with pytest.raises(FormatError, match="nested too deeply"):
        SnapshotInfo.from_json(b'{"a":' * 200_000 + b"1" + b"}" * 200_000, "refs/x.json")
    (tmp_path / "store" / Layout.ref("latest")).write_bytes(deep)
    code, _, err = run(capsys, "pull", url, str(tmp_path / "dst"))
    assert code == 7 and "nested too deeply" in err and "Traceback" not in err


@pytest.mark.parametrize(("raw", "says"), [
    (b"[]", "must be a JSON object, got a JSON array"),
    (b'"x"', "must be a JSON object, got a JSON string"),
    (b"{}", "missing snapshot, ref, time, time_ns"),
    (b'{"snapshot": "' + b"a" * 32 + b'", "ref": "x", "time": "t", "time_ns": "1"}',
     "time_ns has the wrong type"),
    (b'{"snapshot": "' + b"a" * 32 + b'", "ref": "x", "time": "t", "time_ns": 1, '
     b'"git": {"commit": 5}}', "wrong type"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_malformed_refs_say_what_is_wrong(raw, says):
    with pytest.raises(FormatError) as exc:
        SnapshotInfo.from_json(raw, "refs/latest.json")
    assert says in str(exc.value) and "refs/latest.json" in str(exc.value)
    assert "__init__" not in str(exc.value)


def test_config_that_is_not_an_object_is_not_a_store():
    with pytest.raises(NotAStoreError):
        StoreConfig.from_json(b"[1]", "snapsync.json")


def test_chunker_params_validation():
    assert ChunkerParams.from_dict(ChunkerParams().to_dict()) == ChunkerParams()
    with pytest.raises(FormatError, match="threshold"):
        ChunkerParams.from_dict({**ChunkerParams().to_dict(), "threshold": 0})
    with pytest.raises(FormatError, match="normalization"):
        ChunkerParams.from_dict({**ChunkerParams().to_dict(), "normalization": 9})
    with pytest.raises(FormatError, match="must be an integer"):
        ChunkerParams.from_dict({**ChunkerParams().to_dict(), "max_size": True})


# ------------------------------------------------------------------ the walk


def test_deep_legal_path_does_not_hit_the_recursion_limit(tmp_path):
    src = tmp_path / "src"
    deep = src
    rel = ""
    src.mkdir()
    while len(rel) < 2_401:
        deep = deep / "d"
        rel += "d/"
        deep.mkdir()
    (deep / "leaf.txt").write_text("deep\n")
    try:
        # A recursive walk would need ~1,200 frames; the default limit is 1,000.
        entries = scan(src, snapsync.core.ignore.IgnoreRules.none(), lambda _m: None)
        assert len(entries) == 1 and len(entries[0].path) > 2_401
        r = snapsync.push(src, (tmp_path / "store").as_uri())
        assert r.files == 1
    finally:
        # shutil.rmtree (and pytest's tmp_path cleanup) recurse: remove it bottom-up.
        os.unlink(deep / "leaf.txt")
        while deep != src:
            os.rmdir(deep)
            deep = deep.parent


def test_walk_records_empty_dirs_as_before(tmp_path):
    from snapsync.core.ignore import IgnoreRules

    src = tmp_path / "src"
    (src / "a" / "b" / "empty").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("x")
    (src / "only-ignored").mkdir()
    (src / "only-ignored" / "x.pyc").write_text("x")
    entries = scan(src, IgnoreRules(["*.pyc"], "t"), lambda _m: None)
    assert [(e.path, e.kind) for e in entries] == [
        ("a/b/empty", "d"), ("a/f.txt", "f"), ("only-ignored", "d")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_skip_unreadable_covers_directories(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "x.txt").write_text("x")
    (src / "ok.txt").write_text("ok")
    os.chmod(src / "locked", 0)
    try:
        url = (tmp_path / "store").as_uri()
        code, _, err = run(capsys, "push", str(src), url, "--no-default-ignore")
        assert code == 3 and "locked" in err
        code, out, err = run(capsys, "push", str(src), url, "--skip-unreadable", "--json",
                             "--no-default-ignore")
        assert code == 0 and json.loads(out)["files"] == 1 and "locked" in err
    finally:
        os.chmod(src / "locked", 0o755)


def test_skip_unreadable_directory_via_scan(tmp_path, monkeypatch):
    """The same, as root too: a directory whose listing fails mid-walk is skipped."""
    from snapsync.core.ignore import IgnoreRules

    src = tmp_path / "src"
    (src / "gone").mkdir(parents=True)
    (src / "gone" / "x").write_text("x")
    (src / "keep.txt").write_text("k")
    real, real_open = os.scandir, os.open

    def flaky(path):
        if str(path).endswith("gone"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    def flaky_open(path, *a, **kw):  # the walk opens directories relative to the root
        if str(path).endswith("gone"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "scandir", flaky)
    monkeypatch.setattr(os, "open", flaky_open)
    with pytest.raises(snapsync.LocalFileError, match="gone"):
        scan(src, IgnoreRules.none(), lambda _m: None)
    skipped: list[str] = []
    entries = scan(src, IgnoreRules.none(), lambda _m: None, skip=skipped.append)
    assert [e.path for e in entries] == ["keep.txt"] and len(skipped) == 1


def test_mid_walk_deletions_are_summarized(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i:02}.txt").write_text(str(i))
    import snapsync.engine.push as push_mod

    real_scan = push_mod.walk

    def scan_then_delete(*a, **kw):
        out = real_scan(*a, **kw)
        for i in range(40):
            os.unlink(src / f"f{i:02}.txt")  # deleted after the walk, before the read
        return out

    monkeypatch.setattr(push_mod, "walk", scan_then_delete)
    warnings: list[str] = []
    r = snapsync.push(src, (tmp_path / "store").as_uri(), skip_unreadable=True,
                      on_warning=warnings.append, use_default_ignore=False)
    assert r.files == 10
    skipped = [w for w in warnings if "skipped unreadable" in w]
    assert len(skipped) == 1 and "(40)" in skipped[0] and "and 37 more" in skipped[0]


def test_nul_in_a_symlink_target_is_refused_before_writing(tmp_path):
    from test_hostile import Hostile

    from snapsync.core.manifest import SYMLINK, Entry

    h = Hostile(tmp_path)
    h.manifest([Entry(b"link", SYMLINK, 0o777, 0, (), b"a\x00b")], {})
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(FormatError, match="NUL"):
        snapsync.pull(h.url, target, ref="evil", use_cache=False)
    assert not os.listdir(target)


# ------------------------------------------------------------------ a store inside the root


def test_store_and_cache_inside_the_pushed_folder_are_excluded(tmp_path, monkeypatch, capsys):
    src = make_project(tmp_path / "proj", files=3)
    monkeypatch.setenv("SNAPSYNC_CACHE_DIR", str(src / ".cache-here"))
    monkeypatch.chdir(src)
    assert run(capsys, "push", ".", "store", "-q")[0] == 0
    first = sorted(p.name for p in (src / "store").rglob("*.pack"))
    code, out, _ = run(capsys, "push", ".", "store", "--json")
    assert code == 0 and json.loads(out)["unchanged"] is True  # not pushed into itself
    assert sorted(p.name for p in (src / "store").rglob("*.pack")) == first
    code, out, _ = run(capsys, "ls", "store", "--json")
    paths = [e["path"] for e in json.loads(out)["entries"]]
    assert not any(p.startswith(("store", ".cache-here")) for p in paths)
    # pull --delete into the folder that holds the store keeps the store and the cache
    (src / "stale.txt").write_text("stale")
    assert run(capsys, "pull", "store", ".", "--delete", "-q")[0] == 0
    assert not (src / "stale.txt").exists()
    assert sorted(p.name for p in (src / "store").rglob("*.pack")) == first
    assert (src / ".cache-here").is_dir()
    assert run(capsys, "check", "store")[0] == 0


# ------------------------------------------------------------------ git facts


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_git_facts_only_for_tracked_folders(tmp_path):
    repo = tmp_path / "repo"
    (repo / "flows").mkdir(parents=True)
    (repo / "flows" / "a.py").write_text("a")
    (repo / "build").mkdir()
    (repo / "build" / "out.txt").write_text("b")
    _git(repo, "init", "-q")
    _git(repo, "add", "flows")
    _git(repo, "commit", "-qm", "c")
    top = git_info(repo)
    assert top["commit"] and top["path"] == ""
    flows = git_info(repo / "flows")
    assert flows["commit"] == top["commit"] and flows["path"] == "flows"
    assert flows["dirty"] is False
    assert git_info(repo / "build") == {}  # inside the work tree, not tracked
    assert git_info(tmp_path) == {}
    url = (tmp_path / "store").as_uri()
    snapsync.push(repo / "build", url)
    assert snapsync.engine.inspect.log(url)[0].git == {}


# ------------------------------------------------------------------ default ignore note


def test_default_ignore_note_names_dropped_folders_once(tmp_path, capsys):
    src = tmp_path / "src"
    for d in ("venv/lib", "node_modules/axios/lib/env", ".git", "a/__pycache__", "b/env",
              "c/env", "d/env"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_text("x")
    (src / "app.py").write_text("x")
    url = (tmp_path / "store").as_uri()
    code, _, err = run(capsys, "push", str(src), url)
    assert code == 0
    assert "it left out 7 folders: .git/, a/__pycache__/, b/env/, c/env/, d/env/ and 2 more" \
        in err, err
    code, _, err = run(capsys, "push", str(src), url)
    assert code == 0 and "default ignore" not in err  # once per (folder, store)
    (src / "e" / "venv").mkdir(parents=True)
    code, _, err = run(capsys, "push", str(src), url)
    assert "it left out 8 folders" in err  # the set changed: said again
    (src / "a" / "venv").mkdir()  # dropped too; the tree itself (a/ stays empty) is unchanged
    code, out, err = run(capsys, "push", str(src), url)
    assert "it left out 9 folders" in err and "unchanged" in out
    code, _, err = run(capsys, "push", str(src), url)
    assert "default ignore" not in err
    other = (tmp_path / "store2").as_uri()
    code, _, err = run(capsys, "push", str(src), other)
    assert "it left out 9 folders" in err  # another store


# ------------------------------------------------------------------ the CLI


def test_options_between_positionals(pushed, tmp_path, capsys):
    src, url, sid = pushed
    dst = tmp_path / "dst"
    code, _, err = run(capsys, "pull", url, "--snapshot", sid[:6], str(dst), "-q")
    assert code == 0, err
    assert describe(dst) == describe(src)
    files = len([p for p in src.rglob("*") if p.is_file() and not p.is_symlink()])
    (src / "new.txt").write_text("n")
    code, out, err = run(capsys, "push", str(src), "-m", "hi", url, "--json")
    assert code == 0 and json.loads(out)["files"] == files + 1, err
    code, out, _ = run(capsys, "log", url, "--json")
    assert json.loads(out)["entries"][0]["message"] == "hi"


def test_errors_show_the_subcommand_usage(tmp_path, capsys):
    for argv, usage in ((["pull", "u", "d", "--bogus"], "usage: snapsync pull"),
                        (["push", "--level", "99", "u"], "usage: snapsync push"),
                        (["push", "--level", "x", "u"], "usage: snapsync push"),
                        (["pull", "u", "--snapshot", ""], "usage: snapsync pull"),
                        (["ls", "u", "--ref", ""], "usage: snapsync ls"),
                        (["log", "u", "extra"], "usage: snapsync log")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and usage in err, (argv, err)
    err = capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pull", "u", "--snapshot", ""])
    assert "--snapshot must not be empty" in capsys.readouterr().err


def test_level_out_of_range_in_the_library(tmp_path):
    with pytest.raises(UsageError, match="--level"):
        snapsync.push(make_project(tmp_path / "s", files=1), (tmp_path / "st").as_uri(),
                      level=99)


def test_diff_exit_codes_and_mistyped_folder(pushed, tmp_path, capsys):
    src, url, _ = pushed
    code, out, _ = run(capsys, "diff", url, "latest", str(src))
    assert code == 0 and "no differences" in out
    (src / "README.md").write_text("changed")
    code, out, _ = run(capsys, "diff", url, "latest", str(src))
    assert code == 1 and "M README.md" in out
    code, _, err = run(capsys, "diff", url, "latest", str(tmp_path / "srcc"))
    assert code == 3 and "no folder" in err and "srcc" in err and "invalid ref name" not in err
    code, _, err = run(capsys, "diff", url, "latest", "./srcc")
    assert code == 3 and "no folder ./srcc" in err
    code, _, err = run(capsys, "diff", url, "latest", "srcc")
    assert code == 5 and "neither a folder nor a ref" in err


def test_every_positional_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in sub.choices.items():
        for action in cmd._actions:
            if not action.option_strings:
                assert action.help, (name, action.dest)
            if "--ref" in action.option_strings:
                assert action.help, (name, "--ref")


def test_push_summary_splits_packs_and_metadata(tmp_path, capsys):
    src = make_project(tmp_path / "src", files=3)
    code, out, _ = run(capsys, "push", str(src), (tmp_path / "store").as_uri(), "--json")
    r = json.loads(out)
    assert code == 0 and r["bytes_packs"] > 0 and r["bytes_metadata"] > 0
    assert r["bytes_packs"] + r["bytes_metadata"] == r["bytes_uploaded"]
    packs = sum(p.stat().st_size for p in (tmp_path / "store").rglob("*.pack"))
    assert r["bytes_packs"] == packs
    (src / "x.txt").write_text("x")
    code, out, _ = run(capsys, "push", str(src), (tmp_path / "store").as_uri())
    assert "in 1 packs, " in out and "of metadata (manifest, log, ref)" in out


def test_progress_bars_use_binary_units(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    bar = TqdmProgress(enabled=True)
    bar.phase("read", 8 << 20, "B")
    bar.advance(3 << 20)
    bar._bar.refresh()
    bar.close()
    assert "3.0/8.0 MiB" in buf.getvalue() and "MiB/s" in buf.getvalue()


def test_no_tracebacks_for_the_issue_cases_in_a_subprocess(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / ".prefectignore").write_text("!\n")
    code, err, _rss, tb = run_cli_measured(["push", str(src), (tmp_path / "s").as_uri()])
    assert code == 2 and not tb, err
    code, err, _rss, tb = run_cli_measured(["push", str(src), (tmp_path / "s").as_uri(),
                                            "--level", "99"])
    assert code == 2 and not tb, err


def test_ignore_rules_error_type():
    from snapsync.core.ignore import IgnoreRules

    with pytest.raises(IgnoreFileError, match="line 2"):
        IgnoreRules(["ok", "!"], "my.ignore")
