"""Credentials never appear in logs, output, exceptions, configs or anything written to storage.

Complements ``test_storage.py`` (options and pickles hold no secrets) and ``tests/launch`` (``safe_load``, k8s
manifests): here real operations run against the moto server with distinctive credentials, through the CLI
where one exists, and every place a secret could leak to is searched for them.
"""
from __future__ import annotations

import io
import logging
import traceback

import pyarrow.parquet as pq
import pytest
import yaml
from faulty_s3 import FaultyS3Proxy

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, main
from ripple.config import ConfigError, RippleConfig, load_config
from ripple.data import storage as st
from ripple.data.storage import (StorageError, StorageOptions, Store, check_url, filesystem, pyarrow_filesystem,
                                 redact_url)

KEY_ID = "AKIAQZXRIPPLEKEYID77"
SECRET = "rIpPlE/s3cr3t+VALUE/never-log-me-0123"
TOKEN = "FwoGZXIvYXdzEripple-session-token-abc"
SECRETS = (KEY_ID, SECRET, TOKEN)


@pytest.fixture
def credentials(s3_server, monkeypatch):
    """Distinctive AWS credentials in the environment, and no filesystem cached with other ones."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def proxy(s3_server):
    with FaultyS3Proxy(s3_server) as p:
        yield p


def _leaks(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [s for s in SECRETS if s.encode() in text]
    return [s for s in SECRETS if s in text]


def _exception_text(e: BaseException) -> str:
    """Everything an exception can show: message, repr, and the formatted chain with its causes."""
    return str(e) + repr(e) + "".join(traceback.format_exception(e))


def _logged(caplog) -> str:
    return caplog.text + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)


def _bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def _object_leaks(objects: dict[str, bytes]) -> dict[str, list[str]]:
    """Secrets in any object: raw bytes, and for parquet the decompressed values and metadata too."""
    found = {}
    for key, data in objects.items():
        hits = _leaks(data) + _leaks(key)
        if key.endswith(".parquet"):
            f = pq.ParquetFile(io.BytesIO(data))
            hits += _leaks(repr(f.metadata.metadata) + repr(f.read().to_pylist()))
        if hits:
            found[key] = hits
    return found


def test_cli_on_s3_never_shows_or_writes_credentials(credentials, proxy, s3_server, s3_bucket, caplog, capsys,
                                                     monkeypatch):
    monkeypatch.setattr(st, "_sleep", lambda s: None)
    caplog.set_level(logging.DEBUG)
    data = f"{s3_bucket}/data"
    proxy.fail(2, "503")  # retries are logged too: with the URL, never the credentials
    assert main(["-v", "generate", data, "--users", "60", "--s3-endpoint-url", proxy.url]) == EXIT_OK
    assert main(["-v", "validate", data, "--s3-endpoint-url", proxy.url]) == EXIT_OK
    # the operations really ran with these credentials (SigV4 names the key id in the Authorization header)
    assert proxy.requests and all(f"Credential={KEY_ID}/" in r.authorization for r in proxy.requests)
    assert len(proxy.faults("503")) == 2 and "retrying" in caplog.text
    # failing operations: access denied (exit 2) and a service that keeps failing (exit 1)
    proxy.fail(None, "403-key")
    assert main(["-v", "validate", data, "--s3-endpoint-url", proxy.url]) == EXIT_BAD_INPUT
    proxy.clear()
    proxy.fail(None, "503")
    assert main(["-v", "validate", data, "--s3-endpoint-url", proxy.url]) == EXIT_RUNTIME
    out = capsys.readouterr()
    assert "access denied" in out.err and "gave up after" in out.err
    assert _leaks(out.out + out.err) == []
    assert _leaks(_logged(caplog)) == []
    objects = _bucket_objects(s3_server, s3_bucket.removeprefix("s3://"))
    assert "data/manifest.json" in objects and any(k.endswith(".parquet") for k in objects)
    assert _object_leaks(objects) == {}


def test_exceptions_from_failed_operations_hold_no_credentials(credentials, proxy, s3_bucket):
    store = Store(f"{s3_bucket}/x", StorageOptions(endpoint_url=proxy.url, retries=1, retry_backoff_s=0.001,
                                                   timeout_s=0.3))
    errors = []
    for fault in ("403", "403-key", "503", "stall"):
        proxy.clear()
        proxy.fail(None, fault, stall_s=1.0)
        for fn in (lambda: store.write_bytes(b"x", "k"), lambda: store.read_bytes("k"), lambda: store.ls()):
            with pytest.raises(StorageError) as e:
                fn()
            errors.append(e.value)
    assert len(errors) == 12
    for e in errors:
        assert _leaks(_exception_text(e)) == [], _exception_text(e)


@pytest.mark.parametrize("url", [f"s3://{KEY_ID}:{SECRET}@bucket/data", f"s3://{KEY_ID}@bucket/data",
                                 f"s3a://{KEY_ID}:{SECRET}@bucket/data", f"http://{KEY_ID}:{SECRET}@minio:9000"])
def test_urls_with_embedded_credentials_are_refused_without_echoing_them(url, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    errors = []
    for fn in (lambda: Store(url), lambda: filesystem(url), lambda: pyarrow_filesystem(url),
               lambda: StorageOptions(endpoint_url=url), lambda: check_url(url, "data"),
               lambda: RippleConfig(data=url), lambda: RippleConfig(storage_path=url)):
        with pytest.raises(StorageError) as e:
            fn()
        errors.append(e.value)
        assert "carries credentials" in str(e.value)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": url}))
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg))
    errors.append(e.value)
    for e in errors:
        assert _leaks(_exception_text(e)) == []
    runs = tmp_path / "runs"
    for argv in (["validate", url], ["generate", url, "--users", "20"], ["partition", url, "--num-parts", "2",
                                                                          "--out", str(tmp_path / "p")],
                 ["validate", "s3://bucket/data", "--s3-endpoint-url", url],
                 ["train", "--data", url, "--storage-path", str(runs)], ["k8s", "render", "--config", str(cfg)],
                 ["k8s", "render", "--data", url, "--storage-path", "s3://b/runs"]):
        assert main(argv) == EXIT_BAD_INPUT, argv
        out = capsys.readouterr()
        assert "carries credentials" in out.err, argv
        assert _leaks(out.out + out.err) == [], argv
    assert not runs.exists() and not (tmp_path / "p").exists()
    assert _leaks(_logged(caplog)) == []


def test_redact_url():
    assert redact_url(f"s3://{KEY_ID}:{SECRET}@bucket/a/b") == "s3://***@bucket/a/b"  # SECRET has '/' in it
    assert redact_url("http://admin:hunter2@minio:9000/x") == "http://***@minio:9000/x"
    for fine in ("s3://bucket/users/a@b.com/data", "http://minio:9000/bucket/x@y", "/local/a:b@c", "s3://b/k:v@w"):
        assert redact_url(fine) == fine and check_url(fine) == fine


def test_secret_named_storage_options_are_hidden_and_never_written(credentials, proxy, s3_server, s3_bucket,
                                                                    caplog):
    """``storage.extra`` may carry credentials for a local run (s3fs's key/secret/token): they work, but no
    repr, log, error, config.yaml or manifest shows them."""
    caplog.set_level(logging.DEBUG)
    opts = StorageOptions(endpoint_url=proxy.url, retries=0,
                          extra={"key": KEY_ID, "secret": SECRET, "token": TOKEN, "use_ssl": False,
                                 "client_kwargs": {"aws_session_token": TOKEN, "verify": False}})
    assert opts.secret_keys() == ["storage.extra.key", "storage.extra.secret", "storage.extra.token",
                                  "storage.extra.client_kwargs.aws_session_token"]
    cfg = RippleConfig(data=f"{s3_bucket}/data", storage_path=f"{s3_bucket}/runs", storage=opts)
    assert _leaks(repr(opts) + str(opts) + repr(cfg)) == []
    assert "'key': '<redacted>'" in repr(opts)
    # what ripple writes: the config (config.yaml of a run, k8s ConfigMaps) leaves them out, and says which
    text = cfg.to_yaml()
    assert _leaks(text) == []
    written = yaml.safe_load(text)["storage"]
    assert written["extra"] == {"use_ssl": False, "client_kwargs": {"verify": False}}
    assert written["endpoint_url"] == proxy.url and written["retries"] == 0
    assert "storage.extra.secret" in caplog.text
    # the options still work (moto accepts any credentials) ...
    run = Store(cfg.storage_path + "/r1", opts)
    run.write_bytes(text.encode(), "config.yaml")
    run.write_json({"rows": 1}, "manifest.json")
    assert yaml.safe_load(run.read_bytes("config.yaml"))["storage"]["extra"]["use_ssl"] is False
    # ... a failing operation's error does not show them either
    proxy.fail(None, "403")
    with pytest.raises(StorageError) as e:
        run.read_bytes("config.yaml")
    assert _leaks(_exception_text(e.value)) == []
    assert _leaks(_logged(caplog)) == []
    assert _object_leaks(_bucket_objects(s3_server, s3_bucket.removeprefix("s3://"))) == {}


def test_config_python_tags_are_refused_with_exit_2(tmp_path, capsys, monkeypatch):
    import ripple.deploy.submit as submit

    monkeypatch.setattr(submit, "submit", lambda *a, **kw: pytest.fail("a refused config reached the cluster"))
    marker = tmp_path / "pwned"
    for i, doc in enumerate([f"run_name: !!python/object/apply:os.system ['touch {marker}']\n",
                             "storage: !!python/object:ripple.data.storage.StorageOptions {anon: true}\n",
                             "data: !!python/name:os.system\n"]):
        path = tmp_path / f"evil{i}.yaml"
        path.write_text(doc)
        for argv in (["k8s", "render", "--config", str(path)], ["submit", "--", "--config", str(path)]):
            assert main(argv) == EXIT_BAD_INPUT, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and str(path) in err[0], err
    assert not marker.exists()
