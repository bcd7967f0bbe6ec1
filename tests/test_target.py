"""The pull target: what is outside it never changes (hard links), and a failure leaves the
target as it was."""

from __future__ import annotations

import os
import stat

import pytest

import snapsync


@pytest.mark.parametrize("change", ["mode", "content"])
def test_hard_link_out_of_the_target_is_replaced_not_changed(tmp_path, change):
    # A target file hard-linked to a file outside: pull must not chmod (or write) the
    # shared inode, which would change the outside file too.
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.sh").write_bytes(b"echo new\n" if change == "content" else b"echo hi\n")
    (src / "run.sh").chmod(0o755)
    url = (tmp_path / "store").as_uri()
    snapsync.push(src, url)
    outside = tmp_path / "outside.sh"
    outside.write_bytes(b"echo hi\n")
    outside.chmod(0o644)
    dst = tmp_path / "dst"
    dst.mkdir()
    os.link(outside, dst / "run.sh")
    r = snapsync.pull(url, dst)
    assert (r.modes_changed, r.files_written) == ((1, 0) if change == "mode" else (0, 1))
    assert (dst / "run.sh").read_bytes() == (src / "run.sh").read_bytes()
    assert stat.S_IMODE((dst / "run.sh").stat().st_mode) == 0o755
    assert outside.read_bytes() == b"echo hi\n" and stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert outside.stat().st_nlink == 1
    assert sorted(p.name for p in dst.iterdir()) == ["run.sh"]  # no copy left behind
