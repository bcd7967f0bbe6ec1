"""End to end: a real Prefect server, a process work pool and worker, SnapsyncStorage on S3.

The deploy script is the README's "Python deployments" example (run as written, with the
store and credentials filled in from the environment). The worker runs with no AWS
credentials in its environment: the deployment's pull step names Secret blocks, which
Prefect resolves on the worker. Everything listens on 127.0.0.1; PREFECT_HOME is temporary.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_ports

pytestmark = [pytest.mark.prefect, pytest.mark.s3, pytest.mark.timeout(240)]

README = Path(__file__).resolve().parent.parent / "README.md"
PREFECT = Path(sys.executable).with_name("prefect")

FLOW = '''\
from pathlib import Path

from prefect import flow, get_run_logger


@flow
def hello() -> str:
    version = (Path(__file__).parent / "version.txt").read_text().strip()
    get_run_logger().info("code version: %s", version)
    return version
'''


def readme_block(marker: str) -> str:
    """The fenced python block right after ``<!-- marker -->`` in the README."""
    text = README.read_text()
    m = re.search(rf"<!-- {re.escape(marker)} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after <!-- {marker} -->"
    return m.group(1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("prefect-server")
    [port] = free_ports(1)
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "AWS_"))}
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5", "DO_NOT_TRACK": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    log = open(home / "server.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen([str(PREFECT), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ui"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError("prefect server exited:\n" +
                                   (home / "server.log").read_text()[-3000:])
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prefect server not ready after 120 s:\n" +
                                   (home / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"api": api, "env": env, "home": home}
    finally:
        _stop(proc)
        log.close()


def test_deploy_and_run_through_a_process_worker(prefect_server: dict[str, Any],
                                                 s3_server: Any, s3_bucket: str,
                                                 tmp_path: Path) -> None:
    api, base_env = prefect_server["api"], prefect_server["env"]
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "hello.py").write_text(FLOW)
    (project / "flows" / "version.txt").write_text("v1\n")
    env = {**base_env, "SNAPSYNC_CACHE_DIR": str(tmp_path / "cache"),
           "SNAP_URL": f"{s3_bucket}/proj", "SNAP_S3_ENDPOINT": s3_server.endpoint,
           "SNAP_S3_KEY": s3_server.key, "SNAP_S3_SECRET": s3_server.secret}

    def run(*argv: str, cwd: Path = tmp_path, timeout: float = 120) -> str:
        out = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"{argv}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout + out.stderr

    run(str(PREFECT), "work-pool", "create", "snap-pool", "--type", "process")
    script = tmp_path / "deploy.py"
    script.write_text(readme_block("example: python-deploy") + textwrap_tail())
    deploy_out = run(sys.executable, str(script), cwd=project)
    facts = json.loads([line for line in deploy_out.splitlines() if line.startswith("{")][-1])
    assert "snapsync: pushed" in deploy_out  # the push summary, on Prefect's console

    client = httpx.Client(base_url=api, timeout=30)
    dep = client.get(f"/deployments/{facts['deployment']}").json()
    [step] = dep["pull_steps"]
    assert step == {"snapsync.steps.pull": {
        "requires": "snapsync", "url": f"{s3_bucket}/proj", "snapshot": facts["snapshot"],
        "storage_options": {"key": "{{ prefect.blocks.secret.snap-s3-key }}",
                            "secret": "{{ prefect.blocks.secret.snap-s3-secret }}",
                            "endpoint_url": s3_server.endpoint,
                            "config_kwargs": {"s3": {"addressing_style": "path"}}}}}
    assert s3_server.secret not in json.dumps(dep)

    # A newer push must not change what the deployment runs: it is pinned.
    (project / "flows" / "version.txt").write_text("v2 (pushed after the deploy)\n")
    run(sys.executable, "-m", "snapsync", "push", str(project), f"{s3_bucket}/proj", "-q",
        "-o", f"endpoint_url={s3_server.endpoint}", "-o", f"key={s3_server.key}",
        "-o", f"secret={s3_server.secret}",
        "-o", 'config_kwargs={"s3": {"addressing_style": "path"}}')

    flow_run = client.post(f"/deployments/{facts['deployment']}/create_flow_run",
                           json={}).json()
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    worker = subprocess.Popen([str(PREFECT), "worker", "start", "--pool", "snap-pool",
                               "--type", "process", "--run-once"], cwd=worker_dir, env=env,
                              stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        state = None
        while time.monotonic() < deadline:
            state = client.get(f"/flow_runs/{flow_run['id']}").json()["state"]["type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
        worker.wait(60)
    finally:
        _stop(worker)
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert state == "COMPLETED", worker_log[-4000:]

    logs: list[str] = []
    for _ in range(20):  # the run's last log batch may still be on its way
        got = client.post("/logs/filter", json={
            "logs": {"flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 200}).json()
        logs = [entry["message"] for entry in got]
        if any("code version" in m for m in logs):
            break
        time.sleep(0.5)
    text = "\n".join(logs)
    assert "code version: v1" in text, text  # the pinned code, not the later push
    assert f"snapsync: pulled snapshot {facts['snapshot'][:12]}" in text, text
    assert "requests" in text


def textwrap_tail() -> str:
    """What the test needs back from the README script: ids, on the last line."""
    return ('\nimport json\nprint(json.dumps({"deployment": str(deployment_id), '
            '"snapshot": storage.pinned}))\n')
