"""snapsync.steps through Prefect's real step runner, against real storage servers.

Each test writes a real ``prefect.yaml``, runs its ``push:`` section with
``prefect.deployments.steps.core.run_steps`` in a project folder (as ``prefect deploy``
does), applies the push outputs to the ``pull:`` section with Prefect's own ``apply_values``
(also as ``prefect deploy`` does), then runs the pull section in a fresh "worker" folder (as
a flow run does). Offline, per shared/reference/prefect-steps.md section 6: PREFECT_API_URL
points at a closed port before prefect is imported, PREFECT_HOME is a temporary folder and
PREFECT__FLOW_RUN_ID is unset, so nothing talks to a Prefect server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.prefect


# Prefect 3.9.1's default .prefectignore template plus one project rule.
PREFECTIGNORE = textwrap.dedent("""\
    # prefect artifacts
    .prefectignore

    # python artifacts
    __pycache__/
    *.py[cod]
    *$py.class
    *.egg-info/
    *.egg

    # Environments
    .python-version
    .env
    .venv
    env/
    venv/

    # VCS
    .git/
    .hg/

    # project
    data/
""")

HELLO_FLOW = textwrap.dedent('''\
    from prefect import flow


    @flow
    def hello() -> str:
        return "hello from snapsync"
''')

Runner = Callable[[list[dict[str, Any]]], dict[str, Any]]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def prefect(prefect_offline: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    return prefect_offline


class Deployment:
    """Runs a prefect.yaml's push steps at "deploy" time and pull steps at "run" time."""

    def __init__(self, prefect: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                 yaml_text: str) -> None:
        import yaml

        self.prefect = prefect
        self.monkeypatch = monkeypatch
        self.config = yaml.safe_load(yaml_text)
        self.printed: list[str] = []
        self.pull_steps: list[dict[str, Any]] | None = None

    def _run(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        def capture(*args: Any, **_: Any) -> None:
            self.printed.append(" ".join(str(a) for a in args))

        return asyncio.run(self.prefect["run_steps"](steps, print_function=capture))

    def deploy(self, project: Path) -> dict[str, Any]:
        """`prefect deploy`: run push steps in the project, template the pull steps."""
        self.monkeypatch.chdir(project)
        outputs = self._run(self.config["push"])
        self.pull_steps = self.prefect["apply_values"](self.config["pull"], outputs,
                                                       remove_notset=False)
        return outputs

    def run(self, workdir: Path) -> dict[str, Any]:
        """A flow run: run the (deploy-time templated) pull steps in the worker's folder."""
        assert self.pull_steps is not None, "deploy first"
        workdir.mkdir(parents=True, exist_ok=True)
        self.monkeypatch.chdir(workdir)
        return self._run(self.pull_steps)


def make_project(root: Path, *, prefectignore: bool = True) -> Path:
    """A project with the things Prefect's bucket steps lose or get wrong."""
    (root / "flows" / "sub").mkdir(parents=True)
    (root / "flows" / "hello.py").write_text(HELLO_FLOW)
    (root / "flows" / "sub" / "deep.txt").write_text("deep\n")
    (root / "flows" / "__pycache__").mkdir()
    (root / "flows" / "__pycache__" / "hello.cpython-311.pyc").write_bytes(b"\0pyc")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "link_to_hello.py").symlink_to("flows/hello.py")
    (root / "linkdir").symlink_to("flows/sub", target_is_directory=True)
    (root / "empty").mkdir()
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(os.urandom(1 << 16))
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "name with spaces é.txt").write_text("unicode\n")
    (root / "requirements.txt").write_text("")
    if prefectignore:
        (root / ".prefectignore").write_text(PREFECTIGNORE)
    return root


# What a snapshot of make_project holds: everything but the ignored paths.
IGNORED = {".git", ".git/HEAD", "flows/__pycache__", "flows/__pycache__/hello.cpython-311.pyc",
           "data", "data/big.bin", ".prefectignore"}


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under ``root`` without following links: path -> kind, content, exec bit."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), bool(st.st_mode & 0o111))
    return out


def expected_tree(project: Path) -> dict[str, tuple[Any, ...]]:
    return {k: v for k, v in tree(project).items() if k not in IGNORED}


