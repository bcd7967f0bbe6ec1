"""fsspec-shaped storage options -> obstore configuration, in one place.

Users (``-o KEY=VALUE``, ``storage_options=``, the Prefect steps via ``snapsync.credentials``)
keep speaking s3fs's and adlfs's option names: ``endpoint_url``, ``key``, ``secret``,
``token``, ``anon``, ``client_kwargs``, ``config_kwargs``, ``profile``, ``connection_string``,
``account_name``, ``account_key``, ``sas_token``... :func:`obstore_options` turns them into the
keyword arguments of ``obstore.store.S3Store`` / ``AzureStore``. obstore's own names
(``S3Config``/``AzureConfig`` keys such as ``access_key_id``, ``endpoint``,
``virtual_hosted_style_request``; ``ClientConfig`` keys such as ``allow_http``,
``proxy_url``; and ``client_options``) pass through. Anything else, or a value of the wrong
type, is a :class:`~snapsync.errors.UsageError` naming the option.

snapsync's own options (both engines ignore nothing silently):

* ``connect_timeout`` (seconds, default 5), ``read_timeout`` (seconds without a byte, default
  5) and ``timeout`` (one whole request, default 120): per attempt;
* ``retry_timeout`` (seconds, default 10): how long an endpoint that does not answer at all
  (connect or read timeouts) is retried before the store gives up; refused connections and
  5xx answers are retried by the store's normal policy;
* ``conditional`` (bool, default true): whether the server honours ``If-None-Match`` /
  ``If-Match`` (SeaweedFS, MinIO, AWS, Azure do; ``rclone serve s3`` does not: set false).

The providers' environment variables still apply (obstore reads ``AWS_*`` and ``AZURE_*``);
``AZURE_STORAGE_CONNECTION_STRING`` is read here, as adlfs does. AWS profiles (``profile``,
``AWS_PROFILE``, or shared credential files when no key is given) go through obstore's boto3
credential provider, which is only imported then.

Nothing here imports obstore: the result is plain data for ``obstore_backend``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from snapsync.errors import UsageError

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_RETRY_TIMEOUT = 10.0

# obstore's own configuration names (obstore 0.12 stubs: S3Config, AzureConfig, ClientConfig).
S3_CONFIG_KEYS = frozenset({
    "access_key_id", "bucket", "checksum_algorithm", "conditional_put",
    "container_credentials_relative_uri", "container_credentials_full_uri",
    "container_authorization_token_file", "copy_if_not_exists", "default_region",
    "disable_tagging", "disable_bulk_delete", "endpoint", "imdsv1_fallback",
    "metadata_endpoint", "region", "request_payer", "role_arn", "role_session_name",
    "s3_express", "secret_access_key", "server_side_encryption", "session_token",
    "skip_signature", "sse_bucket_key_enabled", "sse_customer_key_base64", "sse_kms_key_id",
    "sts_endpoint", "unsigned_payload", "virtual_hosted_style_request",
    "web_identity_token_file",
})
AZURE_CONFIG_KEYS = frozenset({
    "account_name", "account_key", "client_id", "client_secret", "credential_type",
    "tenant_id", "authority_host", "sas_key", "token", "use_emulator", "use_fabric_endpoint",
    "encryption_key", "endpoint", "msi_endpoint", "object_id", "msi_resource_id",
    "federated_token_file", "use_azure_cli", "skip_signature", "container_name",
    "disable_tagging", "fabric_token_service_url", "fabric_workload_host",
    "fabric_session_token", "fabric_cluster_identifier",
})
CLIENT_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "default_headers", "http1_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle", "http2_only", "pool_idle_timeout", "pool_max_idle_per_host",
    "proxy_url", "proxy_ca_certificate", "proxy_excludes", "root_certificate",
    "randomize_addresses", "read_timeout", "timeout", "user_agent",
})
_BOOL_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "http1_only", "http2_only",
    "randomize_addresses", "skip_signature", "virtual_hosted_style_request", "disable_tagging",
    "disable_bulk_delete", "imdsv1_fallback", "s3_express", "sse_bucket_key_enabled",
    "unsigned_payload", "use_emulator", "use_fabric_endpoint", "use_azure_cli", "request_payer",
})
_TIMEOUT_KEYS = ("connect_timeout", "read_timeout", "timeout")

# fsspec-only knobs that mean nothing to obstore and change no result: accepted, unused.
_HARMLESS = frozenset({
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths",
    "default_block_size", "default_fill_cache", "default_cache_type", "cache_regions",
    "auto_mkdir", "asynchronous", "version_aware", "max_concurrency", "fixed_upload_size",
})
# botocore Config keys (s3fs ``config_kwargs``) with no obstore meaning, or one handled below.
_BOTOCORE_HARMLESS = frozenset({
    "retries", "max_pool_connections", "tcp_keepalive", "parameter_validation",
    "response_checksum_validation", "request_checksum_calculation", "user_agent_extra",
    "user_agent_appid", "inject_host_prefix",
})
_FSSPEC_HINT = "use -o backend=fsspec (or SNAPSYNC_BACKEND=fsspec) to pass it to s3fs/adlfs"


@dataclass
class ObstoreOptions:
    """Everything :class:`~snapsync.store.obstore_backend.ObstoreBackend` needs to build a
    store: ``kind`` (``"s3"`` or ``"azure"``), the bucket/container and prefix, obstore
    ``config`` and ``client_options``, an optional credential provider, and snapsync's own
    retry budget and conditional-write switch."""

    kind: str
    bucket: str
    prefix: str
    config: dict[str, Any] = field(default_factory=dict)
    client_options: dict[str, Any] = field(default_factory=dict)
    credential_provider: Callable[[], Any] | None = None
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT
    conditional: bool = True

    @property
    def endpoint(self) -> str | None:
        """The endpoint URL when one is set (for messages)."""
        return self.config.get("endpoint")

    def __repr__(self) -> str:  # never show secrets
        return (f"ObstoreOptions(kind={self.kind!r}, bucket={self.bucket!r}, "
                f"prefix={self.prefix!r}, endpoint={self.endpoint!r})")


# ------------------------------------------------------------------------------- helpers


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"storage option {name} must be true or false, got {_kind(value)}")


def _str(value: Any, name: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise UsageError(f"storage option {name} must be a non-empty string, got {_kind(value)}")


def _map(value: Any, name: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise UsageError(f"storage option {name} must be a mapping (JSON object), "
                     f"got {_kind(value)}")


def _seconds(value: Any, name: str) -> float:
    """Seconds from a number, a numeric string, a ``timedelta`` or ``"5s"``/``"250ms"``."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise UsageError(f"storage option {name} must be a number of seconds, got a boolean")
    if isinstance(value, int | float):
        secs = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        scale = 1.0
        for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
            if text.endswith(suffix):
                text, scale = text[: -len(suffix)].strip(), mult
                break
        try:
            secs = float(text) * scale
        except ValueError:
            raise UsageError(f"storage option {name} must be a number of seconds (e.g. 5 or "
                             f"\"250ms\"), got {value!r}") from None
    else:
        raise UsageError(f"storage option {name} must be a number of seconds, "
                         f"got {_kind(value)}")
    if not secs > 0:
        raise UsageError(f"storage option {name} must be more than 0 seconds")
    return secs


