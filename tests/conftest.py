"""Shared fixtures: real storage servers (tests/servers.py) and per-test isolation.

Server fixtures never skip: a missing binary fails with a message naming what installs it,
because CI must run every backend.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import netutil
import pytest
from servers import Azurite, FakeGCS, SeaweedS3, StorageServer

# NOTE: gcsfs chooses its filesystem class when it is first imported; with the default
# ("true") it uses ExtendedGcsFileSystem, which stalls 60 s per call against fake-gcs-server.
# Nothing above imports gcsfs; keep imports of gcsfs (or of snapsync, which may pull it in)
# below this line. Subprocess clients inherit the setting. FakeGCS checks it again.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


@pytest.fixture(autouse=True)
def snapsync_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give every test its own snapsync cache so no state leaks between tests (or from ~)."""
    cache = tmp_path / "snapsync-cache"
    monkeypatch.setenv("SNAPSYNC_CACHE_DIR", str(cache))
    return cache


# ---------------------------------------------------------------- servers (one per session)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS ``weed mini`` S3 endpoint on a free 127.0.0.1 port."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite blob endpoint on a free 127.0.0.1 port."""
    with Azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    """fake-gcs-server endpoint on a free 127.0.0.1 port."""
    with FakeGCS(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


# ---------------------------------------------------------------- a fresh bucket per test


def _bucket_name(request: pytest.FixtureRequest) -> str:
    """Unique, valid for S3, Azure and GCS (3-63 chars of [a-z0-9-], no '--'), and readable."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"{stem or 't'}-{uuid.uuid4().hex[:10]}"


def _fresh_bucket(server: StorageServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _bucket_name(request)
    server.make_bucket(name)
    yield server.url(name)
    # Best effort: the test may have removed it itself. Dropping buckets keeps the
    # session-long servers small (SeaweedFS gives every bucket its own volumes).
    with suppress(Exception):
        server.remove_bucket(name)


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new empty S3 bucket; yields its URL, e.g. ``s3://test-push-1a2b3c4d5e``."""
    yield from _fresh_bucket(s3_server, request)


@pytest.fixture
def az_container(azurite_server: Azurite, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new empty Azure container; yields its URL, e.g. ``az://test-push-1a2b3c4d5e``."""
    yield from _fresh_bucket(azurite_server, request)


@pytest.fixture
def gcs_bucket(gcs_server: FakeGCS, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new empty GCS bucket; yields its URL, e.g. ``gs://test-push-1a2b3c4d5e``."""
    yield from _fresh_bucket(gcs_server, request)


# ------------------------------------------------------------------- Prefect, offline

DUMMY_API = "http://127.0.0.1:9/api"  # nothing listens; Prefect never connects


@pytest.fixture(scope="session")
def prefect_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Prefect's step runner and storage protocol, imported offline once per session."""
    mp = pytest.MonkeyPatch()
    # Must be in the environment before prefect is first imported (settings load then).
    mp.setenv("PREFECT_API_URL", DUMMY_API)
    mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    mp.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    root_handlers = logging.root.handlers[:]
    from prefect import Flow
    from prefect.deployments.steps.core import StepExecutionError, run_steps
    from prefect.runner.storage import RunnerStorage
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.templating import apply_values

    from snapsync.prefect import SnapsyncStorage

    # Importing prefect installs a console handler on the root logger; keep the session's
    # logging as it was for the other test modules.
    logging.root.handlers[:] = root_handlers
    # Belt and braces, in case something imported prefect before this fixture ran.
    with temporary_settings({PREFECT_API_URL: DUMMY_API}):
        yield {"Flow": Flow, "run_steps": run_steps, "apply_values": apply_values,
               "RunnerStorage": RunnerStorage, "SnapsyncStorage": SnapsyncStorage,
               "StepExecutionError": StepExecutionError}
    mp.undo()


@pytest.fixture
def no_cloud_lookups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No instance-metadata probing, no ambient credentials or profiles from this machine."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AZURE_STORAGE_CONNECTION_STRING",
                "SNAPSYNC_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", netutil.CLOSED)
    monkeypatch.setenv("AZURE_MSI_ENDPOINT", netutil.CLOSED)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
