"""Ref names: git-like hierarchical names, precise refusals, logs of `a` and `a/b` kept apart."""

from __future__ import annotations

import pytest

import snapsync
from snapsync.cli import main
from snapsync.core.names import check_ref_name, ref_name_problem
from snapsync.engine.check import check
from snapsync.engine.inspect import log as inspect_log
from snapsync.errors import UsageError
from snapsync.store import layout as store_mod


@pytest.mark.parametrize("name", ["latest", "feature/x", "team/a/b-1", "v1.2", "a_b", "_x",
                                  "x" * 128, "/".join(["abc"] * 40)])
def test_valid_names(name):
    assert check_ref_name(name) == name
    assert store_mod.check_ref_name(name) == name  # the layout's name delegates to core


@pytest.mark.parametrize(("name", "says"), [
    ("", "empty"),
    ("a/../b", "'..' component"),
    ("a..b", "'..'"),
    ("a//b", "empty component"),
    ("/a", "start or end with '/'"),
    ("a/", "start or end with '/'"),
    (".hidden", "starts with '.'"),
    ("a/.b", "starts with '.'"),
    ("-x", "starts with '-'"),
    ("main.lock", "ends with '.lock'"),
    ("a/b.lock", "ends with '.lock'"),
    ("x.json", "ends with '.json'"),
    ("a b", "' '"),
    ("a:b", "':'"),
    ("x" * 201, "at most 200"),
    ("x" * 129, "at most 128"),
])
def test_each_refusal_says_what_is_wrong(name, says):
    problem = ref_name_problem(name)
    assert problem is not None and says in problem
    with pytest.raises(UsageError) as exc:
        check_ref_name(name)
    assert says in str(exc.value) and "--ref" in str(exc.value)
    if "long" not in problem and "' '" not in problem and "':'" not in problem:
        # the allowed characters are listed only when characters are the problem
        assert "letters, digits" not in str(exc.value)


def test_long_name_is_shortened_in_the_message():
    with pytest.raises(UsageError) as exc:
        check_ref_name("a" * 5000)
    assert len(str(exc.value)) < 200


def test_hierarchical_refs_keep_their_logs_apart(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one\n")
    url = (tmp_path / "store").as_uri()
    one = snapsync.push(src, url, ref="a").snapshot_id
    (src / "b.txt").write_text("two\n")
    two = snapsync.push(src, url, ref="a/b").snapshot_id
    (src / "c.txt").write_text("three\n")
    three = snapsync.push(src, url, ref="a/b/c").snapshot_id
    assert [e.snapshot for e in inspect_log(url, "a")] == [one]
    assert [e.snapshot for e in inspect_log(url, "a/b")] == [two]
    assert [e.snapshot for e in inspect_log(url, "a/b/c")] == [three]
    pulled = snapsync.pull(url, tmp_path / "dst", ref="a/b")
    assert pulled.snapshot_id == two
    report = check(url)
    assert not report.problems and report.refs == 3 and report.log_entries == 3
    assert main(["log", url, "--ref", "a/b", "--json"]) == 0
    assert '"ref": "a/b"' in capsys.readouterr().out


def test_gc_groups_logs_by_hierarchical_ref(tmp_path):
    from snapsync.engine.gc import gc

    src = tmp_path / "src"
    src.mkdir()
    url = (tmp_path / "store").as_uri()
    ids = {}
    for ref in ("a", "a/b"):
        for i in range(2):
            (src / "f.txt").write_text(f"{ref} {i}\n")
            ids[ref, i] = snapsync.push(src, url, ref=ref).snapshot_id
    gc(url, keep_last=1, grace=0)
    assert [e.snapshot for e in inspect_log(url, "a")] == [ids["a", 1]]
    assert [e.snapshot for e in inspect_log(url, "a/b")] == [ids["a/b", 1]]


def test_layout_parses_hierarchical_refs_and_logs():
    from snapsync.store import Layout
    from snapsync.store import layout as kinds

    sid = "ab" * 16
    ref = Layout.parse(Layout.ref("feature/x"))
    assert ref is not None and (ref.kind, ref.ref) == (kinds.REF, "feature/x")
    log = Layout.parse(Layout.log("feature/x", 12, sid))
    assert log is not None and (log.kind, log.ref, log.id, log.time_ns) == (
        kinds.LOG, "feature/x", sid, 12)
    top = Layout.parse(Layout.log("feature", 7, sid))
    assert top is not None and top.ref == "feature"  # logs of a and a/b are told apart
    assert Layout.parse("logs/feature/x/not-a-log.json") is None  # a stray object
