"""Packs streamed to S3 and Azure through obstore (SeaweedFS, Azurite): each pack is written to
an unlinked temporary file as it is built, then uploaded in parts (``STREAM_PART``), so no
pack-size buffer exists. A failed upload leaves no object, no pending multipart upload and no
ref; a pack already in the store is found (create-only) and not sent again.

The endpoint is a fault-injecting proxy (tests/fault_proxy.py), which also records every
request, so the tests see the parts go out.
"""

from __future__ import annotations

import errno
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy, HttpFault, remote_under_test
from servers import SeaweedS3
from treeutil import describe, make_project

import snapsync
from snapsync.cli import main
from snapsync.concurrency import STREAM_PART
from snapsync.engine.check import check
from snapsync.store import obstore_backend, open_store

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=["s3", "az"])
def remote(request: pytest.FixtureRequest) -> Any:
    """``(server, url, storage options through the proxy, proxy)``."""
    server, url = remote_under_test(request, request.param)
    with FaultProxy(server.endpoint) as proxy:
        opts = {k: v.replace(server.endpoint, proxy.endpoint) if isinstance(v, str) else v
                for k, v in server.storage_options.items()}
        yield server, url, opts, proxy


def _cli_opts(opts: dict[str, Any]) -> list[str]:
    out = []
    for k, v in opts.items():
        out += ["-o", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
    return out


def _project(root: Path) -> Path:
    """A small project plus one incompressible file: one pack of a few parts."""
    src = make_project(root)
    (src / "big.bin").write_bytes(random.Random(7).randbytes(STREAM_PART * 2 + (3 << 20)))
    return src


def _keys(url: str, opts: dict[str, Any], prefix: str) -> list[str]:
    return [m.key for m in open_store(url, opts).list(prefix)]


def _part_requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    """Requests that carry one part of a pack (S3 UploadPart, Azure Put Block)."""
    return [(m, p) for m, p, _ in proxy.requests
            if "/packs/" in p and m == "PUT" and ("partNumber=" in p or "comp=block&" in p
                                                  or p.endswith("comp=block"))]


def _pending_uploads(server: Any, url: str) -> list[Any]:
    """Multipart uploads started and neither completed nor aborted (S3 only)."""
    if not isinstance(server, SeaweedS3):
        return []  # Azure: uncommitted blocks are no blob, and are dropped after a week
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    return server.boto3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_a_pack_goes_up_in_parts_and_reads_back(tmp_path: Path, remote: Any) -> None:
    server, url, opts, proxy = remote
    src = _project(tmp_path / "src")
    r = snapsync.push(src, url, storage_options=opts, cache_dir=tmp_path / "c")
    parts = _part_requests(proxy)
    assert r.packs_uploaded == 1 and r.bytes_packs > 2 * STREAM_PART
    assert len(parts) == -(-r.bytes_packs // STREAM_PART), proxy.requests
    packs = open_store(url, opts).list("packs/")
    assert [m.size for m in packs] == [r.bytes_packs]
    assert _pending_uploads(server, url) == []
    assert check(url, storage_options=opts, read_data=True).ok
    snapsync.pull(url, tmp_path / "dst", storage_options=opts, cache_dir=tmp_path / "c2")
    assert describe(tmp_path / "dst") == describe(src)


def test_a_small_pack_is_one_create_only_put(tmp_path: Path, remote: Any) -> None:
    _server, url, opts, proxy = remote
    src = make_project(tmp_path / "src")
    r = snapsync.push(src, url, storage_options=opts, cache_dir=tmp_path / "c")
    pack_requests = [(m, p) for m, p, _ in proxy.requests if "/packs/" in p]
    assert r.packs_uploaded == 1 and [m for m, _ in pack_requests] == ["PUT"], pack_requests
    assert check(url, storage_options=opts, read_data=True).ok


def test_a_part_that_fails_is_retried(tmp_path: Path, remote: Any,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _server, url, opts, proxy = remote
    src = _project(tmp_path / "src")
    # The second part is throttled once: the whole pack goes up again from its file.
    proxy.faults = [HttpFault("503", match="/packs/", methods=("PUT",), after=1)]
    assert main(["push", str(src), url, *_cli_opts(opts),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert proxy.fired("503") == 1 and "snapsync: retrying PUT " in err and "/packs/" in err
    assert check(url, storage_options=opts, read_data=True).ok
    assert len(_keys(url, opts, "packs/")) == 1


def test_an_upload_that_fails_midway_leaves_no_pack_no_upload_and_no_ref(
        tmp_path: Path, remote: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server, url, opts, proxy = remote
    src = _project(tmp_path / "src")
    # The first part goes through, every later one is throttled, attempt after attempt.
    proxy.faults = [HttpFault("503", match="/packs/", methods=("PUT",), after=1, times=None)]
    code = main(["push", str(src), url, *_cli_opts(opts), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "/packs/" in err.splitlines()[-1] and "Traceback" not in err
    proxy.faults = []
    assert _keys(url, opts, "packs/") == [] and _keys(url, opts, "refs/") == []
    assert _pending_uploads(server, url) == []
    assert main(["push", "-q", str(src), url, *_cli_opts(opts),
                 "--cache-dir", str(tmp_path / "c")]) == 0
    assert check(url, storage_options=opts, read_data=True).ok


def test_a_pack_already_stored_is_found_not_sent_again(tmp_path: Path, remote: Any) -> None:
    _server, url, opts, proxy = remote
    src = _project(tmp_path / "src")
    first = snapsync.push(src, url, storage_options=opts, cache_dir=tmp_path / "c")
    # Forget the snapshot (refs and logs) and the cache: the next push builds the same pack.
    store = open_store(url, opts)
    store.delete([m.key for p in ("refs/", "logs/") for m in store.list(p)])
    proxy.requests.clear()
    again = snapsync.push(src, url, storage_options=opts, cache_dir=tmp_path / "c2")
    assert again.snapshot_id == first.snapshot_id
    assert _part_requests(proxy) == [] and [m for m, p, _ in proxy.requests
                                            if "/packs/" in p] == ["HEAD"], proxy.requests
    assert check(url, storage_options=opts, read_data=True).ok


def test_a_full_temporary_disk_is_a_local_error(tmp_path: Path, remote: Any,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _server, url, opts, _proxy = remote
    src = _project(tmp_path / "src")

    def full(self: Any, data: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(obstore_backend.PackUpload, "write", full)
    code = main(["push", str(src), url, *_cli_opts(opts), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert tempfile.gettempdir() in err and "No space left" in err and "Traceback" not in err
    assert _keys(url, opts, "packs/") == [] and _keys(url, opts, "refs/") == []
