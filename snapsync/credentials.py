"""Prefect credential shapes -> fsspec storage options, in one place.

Prefect's bucket steps take credentials as dicts: plain dicts written in ``prefect.yaml``, or
blocks rendered by ``{{ prefect.blocks.<type>.<name> }}`` (which arrive with every field,
``None`` values, ``block_type_slug`` and the real secret strings). This module turns those
into the keyword arguments s3fs, gcsfs and adlfs expect, so the steps stay thin.

Secrets: the returned options are a :class:`StorageOptions` whose ``repr``/``str`` hide
secret values, every error raised here names keys but never values, and nothing here logs a
value. Use :func:`redact` before showing any options dict.

Precedence rules (documented in the README):

* S3 ``client_parameters`` vs the block's ``aws_client_parameters``: both are merged, and an
  explicit ``client_parameters`` value that is not ``None`` wins over the block's value.
  (Prefect ignores ``client_parameters`` entirely when the block has ``aws_client_parameters``,
  which a rendered block always has.) The nested ``config`` dicts merge the same way.
* S3 ``aws_access_key_id`` / ``aws_secret_access_key`` win over MinIO's ``minio_root_user`` /
  ``minio_root_password``; ``credentials.region_name`` wins over ``client_parameters.region_name``.
* GCS: the step's ``project`` argument wins over ``credentials["project"]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from snapsync.errors import UsageError

log = logging.getLogger("snapsync")

# What makes a key's value a secret, in Prefect shapes and in fsspec options alike: a word in
# its (lower-case) name, or the whole name.
_SECRET_WORDS = ("secret", "password", "token", "connection_string", "sas", "credential",
                 "account_key", "access_key", "private_key")
_SECRET_NAMES = frozenset({"key", "client_secret", "service_account_info"})
_REDACTED = "***"


def is_secret_name(name: object) -> bool:
    """Whether a key of this name holds a secret (``secret``, ``aws_session_token``, ``key``...)."""
    low = str(name).lower()
    return low in _SECRET_NAMES or any(w in low for w in _SECRET_WORDS)

# Fields of the Prefect blocks that carry no meaning for the store (rendered-block noise).
_BLOCK_NOISE = frozenset({"block_type_slug", "_block_document_id", "_block_document_name",
                          "_is_anonymous", "block_type_name", "_block_type_slug"})

_S3_CRED_KEYS = frozenset({"aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                           "profile_name", "region_name", "aws_client_parameters",
                           "minio_root_user", "minio_root_password", "assume_role_arn",
                           "assume_role_kwargs"})
_S3_CLIENT_KEYS = frozenset({"api_version", "use_ssl", "verify", "verify_cert_path",
                             "endpoint_url", "config", "region_name"})
_GCS_KEYS = frozenset({"service_account_info", "service_account_file", "project", "token",
                       "endpoint_url"})
_AZURE_KEYS = frozenset({"connection_string", "account_url", "tenant_id", "client_id",
                         "client_secret", "account_name", "account_key", "sas_token"})
_SP_KEYS = ("tenant_id", "client_id", "client_secret")


class StorageOptions(dict):  # type: ignore[type-arg]
    """fsspec storage options (a plain dict) whose ``repr`` never shows a secret."""

    def __repr__(self) -> str:
        return f"StorageOptions({redact(self)!r})"

    __str__ = __repr__


def redact(value: Any) -> Any:
    """Return a copy of ``value`` with every secret-named entry replaced by ``***``.

    Args:
        value: a dict (nested dicts and lists are walked) or any other value.

    Returns:
        The same shape with secret values hidden; safe to log or show.
    """
    if isinstance(value, Mapping):
        return {k: (_REDACTED if is_secret_name(k) and v is not None
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


# ------------------------------------------------------------------------------- helpers


def _reveal(value: Any) -> Any:
    """Unwrap pydantic ``SecretStr``/``SecretDict`` values a Python caller may pass."""
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else value


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    """A credentials argument as a dict without ``None`` values or block noise.

    Accepts ``None``, a mapping, or a Prefect block object (anything with ``model_dump``),
    so Python callers can pass ``AwsCredentials.load("x")`` directly.
    """
    if value is None:
        return {}
    if hasattr(value, "model_dump") and not isinstance(value, Mapping):
        value = value.model_dump()
    if isinstance(value, str) and value.strip().startswith("{"):
        # A JSON string, e.g. from a `{{ $ENV }}` holding a whole dict. Never echo it.
        try:
            value = json.loads(value)
        except ValueError:
            raise UsageError(f"{what}: a string that is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise UsageError(f"{what} must be a mapping (a dict in prefect.yaml), "
                         f"got {type(value).__name__}")
    return {str(k): _reveal(v) for k, v in value.items()
            if v is not None and str(k) not in _BLOCK_NOISE}


def _unknown(keys: set[str], known: frozenset[str], what: str) -> None:
    # Prefect accepts and ignores unknown keys; so do we, but say which (names only).
    extra = sorted(k for k in keys - known if not k.startswith("_"))
    if extra:
        log.debug("snapsync: ignoring unknown %s keys: %s", what, ", ".join(extra))


def _bool(value: Any, key: str) -> bool:
    """A boolean from YAML or from a ``{{ $ENV }}`` template (which always gives a string)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"{key} must be true or false, got {value!r}")


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{key} must be a string, got {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------ S3


def merge_client_parameters(block_params: Mapping[str, Any] | None,
                            client_parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge a block's ``aws_client_parameters`` with explicit ``client_parameters``.

    Both are kept; for each key an explicit non-``None`` value wins over the block's. The
    nested ``config`` dicts merge key by key with the same rule.

    Args:
        block_params: ``credentials["aws_client_parameters"]`` (may hold ``None`` values).
        client_parameters: the step's ``client_parameters`` argument.

    Returns:
        The merged parameters, without ``None`` values.
    """
    base = _as_dict(block_params, "credentials.aws_client_parameters")
    explicit = _as_dict(client_parameters, "client_parameters")
    merged = {**base, **explicit}
    configs = [c for c in (base.get("config"), explicit.get("config")) if c is not None]
    if configs:
        merged["config"] = {}
        for c in configs:
            merged["config"].update(_as_dict(c, "client_parameters.config"))
    return merged


def s3_storage_options(credentials: Any = None,
                       client_parameters: Mapping[str, Any] | None = None) -> StorageOptions:
    """Translate prefect-aws credentials and client parameters into s3fs options.

    Args:
        credentials: a plain dict, a rendered ``AwsCredentials`` / ``MinIOCredentials`` block
            dict (nested ``aws_client_parameters``, ``None`` values, unknown keys are fine),
            or a block object. ``None`` means the default AWS chain (env, profile, role).
        client_parameters: ``endpoint_url``, ``use_ssl``, ``verify``, ``verify_cert_path``,
            ``api_version``, ``config`` (a botocore ``Config`` dict) and ``region_name``.
            Non-``None`` values win over the block's ``aws_client_parameters``.

    Returns:
        Options for ``s3fs.S3FileSystem`` (key, secret, token, profile, endpoint_url,
        use_ssl, anon, client_kwargs, config_kwargs).

    Raises:
        UsageError: a malformed value or an unsupported combination (names the key only).
    """
    creds = _as_dict(credentials, "credentials")
    _unknown(set(creds), _S3_CRED_KEYS, "S3 credentials")
    params = merge_client_parameters(creds.pop("aws_client_parameters", None), client_parameters)
    _unknown(set(params), _S3_CLIENT_KEYS, "S3 client_parameters")

    # MinIO block fields are aliases; the AWS names win when both are given (as in Prefect).
    key = creds.get("aws_access_key_id", creds.get("minio_root_user"))
    secret = creds.get("aws_secret_access_key", creds.get("minio_root_password"))
    if (key is None) != (secret is None):
        missing = "aws_secret_access_key" if secret is None else "aws_access_key_id"
        raise UsageError(f"S3 credentials: {missing} is missing (an access key needs both "
                         "aws_access_key_id and aws_secret_access_key)")
    if creds.get("assume_role_arn"):
        # Silently ignoring it would run with the wrong identity (Prefect #20121).
        raise UsageError("S3 credentials: assume_role_arn is not supported by snapsync's "
                         "steps; put role_arn in an AWS profile and pass profile_name")

    opts = StorageOptions()
    client_kwargs: dict[str, Any] = {}
    if key is not None:
        opts["key"] = _text(key, "aws_access_key_id")
        opts["secret"] = _text(secret, "aws_secret_access_key")
    if creds.get("aws_session_token"):
        opts["token"] = _text(creds["aws_session_token"], "aws_session_token")
    if creds.get("profile_name"):
        opts["profile"] = _text(creds["profile_name"], "profile_name")
    region = creds.get("region_name") or params.get("region_name")
    if region:
        client_kwargs["region_name"] = _text(region, "region_name")

    if params.get("endpoint_url"):
        opts["endpoint_url"] = _text(params["endpoint_url"], "endpoint_url")
    if "use_ssl" in params:
        opts["use_ssl"] = _bool(params["use_ssl"], "client_parameters.use_ssl")
    if params.get("api_version"):
        client_kwargs["api_version"] = params["api_version"]
    verify = params.get("verify")
    if isinstance(verify, str) and verify.strip().lower() in ("true", "false", "1", "0",
                                                              "yes", "no", "on", "off"):
        verify = _bool(verify, "client_parameters.verify")
    cert = params.get("verify_cert_path")
    if verify is False:
        client_kwargs["verify"] = False  # as in Prefect: verify=False beats a cert path
    elif cert:
        client_kwargs["verify"] = str(cert)
    elif verify is not None:
        client_kwargs["verify"] = verify if isinstance(verify, bool) else str(verify)

    config = dict(params.get("config") or {})
    sig = config.get("signature_version")
    if isinstance(sig, str) and sig.lower() == "unsigned":
        # botocore's UNSIGNED is an object, not a string: s3fs spells it anon=True.
        config.pop("signature_version")
        opts["anon"] = True
    if config:
        opts["config_kwargs"] = config
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    return opts


# ----------------------------------------------------------------------------------- GCS


def gcs_storage_options(credentials: Any = None, project: str | None = None) -> StorageOptions:
    """Translate prefect-gcp credentials into gcsfs options.

    Args:
        credentials: a dict or rendered ``GcpCredentials`` block with ``service_account_info``
            (a dict or a JSON string) or ``service_account_file``; neither means Google's
            default credentials. snapsync also accepts gcsfs's ``token`` (e.g. ``"anon"``
            for public buckets or an emulator) and ``endpoint_url``.
        project: the GCP project; wins over ``credentials["project"]`` (Prefect's step lets
            the credentials overwrite it).

    Returns:
        Options for ``gcsfs.GCSFileSystem`` (token, project, endpoint_url).

    Raises:
        UsageError: both or malformed service-account values (names the key only).
    """
    creds = _as_dict(credentials, "credentials")
    _unknown(set(creds), _GCS_KEYS, "GCS credentials")
    opts = StorageOptions()
    info = creds.get("service_account_info")
    path = creds.get("service_account_file")
    if info is not None and path is not None:
        raise UsageError("GCS credentials: give service_account_info or service_account_file, "
                         "not both")
    if info is not None:
        if isinstance(info, str):
            try:
                info = json.loads(info)
            except ValueError:
                raise UsageError("GCS credentials: service_account_info is not valid "
                                 "JSON") from None
        if not isinstance(info, Mapping):
            raise UsageError("GCS credentials: service_account_info must be a mapping")
        # gcsfs turns a dict token into service-account credentials with its own scope.
        opts["token"] = {k: _reveal(v) for k, v in info.items()}
    elif path is not None:
        opts["token"] = _text(str(path), "service_account_file")
    elif creds.get("token") is not None:
        opts["token"] = creds["token"]
    # else: no token, gcsfs tries google.auth.default() first (Prefect's fallback too).
    chosen = project or creds.get("project")
    if chosen:
        opts["project"] = _text(chosen, "project")
    if creds.get("endpoint_url"):
        opts["endpoint_url"] = _text(creds["endpoint_url"], "endpoint_url")
    return opts


# --------------------------------------------------------------------------------- Azure


def azure_storage_options(credentials: Any) -> StorageOptions:
    """Translate prefect-azure credentials into adlfs options.

    Args:
        credentials: a dict or rendered ``AzureBlobStorageCredentials`` block with either
            ``connection_string``, or ``account_url`` plus optionally all of ``tenant_id``,
            ``client_id`` and ``client_secret`` (a service principal); ``account_url`` alone
            means Azure's default credential chain. ``account_name`` with ``account_key`` or
            ``sas_token`` also works.

    Returns:
        Options for ``adlfs.AzureBlobFileSystem``.

    Raises:
        UsageError: neither a connection string nor an account is given, or a service
            principal lacks some of its keys (the message names the missing keys).
    """
    creds = _as_dict(credentials, "credentials")
    _unknown(set(creds), _AZURE_KEYS, "Azure credentials")
    opts = StorageOptions()
    if creds.get("connection_string"):
        opts["connection_string"] = _text(creds["connection_string"], "connection_string")
        return opts
    account_url = creds.get("account_url")
    account_name = creds.get("account_name")
    if not account_url and not account_name:
        given = ", ".join(sorted(creds)) or "none"
        raise UsageError("Azure credentials need connection_string, or account_url (with "
                         "tenant_id, client_id and client_secret, or default credentials); "
                         f"missing: connection_string, account_url (keys given: {given})")
    if account_url:
        parts = urlsplit(_text(account_url, "account_url"))
        host = parts.netloc if parts.scheme else parts.path.split("/", 1)[0]
        if not host:
            raise UsageError("Azure credentials: account_url is not a URL like "
                             "https://<account>.blob.core.windows.net")
        if parts.scheme == "http":
            raise UsageError("Azure credentials: account_url must use https (for a local "
                             "emulator use connection_string)")
        # adlfs wants the account name and the host (it builds https://<host> itself).
        opts["account_name"] = account_name or host.split(".", 1)[0]
        opts["account_host"] = host
    else:
        opts["account_name"] = _text(account_name, "account_name")
    given_sp = [k for k in _SP_KEYS if creds.get(k)]
    if given_sp and len(given_sp) < len(_SP_KEYS):
        missing = [k for k in _SP_KEYS if k not in given_sp]
        raise UsageError("Azure credentials: a service principal needs tenant_id, client_id "
                         f"and client_secret; missing: {', '.join(missing)}")
    for k in given_sp:
        opts[k] = _text(creds[k], k)
    for k in ("account_key", "sas_token"):
        if creds.get(k):
            opts[k] = _text(creds[k], k)
    # Nothing else given: adlfs uses DefaultAzureCredential, as Prefect's step does.
    return opts
