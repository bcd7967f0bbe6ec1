"""snapsync's own timeout options for the fsspec engine (s3fs, gcsfs, adlfs), in one place.

The obstore engine translates ``connect_timeout``, ``read_timeout``, ``timeout`` and
``retry_timeout`` in :mod:`snapsync.store.options.common`; here the same names become each
fsspec provider's own knob, where it has one:

========  ==========================================  ============================
provider  ``connect_timeout`` / ``read_timeout``       ``timeout`` (whole request)
========  ==========================================  ============================
s3fs      ``config_kwargs`` (botocore), per attempt     none: refused
gcsfs     ``requests_timeout`` (aiohttp connect,       ``requests_timeout`` total
          sock_read)
adlfs     ``connection_timeout``, ``read_timeout``     ``timeout`` (server side)
========  ==========================================  ============================

``retry_timeout`` (every remote protocol) is taken out for the store facade's silence budget.
Other protocols get their options as they are. The provider's own spelling (s3fs's
``config_kwargs``, gcsfs's ``requests_timeout``, adlfs's ``connection_timeout``) wins over
snapsync's. Nothing here imports a provider package except gcsfs's aiohttp, which gcsfs
imports anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapsync.errors import UsageError
from snapsync.store.options.common import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_TIMEOUT,
    opt_map,
    opt_seconds,
)

S3_PROTOCOLS = frozenset({"s3", "s3a"})
GCS_PROTOCOLS = frozenset({"gs", "gcs"})
AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss", "adl"})
_TIMEOUTS = ("connect_timeout", "read_timeout", "timeout")


def fsspec_options(protocol: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """``options`` for the fsspec file system of ``protocol``, and the retry budget.

    Raises:
        UsageError: a timeout that is not a positive number of seconds, or ``timeout`` for
            s3fs (botocore has no whole-request timeout); the message names the option.
    """
    opts = dict(options)
    retry_timeout = DEFAULT_RETRY_TIMEOUT
    if protocol in ("file", "local", "memory"):
        return opts, retry_timeout  # nothing to time out; check_local_options refuses extras
    if "retry_timeout" in opts:
        retry_timeout = opt_seconds(opts.pop("retry_timeout"), "retry_timeout")
    if protocol in S3_PROTOCOLS:
        _s3(opts)
    elif protocol in GCS_PROTOCOLS:
        _gcs(opts)
    elif protocol in AZURE_PROTOCOLS:
        _azure(opts)
    return opts, retry_timeout


def _given(opts: dict[str, Any]) -> dict[str, float]:
    """snapsync's timeout options, popped and checked."""
    return {k: opt_seconds(opts.pop(k), k) for k in _TIMEOUTS if k in opts}


def _s3(opts: dict[str, Any]) -> None:
    t = _given(opts)
    if "timeout" in t:
        raise UsageError("storage option timeout: s3fs (botocore) has no whole-request "
                         "timeout; use connect_timeout and read_timeout, or the obstore "
                         "engine (-o backend=obstore)")
    cfg = dict(opt_map(opts.get("config_kwargs") or {}, "config_kwargs"))
    # Bounded attempts (botocore's defaults are 60 s each, retried): the Store facade
    # retries, so botocore must not.
    cfg.setdefault("connect_timeout", t.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    cfg.setdefault("read_timeout", t.get("read_timeout", DEFAULT_READ_TIMEOUT))
    cfg.setdefault("retries", {"total_max_attempts": 1})
    opts["config_kwargs"] = cfg


def _gcs(opts: dict[str, Any]) -> None:
    t = _given(opts)
    if opts.get("requests_timeout") is not None:
        return  # gcsfs's own knob, as the user gave it
    import aiohttp

    # gcsfs passes this to every aiohttp request; without it a request may wait forever.
    opts["requests_timeout"] = aiohttp.ClientTimeout(
        total=t.get("timeout", DEFAULT_REQUEST_TIMEOUT),
        connect=t.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        sock_read=t.get("read_timeout", DEFAULT_READ_TIMEOUT))


def _azure(opts: dict[str, Any]) -> None:
    t = _given(opts)
    opts.setdefault("connection_timeout", t.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    opts.setdefault("read_timeout", t.get("read_timeout", DEFAULT_READ_TIMEOUT))
    if "timeout" in t:
        opts.setdefault("timeout", t["timeout"])
