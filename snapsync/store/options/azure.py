"""adlfs-shaped options (``connection_string``, ``account_name``, ``account_key``,
``sas_token``...) to obstore's Azure configuration; ``AZURE_STORAGE_CONNECTION_STRING`` is read
here, as adlfs does."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from snapsync.errors import UsageError
from snapsync.store.options.common import (
    AZURE_CONFIG_KEYS,
    FSSPEC_HINT,
    HARMLESS,
    ObstoreOptions,
    begin,
    credential_provider,
    finish,
    opt_bool,
    opt_str,
    put_native,
)


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


def azure_options(url: str, container: str, prefix: str,
                  options: Mapping[str, Any]) -> ObstoreOptions:
    o, opts, timeouts, client = begin("azure", container, prefix, options)
    cfg = opts.config
    endpoint: str | None = None
    account_host: str | None = None

    conn = o.pop("connection_string", None)
    if conn is None and not ({"account_name", "account_key", "sas_token", "sas_key",
                              "anon", "credential", "client_id"} & set(o)):
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")  # as adlfs does
    if conn is not None:
        endpoint = _from_connection_string(opt_str(conn, "connection_string"), cfg)

    aliases = {"sas_token": "sas_key", "account_key": "account_key",
               "account_name": "account_name", "tenant_id": "tenant_id",
               "client_id": "client_id", "client_secret": "client_secret"}
    for k, v in o.items():
        if v is None:
            continue
        if k in aliases:
            val = opt_str(v, k)
            cfg[aliases[k]] = val.lstrip("?") if k == "sas_token" else val
        elif k == "account_host":
            account_host = opt_str(v, k)
        elif k == "anon":
            if opt_bool(v, k):
                cfg["skip_signature"] = True
        elif k in ("endpoint", "endpoint_url"):
            endpoint = opt_str(v, k)
        elif k == "credential":
            raise UsageError("storage option credential (an azure-identity object) is not "
                             f"supported by the obstore Azure engine; {FSSPEC_HINT}")
        elif k == "credential_provider":
            opts.credential_provider = credential_provider(v)
        elif k in HARMLESS or k == "blocksize" or put_native(k, v, cfg, client,
                                                           AZURE_CONFIG_KEYS):
            continue
        else:
            raise UsageError(f"storage option {k} is not known to the obstore Azure engine "
                             "(adlfs names: connection_string, account_name, account_key, "
                             "sas_token, tenant_id, client_id, client_secret, account_host, "
                             f"anon; or obstore's AzureConfig names); {FSSPEC_HINT}")
    if account_host and not endpoint:
        endpoint = account_host if "://" in account_host else f"https://{account_host}"
    if cfg.get("use_emulator") and "account_name" not in cfg:
        cfg["account_name"] = _DEV_ACCOUNT
    if "account_name" not in cfg and not os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") \
            and not os.environ.get("AZURE_STORAGE_ACCOUNT") and not endpoint:
        raise UsageError("Azure needs an account: -o account_name=NAME or "
                         "-o connection_string=..., or AZURE_STORAGE_ACCOUNT_NAME")
    return finish(opts, client, endpoint, timeouts)
