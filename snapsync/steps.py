"""Drop-in Prefect deployment steps: push/pull a project through a snapsync store.

Replace ``prefect_aws.deployments.steps`` (or ``prefect_gcp`` / ``prefect_azure``) with
``snapsync.steps`` in ``prefect.yaml``; everything else stays::

    push:
    - snapsync.steps.push_to_s3:
        id: push_code
        requires: snapsync
        bucket: my-bucket
        folder: my-project
    pull:
    - snapsync.steps.pull_from_s3:
        requires: snapsync
        bucket: "{{ push_code.bucket }}"
        folder: "{{ push_code.folder }}"
        snapshot: "{{ push_code.snapshot }}"     # optional: pin the code pushed at deploy

Same parameter names, defaults and output keys as Prefect's steps, plus ``snapshot`` (the id
pushed or pulled), and optional ``ref`` (and ``snapshot`` on pull). Like Prefect's, push
works on the current directory and pull writes into it; unlike them, a push sends only the
chunks the store lacks, and a pull is verified and atomic, keeps modes, symlinks and empty
directories, removes stale files (paths the snapshot's ignore rules match are kept) and never
writes outside the directory.

These are plain synchronous functions; nothing here imports prefect. Prefect's runner calls
them as ``fn(**inputs)`` from a worker thread.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from snapsync.credentials import azure_storage_options, gcs_storage_options, s3_storage_options
from snapsync.engine.pull import pull as _engine_pull
from snapsync.engine.push import push as _engine_push
from snapsync.engine.results import PullResult, PushResult
from snapsync.errors import SnapsyncError, UsageError
from snapsync.progress import format_size

log = logging.getLogger("snapsync")

DEFAULT_IGNORE_FILE = ".prefectignore"


class PushToS3Output(TypedDict):
    """What :func:`push_to_s3` returns (Prefect's keys plus ``snapshot``)."""

    bucket: str
    folder: str
    snapshot: str


class PullFromS3Output(TypedDict):
    """What :func:`pull_from_s3` returns (Prefect's keys plus ``snapshot``)."""

    bucket: str
    folder: str
    directory: str
    snapshot: str


class PushToGcsOutput(TypedDict):
    """What :func:`push_to_gcs` returns."""

    bucket: str
    folder: str
    snapshot: str


class PullFromGcsOutput(TypedDict):
    """What :func:`pull_from_gcs` returns."""

    bucket: str
    folder: str
    directory: str
    snapshot: str


class PushToAzureOutput(TypedDict):
    """What :func:`push_to_azure_blob_storage` returns."""

    container: str
    folder: str
    snapshot: str


class PullFromAzureOutput(TypedDict):
    """What :func:`pull_from_azure_blob_storage` returns (``directory`` is a str)."""

    container: str
    folder: str
    directory: str
    snapshot: str


class PushOutput(TypedDict):
    """What :func:`push` returns."""

    url: str
    snapshot: str


class PullOutput(TypedDict):
    """What :func:`pull` returns."""

    url: str
    directory: str
    snapshot: str


# ------------------------------------------------------------------------------- helpers


def normalize_folder(folder: str | None) -> str:
    """The store prefix a ``folder`` names: posix, no leading or trailing slash.

    ``"proj"``, ``"/proj/"`` and ``"proj//"`` all name ``proj``; ``""`` or ``"/"`` is the bucket
    root. Backslashes count as separators, so a folder typed on Windows names the same place.

    Args:
        folder: the ``folder`` step argument.

    Returns:
        The normalised prefix (may be empty).

    Raises:
        UsageError: the folder has ``.`` or ``..`` segments.
    """
    parts = [p for p in str(folder or "").replace("\\", "/").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"folder {folder!r} must not contain '.' or '..' segments")
    return "/".join(parts)


def _bucket_name(bucket: str, scheme: str, what: str) -> str:
    """A bare bucket/container name (a pasted ``s3://bucket`` is accepted too)."""
    name = str(bucket or "").strip()
    if name.startswith(f"{scheme}://"):
        name = name[len(scheme) + 3:]
    name = name.strip("/")
    if not name or "/" in name:
        raise UsageError(f"{what} {bucket!r} must be a bare {what} name (put the path in "
                         "folder)")
    return name


def store_url(scheme: str, bucket: str, folder: str | None) -> str:
    """The snapsync store URL for a bucket and folder, e.g. ``s3://bkt/proj``.

    Args:
        scheme: the fsspec protocol (``s3``, ``gs``, ``az``).
        bucket: the bucket or container name.
        folder: the folder inside it (normalised with :func:`normalize_folder`).

    Returns:
        The URL; the folder is a whole path segment, never a prefix of a sibling.
    """
    what = "container" if scheme == "az" else "bucket"
    name = _bucket_name(bucket, scheme, what)
    prefix = normalize_folder(folder)
    return f"{scheme}://{name}/{prefix}" if prefix else f"{scheme}://{name}"


def _opt(value: Any) -> str | None:
    """An optional string argument: an empty template result (``{{ $UNSET }}``) means unset."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _report(level: int, msg: str) -> None:
    """Log on ``snapsync``, and, under Prefect, where its users look (deploy output, run logs).

    Prefect shows neither a plain logger's INFO records nor a step's exception text by
    default; ``snapsync.prefect.step_log`` routes to the flow run's logger or Prefect's
    console. Prefect is only used when it is already loaded (these steps never import it).
    """
    log.log(level, "%s", msg)
    if "prefect" in sys.modules:
        from snapsync.prefect import step_log

        step_log(level, msg)


def _warn(msg: str) -> None:
    _report(logging.WARNING, f"snapsync: {msg}")


def _requests(req: Mapping[str, int]) -> int:
    return sum(req.values())


def _do_push(url: str, storage_options: Mapping[str, Any] | None, ignore_file: str | None,
             ref: str | None, message: str | None) -> PushResult:
    root = Path.cwd()
    # Prefect reads the ignore file relative to cwd; a missing .prefectignore falls back to
    # Prefect's default template (so .git/ never ships), another missing name is an error.
    try:
        result = _engine_push(root, url, storage_options=dict(storage_options or {}),
                              ref=_opt(ref) or "latest", message=_opt(message) or "",
                              ignore_file=_opt(ignore_file), on_warning=_warn)
    except SnapsyncError as exc:
        _report(logging.ERROR, f"snapsync: push of {root} to {url} failed: {exc}")
        raise
    for note in result.notes:
        # The engine's notes mention CLI flags; a step user's lever is the ignore file.
        if note.startswith("no ") and "default ignore template" in note:
            note = note.split(";")[0] + "; add one to choose what ships"
        _report(logging.INFO, f"snapsync: {note}")
    state = "unchanged" if result.unchanged else f"{format_size(result.bytes_uploaded)} uploaded"
    _report(logging.INFO,
            f"snapsync: pushed {root} ({result.files} files) to {result.url} as snapshot "
            f"{result.snapshot_id[:12]}, ref {result.ref}: {state} in "
            f"{_requests(result.requests)} requests, {result.seconds:.1f} s")
    return result


def _do_pull(url: str, storage_options: Mapping[str, Any] | None, ref: str | None,
             snapshot: str | None) -> PullResult:
    dest = Path.cwd().absolute()
    # delete=True: the directory ends up holding exactly the snapshot, except paths its
    # ignore rules match (a local .venv or __pycache__ survives).
    try:
        result = _engine_pull(url, dest, storage_options=dict(storage_options or {}),
                              ref=_opt(ref), snapshot=_opt(snapshot), delete=True,
                              on_warning=_warn)
    except SnapsyncError as exc:
        _report(logging.ERROR, f"snapsync: pull from {url} into {dest} failed: {exc}")
        raise
    _report(logging.INFO,
            f"snapsync: pulled snapshot {result.snapshot_id[:12]} from {result.url} into "
            f"{result.directory}: {result.files} files, {result.files_written} written, "
            f"{result.deleted} removed, {format_size(result.bytes_downloaded)} downloaded in "
            f"{_requests(result.requests)} requests, {result.seconds:.1f} s")
    return result


# ------------------------------------------------------------------------------------ S3


def push_to_s3(bucket: str, folder: str, credentials: dict[str, Any] | None = None,
               client_parameters: dict[str, Any] | None = None,
               ignore_file: str | None = DEFAULT_IGNORE_FILE, *, ref: str | None = None,
               message: str | None = None) -> PushToS3Output:
    """Push the current directory to ``s3://bucket/folder`` (prefect-aws's ``push_to_s3``).

    Args:
        bucket: the S3 bucket (must exist).
        folder: the folder in the bucket that holds the snapsync store.
        credentials: an ``AwsCredentials``/``MinIOCredentials`` block or a plain dict (see
            :func:`snapsync.credentials.s3_storage_options`); ``None`` uses the AWS chain.
        client_parameters: ``endpoint_url``, ``use_ssl``, ``verify``, ``config``...; merged
            with the block's ``aws_client_parameters``, non-``None`` explicit values win.
        ignore_file: gitignore-style rules, relative to the current directory.
        ref: the ref to update (default ``latest``).
        message: free text stored with the snapshot.

    Returns:
        ``{"bucket", "folder", "snapshot"}``; ``folder`` is returned as given.

    Raises:
        SnapsyncError: a subclass naming the URL, file or option at fault.
    """
    url = store_url("s3", bucket, folder)
    result = _do_push(url, s3_storage_options(credentials, client_parameters), ignore_file,
                      ref, message)
    return {"bucket": bucket, "folder": folder, "snapshot": result.snapshot_id}


def pull_from_s3(bucket: str, folder: str, credentials: dict[str, Any] | None = None,
                 client_parameters: dict[str, Any] | None = None, *, ref: str | None = None,
                 snapshot: str | None = None) -> PullFromS3Output:
    """Make the current directory hold a snapshot from ``s3://bucket/folder``.

    Args:
        bucket: the S3 bucket.
        folder: the folder that holds the snapsync store.
        credentials: as for :func:`push_to_s3`.
        client_parameters: as for :func:`push_to_s3`.
        ref: the ref to pull (default ``latest``).
        snapshot: a snapshot id (or unique prefix) to pull; wins over ``ref``. Use
            ``"{{ push_code.snapshot }}"`` to pin a deployment to the code it pushed.

    Returns:
        ``{"bucket", "folder", "directory", "snapshot"}``; ``directory`` is absolute.

    Raises:
        NotAStoreError: the folder holds no snapshot.
        SnapsyncError: any other failure; the directory is then left as it was.
    """
    url = store_url("s3", bucket, folder)
    result = _do_pull(url, s3_storage_options(credentials, client_parameters), ref, snapshot)
    return {"bucket": bucket, "folder": folder, "directory": result.directory,
            "snapshot": result.snapshot_id}


# ----------------------------------------------------------------------------------- GCS


def push_to_gcs(bucket: str, folder: str, project: str | None = None,
                credentials: dict[str, Any] | None = None,
                ignore_file: str | None = DEFAULT_IGNORE_FILE, *, ref: str | None = None,
                message: str | None = None) -> PushToGcsOutput:
    """Push the current directory to ``gs://bucket/folder`` (prefect-gcp's ``push_to_gcs``).

    Args:
        bucket: the GCS bucket (must exist).
        folder: the folder in the bucket that holds the snapsync store.
        project: the GCP project; honoured, and wins over ``credentials["project"]``.
        credentials: a ``GcpCredentials`` block or dict with ``service_account_info`` or
            ``service_account_file``; ``None`` uses Google's default credentials.
        ignore_file: gitignore-style rules, relative to the current directory.
        ref: the ref to update (default ``latest``).
        message: free text stored with the snapshot.

    Returns:
        ``{"bucket", "folder", "snapshot"}``.
    """
    url = store_url("gs", bucket, folder)
    result = _do_push(url, gcs_storage_options(credentials, _opt(project)), ignore_file, ref,
                      message)
    return {"bucket": bucket, "folder": folder, "snapshot": result.snapshot_id}


def pull_from_gcs(bucket: str, folder: str, project: str | None = None,
                  credentials: dict[str, Any] | None = None, *, ref: str | None = None,
                  snapshot: str | None = None) -> PullFromGcsOutput:
    """Make the current directory hold a snapshot from ``gs://bucket/folder``.

    Args:
        bucket: the GCS bucket.
        folder: the folder that holds the snapsync store.
        project: the GCP project.
        credentials: as for :func:`push_to_gcs`.
        ref: the ref to pull (default ``latest``).
        snapshot: a snapshot id (or unique prefix); wins over ``ref``.

    Returns:
        ``{"bucket", "folder", "directory", "snapshot"}``; ``directory`` is absolute.
    """
    url = store_url("gs", bucket, folder)
    result = _do_pull(url, gcs_storage_options(credentials, _opt(project)), ref, snapshot)
    return {"bucket": bucket, "folder": folder, "directory": result.directory,
            "snapshot": result.snapshot_id}


# --------------------------------------------------------------------------------- Azure


def push_to_azure_blob_storage(container: str, folder: str, credentials: dict[str, Any],
                               ignore_file: str | None = DEFAULT_IGNORE_FILE, *,
                               ref: str | None = None,
                               message: str | None = None) -> PushToAzureOutput:
    """Push the current directory to ``az://container/folder`` (prefect-azure's step).

    Args:
        container: the blob container (must exist).
        folder: the folder in the container that holds the snapsync store.
        credentials: ``connection_string``, or ``account_url`` with ``tenant_id``,
            ``client_id`` and ``client_secret`` (or default credentials).
        ignore_file: gitignore-style rules, relative to the current directory.
        ref: the ref to update (default ``latest``).
        message: free text stored with the snapshot.

    Returns:
        ``{"container", "folder", "snapshot"}``; keys are posix on every OS.
    """
    url = store_url("az", container, folder)
    result = _do_push(url, azure_storage_options(credentials), ignore_file, ref, message)
    return {"container": container, "folder": folder, "snapshot": result.snapshot_id}


def pull_from_azure_blob_storage(container: str, folder: str, credentials: dict[str, Any], *,
                                 ref: str | None = None,
                                 snapshot: str | None = None) -> PullFromAzureOutput:
    """Make the current directory hold a snapshot from ``az://container/folder``.

    Args:
        container: the blob container.
        folder: the folder that holds the snapsync store.
        credentials: as for :func:`push_to_azure_blob_storage`.
        ref: the ref to pull (default ``latest``).
        snapshot: a snapshot id (or unique prefix); wins over ``ref``.

    Returns:
        ``{"container", "folder", "directory", "snapshot"}``; ``directory`` is an absolute
        str (Prefect's Azure step returns a ``Path``).
    """
    url = store_url("az", container, folder)
    result = _do_pull(url, azure_storage_options(credentials), ref, snapshot)
    return {"container": container, "folder": folder, "directory": result.directory,
            "snapshot": result.snapshot_id}


# ------------------------------------------------------------------------------ any URL


def push(url: str, storage_options: dict[str, Any] | None = None,
         ignore_file: str | None = DEFAULT_IGNORE_FILE, *, ref: str | None = None,
         message: str | None = None) -> PushOutput:
    """Push the current directory to any fsspec URL (``s3://``, ``gs://``, ``file://``...).

    Args:
        url: the store URL.
        storage_options: passed to fsspec as they are (e.g. ``endpoint_url``, ``key``).
        ignore_file: gitignore-style rules, relative to the current directory.
        ref: the ref to update (default ``latest``).
        message: free text stored with the snapshot.

    Returns:
        ``{"url", "snapshot"}``.
    """
    if not _opt(url):
        raise UsageError("url must not be empty")
    result = _do_push(str(url), storage_options, ignore_file, ref, message)
    return {"url": url, "snapshot": result.snapshot_id}


def pull(url: str, storage_options: dict[str, Any] | None = None, *, ref: str | None = None,
         snapshot: str | None = None) -> PullOutput:
    """Make the current directory hold a snapshot from any fsspec URL.

    Args:
        url: the store URL.
        storage_options: passed to fsspec as they are.
        ref: the ref to pull (default ``latest``).
        snapshot: a snapshot id (or unique prefix); wins over ``ref``.

    Returns:
        ``{"url", "directory", "snapshot"}``; ``directory`` is absolute.
    """
    if not _opt(url):
        raise UsageError("url must not be empty")
    result = _do_pull(str(url), storage_options, ref, snapshot)
    return {"url": url, "directory": result.directory, "snapshot": result.snapshot_id}


__all__ = [
    "normalize_folder",
    "pull",
    "pull_from_azure_blob_storage",
    "pull_from_gcs",
    "pull_from_s3",
    "push",
    "push_to_azure_blob_storage",
    "push_to_gcs",
    "push_to_s3",
    "store_url",
]
