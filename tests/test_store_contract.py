"""The backend contract (snapsync/store/backend.py), once, for every engine and server.

zarr-v3 style: :class:`BackendContract` holds every test; each subclass says how to build its
backend (and, where it can, one with a missing bucket, bad credentials, or an endpoint that
never answers) and whether it honours conditional writes. Subclasses:

=====================  ======================  ===========
class                  engine                  server
=====================  ======================  ===========
TestObstoreS3          obstore                 SeaweedFS
TestFsspecS3           fsspec (s3fs)           SeaweedFS
TestObstoreAzure       obstore                 Azurite
TestFsspecGCS          fsspec (gcsfs)          fake-gcs-server
TestLocal              local (file://)         -
TestFsspecLocal        fsspec (file://)        -
TestFsspecMemory       fsspec (memory://)      -
TestObstoreMemory      obstore (MemoryStore)   -
=====================  ======================  ===========

Every client gets explicit throwaway credentials, and nothing but 127.0.0.1 is contacted: the
metadata endpoints are pointed at a closed loopback port for the whole module.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fault_proxy import FaultProxy, HttpFault
from netutil import CLOSED
from servers import AZURITE_ACCOUNT, Azurite, FakeGCS, SeaweedS3

from snapsync.errors import (
    AlreadyExistsError,
    FormatError,
    NotFoundError,
    PreconditionError,
    StoreAccessError,
    StoreError,
    TruncatedObjectError,
)
from snapsync.store import Backend, IfMatch, ObjectMeta, PreconditionFailed, Store, open_backend
from snapsync.store.backend import PutMode
from snapsync.store.store import RetryPolicy

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_cloud_lookups")]



def no_sleep() -> RetryPolicy:
    """The default schedule (4 retries), without waiting."""
    return RetryPolicy(sleep=lambda _s: None)


class Flaky(Backend):
    """Wraps a backend; the first ``fail`` calls of each verb raise ``error`` (bulk verbs:
    the first ``fail`` calls return it for item 0 only, as a provider's bulk call does)."""

    def __init__(self, inner: Backend, fail: int, error: type[BaseException] = ConnectionError
                 ) -> None:
        self.inner = inner
        self.fail = fail
        self.error = error
        self.calls: dict[str, int] = {}
        self.conditional = inner.conditional
        self.local = inner.local

    def _tick(self, verb: str) -> bool:
        n = self.calls.get(verb, 0)
        self.calls[verb] = n + 1
        return n < self.fail

    def _boom(self) -> BaseException:
        return self.error("injected: connection reset by peer")

    def get(self, key: str) -> bytes:
        if self._tick("get"):
            raise self._boom()
        return self.inner.get(key)

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        if self._tick("get_versioned"):
            raise self._boom()
        return self.inner.get_versioned(key)

    def get_many(self, keys: Sequence[str], concurrency: int) -> list[bytes | BaseException]:
        got = self.inner.get_many(keys, concurrency)
        if self._tick("get_many"):
            got[0] = self._boom()
        return got

    def get_ranges(self, reqs: Sequence[tuple[str, int, int]],
                   concurrency: int) -> list[bytes | BaseException]:
        got = self.inner.get_ranges(reqs, concurrency)
        if self._tick("get_ranges"):
            got[0] = self._boom()
        return got

    def put(self, key: str, data: bytes, mode: PutMode = "overwrite") -> str | None:
        if self._tick("put"):
            raise self._boom()
        return self.inner.put(key, data, mode)

    def list(self, prefix: str) -> list[ObjectMeta]:
        if self._tick("list"):
            raise self._boom()
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        if self._tick("delete"):
            raise self._boom()
        self.inner.delete(key)

    def root_exists(self) -> bool:
        return self.inner.root_exists()

    def is_transient(self, exc: BaseException) -> bool:
        return self.inner.is_transient(exc)


class BackendContract:
    """Every engine passes these. Subclasses provide :meth:`make` and the flags."""

    engine: ClassVar[str]  # the backend's ``name``
    conditional: ClassVar[bool]  # put modes honoured (else NotImplementedError)
    remote: ClassVar[bool] = True
    local: ClassVar[bool] = False  # keys are files on this machine
    names_missing_bucket: ClassVar[bool] = True  # a missing bucket is told from a missing key
    retries_itself: ClassVar[bool] = False  # the provider's client retries 5xx on its own
    silent_bound: ClassVar[float] = 8.0  # seconds for test_silent_endpoint_fails_in_bounded_time

    # ---- hooks for subclasses -------------------------------------------------------------
    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    def make(self, url: str, **override: Any) -> Backend:
        """A backend for ``url``; ``override`` replaces storage options."""
        raise NotImplementedError

    def make_options(self) -> dict[str, Any]:
        """The storage options :meth:`make` starts from (network engines)."""
        return dict(self.server.storage_options)

    def missing_root_url(self, url: str) -> str | None:
        """A URL of the same kind whose bucket (or top folder) does not exist."""
        return None

    def bad_credentials(self) -> dict[str, Any] | None:
        """Options that the server refuses (``None``: the server checks no credentials)."""
        return None

    def unreachable(self, endpoint: str) -> dict[str, Any] | None:
        """Options pointing at ``endpoint`` with short timeouts (``None``: not applicable)."""
        return None

    # ---- fixtures ---------------------------------------------------------------------------
    @pytest.fixture
    def backend(self, url: str) -> Iterator[Backend]:
        b = self.make(url)
        yield b
        b.close()

    @pytest.fixture
    def store(self, url: str, backend: Backend) -> Store:
        return Store(url, backend, retry=no_sleep())

    # ---- basics ---------------------------------------------------------------------------
    def test_engine(self, backend: Backend) -> None:
        assert backend.name == self.engine
        assert backend.conditional is self.conditional
        assert backend.local is self.local

    def test_put_get_overwrite(self, backend: Backend) -> None:
        backend.put("a/b/obj.bin", b"first")
        assert backend.get("a/b/obj.bin") == b"first"
        backend.put("a/b/obj.bin", b"second, longer")
        assert backend.get("a/b/obj.bin") == b"second, longer"
        backend.put("empty", b"")
        assert backend.get("empty") == b""

    def test_large_object(self, backend: Backend) -> None:
        data = bytes(range(256)) * (6 * 4096 + 7)  # ~6 MiB: past multipart thresholds
        backend.put("packs/big.pack", data)
        assert backend.get("packs/big.pack") == data
        n = len(data)
        assert backend.get_ranges([("packs/big.pack", n - 10, n)], 4) == [data[-10:]]
        # Ranges of several MiB beside small ones of the same object.
        for conc in (4, 16):
            assert backend.get_ranges([("packs/big.pack", 5, n - 5), ("packs/big.pack", 1, 3),
                                       ("packs/big.pack", 0, n)], conc) == [
                data[5:n - 5], data[1:3], data]

    def test_get_missing(self, backend: Backend, store: Store) -> None:
        with pytest.raises(FileNotFoundError):
            backend.get("no/such/key")
        with pytest.raises(FileNotFoundError):
            backend.get_versioned("no/such/key")
        with pytest.raises(NotFoundError, match="not found"):
            store.get("no/such/key")
        assert store.get_optional("no/such/key") is None
        assert store.get_versioned("no/such/key") is None

    def test_get_versioned(self, backend: Backend) -> None:
        tag = backend.put("refs/latest.json", b"{}")
        data, etag = backend.get_versioned("refs/latest.json")
        assert data == b"{}"
        if self.conditional:
            assert etag and isinstance(etag, str)
            assert tag is None or tag == etag

    def test_get_many(self, backend: Backend, store: Store) -> None:
        keys = [f"manifests/{i:02d}/m{i}.mf" for i in range(20)]
        for i, k in enumerate(keys):
            backend.put(k, f"manifest {i}".encode())
        asked = [*keys[:10], "manifests/zz/missing.mf", *keys[10:]]
        got = backend.get_many(asked, 4)
        assert len(got) == len(asked)
        assert isinstance(got[10], FileNotFoundError)
        assert [g for i, g in enumerate(got) if i != 10] == [
            f"manifest {i}".encode() for i in range(20)]
        via = store.get_many(asked, batch_size=3)
        assert via["manifests/zz/missing.mf"] is None
        assert via[keys[7]] == b"manifest 7"
        assert backend.get_many([], 4) == [] and store.get_many([]) == {}

    def test_get_ranges(self, backend: Backend, store: Store) -> None:
        blobs = {f"packs/{i:02x}/p{i}.pack": bytes([i]) * 1000 + bytes(range(256))
                 for i in range(5)}
        for k, v in blobs.items():
            backend.put(k, v)
        reqs = [(k, s, s + n) for k in blobs for s, n in ((0, 10), (990, 20), (1000, 256),
                                                          (500, 1))]
        reqs.reverse()  # results follow the request order, not the key order
        for concurrency in (3, 16):  # obstore: one GET per range, then per-object batches
            got = backend.get_ranges(reqs, concurrency)
            assert got == [blobs[k][s:e] for k, s, e in reqs]
        assert store.get_ranges(reqs) == got

    def test_get_ranges_missing_object(self, backend: Backend, store: Store) -> None:
        backend.put("packs/ok.pack", b"0123456789")
        for concurrency in (2, 16):
            got = backend.get_ranges([("packs/ok.pack", 0, 3), ("packs/gone.pack", 0, 3),
                                      ("packs/ok.pack", 5, 10)], concurrency)
            assert got[0] == b"012" and got[2] == b"56789"
            assert isinstance(got[1], FileNotFoundError)
        with pytest.raises(NotFoundError):
            store.get_ranges([("packs/gone.pack", 0, 3)])

    def test_short_read_is_reported(self, backend: Backend, store: Store) -> None:
        backend.put("packs/short.pack", b"0123456789")
        with pytest.raises(StoreError, match="truncated"):
            store.get_ranges([("packs/short.pack", 5, 50)])

    @pytest.mark.parametrize("start,end", [(5, 50), (20, 30)])
    def test_read_past_the_end_is_corrupt_data(self, backend: Backend, store: Store,
                                               start: int, end: int) -> None:
        # Retries do not make an object longer: a store error with corrupt data's exit code.
        backend.put("packs/short.pack", b"0123456789")
        with pytest.raises(TruncatedObjectError, match="truncated") as ei:
            store.get_ranges([("packs/short.pack", start, end)])
        assert isinstance(ei.value, StoreError) and ei.value.exit_code == 7
        assert "packs/short.pack" in str(ei.value)

    def test_bulk_reads_from_many_threads(self, backend: Backend) -> None:
        backend.put("packs/t.pack", bytes(range(256)) * 16)
        errors: list[BaseException] = []

        def work(seed: int) -> None:
            try:
                reqs = [("packs/t.pack", (seed + i) % 4000, (seed + i) % 4000 + 50)
                        for i in range(40)]
                got = backend.get_ranges(reqs, 8)
                data = bytes(range(256)) * 16
                assert got == [data[s:e] for _, s, e in reqs]
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n * 97,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    # ---- listing --------------------------------------------------------------------------
    def test_list_prefix_and_relative_keys(self, backend: Backend, store: Store) -> None:
        before = time.time()
        for key in ("packs/aa/one.pack", "packs/bb/two.pack", "packsx/sibling.pack",
                    "refs/latest.json", "snapsync.json"):
            backend.put(key, key.encode())
        found = sorted(backend.list("packs/"), key=lambda m: m.key)
        assert [m.key for m in found] == ["packs/aa/one.pack", "packs/bb/two.pack"]
        assert [m.size for m in found] == [len(b"packs/aa/one.pack"), len(b"packs/bb/two.pack")]
        for m in found:
            assert m.mtime is None or abs(m.mtime - before) < 3600
        assert [m.key for m in backend.list("refs/")] == ["refs/latest.json"]
        assert backend.list("nothing/") == []
        assert sorted(m.key for m in store.list("packs/aa/")) == ["packs/aa/one.pack"]

    def test_list_sees_writes_and_deletes(self, backend: Backend, store: Store) -> None:
        store.put("logs/latest/1.json", b"1")
        assert [m.key for m in store.list("logs/")] == ["logs/latest/1.json"]
        store.put("logs/latest/2.json", b"2")
        store.delete(["logs/latest/1.json"])
        store.invalidate()
        assert [m.key for m in store.list("logs/")] == ["logs/latest/2.json"]

    # ---- delete ---------------------------------------------------------------------------
    def test_delete(self, backend: Backend, store: Store) -> None:
        backend.put("superseded/aa/x.json", b"x")
        backend.delete("superseded/aa/x.json")
        with pytest.raises(FileNotFoundError):
            backend.get("superseded/aa/x.json")
        # A missing key: FileNotFoundError, or (S3's idempotent delete) nothing at all.
        try:
            backend.delete("superseded/aa/x.json")
        except FileNotFoundError:
            pass
        store.delete(["superseded/aa/x.json", "never/was.json"])  # missing ones are fine

    # ---- conditional writes ---------------------------------------------------------------
    def test_create_only(self, backend: Backend, store: Store) -> None:
        if not self.conditional:
            with pytest.raises(NotImplementedError):
                backend.put("logs/x/1.json", b"a", mode="create")
            return
        backend.put("logs/x/1.json", b"first", mode="create")
        with pytest.raises(FileExistsError):
            backend.put("logs/x/1.json", b"second", mode="create")
        assert backend.get("logs/x/1.json") == b"first"
        with pytest.raises(AlreadyExistsError, match="logs/x/1.json"):
            store.put("logs/x/1.json", b"third", mode="create")
        assert store.stats.counts.get("RETRY", 0) == 0  # a lost create is not retried

    def test_compare_and_swap(self, backend: Backend, store: Store) -> None:
        backend.put("refs/main.json", b"v1")
        _, etag1 = backend.get_versioned("refs/main.json")
        if not self.conditional:
            with pytest.raises(NotImplementedError):
                backend.put("refs/main.json", b"v2", mode=IfMatch(etag1 or "x"))
            assert backend.get("refs/main.json") == b"v1"
            return
        assert etag1
        etag2 = backend.put("refs/main.json", b"v2", mode=IfMatch(etag1))
        with pytest.raises(PreconditionFailed):
            backend.put("refs/main.json", b"v3", mode=IfMatch(etag1))  # stale
        assert backend.get("refs/main.json") == b"v2"
        data, etag = backend.get_versioned("refs/main.json")
        assert data == b"v2" and (etag2 is None or etag == etag2)
        with pytest.raises(PreconditionError, match="refs/main.json"):
            store.put("refs/main.json", b"v4", mode=IfMatch(etag1))
        store.put("refs/main.json", b"v4", mode=IfMatch(etag))
        assert store.get("refs/main.json") == b"v4"

    def test_compare_and_swap_on_missing_key(self, backend: Backend) -> None:
        if not self.conditional:
            pytest.skip("no conditional writes on this engine")
        with pytest.raises((PreconditionFailed, FileNotFoundError)):
            backend.put("refs/none.json", b"x", mode=IfMatch('"0123"'))

    def test_concurrent_creates_one_wins(self, url: str, backend: Backend) -> None:
        if not self.conditional:
            pytest.skip("no conditional writes on this engine")
        results: list[str] = []

        def create(n: int) -> None:
            try:
                backend.put("logs/race.json", str(n).encode(), mode="create")
                results.append("won")
            except FileExistsError:
                results.append("lost")

        threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["lost"] * 5 + ["won"]

    def test_concurrent_swaps_lose_no_update(self, backend: Backend) -> None:
        """Counters bumped by compare-and-swap from 4 threads end at the number of wins."""
        if not self.conditional:
            pytest.skip("no conditional writes on this engine")
        backend.put("refs/counter.json", b"0", mode="create")
        wins: list[int] = []

        def bump() -> None:
            for _ in range(5):
                for _try in range(50):
                    data, etag = backend.get_versioned("refs/counter.json")
                    assert etag
                    try:
                        backend.put("refs/counter.json", b"%d" % (int(data) + 1),
                                    mode=IfMatch(etag))
                        wins.append(1)
                        break
                    except PreconditionFailed:
                        continue

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert int(backend.get("refs/counter.json")) == len(wins) == 20

    # ---- roots, translation ---------------------------------------------------------------
    def test_root_exists(self, url: str, backend: Backend) -> None:
        backend.put("snapsync.json", b"{}")
        assert backend.root_exists()
        missing = self.missing_root_url(url)
        if missing is None:
            return
        other = self.make(missing)
        try:
            assert not other.root_exists()
            with pytest.raises(NotFoundError) as info:
                Store(missing, other, retry=no_sleep()).get("snapsync.json")
            if self.remote and self.names_missing_bucket:
                assert "bucket" in str(info.value) or "container" in str(info.value)
        finally:
            other.close()

    def test_bad_credentials(self, url: str) -> None:
        bad = self.bad_credentials()
        if bad is None:
            pytest.skip("this server checks no credentials")
        b = self.make(url, **bad)
        try:
            store = Store(url, b, retry=no_sleep())
            with pytest.raises(StoreAccessError, match="access denied"):
                store.get("snapsync.json")
            with pytest.raises(StoreAccessError):
                store.put("snapsync.json", b"{}")
            assert store.stats.counts.get("RETRY", 0) == 0  # denied is not retried
        finally:
            b.close()

    # ---- retries through the facade --------------------------------------------------------
    @pytest.mark.parametrize("error", [ConnectionError, TimeoutError])
    def test_retries_transient_faults(self, url: str, backend: Backend,
                                      error: type[BaseException]) -> None:
        backend.put("packs/r.pack", b"0123456789")
        flaky = Flaky(backend, fail=2, error=error)
        waits: list[float] = []
        store = Store(url, flaky, retry=RetryPolicy(sleep=waits.append))
        assert store.get("packs/r.pack") == b"0123456789"
        assert store.get_versioned("packs/r.pack") is not None
        assert store.get_many(["packs/r.pack", "packs/none"]) == {
            "packs/r.pack": b"0123456789", "packs/none": None}
        assert store.get_ranges([("packs/r.pack", 0, 2), ("packs/r.pack", 8, 10)]) == [
            b"01", b"89"]
        store.put("packs/w.pack", b"w")
        assert sorted(m.key for m in store.list("packs/")) == ["packs/r.pack", "packs/w.pack"]
        store.delete(["packs/w.pack"])
        # Each verb failed twice and was retried twice, after growing backoffs.
        assert store.stats.counts["RETRY"] == 2 * 7
        assert all(0 < w < 1 for w in waits)

    def test_gives_up_after_the_retry_budget(self, url: str, backend: Backend) -> None:
        flaky = Flaky(backend, fail=100)
        store = Store(url, flaky, retry=no_sleep())
        with pytest.raises(StoreError, match="connection reset"):
            store.get("packs/r.pack")
        assert flaky.calls["get"] == 5  # one try and 4 retries

    def test_permanent_errors_are_not_retried(self, url: str, backend: Backend) -> None:
        flaky = Flaky(backend, fail=0)
        store = Store(url, flaky, retry=no_sleep())
        with pytest.raises(NotFoundError):
            store.get("missing/key")
        assert flaky.calls["get"] == 1
        assert not backend.is_transient(FileNotFoundError("x"))
        assert not backend.is_transient(PermissionError("x"))
        assert not backend.is_transient(PreconditionFailed("x"))
        assert backend.is_transient(ConnectionError("reset"))

    # ---- real network faults, through a fault-injecting proxy (tests/fault_proxy.py) -------
    @pytest.fixture
    def faulty(self, url: str, backend: Backend) -> Iterator[tuple[FaultProxy, Store]]:
        """A proxy in front of this engine's server and a store whose backend goes through
        it (``backend`` itself does not)."""
        server = getattr(self, "server", None)
        if server is None:
            pytest.skip("no network between this engine and its objects")
        with FaultProxy(server.endpoint) as proxy:
            b = self.make(url, **_swap(self.make_options(), server.endpoint, proxy.endpoint))
            try:
                yield proxy, Store(url, b, retry=RetryPolicy(base=0.01))
            finally:
                b.close()

    @pytest.mark.parametrize("kind", ["503", "reset", "cut"])
    def test_retries_network_faults(self, backend: Backend, kind: str,
                                    faulty: tuple[FaultProxy, Store]) -> None:
        proxy, store = faulty
        data = bytes(range(256)) * 800  # 200 KiB: a body worth cutting
        backend.put("packs/h.pack", data)
        steps = 0

        def once(**kw: Any) -> None:
            nonlocal steps
            steps += 1
            proxy.faults = [HttpFault(kind, **kw)]

        once(match="h.pack")
        assert store.get("packs/h.pack") == data
        once(match="h.pack")
        assert store.get_ranges([("packs/h.pack", 10, 100_000), ("packs/h.pack", 150_000,
                                                                  200_000)]) == [
            data[10:100_000], data[150_000:200_000]]
        once(methods=("PUT", "POST"))
        store.put("packs/w.pack", data[:5000])
        assert backend.get("packs/w.pack") == data[:5000]
        once(methods=("GET",))  # the listing's first page
        assert sorted(m.key for m in store.list("packs/")) == ["packs/h.pack", "packs/w.pack"]
        assert proxy.fired(kind) == steps
        # Every faulted request was sent again (by the store, or by the client's own
        # retry); a cut PUT answer (no body to cut) may count as answered.
        for i, (method, path, got) in enumerate(proxy.requests):
            if got and not (kind == "cut" and method != "GET"):
                assert (method, path, "") in proxy.requests[i + 1:], (method, path)

    def test_persistent_5xx_is_a_store_error(self, backend: Backend,
                                             faulty: tuple[FaultProxy, Store]) -> None:
        if self.retries_itself:
            pytest.skip("this engine's client retries 5xx itself, 6 times 1-32 s apart")
        proxy, store = faulty
        proxy.faults = [HttpFault("503", times=None)]
        with pytest.raises(StoreError) as info:
            store.get("packs/h.pack")
        assert type(info.value) is StoreError and info.value.exit_code == 4
        assert "packs/h.pack" in str(info.value)
        assert proxy.fired("503") == 5  # one try and 4 retries

    def test_denied_by_the_server_is_not_retried(self, backend: Backend,
                                                 faulty: tuple[FaultProxy, Store]) -> None:
        proxy, store = faulty
        proxy.faults = [HttpFault("403", times=None)]
        with pytest.raises(StoreAccessError, match="access denied") as info:
            store.get("packs/h.pack")
        assert info.value.exit_code == 6 and "packs/h.pack" in str(info.value)
        assert proxy.fired("403") == 1

    # ---- timeouts -------------------------------------------------------------------------
    def test_silent_endpoint_fails_in_bounded_time(self, url: str,
                                                   silent_endpoint: str) -> None:
        opts = self.unreachable(silent_endpoint)
        if opts is None:
            pytest.skip("no network endpoint for this engine")
        b = self.make(url, **opts)
        try:
            store = Store(url, b)  # the real backoff schedule
            t0 = time.monotonic()
            with pytest.raises(StoreError) as info:
                store.get("snapsync.json")
            took = time.monotonic() - t0
        finally:
            b.close()
        assert took < self.silent_bound, f"took {took:.1f} s"
        assert store.stats.counts.get("RETRY", 0) >= 1  # retried at least once before that
        assert "127.0.0.1" in str(info.value) or "time" in str(info.value).lower()


# ==================================================================== engines and servers


def _swap(obj: Any, old: str, new: str) -> Any:
    """``obj`` (options: dicts, lists, strings) with ``old`` replaced by ``new`` in strings."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _swap(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_swap(v, old, new) for v in obj)
    return obj



def _open(url: str, options: dict[str, Any]) -> Backend:
    return open_backend(url, options)


class _S3:
    server_fixture = "s3_server"
    conditional_s3 = True

    @pytest.fixture
    def url(self, s3_bucket: str, s3_server: SeaweedS3) -> str:
        self.server = s3_server
        return f"{s3_bucket}/stores/contract"

    def options(self) -> dict[str, Any]:
        return dict(self.server.storage_options)

    def missing_root_url(self, url: str) -> str | None:
        return f"s3://missing-{uuid.uuid4().hex[:12]}/x"

    def bad_credentials(self) -> dict[str, Any] | None:
        return {"secret": "not-the-secret"}


class TestObstoreS3(_S3, BackendContract):
    """obstore against SeaweedFS: conditional puts are honoured."""

    engine = "obstore"
    conditional = True

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, {**self.options(), **override})

    def unreachable(self, endpoint: str) -> dict[str, Any] | None:
        return {"endpoint_url": endpoint, "connect_timeout": 1, "read_timeout": 1,
                "retry_timeout": 2.5}

    def test_default_timeouts_fail_in_about_ten_seconds(self, url: str,
                                                        silent_endpoint: str) -> None:
        b = self.make(url, endpoint_url=silent_endpoint)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="no answer in time"):
            Store(url, b).get("snapsync.json")
        took = time.monotonic() - t0
        b.close()
        assert 9 <= took < 13, f"took {took:.1f} s"

    def test_refused_endpoint_fails_fast(self, url: str) -> None:
        b = self.make(url, endpoint_url=CLOSED)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="cannot connect"):
            Store(url, b).get("snapsync.json")
        assert time.monotonic() - t0 < 5
        b.close()

    def test_prefect_step_credentials_work(self, url: str) -> None:
        """What snapsync.credentials makes of a rendered AwsCredentials block opens obstore."""
        from snapsync.credentials import s3_storage_options

        opts = s3_storage_options(
            {"aws_access_key_id": self.server.key, "aws_secret_access_key": self.server.secret,
             "aws_session_token": None, "profile_name": None, "region_name": "us-east-1",
             "aws_client_parameters": {"api_version": None, "use_ssl": False, "verify": None,
                                       "endpoint_url": None, "config": None},
             "block_type_slug": "aws-credentials"},
            {"endpoint_url": self.server.endpoint, "config": {"s3": {"addressing_style": "path"},
                                                              "retries": {"max_attempts": 2}}})
        b = open_backend(url, dict(opts))
        assert b.name == "obstore"
        b.put("prefect.txt", b"ok")
        assert b.get("prefect.txt") == b"ok"
        b.close()

    def test_conditional_can_be_switched_off(self, url: str) -> None:
        b = self.make(url, conditional=False)
        assert not b.conditional
        with pytest.raises(NotImplementedError):
            b.put("x", b"1", mode="create")


class TestFsspecS3(_S3, BackendContract):
    """s3fs against SeaweedFS, selected with ``backend=fsspec``."""

    engine = "fsspec"
    conditional = False

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, {**self.options(), "backend": "fsspec", **override})

    def unreachable(self, endpoint: str) -> dict[str, Any] | None:
        # The facade's silence budget applies to every engine (botocore's own spelling).
        return {"endpoint_url": endpoint, "retry_timeout": 2.5,
                "config_kwargs": {"connect_timeout": 1, "read_timeout": 1,
                                  "s3": {"addressing_style": "path"}}}


class TestObstoreAzure(BackendContract):
    """obstore against Azurite: conditional puts are honoured."""

    engine = "obstore"
    conditional = True

    @pytest.fixture
    def url(self, az_container: str, azurite_server: Azurite) -> str:
        self.server = azurite_server
        return f"{az_container}/stores/contract"

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, {**self.server.storage_options, **override})

    def missing_root_url(self, url: str) -> str | None:
        return f"az://missing-{uuid.uuid4().hex[:12]}/x"

    def bad_credentials(self) -> dict[str, Any] | None:
        wrong = "A" * 86 + "=="  # a well-formed key that is not the account's
        return {"connection_string": self.server.connection_string.replace(
            self.server.connection_string.split("AccountKey=")[1].split(";")[0], wrong)}

    def test_prefect_step_credentials_work(self, url: str) -> None:
        from snapsync.credentials import azure_storage_options

        opts = azure_storage_options({"connection_string": self.server.connection_string,
                                      "account_url": None, "block_type_slug": "x"})
        b = open_backend(url, dict(opts))
        assert b.name == "obstore"
        b.put("prefect.txt", b"ok")
        assert b.get("prefect.txt") == b"ok"
        b.close()

    def test_connection_string_from_environment(self, url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", self.server.connection_string)
        b = open_backend(url, {})
        b.put("env.txt", b"ok")
        assert b.get("env.txt") == b"ok"
        b.close()

    def unreachable(self, endpoint: str) -> dict[str, Any] | None:
        return {"connection_string": f"DefaultEndpointsProtocol=http;AccountName="
                f"{AZURITE_ACCOUNT};AccountKey={'A' * 86}==;BlobEndpoint={endpoint}/"
                f"{AZURITE_ACCOUNT};", "connect_timeout": 1, "read_timeout": 1,
                "retry_timeout": 2.5}


class TestFsspecGCS(BackendContract):
    """gcsfs against fake-gcs-server (obstore's GCS client needs the XML API it lacks)."""

    engine = "fsspec"
    conditional = False
    # NOTE: gcsfs raises a bare FileNotFoundError for a missing bucket (a known gap).
    names_missing_bucket = False
    retries_itself = True  # gcsfs's retry_request: 6 tries, 1-32 s apart

    @pytest.fixture
    def url(self, gcs_bucket: str, gcs_server: FakeGCS) -> str:
        self.server = gcs_server
        return f"{gcs_bucket}/stores/contract"

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, {**self.server.storage_options, **override})

    def missing_root_url(self, url: str) -> str | None:
        return f"gs://missing-{uuid.uuid4().hex[:12]}/x"


class TestLocal(BackendContract):
    """file:// through the standard-library local backend (the default) and snapsync's
    atomic (and conditional) writes."""

    engine = "local"
    conditional = True
    remote = False
    local = True

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return (tmp_path / "store").as_uri()

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, override)

    def missing_root_url(self, url: str) -> str | None:
        return url + "-missing"

    def test_listing_does_not_follow_symlinks(self, url: str, backend: Backend,
                                              tmp_path: Path) -> None:
        backend.put("packs/aa/p.pack", b"p")
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.pack").write_bytes(b"s")
        root = Path(url.removeprefix("file://"))
        (root / "packs" / "link").symlink_to(outside)
        (root / "packs" / "aa" / "l.pack").symlink_to(outside / "secret.pack")
        assert sorted(m.key for m in backend.list("packs/")) == [
            "packs/aa/l.pack", "packs/aa/p.pack", "packs/link"]
        with pytest.raises(FormatError, match="symlink"):
            Store(url, backend, retry=no_sleep()).get("packs/aa/l.pack")

    def test_writes_are_atomic_files(self, url: str, backend: Backend) -> None:
        backend.put("packs/aa/p.pack", b"x" * 100)
        root = Path(url.removeprefix("file://"))
        assert (root / "packs/aa/p.pack").read_bytes() == b"x" * 100
        assert not [p for p in (root / "packs/aa").iterdir() if p.name.endswith(".tmp")]