def s3_env(monkeypatch: pytest.MonkeyPatch, server: Any, bucket_url: str) -> str:
    bucket = bucket_url.split("://", 1)[1]
    monkeypatch.setenv("SNAP_BUCKET", bucket)
    monkeypatch.setenv("SNAP_S3_ENDPOINT", server.endpoint)
    monkeypatch.setenv("SNAP_S3_KEY", server.key)
    monkeypatch.setenv("SNAP_S3_SECRET", server.secret)
    # Prove the yaml's credentials are used: no ambient AWS credentials or endpoint.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return bucket


# ------------------------------------------------------------------------------------ S3

S3_YAML = """
push:
- snapsync.steps.push_to_s3:
    id: push_code
    requires: snapsync
    bucket: "{{ $SNAP_BUCKET }}"
    folder: "{{ $SNAP_FOLDER }}"
    credentials:
      aws_access_key_id: "{{ $SNAP_S3_KEY }}"
      aws_secret_access_key: "{{ $SNAP_S3_SECRET }}"
    client_parameters:
      endpoint_url: "{{ $SNAP_S3_ENDPOINT }}"

pull:
- snapsync.steps.pull_from_s3:
    id: pull_code
    requires: snapsync
    bucket: "{{ push_code.bucket }}"
    folder: "{{ push_code.folder }}"
    snapshot: "{{ push_code.snapshot }}"
    # A rendered AwsCredentials block, as `{{ prefect.blocks.aws-credentials.x }}` gives it:
    # None values, nested aws_client_parameters with endpoint_url None, block_type_slug.
    # Prefect's own step would ignore client_parameters here and call AWS.
    credentials:
      aws_access_key_id: "{{ $SNAP_S3_KEY }}"
      aws_secret_access_key: "{{ $SNAP_S3_SECRET }}"
      aws_session_token: null
      profile_name: null
      region_name: us-east-1
      aws_client_parameters:
        api_version: null
        use_ssl: true
        verify: null
        verify_cert_path: null
        endpoint_url: null
        config: null
      assume_role_arn: null
      block_type_slug: aws-credentials
    client_parameters:
      endpoint_url: "{{ $SNAP_S3_ENDPOINT }}"
"""


