"""What both providers' option translation shares: obstore's names, snapsync's own options
(timeouts, retry budget, conditional writes), value checks that name the option, and the
:class:`ObstoreOptions` result."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
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
HARMLESS = frozenset({
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths",
    "default_block_size", "default_fill_cache", "default_cache_type", "cache_regions",
    "auto_mkdir", "asynchronous", "version_aware", "max_concurrency", "fixed_upload_size",
})
# botocore Config keys (s3fs ``config_kwargs``) with no obstore meaning, or one handled below.
BOTOCORE_HARMLESS = frozenset({
    "retries", "max_pool_connections", "tcp_keepalive", "parameter_validation",
    "response_checksum_validation", "request_checksum_calculation", "user_agent_extra",
    "user_agent_appid", "inject_host_prefix",
})
FSSPEC_HINT = "use -o backend=fsspec (or SNAPSYNC_BACKEND=fsspec) to pass it to s3fs/adlfs"


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


def opt_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"storage option {name} must be true or false, got {_kind(value)}")


def opt_str(value: Any, name: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise UsageError(f"storage option {name} must be a non-empty string, got {_kind(value)}")


def opt_map(value: Any, name: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise UsageError(f"storage option {name} must be a mapping (JSON object), "
                     f"got {_kind(value)}")


def opt_seconds(value: Any, name: str) -> float:
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


def put_native(key: str, value: Any, cfg: dict[str, Any], client: dict[str, Any],
            config_keys: frozenset[str]) -> bool:
    """Put an obstore-named option where it belongs; False when it is not one."""
    if key in CLIENT_KEYS:
        client[key] = opt_bool(value, key) if key in _BOOL_KEYS else value
        return True
    if key in config_keys:
        if key in _BOOL_KEYS and key != "request_payer":
            value = opt_bool(value, key)
        elif not isinstance(value, str | bool):
            raise UsageError(f"storage option {key} must be a string, got {_kind(value)}")
        cfg[key] = value
        return True
    return False


def split_url(url: str) -> tuple[str, str, str]:
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


def finish(opts: ObstoreOptions, client: dict[str, Any], endpoint: str | None,
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
            secs = opt_seconds(client[key], f"client_options.{key}")
        client[key] = _duration(secs)
    opts.client_options = client
    return opts


def pop_snapsync(o: dict[str, Any], opts: ObstoreOptions, timeouts: dict[str, float]) -> None:
    """Take snapsync's own options out of ``o``."""
    if "retry_timeout" in o:
        opts.retry_timeout = opt_seconds(o.pop("retry_timeout"), "retry_timeout")
    if "conditional" in o:
        opts.conditional = opt_bool(o.pop("conditional"), "conditional")
    for key in _TIMEOUT_KEYS:
        if key in o:
            timeouts[key] = opt_seconds(o.pop(key), key)


def client_options_of(o: dict[str, Any]) -> dict[str, Any]:
    raw = dict(opt_map(o.pop("client_options"), "client_options")) if "client_options" in o else {}
    for k in raw:
        if k not in CLIENT_KEYS:
            raise UsageError(f"storage option client_options.{k} is not an obstore client "
                             f"option (known: {', '.join(sorted(CLIENT_KEYS))})")
        if k in _BOOL_KEYS:
            raw[k] = opt_bool(raw[k], f"client_options.{k}")
    return raw


def begin(kind: str, bucket: str, prefix: str, options: Mapping[str, Any]
          ) -> tuple[dict[str, Any], ObstoreOptions, dict[str, float], dict[str, Any]]:
    """What both providers start from: the options left to translate, the result with
    snapsync's own options taken out, the timeouts given, and the client options."""
    o = dict(options)
    opts = ObstoreOptions(kind, bucket, prefix)
    timeouts: dict[str, float] = {}
    pop_snapsync(o, opts, timeouts)
    return o, opts, timeouts, client_options_of(o)


def credential_provider(value: Any) -> Callable[[], Any]:
    """A ``credential_provider`` option: obstore calls it for fresh credentials."""
    if not callable(value):
        raise UsageError("storage option credential_provider must be callable")
    return value
