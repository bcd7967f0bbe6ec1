"""Storage options -> obstore configuration, engine selection and lazy imports (no servers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from snapsync.credentials import azure_storage_options, s3_storage_options
from snapsync.errors import UsageError
from snapsync.store import choose_engine, open_backend
from snapsync.store.options import obstore_options, parse_connection_string

CONN = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5Cg==;"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AZURE_STORAGE_CONNECTION_STRING", "SNAPSYNC_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # botocore: never probe IMDS
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")


def test_s3fs_shaped_options() -> None:
    o = obstore_options("s3://bkt/some/prefix", {
        "key": "AK", "secret": "SK", "token": "ST", "endpoint_url": "http://127.0.0.1:8333",
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"s3": {"addressing_style": "path"}, "max_pool_connections": 64}})
    assert (o.kind, o.bucket, o.prefix) == ("s3", "bkt", "some/prefix")
    assert o.config == {"access_key_id": "AK", "secret_access_key": "SK", "session_token": "ST",
                        "region": "eu-west-1", "endpoint": "http://127.0.0.1:8333",
                        "virtual_hosted_style_request": False}
    assert o.client_options["allow_http"] is True
    assert o.client_options["connect_timeout"] == "5000ms"
    assert o.retry_timeout == 10 and o.conditional
    assert "SK" not in repr(o) and "AK" not in repr(o)


def test_endpoint_in_client_kwargs_and_default_region() -> None:
    o = obstore_options("s3://b", {"anon": True,
                                   "client_kwargs": {"endpoint_url": "https://minio.local"}})
    assert o.config == {"skip_signature": True, "endpoint": "https://minio.local",
                        "region": "us-east-1"}
    assert "allow_http" not in o.client_options


def test_obstore_names_pass_through() -> None:
    o = obstore_options("s3://b/p", {"access_key_id": "AK", "secret_access_key": "SK",
                                     "virtual_hosted_style_request": "true",
                                     "allow_http": True, "proxy_url": "http://127.0.0.1:3128",
                                     "client_options": {"timeout": "30s"},
                                     "connect_timeout": 2, "retry_timeout": "4s",
                                     "conditional": False})
    assert o.config["virtual_hosted_style_request"] is True
    assert o.client_options["proxy_url"] == "http://127.0.0.1:3128"
    assert o.client_options["timeout"] == "30000ms"
    assert o.client_options["connect_timeout"] == "2000ms"
    assert o.retry_timeout == 4 and not o.conditional


@pytest.mark.parametrize(("options", "named"), [
    ({"bogus": 1}, "bogus"),
    ({"key": 5, "secret": "x"}, "key"),
    ({"key": "a"}, "secret"),
    ({"anon": "maybe"}, "anon"),
    ({"client_kwargs": {"nope": 1}}, "client_kwargs.nope"),
    ({"client_kwargs": "x"}, "client_kwargs"),
    ({"config_kwargs": {"s3": {"addressing_style": "sideways"}}}, "addressing_style"),
    ({"config_kwargs": {"unknown_knob": 1}}, "config_kwargs.unknown_knob"),
    ({"connect_timeout": "soon"}, "connect_timeout"),
    ({"retry_timeout": -1}, "retry_timeout"),
    ({"client_options": {"not_a_client_key": 1}}, "client_options.not_a_client_key"),
    ({"conditional": "perhaps"}, "conditional"),
])
def test_bad_options_name_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(UsageError, match=named.replace(".", r"\.")):
        obstore_options("s3://b/p", options)


def test_bad_option_values_are_not_echoed() -> None:
    with pytest.raises(UsageError) as info:
        obstore_options("s3://b", {"key": ["s3cr3t"], "secret": "x"})
    assert "s3cr3t" not in str(info.value)


def test_prefect_s3_credentials_translate() -> None:
    opts = s3_storage_options(
        {"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "region_name": "us-west-2"},
        {"endpoint_url": "http://127.0.0.1:9000", "verify": False, "use_ssl": False,
         "config": {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 3}}})
    o = obstore_options("s3://b/f", dict(opts))
    assert o.config["access_key_id"] == "AK" and o.config["region"] == "us-west-2"
    assert o.config["endpoint"] == "http://127.0.0.1:9000"
    assert o.client_options["allow_invalid_certificates"] is True
    assert o.client_options["allow_http"] is True
    unsigned = s3_storage_options({}, {"config": {"signature_version": "unsigned"}})
    assert obstore_options("s3://b", dict(unsigned)).config["skip_signature"] is True


def test_profile_goes_through_boto3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("[dev]\naws_access_key_id = AKPROFILE\naws_secret_access_key = SKP\n")
    cfg = tmp_path / "config"
    cfg.write_text("[profile dev]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cfg))
    o = obstore_options("s3://b", dict(s3_storage_options({"profile_name": "dev"})))
    assert o.credential_provider is not None
    assert o.credential_provider()["access_key_id"] == "AKPROFILE"
    assert o.config["region"] == "ap-south-1"
    with pytest.raises(UsageError, match="profile 'nope'"):
        obstore_options("s3://b", {"profile": "nope"})
    # Without a profile or key, a default profile in the files also brings botocore in.
    assert obstore_options("s3://b", {}).credential_provider is None
    creds.write_text(creds.read_text() + "[default]\naws_access_key_id = AKDEF\n"
                     "aws_secret_access_key = SKD\n")
    provider = obstore_options("s3://b", {}).credential_provider
    assert provider is not None and provider()["access_key_id"] == "AKDEF"


def test_no_profile_no_boto3() -> None:
    assert obstore_options("s3://b", {}).credential_provider is None


def test_azure_connection_string() -> None:
    o = obstore_options("az://cont/p/q", {"connection_string": CONN})
    assert (o.kind, o.bucket, o.prefix) == ("azure", "cont", "p/q")
    assert o.config == {"account_name": "devstoreaccount1", "account_key": "a2V5Cg==",
                        "endpoint": "http://127.0.0.1:10000/devstoreaccount1"}
    assert o.client_options["allow_http"] is True
    assert parse_connection_string("A=b=c;;D=e") == {"a": "b=c", "d": "e"}


def test_azure_env_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONN)
    assert obstore_options("az://c", {}).config["account_name"] == "devstoreaccount1"


def test_prefect_azure_credentials_translate() -> None:
    opts = azure_storage_options({"account_url": "https://acct.blob.core.windows.net",
                                  "tenant_id": "t", "client_id": "c", "client_secret": "s"})
    o = obstore_options("az://c/f", dict(opts))
    assert o.config == {"account_name": "acct", "tenant_id": "t", "client_id": "c",
                        "client_secret": "s", "endpoint": "https://acct.blob.core.windows.net"}
    sas = obstore_options("az://c", dict(azure_storage_options(
        {"account_name": "acct", "sas_token": "?sv=1&sig=x"})))
    assert sas.config["sas_key"] == "sv=1&sig=x"


def test_azure_needs_an_account() -> None:
    with pytest.raises(UsageError, match="account_name"):
        obstore_options("az://c", {})
    with pytest.raises(UsageError, match="credential"):
        obstore_options("az://c", {"account_name": "a", "credential": object()})


def test_engine_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_engine("s3", {}) == "obstore"
    assert choose_engine("az", {}) == "obstore"
    assert choose_engine("gs", {}) == "fsspec"
    assert choose_engine("file", {}) == "local"
    opts = {"backend": "fsspec", "key": "k"}
    assert choose_engine("s3", opts) == "fsspec" and opts == {"key": "k"}
    monkeypatch.setenv("SNAPSYNC_BACKEND", "fsspec")
    assert choose_engine("s3", {}) == "fsspec"
    assert choose_engine("s3", {"backend": "obstore"}) == "obstore"  # the option wins
    monkeypatch.setenv("SNAPSYNC_BACKEND", "obstore")
    assert choose_engine("gs", {}) == "fsspec"
    with pytest.raises(UsageError, match="backend=obstore"):
        choose_engine("gs", {"backend": "obstore"})
    with pytest.raises(UsageError, match="obstore or fsspec"):
        choose_engine("s3", {"backend": "boto"})


def test_open_backend_usage_errors_name_the_option() -> None:
    with pytest.raises(UsageError, match="bogus"):
        open_backend("s3://b/p", {"bogus": 1})
    b = open_backend("s3://b/p", {"key": "k", "secret": "s",
                                  "endpoint_url": "http://127.0.0.1:9"})
    assert b.name == "obstore" and b.conditional
    b.close()


@pytest.mark.parametrize("url,options,named", [
    ("file:///tmp/snapsync-opt-test", {"bogus": 1}, "bogus"),
    ("/tmp/snapsync-opt-test", {"endpoint_url": "http://127.0.0.1:9"}, "endpoint_url"),
    ("memory://opt-test", {"auto_mkdir": True}, "auto_mkdir"),
    ("memory://opt-test", {"key": "AK"}, "key"),
    ("file:///tmp/snapsync-opt-test", {"auto_mkdir": "maybe"}, "auto_mkdir"),
])
def test_local_stores_refuse_unknown_options(url: str, options: dict[str, Any],
                                             named: str) -> None:
    # They used to be accepted and ignored: a typo, or an S3 option sent to the wrong URL.
    with pytest.raises(UsageError, match=named) as ei:
        open_backend(url, options)
    assert ei.value.exit_code == 2


def test_local_stores_take_their_options(tmp_path: Path) -> None:
    b = open_backend(tmp_path.as_uri(), {"auto_mkdir": "false", "backend": "fsspec"})
    assert b.local and b.fs.auto_mkdir is False
    b = open_backend(tmp_path.as_uri(), {"auto_mkdir": "false"})
    assert b.name == "local" and b.local and b.auto_mkdir is False
    assert open_backend("memory://opt-test", {"backend": "fsspec"}).name == "fsspec"


def test_cli_refuses_unknown_option_on_a_local_store(tmp_path: Path) -> None:
    from snapsync.cli import main

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a\n")
    code = main(["push", str(tmp_path / "src"), (tmp_path / "store").as_uri(), "-q",
                 "-o", "endpoint_url=http://127.0.0.1:9"])
    assert code == 2 and not (tmp_path / "store").exists()


def test_s3_open_imports_no_cloud_sdk() -> None:
    """Opening an s3:// store loads obstore only: no fsspec, s3fs, botocore, gcsfs, adlfs."""
    code = (
        "import sys, json, snapsync.cli\n"
        "from snapsync.store import open_store\n"
        "open_store('s3://b/p', {'key': 'k', 'secret': 's', "
        "'endpoint_url': 'http://127.0.0.1:9'})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fsspec', 's3fs', 'botocore', 'boto3', 'aiobotocore', 'gcsfs', 'adlfs', 'azure', "
        "'google', 'aiohttp', 'obstore'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    mods = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert mods == {"obstore"}, mods
