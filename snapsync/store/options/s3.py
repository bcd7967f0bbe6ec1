"""s3fs-shaped options (``key``, ``secret``, ``endpoint_url``, ``client_kwargs``,
``config_kwargs``, ``profile``...) to obstore's S3 configuration; AWS profiles through obstore's
boto3 credential provider, imported only when a profile is in play."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from snapsync.errors import UsageError
from snapsync.store.options.common import (
    BOTOCORE_HARMLESS,
    FSSPEC_HINT,
    HARMLESS,
    S3_CONFIG_KEYS,
    ObstoreOptions,
    begin,
    credential_provider,
    finish,
    opt_bool,
    opt_map,
    opt_seconds,
    opt_str,
    put_native,
)


def s3_options(url: str, bucket: str, prefix: str, options: Mapping[str, Any]) -> ObstoreOptions:
    o, opts, timeouts, client = begin("s3", bucket, prefix, options)
    cfg = opts.config
    endpoint: str | None = None
    profile: str | None = None
    addressing: str | None = None

    ck = dict(opt_map(o.pop("client_kwargs"), "client_kwargs")) if "client_kwargs" in o else {}
    for k, v in ck.items():
        name = f"client_kwargs.{k}"
        if k == "region_name":
            cfg["region"] = opt_str(v, name)
        elif k == "endpoint_url":
            endpoint = opt_str(v, name)
        elif k == "verify":
            _verify(v, name, client)
        elif k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            cfg[{"aws_access_key_id": "access_key_id",
                 "aws_secret_access_key": "secret_access_key",
                 "aws_session_token": "session_token"}[k]] = opt_str(v, name)
        elif k == "use_ssl":
            if not opt_bool(v, name):
                client["allow_http"] = True
        elif k == "api_version":
            continue  # botocore's API version: S3 has one, obstore speaks it
        elif k == "config":
            raise UsageError(f"storage option {name}: a botocore Config object cannot be "
                             "translated; pass its keys as config_kwargs")
        else:
            raise UsageError(f"storage option {name} is not supported by the obstore S3 "
                             f"engine; {FSSPEC_HINT}")

    cfgk = dict(opt_map(o.pop("config_kwargs"), "config_kwargs")) if "config_kwargs" in o else {}
    for k, v in cfgk.items():
        name = f"config_kwargs.{k}"
        if k == "s3":
            for sk, sv in opt_map(v, name).items():
                if sk == "addressing_style":
                    addressing = opt_str(sv, f"{name}.addressing_style")
                    if addressing not in ("path", "virtual", "auto"):
                        raise UsageError(f"storage option {name}.addressing_style must be "
                                         "path, virtual or auto")
                elif sk in ("payload_signing_enabled",):
                    cfg["unsigned_payload"] = not opt_bool(sv, f"{name}.{sk}")
                elif sk in ("use_accelerate_endpoint", "us_east_1_regional_endpoint",
                            "use_dualstack_endpoint"):
                    raise UsageError(f"storage option {name}.{sk} is not supported by the "
                                     f"obstore S3 engine; {FSSPEC_HINT}")
                else:
                    raise UsageError(f"storage option {name}.{sk} is not a known botocore "
                                     "S3 setting")
        elif k == "signature_version":
            sig = opt_str(v, name).lower()
            if sig == "unsigned":
                cfg["skip_signature"] = True
            elif sig not in ("s3v4", "v4"):
                raise UsageError(f"storage option {name}={v!r}: only s3v4 or unsigned")
        elif k == "region_name":
            cfg.setdefault("region", opt_str(v, name))
        elif k in ("connect_timeout", "read_timeout"):
            timeouts.setdefault(k, opt_seconds(v, name))
        elif k == "proxies":
            proxies = opt_map(v, name)
            proxy = proxies.get("https") or proxies.get("http")
            if proxy:
                client.setdefault("proxy_url", opt_str(proxy, name))
        elif k in BOTOCORE_HARMLESS:
            continue  # snapsync's store retries; obstore has its own pools and checksums
        else:
            raise UsageError(f"storage option {name} is not supported by the obstore S3 "
                             f"engine; {FSSPEC_HINT}")

    extra = dict(opt_map(o.pop("s3_additional_kwargs"), "s3_additional_kwargs")) \
        if "s3_additional_kwargs" in o else {}
    for k, v in extra.items():
        name = f"s3_additional_kwargs.{k}"
        if k == "ServerSideEncryption":
            cfg["server_side_encryption"] = opt_str(v, name)
        elif k == "SSEKMSKeyId":
            cfg["sse_kms_key_id"] = opt_str(v, name)
        elif k == "RequestPayer":
            cfg["request_payer"] = True
        else:
            raise UsageError(f"storage option {name} is not supported by the obstore S3 "
                             f"engine; {FSSPEC_HINT}")

    aliases = {"key": "access_key_id", "aws_access_key_id": "access_key_id",
               "username": "access_key_id", "secret": "secret_access_key",
               "aws_secret_access_key": "secret_access_key", "password": "secret_access_key",
               "token": "session_token", "aws_session_token": "session_token",
               "region_name": "region"}
    for k, v in o.items():
        if v is None:
            continue  # fsspec treats None as "not given"
        if k in aliases:
            cfg[aliases[k]] = opt_str(v, k)
        elif k == "endpoint_url":
            endpoint = opt_str(v, k)
        elif k == "anon":
            if opt_bool(v, k):
                cfg["skip_signature"] = True
        elif k in ("profile", "profile_name"):
            profile = opt_str(v, k)
        elif k == "use_ssl":
            if not opt_bool(v, k):
                client["allow_http"] = True
        elif k == "requester_pays":
            if opt_bool(v, k):
                cfg["request_payer"] = True
        elif k == "credential_provider":
            opts.credential_provider = credential_provider(v)
        elif k == "endpoint":
            endpoint = opt_str(v, k)
        elif k in HARMLESS or put_native(k, v, cfg, client, S3_CONFIG_KEYS):
            continue
        else:
            raise UsageError(f"storage option {k} is not known to the obstore S3 engine "
                             f"(fsspec names: key, secret, token, endpoint_url, anon, profile, "
                             f"client_kwargs, config_kwargs; or obstore's S3Config names); "
                             f"{FSSPEC_HINT}")

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
    return finish(opts, client, endpoint, timeouts)


def _verify(value: Any, name: str, client: dict[str, Any]) -> None:
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in
                                   ("true", "false")):
        if not opt_bool(value, name):
            client["allow_invalid_certificates"] = True
        return
    path = Path(opt_str(value, name))
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