def _kind(value: Any) -> str:
    # Name the type, never the value: it may be a secret.
    return type(value).__name__


def _duration(secs: float) -> str:
    """obstore's duration strings: whole milliseconds."""
    return f"{max(1, round(secs * 1000))}ms"


def _native(key: str, value: Any, cfg: dict[str, Any], client: dict[str, Any],
            config_keys: frozenset[str]) -> bool:
    """Put an obstore-named option where it belongs; False when it is not one."""
    if key in CLIENT_KEYS:
        client[key] = _bool(value, key) if key in _BOOL_KEYS else value
        return True
    if key in config_keys:
        if key in _BOOL_KEYS and key != "request_payer":
            value = _bool(value, key)
        elif not isinstance(value, str | bool):
            raise UsageError(f"storage option {key} must be a string, got {_kind(value)}")
        cfg[key] = value
        return True
    return False


def _split_url(url: str) -> tuple[str, str, str]:
    """``scheme, bucket, prefix`` of ``s3://bucket/prefix`` or ``az://container/prefix``."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise UsageError(f"{url.split('?', 1)[0]}: a store URL takes no query or fragment")
    bucket = parts.netloc
    if "@" in bucket:  # abfs://container@account.dfs.core.windows.net/...
        raise UsageError(f"{parts.scheme}://...@{bucket.split('@', 1)[1]}: account@host URLs "
                         "are not supported; use az://container/prefix with -o account_name")
    if not bucket:
        raise UsageError(f"{url}: the store URL names no bucket")
    return parts.scheme, bucket, parts.path.strip("/")


def _finish(opts: ObstoreOptions, client: dict[str, Any], endpoint: str | None,
            timeouts: dict[str, float]) -> ObstoreOptions:
    """Common tail: endpoint and http, timeouts, client options."""
    if endpoint:
        opts.config["endpoint"] = endpoint.rstrip("/")
        if endpoint.startswith("http://"):
            client.setdefault("allow_http", True)
    defaults = {"connect_timeout": DEFAULT_CONNECT_TIMEOUT, "read_timeout": DEFAULT_READ_TIMEOUT,
                "timeout": DEFAULT_REQUEST_TIMEOUT}
    for key in _TIMEOUT_KEYS:
        secs = timeouts.get(key, defaults[key])
        if key in client:  # given in client_options, obstore-style
            secs = _seconds(client[key], f"client_options.{key}")
        client[key] = _duration(secs)
    opts.client_options = client
    return opts


def _pop_snapsync(o: dict[str, Any], opts: ObstoreOptions, timeouts: dict[str, float]) -> None:
    """Take snapsync's own options out of ``o``."""
    if "retry_timeout" in o:
        opts.retry_timeout = _seconds(o.pop("retry_timeout"), "retry_timeout")
    if "conditional" in o:
        opts.conditional = _bool(o.pop("conditional"), "conditional")
    for key in _TIMEOUT_KEYS:
        if key in o:
            timeouts[key] = _seconds(o.pop(key), key)


