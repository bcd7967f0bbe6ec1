"""Unreachable stores fail in bounded time, say that they are retrying, and exit 4.

Real sockets on 127.0.0.1: a listener that accepts connections and never answers (a hung
server, a black-holed proxy) and a closed port (connection refused). Through the CLI, for the
obstore engine (S3, Azure) and the fsspec engines (s3fs, adlfs, gcsfs); plus the facade's
``on_retry`` reports and silence budget, and the timeout options' translation for fsspec.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from netutil import CLOSED

from snapsync.cli import main
from snapsync.errors import StoreError, UsageError
from snapsync.store import Backend, ObjectMeta, RetryPolicy, Store
from snapsync.store.backend import PutMode
from snapsync.store.options.fsspec import fsspec_options
from snapsync.store.store import RetryEvent

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_cloud_lookups")]

AZ_KEY = "A" * 86 + "=="


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("hello\n")
    return d


def s3_args(endpoint: str, *extra: str) -> list[str]:
    return ["s3://bkt/proj", "-o", f"endpoint_url={endpoint}", "-o", "key=k", "-o",
            "secret=s", *extra]


def az_args(endpoint: str, *extra: str) -> list[str]:
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZ_KEY};"
            f"BlobEndpoint={endpoint}/devstoreaccount1;")
    return ["az://cont/proj", "-o", f"connection_string={conn}", *extra]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main(argv)
    took = time.monotonic() - t0
    return code, capsys.readouterr().err, took


# ------------------------------------------------------------------- through the CLI

def test_silent_s3_endpoint_default_budget(src: Path, silent_endpoint: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Default options: ~10 s (not 41-48 s of silence), one retry reported, exit 4."""
    code, err, took = run(capsys, ["push", str(src), *s3_args(silent_endpoint)])
    assert code == 4, err
    assert 9 <= took < 14, f"took {took:.1f} s"
    assert "snapsync: retrying GET s3://bkt/proj/snapsync.json (attempt 2 of 5): " in err
    assert "error: s3://bkt/proj/snapsync.json" in err
    assert "no answer for 10 s, giving up (storage option retry_timeout)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