class TestFsspecLocal(TestLocal):
    """file:// through fsspec's LocalFileSystem (``backend=fsspec``)."""

    engine = "fsspec"

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, {"backend": "fsspec", **override})

    def test_listing_does_not_follow_symlinks(self) -> None:
        pytest.skip("fsspec's LocalFileSystem follows linked folders")


class TestFsspecMemory(BackendContract):
    """memory:// through fsspec (one namespace per process, shared by every open)."""

    engine = "fsspec"
    conditional = True
    remote = False

    @pytest.fixture
    def url(self) -> str:
        return f"memory://contract-{uuid.uuid4().hex}"

    def make(self, url: str, **override: Any) -> Backend:
        return _open(url, override)


class TestObstoreMemory(BackendContract):
    """The obstore backend over obstore's MemoryStore: the engine's logic without a server."""

    engine = "obstore"
    conditional = True
    remote = False

    @pytest.fixture
    def url(self) -> str:
        return f"memory://obstore-{uuid.uuid4().hex}"

    def make(self, url: str, **override: Any) -> Backend:
        from obstore.store import MemoryStore

        from snapsync.store.obstore_backend import ObstoreBackend

        return ObstoreBackend(MemoryStore(), where=url)


def test_obstore_backends_share_one_io_thread() -> None:
    """A long-lived process (a worker serving flows) opens a store per pull: the bulk reads
    of every backend run on one event-loop thread, not one thread per backend."""
    import threading

    from obstore.store import MemoryStore

    from snapsync.store.obstore_backend import ObstoreBackend

    for i in range(5):
        b = ObstoreBackend(MemoryStore(), where=f"memory://shared-{i}")
        b.put("k", b"v")
        assert b.get_many(["k"], 4) == [b"v"]
    assert sum(t.name == "snapsync-obstore" for t in threading.enumerate()) == 1


def test_local_create_only_without_hard_links(tmp_path, monkeypatch):
    """A file system that refuses link(2) (vfat, some SMB or FUSE mounts) still gets
    create-only writes: one writer wins, the other finds the object there."""
    import errno
    import os as _os

    from snapsync.store import local_write

    def no_link(_src, _dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(local_write.os, "link", no_link)
    b = open_backend((tmp_path / "store").as_uri())
    b.put("logs/x/1.json", b"first", mode="create")
    with pytest.raises(FileExistsError):
        b.put("logs/x/1.json", b"second", mode="create")
    assert b.get("logs/x/1.json") == b"first"
    assert not [p for p in _os.listdir(tmp_path / "store" / "logs" / "x") if p.endswith(".tmp")]
