"""Smoke tests for the test servers themselves, through plain fsspec (no snapsync code).

If these fail, every backend test would fail for the same reason; start debugging here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import fsspec
import pytest
from servers import StorageServer

# protocol -> (server fixture, bucket fixture)
BACKENDS = {
    "s3": ("s3_server", "s3_bucket"),
    "az": ("azurite_server", "az_container"),
    "gs": ("gcs_server", "gcs_bucket"),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> tuple[StorageServer, str]:
    server_fixture, bucket_fixture = BACKENDS[request.param]
    return request.getfixturevalue(server_fixture), request.getfixturevalue(bucket_fixture)


def _fs(server: StorageServer) -> Any:
    # skip_instance_cache: a cached instance could outlive its server (and its event loop).
    return fsspec.filesystem(server.protocol, skip_instance_cache=True, **server.storage_options)


def _bare(url: str) -> str:
    """fsspec returns paths without the protocol."""
    return url.split("://", 1)[1]


def test_roundtrip_ranges_find_rm(backend: tuple[StorageServer, str]) -> None:
    server, base = backend
    fs = _fs(server)
    objects = {
        f"{base}/snap/a.bin": bytes(range(256)) * 64,
        f"{base}/snap/sub/b.txt": b"hello world\n" * 10,
        f"{base}/snap/empty": b"",
    }
    fs.pipe(objects)

    for url, data in objects.items():
        assert fs.cat_file(url) == data
    assert fs.cat(list(objects)) == {_bare(u): d for u, d in objects.items()}

    a, b = f"{base}/snap/a.bin", f"{base}/snap/sub/b.txt"
    assert fs.cat_file(a, start=100, end=300) == objects[a][100:300]
    assert fs.cat_file(a, start=16000) == objects[a][16000:]
    assert fs.cat_ranges([a, b, a], [0, 6, 1000], [10, 11, 1001]) == [
        objects[a][0:10],
        objects[b][6:11],
        objects[a][1000:1001],
    ]

    assert fs.find(f"{base}/snap") == sorted(_bare(u) for u in objects)
    assert fs.info(a)["size"] == len(objects[a])

    fs.rm(b)
    assert not fs.exists(b)
    assert fs.find(f"{base}/snap") == sorted([_bare(a), _bare(f"{base}/snap/empty")])
    fs.rm(f"{base}/snap", recursive=True)
    assert fs.find(base) == []


# What a second pipe_file(mode="create") raises on each server:
# - SeaweedFS answers 412 PreconditionFailed *without* a <Condition> element, so s3fs
#   cannot tell it from other 412s and raises a plain OSError (errno EINVAL).
# - Azurite (adlfs, If-None-Match: *) and fake-gcs (gcsfs, ifGenerationMatch=0) give
#   FileExistsError.
# snapsync must therefore treat any OSError from a create-put as "maybe exists".
CREATE_CONFLICT = {"s3": OSError, "az": FileExistsError, "gs": FileExistsError}


def test_create_mode_rejects_existing_key(backend: tuple[StorageServer, str]) -> None:
    server, base = backend
    fs = _fs(server)
    key = f"{base}/refs/latest"
    fs.pipe_file(key, b"first", mode="create")

    with pytest.raises(OSError) as info:
        fs.pipe_file(key, b"second", mode="create")

    assert type(info.value) is CREATE_CONFLICT[server.protocol], repr(info.value)
    assert fs.cat_file(key) == b"first"


_CHILD = """
import json, sys, fsspec
proto, url = sys.argv[1], sys.argv[2]
kw = {"project": "test"} if proto == "gs" else {}  # gcsfs wants a project for listings
fs = fsspec.filesystem(proto, skip_instance_cache=True, **kw)
print(json.dumps({"data": fs.cat_file(url).decode(), "find": fs.find(url.rsplit("/", 1)[0])}))
"""


def test_env_is_enough_for_a_subprocess_client(backend: tuple[StorageServer, str]) -> None:
    """``server.env`` alone (no storage_options) lets a child process reach the server."""
    server, base = backend
    url = f"{base}/from-parent"
    _fs(server).pipe_file(url, b"hi child")

    env = {**os.environ, **server.env}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, server.protocol, url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"data": "hi child", "find": [_bare(url)]}
