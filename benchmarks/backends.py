"""Where the benchmarks store things: ``file://``, SeaweedFS S3, and S3 behind latency.

The S3 server is ``tests/servers.py``'s ``SeaweedS3`` (imported, not copied) with its Prometheus
metrics port turned on: per-bucket request counts and bytes come from the server itself, so
every tool (snapsync and peers alike) is measured the same way.

The latency backend runs inside a network namespace the benchmark makes and deletes itself
(``netns.py``): ``tbf`` on the namespace's loopback for bandwidth, plus the user-space delay
proxy (``proxy.py``) for round-trip time, since the kernel has no netem (servers.md §9).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
import servers as test_servers

_METRIC = re.compile(r'^SeaweedFS_s3_(request_total|bucket_traffic_(received|sent)_bytes_total)'
                     r'\{([^}]*)\}\s+(\S+)$')


class MetricsSeaweed(test_servers.SeaweedS3):
    """``weed mini`` with the Prometheus metrics endpoint on a free 127.0.0.1 port."""

    metrics_port = 0

    def _pick_ports(self) -> None:
        super()._pick_ports()
        (self.metrics_port,) = test_servers.free_ports(1)

    def _command(self, binary: Path) -> list[str]:
        return [*super()._command(binary), f"-metricsPort={self.metrics_port}",
                "-metricsIp=127.0.0.1"]


class Backend:
    """A place to push to. ``client_endpoint`` is what clients use (maybe via the proxy)."""

    name = "base"
    is_s3 = False
    note = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def make_bucket(self, bucket: str) -> None: ...

    def url(self, bucket: str, prefix: str) -> str:
        raise NotImplementedError

    @property
    def storage_options(self) -> dict[str, Any]:
        return {}

    def counters(self) -> dict[str, dict[str, float]] | None:
        """Per-bucket server-side counters, or None when the backend has none."""
        return None

    def usage(self, bucket: str, prefix: str) -> tuple[int, int]:
        """(objects, bytes) stored under ``bucket/prefix``."""
        raise NotImplementedError


class FileBackend(Backend):
    name = "file"

    def url(self, bucket: str, prefix: str) -> str:
        return f"file://{self.path(bucket, prefix)}"

    def path(self, bucket: str, prefix: str) -> Path:
        return self.root / "stores" / bucket / prefix

    def make_bucket(self, bucket: str) -> None:
        (self.root / "stores" / bucket).mkdir(parents=True, exist_ok=True)

    def usage(self, bucket: str, prefix: str) -> tuple[int, int]:
        n = size = 0
        for dirpath, _dirs, files in os.walk(self.path(bucket, prefix)):
            for f in files:
                with contextlib.suppress(OSError):
                    size += os.lstat(os.path.join(dirpath, f)).st_size
                    n += 1
        return n, size


class S3Backend(Backend):
    """SeaweedFS on 127.0.0.1; with ``delay_ms`` clients go through the delay proxy."""

    is_s3 = True

    def __init__(self, root: Path, delay_ms: float = 0.0, note: str = "") -> None:
        super().__init__(root)
        self.delay_ms = delay_ms
        self.name = "s3-latency" if delay_ms else "s3"
        self.note = note
        self.server = MetricsSeaweed(root / "seaweedfs", bucket="bench", max_volumes=4000)
        self.proxy: subprocess.Popen[str] | None = None
        self.proxy_port = 0
        self.proxy_stats: dict[str, Any] = {}

    def start(self) -> None:
        from .tools import python_env

        self.server.start()
        if self.delay_ms:
            (self.proxy_port,) = test_servers.free_ports(1)
            self.proxy = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.proxy", str(self.proxy_port),
                 str(self.server.port), str(self.delay_ms)],
                stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=python_env())
            assert self.proxy.stdout is not None
            if self.proxy.stdout.readline().strip() != "ready":
                raise RuntimeError("delay proxy did not start")

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.terminate()  # the PID we started
            with contextlib.suppress(subprocess.TimeoutExpired):
                out, _ = self.proxy.communicate(timeout=10)
                with contextlib.suppress(ValueError):
                    import json

                    self.proxy_stats = json.loads(out.strip().splitlines()[-1])
            if self.proxy.poll() is None:
                self.proxy.kill()
                self.proxy.wait()
            self.proxy = None
        self.server.stop()

    @property
    def client_endpoint(self) -> str:
        if self.proxy_port:
            return f"http://127.0.0.1:{self.proxy_port}"
        return self.server.endpoint

    @property
    def key(self) -> str:
        return self.server.key

    @property
    def secret(self) -> str:
        return self.server.secret

    @property
    def storage_options(self) -> dict[str, Any]:
        opts = dict(self.server.storage_options)
        opts["endpoint_url"] = self.client_endpoint
        return opts

    def url(self, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}"

    def make_bucket(self, bucket: str) -> None:
        with contextlib.suppress(Exception):  # already there
            self.server.make_bucket(bucket)

    def counters(self) -> dict[str, dict[str, float]]:
        """{bucket: {"GET": n, "PUT": n, ..., "bytes_in": n, "bytes_out": n}} from /metrics."""
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        out: dict[str, dict[str, float]] = {}
        for line in text.splitlines():
            m = _METRIC.match(line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
            row = out.setdefault(labels.get("bucket", ""), {})
            if m.group(1) == "request_total":
                kind = labels.get("type", "?")
            else:  # server "received" = client sent
                kind = "bytes_sent" if m.group(2) == "received" else "bytes_received"
            row[kind] = row.get(kind, 0.0) + float(m.group(4))
        return out

    def usage(self, bucket: str, prefix: str) -> tuple[int, int]:
        client = self.server.boto3_client()
        n = size = 0
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            for obj in page.get("Contents", []):
                n += 1
                size += obj["Size"]
        return n, size

    def remove_bucket(self, bucket: str) -> None:
        with contextlib.suppress(Exception):
            self.server.remove_bucket(bucket)


def counter_delta(before: dict[str, dict[str, float]] | None,
                  after: dict[str, dict[str, float]] | None, bucket: str) -> dict[str, int] | None:
    """Requests and bytes a single operation caused in ``bucket``."""
    if before is None or after is None:
        return None
    b, a = before.get(bucket, {}), after.get(bucket, {})
    return {k: int(a[k] - b.get(k, 0)) for k in sorted(a) if a[k] - b.get(k, 0)}


def wait_quiet(seconds: float = 0.0) -> None:
    """Let the server settle (flushes, compaction) between timed operations."""
    if seconds:
        time.sleep(seconds)


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