def _client_options(o: dict[str, Any]) -> dict[str, Any]:
    raw = dict(_map(o.pop("client_options"), "client_options")) if "client_options" in o else {}
    for k in raw:
        if k not in CLIENT_KEYS:
            raise UsageError(f"storage option client_options.{k} is not an obstore client "
                             f"option (known: {', '.join(sorted(CLIENT_KEYS))})")
        if k in _BOOL_KEYS:
            raw[k] = _bool(raw[k], f"client_options.{k}")
    return raw


# ------------------------------------------------------------------------------------ S3


def _s3(url: str, bucket: str, prefix: str, options: Mapping[str, Any]) -> ObstoreOptions:
    o = dict(options)
    opts = ObstoreOptions("s3", bucket, prefix)
    timeouts: dict[str, float] = {}
    _pop_snapsync(o, opts, timeouts)
    client = _client_options(o)
    cfg = opts.config
    endpoint: str | None = None
    profile: str | None = None
    addressing: str | None = None

    ck = dict(_map(o.pop("client_kwargs"), "client_kwargs")) if "client_kwargs" in o else {}
    for k, v in ck.items():
        name = f"client_kwargs.{k}"
        if k == "region_name":
            cfg["region"] = _str(v, name)
        elif k == "endpoint_url":
            endpoint = _str(v, name)
        elif k == "verify":
            _verify(v, name, client)
        elif k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            cfg[{"aws_access_key_id": "access_key_id",
                 "aws_secret_access_key": "secret_access_key",
                 "aws_session_token": "session_token"}[k]] = _str(v, name)
        elif k == "use_ssl":
            if not _bool(v, name):
                client["allow_http"] = True
        elif k == "api_version":
            continue  # botocore's API version: S3 has one, obstore speaks it
        elif k == "config":
            raise UsageError(f"storage option {name}: a botocore Config object cannot be "
                             "translated; pass its keys as config_kwargs")
        else:
            raise UsageError(f"storage option {name} is not supported by the obstore S3 "
                             f"engine; {_FSSPEC_HINT}")

    cfgk = dict(_map(o.pop("config_kwargs"), "config_kwargs")) if "config_kwargs" in o else {}
    for k, v in cfgk.items():
        name = f"config_kwargs.{k}"
        if k == "s3":
            for sk, sv in _map(v, name).items():
                if sk == "addressing_style":
                    addressing = _str(sv, f"{name}.addressing_style")
                    if addressing not in ("path", "virtual", "auto"):
                        raise UsageError(f"storage option {name}.addressing_style must be "
                                         "path, virtual or auto")
                elif sk in ("payload_signing_enabled",):
                    cfg["unsigned_payload"] = not _bool(sv, f"{name}.{sk}")
                elif sk in ("use_accelerate_endpoint", "us_east_1_regional_endpoint",
                            "use_dualstack_endpoint"):
                    raise UsageError(f"storage option {name}.{sk} is not supported by the "
                                     f"obstore S3 engine; {_FSSPEC_HINT}")
                else:
                    raise UsageError(f"storage option {name}.{sk} is not a known botocore "
                                     "S3 setting")
        elif k == "signature_version":
            sig = _str(v, name).lower()
            if sig == "unsigned":
                cfg["skip_signature"] = True
            elif sig not in ("s3v4", "v4"):
                raise UsageError(f"storage option {name}={v!r}: only s3v4 or unsigned")
        elif k == "region_name":
            cfg.setdefault("region", _str(v, name))
        elif k in ("connect_timeout", "read_timeout"):
            timeouts.setdefault(k, _seconds(v, name))
        elif k == "proxies":
            proxies = _map(v, name)
            proxy = proxies.get("https") or proxies.get("http")
            if proxy:
                client.setdefault("proxy_url", _str(proxy, name))
        elif k in _BOTOCORE_HARMLESS:
            continue  # snapsync's store retries; obstore has its own pools and checksums
        else:
            raise UsageError(f"storage option {name} is not supported by the obstore S3 "
                             f"engine; {_FSSPEC_HINT}")

    extra = dict(_map(o.pop("s3_additional_kwargs"), "s3_additional_kwargs")) \
        if "s3_additional_kwargs" in o else {}
    for k, v in extra.items():
        name = f"s3_additional_kwargs.{k}"
        if k == "ServerSideEncryption":
            cfg["server_side_encryption"] = _str(v, name)
        elif k == "SSEKMSKeyId":
            cfg["sse_kms_key_id"] = _str(v, name)
        elif k == "RequestPayer":
            cfg["request_payer"] = True
        else:
            raise UsageError(f"storage option {name} is not supported by the obstore S3 "
                             f"engine; {_FSSPEC_HINT}")

    aliases = {"key": "access_key_id", "aws_access_key_id": "access_key_id",
               "username": "access_key_id", "secret": "secret_access_key",
               "aws_secret_access_key": "secret_access_key", "password": "secret_access_key",
               "token": "session_token", "aws_session_token": "session_token",
               "region_name": "region"}
    for k, v in o.items():
        if v is None:
            continue  # fsspec treats None as "not given"
        if k in aliases:
            cfg[aliases[k]] = _str(v, k)
        elif k == "endpoint_url":
            endpoint = _str(v, k)
        elif k == "anon":
            if _bool(v, k):
                cfg["skip_signature"] = True
        elif k in ("profile", "profile_name"):
            profile = _str(v, k)
        elif k == "use_ssl":
            if not _bool(v, k):
                client["allow_http"] = True
        elif k == "requester_pays":
            if _bool(v, k):
                cfg["request_payer"] = True
        elif k == "credential_provider":
            if not callable(v):
                raise UsageError("storage option credential_provider must be callable")
            opts.credential_provider = v
        elif k == "endpoint":
            endpoint = _str(v, k)
        elif k in _HARMLESS or _native(k, v, cfg, client, S3_CONFIG_KEYS):
            continue
        else:
            raise UsageError(f"storage option {k} is not known to the obstore S3 engine "
                             f"(fsspec names: key, secret, token, endpoint_url, anon, profile, "
                             f"client_kwargs, config_kwargs; or obstore's S3Config names); "
                             f"{_FSSPEC_HINT}")

    if addressing == "virtual":
        cfg["virtual_hosted_style_request"] = True
    elif addressing == "path":
        cfg["virtual_hosted_style_request"] = False
    if endpoint and "region" not in cfg and not (os.environ.get("AWS_REGION")
                                                  or os.environ.get("AWS_DEFAULT_REGION")):
        # S3-compatible servers ignore the region but SigV4 needs one; s3fs does the same.
        cfg["region"] = "us-east-1"
    if ("access_key_id" in cfg) != ("secret_access_key" in cfg):
        missing = "secret" if "access_key_id" in cfg else "key"
        raise UsageError(f"storage option {missing} is missing: an access key needs both "
                         "key and secret")
    if opts.credential_provider is None and _wants_boto3(cfg, profile):
        opts.credential_provider = _boto3_provider(profile, cfg)
    return _finish(opts, client, endpoint, timeouts)


