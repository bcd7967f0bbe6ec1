"""Push and pull through real network faults, end to end, for each S3/Azure engine.

The store's endpoint is a fault-injecting proxy (tests/fault_proxy.py) in front of SeaweedFS
or Azurite: the first pack upload is throttled (503), the first pack read is reset, a range
answer is cut short. The CLI reports each retry on stderr and the commands succeed with the
tree intact; a store that stays throttled ends in exit 4 naming the object, with the old
tree left in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy, HttpFault, remote_under_test
from treeutil import describe, make_project

from snapsync.cli import main

pytestmark = pytest.mark.timeout(120)


def _opts(options: dict[str, Any], old: str, new: str) -> list[str]:
    import json

    out = []
    for k, v in options.items():
        val = v if isinstance(v, str) else json.dumps(v)
        out += ["-o", f"{k}={val.replace(old, new)}"]
    return out


@pytest.fixture(params=["s3-obstore", "s3-fsspec", "az-obstore"])
def via_proxy(request: pytest.FixtureRequest) -> Any:
    """``(url, options through the proxy, proxy)``."""
    kind = request.param
    server, url = remote_under_test(request, kind)
    with FaultProxy(server.endpoint) as proxy:
        opts = _opts(server.storage_options, server.endpoint, proxy.endpoint)
        if kind.endswith("fsspec"):
            opts += ["-o", "backend=fsspec"]
        yield url, opts, proxy


def test_push_and_pull_survive_faults(tmp_path: Path, via_proxy: Any,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    url, opts, proxy = via_proxy
    src = make_project(tmp_path / "src")
    proxy.faults = [HttpFault("503", match="/packs/", methods=("PUT",)),
                    HttpFault("reset", match="/refs/")]
    assert main(["push", str(src), url, *opts]) == 0
    err = capsys.readouterr().err
    assert "snapsync: retrying PUT " in err and "/packs/" in err and "(attempt 2 of 5)" in err
    assert proxy.fired("503") == 1 and proxy.fired("reset") == 1

    proxy.faults = [HttpFault("reset", match="/packs/", methods=("GET",)),
                    HttpFault("cut", match="/packs/", methods=("GET",), after=1)]
    out = tmp_path / "out"
    assert main(["pull", url, str(out), "--no-cache", *opts]) == 0
    err = capsys.readouterr().err
    assert describe(out) == describe(src)
    # The store retried and said so, or the client's HTTP stack re-sent the request itself
    # (aiohttp retries a request whose reused connection was reset).
    faulted = [(i, m, p) for i, (m, p, k) in enumerate(proxy.requests) if k == "reset"][-1]
    assert "snapsync: retrying" in err or (
        (faulted[1], faulted[2], "") in proxy.requests[faulted[0] + 1:])
    assert proxy.fired("reset") == 2  # the push's and the pull's


def test_persistent_throttling_fails_cleanly(tmp_path: Path, via_proxy: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    url, opts, proxy = via_proxy
    src = make_project(tmp_path / "src")
    assert main(["push", "-q", str(src), url, *opts]) == 0
    out = tmp_path / "out"
    assert main(["pull", "-q", url, str(out), *opts]) == 0
    before = describe(out)
    (src / "new.txt").write_text("more\n")
    assert main(["push", "-q", str(src), url, *opts]) == 0
    capsys.readouterr()
    proxy.faults = [HttpFault("503", match="/packs/", methods=("GET",), times=None)]
    code = main(["pull", url, str(out), "--no-cache", *opts])
    err = capsys.readouterr().err
    assert code == 4, err
    assert err.count("snapsync: retrying") >= 4 and "/packs/" in err.splitlines()[-1]
    assert "Traceback" not in err
    assert describe(out) == before  # a failed pull leaves the old tree
