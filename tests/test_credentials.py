"""Unit tests: Prefect credential shapes -> fsspec options (no servers, no prefect import)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from snapsync.credentials import (
    StorageOptions,
    azure_storage_options,
    gcs_storage_options,
    merge_client_parameters,
    redact,
    s3_storage_options,
)
from snapsync.errors import UsageError
from snapsync.steps import normalize_folder, store_url

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"

# Exactly what `{{ prefect.blocks.aws-credentials.x }}` renders to (prefect-aws 0.7.12,
# model_dump with secrets revealed): None values, nested client parameters, block noise.
RENDERED_AWS_BLOCK: dict[str, Any] = {
    "aws_access_key_id": "AKIAEXAMPLE",
    "aws_secret_access_key": SECRET,
    "aws_session_token": None,
    "profile_name": None,
    "region_name": "eu-west-1",
    "aws_client_parameters": {"api_version": None, "use_ssl": True, "verify": None,
                              "verify_cert_path": None, "endpoint_url": None, "config": None},
    "assume_role_arn": None,
    "assume_role_kwargs": {"RoleSessionName": None, "DurationSeconds": None, "Policy": None},
    "block_type_slug": "aws-credentials",
}


# ------------------------------------------------------------------------------------ S3


def test_s3_plain_dict() -> None:
    opts = s3_storage_options({"aws_access_key_id": "AK", "aws_secret_access_key": SECRET,
                               "region_name": "us-west-2"},
                              {"endpoint_url": "http://127.0.0.1:9000"})
    assert dict(opts) == {"key": "AK", "secret": SECRET, "endpoint_url": "http://127.0.0.1:9000",
                          "client_kwargs": {"region_name": "us-west-2"}}


def test_s3_none_means_default_chain() -> None:
    assert dict(s3_storage_options(None, None)) == {}
    assert dict(s3_storage_options({}, {})) == {}


def test_s3_rendered_block_with_client_parameters_is_not_ignored() -> None:
    # Prefect's gotcha: the block's aws_client_parameters (endpoint_url None) silently wins
    # and the step talks to AWS. We merge: explicit non-None values win.
    opts = s3_storage_options(RENDERED_AWS_BLOCK, {"endpoint_url": "http://127.0.0.1:8333",
                                                   "verify": None})
    assert opts["endpoint_url"] == "http://127.0.0.1:8333"
    assert opts["key"] == "AKIAEXAMPLE" and opts["secret"] == SECRET
    assert opts["use_ssl"] is True  # from the block, not overridden by a None
    assert opts["client_kwargs"] == {"region_name": "eu-west-1"}
    assert "block_type_slug" not in opts and "token" not in opts


def test_s3_block_endpoint_used_when_no_client_parameters() -> None:
    block = {**RENDERED_AWS_BLOCK, "aws_client_parameters": {
        **RENDERED_AWS_BLOCK["aws_client_parameters"], "endpoint_url": "http://minio:9000"}}
    assert s3_storage_options(block)["endpoint_url"] == "http://minio:9000"
    # ...and an explicit value still beats it.
    opts = s3_storage_options(block, {"endpoint_url": "http://other:9000"})
    assert opts["endpoint_url"] == "http://other:9000"


def test_merge_client_parameters_precedence_and_nested_config() -> None:
    merged = merge_client_parameters(
        {"use_ssl": True, "endpoint_url": "http://block", "verify": None,
         "config": {"retries": {"max_attempts": 3}, "read_timeout": 5}},
        {"use_ssl": False, "endpoint_url": None, "config": {"read_timeout": 30}})
    assert merged == {"use_ssl": False, "endpoint_url": "http://block",
                      "config": {"retries": {"max_attempts": 3}, "read_timeout": 30}}


def test_s3_minio_aliases_and_aws_names_win() -> None:
    minio = {"minio_root_user": "minio", "minio_root_password": SECRET, "region_name": None,
             "aws_client_parameters": {"endpoint_url": "http://127.0.0.1:9000", "use_ssl": True},
             "block_type_slug": "minio-credentials"}
    opts = s3_storage_options(minio)
    assert (opts["key"], opts["secret"]) == ("minio", SECRET)
    assert opts["endpoint_url"] == "http://127.0.0.1:9000"
    both = {**minio, "aws_access_key_id": "aws", "aws_secret_access_key": "aws-secret"}
    opts = s3_storage_options(both)
    assert (opts["key"], opts["secret"]) == ("aws", "aws-secret")


def test_s3_profile_region_token_and_unknown_keys() -> None:
    opts = s3_storage_options({"profile_name": "dev", "region_name": "ap-south-1",
                               "aws_access_key_id": "AK", "aws_secret_access_key": SECRET,
                               "aws_session_token": "sess-" + SECRET, "unknown_key": "x"})
    assert opts["profile"] == "dev"
    assert opts["token"] == "sess-" + SECRET
    assert opts["client_kwargs"] == {"region_name": "ap-south-1"}
    assert "unknown_key" not in opts


def test_s3_region_in_client_parameters_is_a_fallback() -> None:
    assert s3_storage_options(None, {"region_name": "eu-central-1"})["client_kwargs"] == {
        "region_name": "eu-central-1"}
    opts = s3_storage_options({"region_name": "us-west-1"}, {"region_name": "eu-central-1"})
    assert opts["client_kwargs"] == {"region_name": "us-west-1"}


def test_s3_config_unsigned_ssl_verify_api_version() -> None:
    opts = s3_storage_options(None, {
        "config": {"signature_version": "unsigned", "s3": {"addressing_style": "path"}},
        "use_ssl": "false",  # a {{ $ENV }} template always yields a string
        "verify": "False", "api_version": "2006-03-01"})
    assert opts["anon"] is True
    assert opts["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert opts["use_ssl"] is False
    assert opts["client_kwargs"] == {"verify": False, "api_version": "2006-03-01"}


def test_s3_verify_cert_path() -> None:
    opts = s3_storage_options(None, {"verify_cert_path": "/etc/ca.pem"})
    assert opts["client_kwargs"] == {"verify": "/etc/ca.pem"}
    # As in Prefect, verify=False beats a cert path.
    opts = s3_storage_options(None, {"verify": False, "verify_cert_path": "/etc/ca.pem"})
    assert opts["client_kwargs"] == {"verify": False}


def test_s3_half_a_key_pair_names_the_missing_key() -> None:
    with pytest.raises(UsageError, match="aws_secret_access_key is missing"):
        s3_storage_options({"aws_access_key_id": "AK"})
    with pytest.raises(UsageError, match="aws_access_key_id is missing") as info:
        s3_storage_options({"aws_secret_access_key": SECRET})
    assert SECRET not in str(info.value)


def test_s3_assume_role_is_refused_not_ignored() -> None:
    with pytest.raises(UsageError, match="assume_role_arn"):
        s3_storage_options({"assume_role_arn": "arn:aws:iam::1:role/x"})


def test_s3_bad_shapes() -> None:
    with pytest.raises(UsageError, match="credentials must be a mapping"):
        s3_storage_options(["not", "a", "dict"])
    with pytest.raises(UsageError, match="use_ssl must be true or false"):
        s3_storage_options(None, {"use_ssl": "maybe"})


def test_s3_json_string_credentials_from_env() -> None:
    opts = s3_storage_options('{"aws_access_key_id": "AK", "aws_secret_access_key": "S"}')
    assert (opts["key"], opts["secret"]) == ("AK", "S")
    with pytest.raises(UsageError, match="not valid JSON") as info:
        s3_storage_options('{"aws_secret_access_key": "' + SECRET)
    assert SECRET not in str(info.value)


def test_s3_block_object_with_secret_str() -> None:
    class FakeSecret:
        def __init__(self, v: str) -> None:
            self._v = v

        def get_secret_value(self) -> str:
            return self._v

        def __repr__(self) -> str:
            return "SecretStr('**********')"

    class FakeBlock:  # the shape of AwsCredentials.model_dump() in Python mode
        def model_dump(self) -> dict[str, Any]:
            return {**RENDERED_AWS_BLOCK, "aws_secret_access_key": FakeSecret(SECRET)}

    assert s3_storage_options(FakeBlock())["secret"] == SECRET


# ----------------------------------------------------------------------------------- GCS


def test_gcs_service_account_info_dict_and_json_string() -> None:
    info = {"type": "service_account", "private_key": SECRET, "client_email": "a@b"}
    opts = gcs_storage_options({"service_account_info": info, "project": "p1"})
    assert opts == {"token": info, "project": "p1"}
    opts = gcs_storage_options({"service_account_info": '{"type": "service_account"}'})
    assert opts["token"] == {"type": "service_account"}


def test_gcs_service_account_file_default_and_emulator_keys() -> None:
    assert gcs_storage_options({"service_account_file": "/k.json"}) == {"token": "/k.json"}
    assert gcs_storage_options(None) == {}  # gcsfs then tries google.auth.default()
    assert gcs_storage_options({"token": "anon", "endpoint_url": "http://127.0.0.1:4443"}) == {
        "token": "anon", "endpoint_url": "http://127.0.0.1:4443"}


def test_gcs_project_argument_is_honoured_and_wins() -> None:
    # Prefect's step overwrites `project` with credentials["project"] (or None).
    assert gcs_storage_options(None, "argproj")["project"] == "argproj"
    assert gcs_storage_options({"project": "credproj"}, "argproj")["project"] == "argproj"
    assert gcs_storage_options({"project": "credproj"}, None)["project"] == "credproj"


def test_gcs_bad_values() -> None:
    with pytest.raises(UsageError, match="not both"):
        gcs_storage_options({"service_account_info": {}, "service_account_file": "/k"})
    with pytest.raises(UsageError, match="not valid JSON") as info:
        gcs_storage_options({"service_account_info": "{" + SECRET})
    assert SECRET not in str(info.value)


# --------------------------------------------------------------------------------- Azure


def test_azure_connection_string() -> None:
    conn = f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={SECRET};"
    opts = azure_storage_options({"connection_string": conn, "account_url": None,
                                  "block_type_slug": "azure-blob-storage-credentials"})
    assert opts == {"connection_string": conn}


def test_azure_account_url_with_service_principal() -> None:
    opts = azure_storage_options({"account_url": "https://acct.blob.core.windows.net/",
                                  "tenant_id": "t", "client_id": "c", "client_secret": SECRET})
    assert opts == {"account_name": "acct", "account_host": "acct.blob.core.windows.net",
                    "tenant_id": "t", "client_id": "c", "client_secret": SECRET}


def test_azure_account_url_alone_means_default_credentials() -> None:
    assert azure_storage_options({"account_url": "https://acct.blob.core.windows.net"}) == {
        "account_name": "acct", "account_host": "acct.blob.core.windows.net"}


def test_azure_errors_name_the_missing_keys() -> None:
    with pytest.raises(UsageError, match="missing: connection_string, account_url") as info:
        azure_storage_options({"tenant_id": "t", "client_secret": SECRET})
    assert SECRET not in str(info.value)
    with pytest.raises(UsageError, match="missing: connection_string, account_url"):
        azure_storage_options({})
    with pytest.raises(UsageError, match="missing: tenant_id, client_id") as info:
        azure_storage_options({"account_url": "https://a.blob.core.windows.net",
                               "client_secret": SECRET})
    assert SECRET not in str(info.value)
    with pytest.raises(UsageError, match="must be a mapping"):
        azure_storage_options("just-a-string")


# ------------------------------------------------------------------------------- secrets


def test_secrets_never_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    all_opts = [
        s3_storage_options({**RENDERED_AWS_BLOCK, "aws_session_token": "tok-" + SECRET,
                            "some_unknown": SECRET}, {"endpoint_url": "http://x"}),
        s3_storage_options({"minio_root_user": "u", "minio_root_password": SECRET}),
        gcs_storage_options({"service_account_info": {"private_key": SECRET}}),
        azure_storage_options({"connection_string": f"AccountKey={SECRET}"}),
        azure_storage_options({"account_url": "https://a.blob.core.windows.net",
                               "tenant_id": "t", "client_id": "c", "client_secret": SECRET}),
    ]
    for opts in all_opts:
        assert isinstance(opts, StorageOptions)
        assert SECRET not in repr(opts)
        assert SECRET not in str(opts)
        assert SECRET not in f"{opts}"
        assert SECRET not in repr(redact(dict(opts)))
        assert "***" in repr(opts)
    assert "some_unknown" in caplog.text  # unknown keys are reported by name...
    assert SECRET not in caplog.text  # ...never by value


def test_redact_walks_nested_values() -> None:
    nested = {"a": [{"secret": "s1"}], "connection_string": "c", "ok": {"token": None}}
    assert redact(nested) == {"a": [{"secret": "***"}], "connection_string": "***",
                              "ok": {"token": None}}


# ------------------------------------------------------------------------------- folders


@pytest.mark.parametrize("folder, expected", [
    ("proj", "proj"), ("/proj", "proj"), ("proj/", "proj"), ("/proj//", "proj"),
    ("a/b/", "a/b"), ("a//b", "a/b"), ("a\\b", "a/b"), ("", ""), ("/", ""), (None, ""),
])
def test_normalize_folder(folder: str | None, expected: str) -> None:
    assert normalize_folder(folder) == expected


def test_folder_dot_segments_rejected() -> None:
    with pytest.raises(UsageError, match=r"'\.\.'"):
        normalize_folder("a/../b")


def test_store_url() -> None:
    assert store_url("s3", "bkt", "/proj/") == "s3://bkt/proj"
    assert store_url("s3", "s3://bkt/", "proj") == "s3://bkt/proj"
    assert store_url("gs", "bkt", "") == "gs://bkt"
    assert store_url("az", "cont", "a\\b") == "az://cont/a/b"
    with pytest.raises(UsageError, match="bare container name"):
        store_url("az", "cont/sub", "x")
    with pytest.raises(UsageError, match="bare bucket name"):
        store_url("s3", "", "x")


# ------------------------------------------------------- the options fit the real clients


def test_options_construct_the_real_filesystems_offline() -> None:
    # Construction makes no request; this proves every key we emit is one the client takes.
    import adlfs
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3_storage_options(
        RENDERED_AWS_BLOCK, {"endpoint_url": "http://127.0.0.1:9", "verify": False,
                             "config": {"signature_version": "unsigned",
                                        "retries": {"max_attempts": 2}}}))
    assert fs.anon is True
    assert fs.client_kwargs == {"region_name": "eu-west-1", "verify": False}
    assert fs.config_kwargs == {"retries": {"max_attempts": 2}}

    az = adlfs.AzureBlobFileSystem(skip_instance_cache=True, **azure_storage_options(
        {"account_url": "https://acct.blob.core.windows.net", "tenant_id": "t",
         "client_id": "c", "client_secret": SECRET}))
    assert az.account_url == "https://acct.blob.core.windows.net"
    assert type(az.credential).__name__ == "ClientSecretCredential"
