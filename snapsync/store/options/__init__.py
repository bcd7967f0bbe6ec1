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

from collections.abc import Mapping
from typing import Any

from snapsync.errors import UsageError
from snapsync.store.options.azure import azure_options, parse_connection_string
from snapsync.store.options.common import ObstoreOptions, split_url
from snapsync.store.options.s3 import s3_options

__all__ = ["ObstoreOptions", "obstore_options", "parse_connection_string"]


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
    scheme, bucket, prefix = split_url(url)
    if scheme in ("s3", "s3a"):
        return s3_options(url, bucket, prefix, options or {})
    if scheme in ("az", "abfs", "abfss", "azure"):
        return azure_options(url, bucket, prefix, options or {})
    raise UsageError(f"{scheme}://: not served by the obstore engine (s3://, az:// only)")