@pytest.mark.s3
def test_s3_prefect_yaml_deploy_and_run(prefect: dict[str, Any], s3_server: Any,
                                         s3_bucket: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="snapsync")
    bucket = s3_env(monkeypatch, s3_server, s3_bucket)
    monkeypatch.setenv("SNAP_FOLDER", "/team/proj/")  # slashes on both ends: same place
    project = make_project(tmp_path / "project")
    dep = Deployment(prefect, monkeypatch, S3_YAML)

    out = dep.deploy(project)
    snap_a = out["push_code"]["snapshot"]
    assert out["push_code"] == {"bucket": bucket, "folder": "/team/proj/", "snapshot": snap_a}
    assert out["bucket"] == bucket and out["snapshot"] == snap_a  # merged at top level too
    assert dep.pull_steps[0]["snapsync.steps.pull_from_s3"]["snapshot"] == snap_a  # pinned
    assert any("Running push_to_s3 step" in line for line in dep.printed)
    # `requires: snapsync` is satisfied by the import: the runner installs nothing.
    assert not any("install" in line.lower() for line in dep.printed)
    assert any(r.name == "snapsync" and "pushed" in r.getMessage() for r in caplog.records)
    # The store lives under the folder, as posix keys, nothing beside it.
    keys = [o["Key"] for o in s3_server.boto3_client().list_objects_v2(
        Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("team/proj/") for k in keys)

    work = tmp_path / "worker"
    got = dep.run(work)
    assert got["pull_code"] == {"bucket": bucket, "folder": "/team/proj/",
                                "directory": str(work.resolve()), "snapshot": snap_a}
    assert got["directory"] == str(work.resolve())  # what the worker chdirs into
    assert tree(work) == expected_tree(project)
    assert os.access(work / "run.sh", os.X_OK)
    assert os.readlink(work / "link_to_hello.py") == "flows/hello.py"
    assert (work / "empty").is_dir() and not any((work / "empty").iterdir())

    # The pulled code runs: load the flow from its entrypoint as a worker would.
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(got["directory"])
    assert load_flow_from_entrypoint("flows/hello.py:hello").fn() == "hello from snapsync"

    # Redeploy-free change: new code pushed to the same folder. The pinned deployment keeps
    # running snapshot A; stale local files go, paths the ignore rules match are kept.
    (project / "flows" / "hello.py").write_text(HELLO_FLOW.replace("from snapsync", "v2"))
    (project / "flows" / "sub" / "deep.txt").unlink()
    dep2 = Deployment(prefect, monkeypatch, S3_YAML)
    snap_b = dep2.deploy(project)["push_code"]["snapshot"]
    assert snap_b != snap_a
    (work / "stale.py").write_text("old")
    (work / "__pycache__").mkdir()
    (work / "__pycache__" / "keep.pyc").write_bytes(b"cache")
    dep.run(work)
    assert (work / "flows" / "sub" / "deep.txt").read_text() == "deep\n"  # still snapshot A
    assert "from snapsync" in (work / "flows" / "hello.py").read_text()
    assert not (work / "stale.py").exists()
    assert (work / "__pycache__" / "keep.pyc").read_bytes() == b"cache"

    # Unpinned (no snapshot line): the latest push.
    unpinned = Deployment(prefect, monkeypatch, S3_YAML.replace(
        '    snapshot: "{{ push_code.snapshot }}"\n', ""))
    assert unpinned.deploy(project)["push_code"]["snapshot"] == snap_b  # unchanged tree
    assert unpinned.run(work)["pull_code"]["snapshot"] == snap_b
    assert tree(work) == {**expected_tree(project), "__pycache__": ("dir",),
                          "__pycache__/keep.pyc": ("file", b"cache", False)}


def _cause(exc_info: pytest.ExceptionInfo[BaseException]) -> BaseException:
    """The step's own exception: Prefect wraps it in StepExecutionError."""
    cause = exc_info.value.__cause__
    assert cause is not None
    return cause


@pytest.mark.s3
def test_s3_folders_never_pick_up_siblings_and_empty_folder_fails(
        prefect: dict[str, Any], s3_server: Any, s3_bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from snapsync.errors import NotAStoreError

    s3_env(monkeypatch, s3_server, s3_bucket)
    for name in ("proj", "proj-2"):  # proj is a string prefix of proj-2 (Prefect #13025)
        src = tmp_path / name
        src.mkdir()
        (src / f"{name}.py").write_text(f"# {name}\n")
        monkeypatch.setenv("SNAP_FOLDER", name)
        Deployment(prefect, monkeypatch, S3_YAML).deploy(src)

    monkeypatch.setenv("SNAP_FOLDER", "proj/")
    dep = Deployment(prefect, monkeypatch, S3_YAML)
    dep.deploy(tmp_path / "proj")
    work = tmp_path / "work"
    dep.run(work)
    assert sorted(p.name for p in work.iterdir()) == ["proj.py"]

    # A folder holding no snapshot ("pro" prefixes both) fails clearly; Prefect's step
    # reports success with zero files. The worker folder is left alone.
    (work / "mine.txt").write_text("keep")
    pull = [{"snapsync.steps.pull_from_s3": {
        "bucket": "{{ $SNAP_BUCKET }}", "folder": "pro",
        "credentials": {"aws_access_key_id": "{{ $SNAP_S3_KEY }}",
                        "aws_secret_access_key": "{{ $SNAP_S3_SECRET }}"},
        "client_parameters": {"endpoint_url": "{{ $SNAP_S3_ENDPOINT }}"}}}]
    monkeypatch.chdir(work)
    with pytest.raises(prefect["StepExecutionError"]) as info:
        asyncio.run(prefect["run_steps"](pull, print_function=lambda *a, **k: None))
    cause = _cause(info)
    assert isinstance(cause, NotAStoreError)
    assert "/pro" in str(cause) and "push to it first" in str(cause)
    assert sorted(p.name for p in work.iterdir()) == ["mine.txt", "proj.py"]


@pytest.mark.s3
def test_secrets_never_shown(prefect: dict[str, Any], s3_server: Any, s3_bucket: str,
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             caplog: pytest.LogCaptureFixture,
                             capfd: pytest.CaptureFixture[str]) -> None:
    """A wrong secret fails with an access error that shows no secret anywhere."""
    import traceback

    from snapsync.errors import StoreAccessError

    caplog.set_level(logging.DEBUG)
    s3_env(monkeypatch, s3_server, s3_bucket)
    wrong = "WRONG-s3cr3t-value-7f3a9c"
    monkeypatch.setenv("SNAP_S3_SECRET", wrong)
    monkeypatch.setenv("SNAP_FOLDER", "proj")
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.py").write_text("a\n")
    dep = Deployment(prefect, monkeypatch, S3_YAML)
    with pytest.raises(prefect["StepExecutionError"]) as info:
        dep.deploy(project)
    cause = _cause(info)
    assert isinstance(cause, StoreAccessError)
    shown = [str(info.value), repr(info.value), str(cause), repr(cause),
             "".join(traceback.format_exception(cause)), caplog.text, *dep.printed]
    out, err = capfd.readouterr()
    shown += [out, err]
    for text in shown:
        assert wrong not in text
        assert s3_server.secret not in text


# ------------------------------------------------------------------------------- GCS

GCS_YAML = """
push:
- snapsync.steps.push_to_gcs:
    id: push_code
    requires: snapsync
    bucket: "{{ $SNAP_BUCKET }}"
    folder: "{{ $SNAP_FOLDER }}"
    project: "{{ $SNAP_GCP_PROJECT }}"
    credentials:
      token: anon
      endpoint_url: "{{ $SNAP_GCS_ENDPOINT }}"

pull:
- snapsync.steps.pull_from_gcs:
    id: pull_code
    requires: snapsync
    bucket: "{{ push_code.bucket }}"
    folder: "{{ push_code.folder }}"
    snapshot: "{{ push_code.snapshot }}"
    project: "{{ $SNAP_GCP_PROJECT }}"
    credentials:
      token: anon
      endpoint_url: "{{ $SNAP_GCS_ENDPOINT }}"
"""


@pytest.mark.gcs
def test_gcs_prefect_yaml_deploy_and_run(prefect: dict[str, Any], gcs_server: Any,
                                          gcs_bucket: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = gcs_bucket.split("://", 1)[1]
    monkeypatch.setenv("SNAP_BUCKET", bucket)
    monkeypatch.setenv("SNAP_FOLDER", "flows/")
    monkeypatch.setenv("SNAP_GCP_PROJECT", "test")
    monkeypatch.setenv("SNAP_GCS_ENDPOINT", gcs_server.endpoint)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # the yaml's endpoint is used
    project = make_project(tmp_path / "project")
    dep = Deployment(prefect, monkeypatch, GCS_YAML)
    out = dep.deploy(project)["push_code"]
    assert set(out) == {"bucket", "folder", "snapshot"} and out["bucket"] == bucket

    work = tmp_path / "worker"
    (work / "stale.txt").parent.mkdir(parents=True)
    (work / "stale.txt").write_text("old")
    got = dep.run(work)["pull_code"]
    assert got == {"bucket": bucket, "folder": "flows/", "directory": str(work.resolve()),
                   "snapshot": out["snapshot"]}
    assert tree(work) == expected_tree(project)


# ----------------------------------------------------------------------------- Azure

AZURE_YAML = """
push:
- snapsync.steps.push_to_azure_blob_storage:
    id: push_code
    requires: snapsync
    container: "{{ $SNAP_CONTAINER }}"
    folder: "{{ $SNAP_FOLDER }}"
    credentials:
      connection_string: "{{ $SNAP_AZ_CONNECTION }}"

pull:
- snapsync.steps.pull_from_azure_blob_storage:
    id: pull_code
    requires: snapsync
    container: "{{ push_code.container }}"
    folder: "{{ push_code.folder }}"
    snapshot: "{{ push_code.snapshot }}"
    credentials:
      connection_string: "{{ $SNAP_AZ_CONNECTION }}"
      account_url: null
      block_type_slug: azure-blob-storage-credentials
"""


@pytest.mark.azure
def test_azure_prefect_yaml_deploy_and_run(prefect: dict[str, Any], azurite_server: Any,
                                            az_container: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    container = az_container.split("://", 1)[1]
    monkeypatch.setenv("SNAP_CONTAINER", container)
    monkeypatch.setenv("SNAP_FOLDER", "deep/er/proj")
    monkeypatch.setenv("SNAP_AZ_CONNECTION", azurite_server.connection_string)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)  # only the yaml's
    project = make_project(tmp_path / "project")
    dep = Deployment(prefect, monkeypatch, AZURE_YAML)
    out = dep.deploy(project)["push_code"]
    assert set(out) == {"container", "folder", "snapshot"} and out["container"] == container

    work = tmp_path / "worker"
    got = dep.run(work)["pull_code"]
    assert got == {"container": container, "folder": "deep/er/proj",
                   "directory": str(work.resolve()), "snapshot": out["snapshot"]}
    assert isinstance(got["directory"], str)  # Prefect's Azure step returns a Path
    assert tree(work) == expected_tree(project)

    from azure.storage.blob import ContainerClient

    with ContainerClient.from_connection_string(azurite_server.connection_string,
                                                container) as client:
        names = [b.name for b in client.list_blobs()]
    assert names and all(n.startswith("deep/er/proj/") and "\\" not in n for n in names)


@pytest.mark.azure
def test_azure_missing_credentials_error_names_keys(prefect: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from snapsync.errors import UsageError

    monkeypatch.chdir(tmp_path)
    step = [{"snapsync.steps.push_to_azure_blob_storage": {
        "container": "c", "folder": "f",
        "credentials": {"tenant_id": "t", "client_secret": "{{ $NOT_SET_ANYWHERE }}"}}}]
    with pytest.raises(prefect["StepExecutionError"]) as info:
        asyncio.run(prefect["run_steps"](step, print_function=lambda *a, **k: None))
    cause = _cause(info)
    assert isinstance(cause, UsageError)
    assert "missing: connection_string, account_url" in str(cause)


# ----------------------------------------------------------------------- any fsspec URL


def test_generic_url_steps_default_ignore(prefect: dict[str, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """push/pull for any URL; with no .prefectignore, .git/ and __pycache__ still stay home."""
    caplog.set_level(logging.INFO, logger="snapsync")
    monkeypatch.setenv("SNAP_STORE", (tmp_path / "store").as_uri())
    yaml_text = """
push:
- snapsync.steps.push:
    id: push_code
    requires: snapsync
    url: "{{ $SNAP_STORE }}/code"
pull:
- snapsync.steps.pull:
    url: "{{ push_code.url }}"
    snapshot: "{{ push_code.snapshot }}"
"""
    project = make_project(tmp_path / "project", prefectignore=False)
    dep = Deployment(prefect, monkeypatch, yaml_text)
    out = dep.deploy(project)
    assert set(out["push_code"]) == {"url", "snapshot"}
    assert "using Prefect's default ignore template" in caplog.text
    assert "add one to choose what ships" in caplog.text
    work = tmp_path / "worker"
    got = dep.run(work)
    assert got["directory"] == str(work.resolve())
    assert got["snapshot"] == out["push_code"]["snapshot"]
    # No project rule for data/ this time; the default template still drops these.
    assert tree(work) == {k: v for k, v in tree(project).items()
                          if k not in IGNORED - {"data", "data/big.bin"}}


# ------------------------------------------------------------ prefect-aws, side by side

PREFECT_AWS_YAML = """
push:
- prefect_aws.deployments.steps.push_to_s3:
    id: push_code
    requires: prefect-aws>=0.3.4
    bucket: "{{ $SNAP_BUCKET }}"
    folder: "{{ $SNAP_FOLDER }}"
    credentials:
      aws_access_key_id: "{{ $SNAP_S3_KEY }}"
      aws_secret_access_key: "{{ $SNAP_S3_SECRET }}"
    client_parameters:
      endpoint_url: "{{ $SNAP_S3_ENDPOINT }}"

pull:
- prefect_aws.deployments.steps.pull_from_s3:
    id: pull_code
    requires: prefect-aws>=0.3.4
    bucket: "{{ push_code.bucket }}"
    folder: "{{ push_code.folder }}"
    credentials:
      aws_access_key_id: "{{ $SNAP_S3_KEY }}"
      aws_secret_access_key: "{{ $SNAP_S3_SECRET }}"
    client_parameters:
      endpoint_url: "{{ $SNAP_S3_ENDPOINT }}"
"""


def _as_plain_files(t: dict[str, tuple[Any, ...]], root: Path) -> dict[str, bytes]:
    """The regular-file view a naive uploader produces: file links read through."""
    out = {}
    for rel, v in t.items():
        if v[0] == "file":
            out[rel] = v[1]
        elif v[0] == "link" and (root / rel).is_file():
            out[rel] = (root / rel).read_bytes()
    return out


@pytest.mark.s3
def test_same_yaml_as_prefect_aws_same_tree_plus_what_it_loses(
        prefect: dict[str, Any], s3_server: Any, s3_bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("prefect_aws")
    s3_env(monkeypatch, s3_server, s3_bucket)
    project = make_project(tmp_path / "project")
    snap_yaml = PREFECT_AWS_YAML.replace("prefect_aws.deployments.steps.", "snapsync.steps.")
    snap_yaml = snap_yaml.replace("prefect-aws>=0.3.4", "snapsync")
    # Only the step names (and what `requires` names) differ.
    pairs = zip(PREFECT_AWS_YAML.splitlines(), snap_yaml.splitlines(), strict=True)
    assert [a for a, b in pairs if a != b] == [
        a for a in PREFECT_AWS_YAML.splitlines() if "prefect_aws" in a or "prefect-aws" in a]

    trees = {}
    for label, text in (("prefect-aws", PREFECT_AWS_YAML), ("snapsync", snap_yaml)):
        monkeypatch.setenv("SNAP_FOLDER", f"{label}/proj")
        dep = Deployment(prefect, monkeypatch, text)
        out = dep.deploy(project)
        assert out["push_code"]["bucket"] == out["bucket"]
        work = tmp_path / f"worker-{label}"
        got = dep.run(work)
        assert got["directory"] == str(work.resolve())
        assert {"bucket", "folder", "directory"} <= set(got["pull_code"])
        trees[label] = tree(work)

    aws, snap = trees["prefect-aws"], trees["snapsync"]
    # snapsync: exactly the project minus what .prefectignore excludes.
    assert snap == expected_tree(project)
    # The same files with the same bytes as prefect-aws pulls (reading file links through)...
    aws_files = {k: v[1] for k, v in aws.items() if v[0] == "file"}
    assert _as_plain_files(snap, tmp_path / "worker-snapsync") == aws_files
    assert {k for k, v in aws.items() if v[0] == "dir"} <= {k for k, v in snap.items()
                                                            if v[0] == "dir"}
    # ...plus what prefect-aws loses: exec bits, symlinks, empty directories.
    assert snap["run.sh"][2] is True and aws["run.sh"][2] is False
    assert snap["link_to_hello.py"] == ("link", "flows/hello.py")
    assert aws["link_to_hello.py"][0] == "file"
    assert snap["linkdir"] == ("link", "flows/sub")
    assert aws.get("linkdir", ("absent",))[0] != "link"
    assert snap["empty"] == ("dir",) and "empty" not in aws


def test_refs_unset_templates_and_unknown_snapshot(prefect: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`ref` keeps lines of snapshots apart; an empty `{{ $UNSET }}` means "not given"; an
    unknown snapshot fails and leaves the folder as it was."""
    from snapsync.errors import NotFoundError

    store = (tmp_path / "store").as_uri()
    monkeypatch.delenv("SNAP_UNSET", raising=False)
    def quiet(*_: Any, **__: Any) -> None:
        pass

    def run(steps: list[dict[str, Any]], cwd: Path) -> dict[str, Any]:
        cwd.mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(cwd)
        return asyncio.run(prefect["run_steps"](steps, print_function=quiet))

    src = tmp_path / "src"
    src.mkdir()
    ids = {}
    for ref in ("latest", "staging"):
        (src / "which.txt").write_text(ref)
        out = run([{"snapsync.steps.push": {"url": store, "ref": ref,
                                             "message": f"{ref} build"}}], src)
        ids[ref] = out["snapshot"]
    assert ids["latest"] != ids["staging"]

    work = tmp_path / "work"
    got = run([{"snapsync.steps.pull": {"url": store, "ref": "staging"}}], work)
    assert got["snapshot"] == ids["staging"] and (work / "which.txt").read_text() == "staging"
    got = run([{"snapsync.steps.pull": {"url": store, "ref": "{{ $SNAP_UNSET }}",
                                        "snapshot": "{{ $SNAP_UNSET }}"}}], work)
    assert got["snapshot"] == ids["latest"] and (work / "which.txt").read_text() == "latest"

    with pytest.raises(prefect["StepExecutionError"]) as info:
        run([{"snapsync.steps.pull": {"url": store, "snapshot": "f" * 32}}], work)
    assert isinstance(_cause(info), NotFoundError)
    assert (work / "which.txt").read_text() == "latest"