def _verify(value: Any, name: str, client: dict[str, Any]) -> None:
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in
                                   ("true", "false")):
        if not _bool(value, name):
            client["allow_invalid_certificates"] = True
        return
    path = Path(_str(value, name))
    try:
        client["root_certificate"] = path.read_text()
    except OSError as exc:
        raise UsageError(f"storage option {name}: cannot read CA bundle {path}: "
                         f"{exc.strerror}") from None


def _wants_boto3(cfg: dict[str, Any], profile: str | None) -> bool:
    """Whether AWS credentials must come from botocore (profiles, role_arn in config files).

    obstore reads keys, session tokens, web identity and container credentials from the
    environment itself; only the shared config/credentials files need botocore.
    """
    if profile:
        return True
    if cfg.get("skip_signature") or "access_key_id" in cfg:
        return False
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return False
    if os.environ.get("AWS_PROFILE"):
        return True
    home = Path(os.path.expanduser("~"))
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials",
             os.environ.get("AWS_CONFIG_FILE") or home / ".aws" / "config"]
    return any(_has_default_profile(Path(f)) for f in files)


def _has_default_profile(path: Path) -> bool:
    """Whether an AWS shared config/credentials file has a default profile."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"^\s*\[\s*(profile\s+)?default\s*\]", text, re.MULTILINE))


def _boto3_provider(profile: str | None, cfg: dict[str, Any]) -> Callable[[], Any]:
    """obstore's boto3 credential provider for ``profile`` (imported only now: ~0.2 s)."""
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError as exc:
        raise UsageError(f"AWS profiles need boto3 ({exc}); pip install boto3, or pass key "
                         "and secret") from None
    try:
        session = boto3.Session(profile_name=profile)
        provider = Boto3CredentialProvider(session)
    except Exception as exc:  # ProfileNotFound, no credentials in the files, ...
        name = f"profile {profile!r}" if profile else "the AWS config files"
        raise UsageError(f"AWS credentials from {name}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if session.region_name and "region" not in cfg:
        cfg["region"] = session.region_name
    return provider


# --------------------------------------------------------------------------------- Azure


def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;...`` of an Azure storage connection string (values may contain ``=``)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise UsageError("storage option connection_string is malformed (expected "
                             "Key=Value pairs separated by ';')")
        k, v = part.split("=", 1)
        out[k.strip().lower()] = v.strip()
    return out


_DEV_ACCOUNT = "devstoreaccount1"


def _from_connection_string(text: str, cfg: dict[str, Any]) -> str | None:
    """Fill ``cfg`` from a connection string; return the blob endpoint if it names one."""
    cs = parse_connection_string(text)
    if cs.get("usedevelopmentstorage", "").lower() == "true":
        cfg["use_emulator"] = True
        return None
    if "accountname" in cs:
        cfg["account_name"] = cs["accountname"]
    if "accountkey" in cs:
        cfg["account_key"] = cs["accountkey"]
    if "sharedaccesssignature" in cs:
        cfg["sas_key"] = cs["sharedaccesssignature"].lstrip("?")
    if "blobendpoint" in cs:
        return cs["blobendpoint"]
    suffix = cs.get("endpointsuffix")
    if suffix and "account_name" in cfg:
        proto = cs.get("defaultendpointsprotocol", "https")
        return f"{proto}://{cfg['account_name']}.blob.{suffix}"
    if "account_name" not in cfg:
        raise UsageError("storage option connection_string has no AccountName or BlobEndpoint")
    return None


def _azure(url: str, container: str, prefix: str,
           options: Mapping[str, Any]) -> ObstoreOptions:
    o = dict(options)
    opts = ObstoreOptions("azure", container, prefix)
    timeouts: dict[str, float] = {}
    _pop_snapsync(o, opts, timeouts)
    client = _client_options(o)
    cfg = opts.config
    endpoint: str | None = None
    account_host: str | None = None

    conn = o.pop("connection_string", None)
    if conn is None and not ({"account_name", "account_key", "sas_token", "sas_key",
                              "anon", "credential", "client_id"} & set(o)):
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")  # as adlfs does
    if conn is not None:
        endpoint = _from_connection_string(_str(conn, "connection_string"), cfg)

    aliases = {"sas_token": "sas_key", "account_key": "account_key",
               "account_name": "account_name", "tenant_id": "tenant_id",
               "client_id": "client_id", "client_secret": "client_secret"}
    for k, v in o.items():
        if v is None:
            continue
        if k in aliases:
            val = _str(v, k)
            cfg[aliases[k]] = val.lstrip("?") if k == "sas_token" else val
        elif k == "account_host":
            account_host = _str(v, k)
        elif k == "anon":
            if _bool(v, k):
                cfg["skip_signature"] = True
        elif k in ("endpoint", "endpoint_url"):
            endpoint = _str(v, k)
        elif k == "credential":
            raise UsageError("storage option credential (an azure-identity object) is not "
                             f"supported by the obstore Azure engine; {_FSSPEC_HINT}")
        elif k == "credential_provider":
            if not callable(v):
                raise UsageError("storage option credential_provider must be callable")
            opts.credential_provider = v
        elif k in _HARMLESS or k == "blocksize" or _native(k, v, cfg, client,
                                                           AZURE_CONFIG_KEYS):
            continue
        else:
            raise UsageError(f"storage option {k} is not known to the obstore Azure engine "
                             "(adlfs names: connection_string, account_name, account_key, "
                             "sas_token, tenant_id, client_id, client_secret, account_host, "
                             f"anon; or obstore's AzureConfig names); {_FSSPEC_HINT}")
    if account_host and not endpoint:
        endpoint = account_host if "://" in account_host else f"https://{account_host}"
    if cfg.get("use_emulator") and "account_name" not in cfg:
        cfg["account_name"] = _DEV_ACCOUNT
    if "account_name" not in cfg and not os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") \
            and not os.environ.get("AZURE_STORAGE_ACCOUNT") and not endpoint:
        raise UsageError("Azure needs an account: -o account_name=NAME or "
                         "-o connection_string=..., or AZURE_STORAGE_ACCOUNT_NAME")
    return _finish(opts, client, endpoint, timeouts)


# ---------------------------------------------------------------------------------- entry


def obstore_options(url: str, options: Mapping[str, Any] | None) -> ObstoreOptions:
    """Translate ``options`` (fsspec- or obstore-shaped) for the store at ``url``.

    Args:
        url: ``s3://bucket/prefix`` (also ``s3a://``) or ``az://container/prefix`` (also
            ``abfs://``, ``abfss://``, ``azure://``).
        options: storage options as a user gives them; ``None`` values count as absent.

    Returns:
        The obstore configuration (plain data; nothing is contacted).

    Raises:
        UsageError: an unknown option, a value of the wrong type, or a URL obstore cannot
            serve; the message names the option (never its value).
    """
    scheme, bucket, prefix = _split_url(url)
    if scheme in ("s3", "s3a"):
        return _s3(url, bucket, prefix, options or {})
    if scheme in ("az", "abfs", "abfss", "azure"):
        return _azure(url, bucket, prefix, options or {})
    raise UsageError(f"{scheme}://: not served by the obstore engine (s3://, az:// only)")