@pytest.mark.parametrize("kind", ["s3", "az"])
def test_silent_endpoint_with_short_timeouts(src: Path, silent_endpoint: str, engine: str,
                                             kind: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """connect_timeout/read_timeout/retry_timeout work the same for every engine."""
    # retry_timeout leaves room for a second attempt even when a loaded machine makes the
    # first one (client set-up included) take twice its 1 s: the test is about the retry.
    opts = ["-o", f"backend={engine}", "-o", "connect_timeout=1", "-o", "read_timeout=1",
            "-o", "retry_timeout=3.5"]
    argv = s3_args(silent_endpoint, *opts) if kind == "s3" else az_args(silent_endpoint, *opts)
    code, err, took = run(capsys, ["pull", *argv, str(src.parent / "out")])
    assert code == 4, err
    assert took < 9, f"took {took:.1f} s"
    assert f"snapsync: retrying GET {kind}://" in err and "(attempt 2 of 5)" in err
    assert f"error: {kind}://" in err and "giving up" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("engine", ["obstore", "fsspec"])
def test_refused_endpoint_fails_fast_with_retries_shown(
        src: Path, engine: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, took = run(capsys, ["push", str(src), *s3_args(CLOSED, "-o",
                                                               f"backend={engine}")])
    assert code == 4, err
    assert took < 8, f"took {took:.1f} s"
    assert err.count("snapsync: retrying GET s3://bkt/proj/snapsync.json") == 4
    assert "(attempt 5 of 5)" in err
    assert "127.0.0.1:9" in err.splitlines()[-1]


def test_quiet_hides_retries(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run(capsys, ["push", "-q", str(src), *s3_args(CLOSED)])
    assert code == 4
    assert "retrying" not in err and "error:" in err


def test_silent_gcs_endpoint_is_bounded(src: Path, silent_endpoint: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """gcsfs retries timeouts itself (6 tries, 1-16 s apart): bounded, not 10 s. Per
    attempt, -o read_timeout reaches aiohttp through gcsfs's requests_timeout."""
    code, err, took = run(capsys, ["push", str(src), "gs://bkt/proj", "-o",
                                   f"endpoint_url={silent_endpoint}", "-o", "token=anon", "-o",
                                   "read_timeout=0.5", "-o", "connect_timeout=0.5"])
    assert code == 4, err
    assert took < 60, f"took {took:.1f} s"
    assert "error: gs://bkt/proj" in err and "Traceback" not in err


# ------------------------------------------------------------------- the facade

class Silent(Backend):
    """Every request waits ``wait`` seconds and times out; counts the calls."""

    name = "silent"

    def __init__(self, wait: float, budget: float) -> None:
        self.wait = wait
        self.retry_timeout = budget
        self.calls = 0

    def _timeout(self) -> TimeoutError:
        self.calls += 1
        time.sleep(self.wait)
        return TimeoutError("injected: read timed out")

    def get(self, key: str) -> bytes:
        raise self._timeout()

    def get_many(self, keys: Sequence[str], concurrency: int) -> list[bytes | BaseException]:
        return [self._timeout() for _ in keys]

    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   concurrency: int) -> list[bytes | BaseException]:
        err = self._timeout()
        return [err for _ in reqs]

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str | None:
        raise self._timeout()

    def list(self, prefix: str) -> list[ObjectMeta]:
        raise self._timeout()

    def delete(self, key: str) -> None:
        raise self._timeout()

    def root_exists(self) -> bool:
        return True


def test_silence_budget_stops_retrying_timeouts() -> None:
    events: list[RetryEvent] = []
    b = Silent(wait=0.2, budget=0.5)
    store = Store("s3://b/p", b, retry=RetryPolicy(base=0.01), on_retry=events.append)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="giving up"):
        store.get("refs/latest.json")
    assert time.monotonic() - t0 < 1.5
    assert b.calls == 3  # 0.2 s, 0.4 s silent_endpoint: retried; 0.6 s: over the budget
    assert [e.attempt for e in events] == [2, 3]
    assert events[0].message().startswith(
        "retrying GET s3://b/p/refs/latest.json (attempt 2 of 5): TimeoutError: injected")


def test_without_the_budget_every_retry_is_used() -> None:
    b = Silent(wait=0.0, budget=60)
    store = Store("s3://b/p", b, retry=RetryPolicy(sleep=lambda _s: None))
    with pytest.raises(StoreError):
        store.get("x")
    assert b.calls == 5


def test_bulk_retry_events_count_items() -> None:
    events: list[RetryEvent] = []
    b = Silent(wait=0.0, budget=60)
    store = Store("s3://b/p", b, retry=RetryPolicy(retries=1, sleep=lambda _s: None),
                  on_retry=events.append)
    with pytest.raises(StoreError):
        store.get_ranges([("packs/a", 0, 5), ("packs/b", 0, 5), ("packs/c", 0, 5)])
    assert [e.message() for e in events] == [
        "retrying 3 of 3 range reads from s3://b/p (attempt 2 of 2): TimeoutError: "
        "injected: read timed out"]


# ------------------------------------------------------------------- option translation

def test_fsspec_s3_timeouts() -> None:
    opts, budget = fsspec_options("s3", {"connect_timeout": "2s", "read_timeout": 3,
                                         "retry_timeout": 7, "key": "k"})
    assert budget == 7 and opts["key"] == "k"
    assert opts["config_kwargs"] == {"connect_timeout": 2, "read_timeout": 3,
                                     "retries": {"total_max_attempts": 1}}
    # botocore's own spelling wins
    opts, _ = fsspec_options("s3", {"read_timeout": 3, "config_kwargs": {"read_timeout": 9}})
    assert opts["config_kwargs"]["read_timeout"] == 9
    opts, budget = fsspec_options("s3", {})
    assert budget == 10 and opts["config_kwargs"]["read_timeout"] == 5
    with pytest.raises(UsageError, match="storage option timeout"):
        fsspec_options("s3", {"timeout": 30})


def test_fsspec_gcs_and_azure_timeouts() -> None:
    opts, _ = fsspec_options("gs", {"timeout": 60, "read_timeout": 2, "token": "anon"})
    t = opts["requests_timeout"]
    assert (t.total, t.connect, t.sock_read) == (60, 5, 2) and opts["token"] == "anon"
    assert fsspec_options("gs", {"requests_timeout": 9})[0] == {"requests_timeout": 9}
    opts, _ = fsspec_options("az", {"connect_timeout": 1, "timeout": 30})
    assert opts == {"connection_timeout": 1, "read_timeout": 5, "timeout": 30}


@pytest.mark.parametrize("protocol", ["s3", "gs", "az"])
@pytest.mark.parametrize("name", ["connect_timeout", "read_timeout", "retry_timeout"])
def test_fsspec_bad_timeouts_name_the_option(protocol: str, name: str) -> None:
    with pytest.raises(UsageError, match=name):
        fsspec_options(protocol, {name: "soon"})
    with pytest.raises(UsageError, match=name):
        fsspec_options(protocol, {name: 0})


def test_local_stores_take_no_timeouts(tmp_path: Path) -> None:
    from snapsync.store import open_store

    with pytest.raises(UsageError, match="retry_timeout"):
        open_store(str(tmp_path), {"retry_timeout": 3})


class Throttled(Silent):
    """Every range read answers 503 at once, from an endpoint on ``port``."""

    def __init__(self, wait: float, budget: float, port: int = 41673) -> None:
        super().__init__(wait, budget)
        self.port = port

    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   concurrency: int) -> list[bytes | BaseException]:
        self.calls += 1
        return [OSError(f"GET http://127.0.0.1:{self.port}/b/p/packs/aa.pack - 503 Service "
                        "Unavailable") for _ in reqs]


@pytest.mark.parametrize("port", [41673, 40149, 40312, 45001])
def test_a_5xx_is_never_read_by_the_digits_of_its_url(port: int) -> None:
    """A persistent 503 is a store error (exit 4), not corrupt data (exit 7) nor bad
    credentials (exit 6), whatever digits its URL holds: "416" in a port once made it a range
    past the end, "401" in a port (40149, CI) a credentials error."""
    store = Store("s3://b/p", Throttled(wait=0, budget=60, port=port),
                  retry=RetryPolicy(sleep=lambda _s: None))
    with pytest.raises(StoreError) as info:
        store.get_ranges([("packs/aa.pack", 0, 6)])
    assert type(info.value) is StoreError and info.value.exit_code == 4
    assert "truncated" not in str(info.value) and "credentials" not in str(info.value)


@pytest.mark.parametrize(("text", "found"), [
    ("HTTP Error 401: Unauthorized", True),
    ("Server returned non-2xx status code: 403 Forbidden", True),
    ("the server said 401.", True),
    ("GET http://127.0.0.1:40149/b/k - 503", False),
    ("packs/40/401.pack: 503", False),
    ("bucket x-401-y", False),
    ("id 4011 missing", False),
])
def test_a_status_counts_only_where_it_stands_alone(text: str, found: bool) -> None:
    from snapsync.store.backend import status_pattern

    assert bool(status_pattern(401, 403).search(text)) is found

