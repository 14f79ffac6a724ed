"""Storage faults: transient S3 errors and timeouts are retried with backoff, permanent ones fail at once.

Faults come from ``faulty_s3.FaultyS3Proxy``, a real HTTP proxy in front of the moto server, so every request
ripple makes goes through botocore, aiohttp and s3fs exactly as in production.
"""
from __future__ import annotations

import errno
import logging
import socket
import time

import pyarrow as pa
import pytest
from faulty_s3 import FaultyS3Proxy
from tiny_dataset import write_tiny_dataset

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, main
from ripple.data import storage as st
from ripple.data.storage import (StorageError, StorageOptions, StorageUnavailable, Store, is_transient,
                                 iter_table_batches, table_to_parquet_bytes)

FAST = {"retry_backoff_s": 0.001}  # tiny backoff: the tests check what is retried, not how long it waits


@pytest.fixture
def proxy(s3_server):
    with FaultyS3Proxy(s3_server) as p:
        yield p


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Backoff waits, recorded instead of slept (for tests that go through the CLI's default options)."""
    waited: list[float] = []
    monkeypatch.setattr(st, "_sleep", waited.append)
    return waited


def _store(bucket: str, proxy: FaultyS3Proxy, **kw) -> Store:
    return Store(f"{bucket}/run", StorageOptions(endpoint_url=proxy.url, **{**FAST, **kw}))


def _retry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ripple.data.storage" and r.levelno == logging.WARNING and "retrying" in r.getMessage()]


# ---------------------------------------------------------------- transient faults are retried

def test_first_three_503s_then_round_trip_succeeds(proxy, s3_bucket, caplog):
    store = _store(s3_bucket, proxy)
    proxy.fail(3, "503")
    store.write_bytes(b"payload", "a.bin")
    # the proxy saw the 3 failed PUTs and the 4th that went through: retried by ripple, one request per attempt
    assert [(r.method, r.fault) for r in proxy.requests] == [("PUT", "503")] * 3 + [("PUT", None)]
    proxy.fail(3, "503")
    assert store.read_bytes("a.bin") == b"payload"
    assert len(proxy.faults("503")) == 6
    warnings = _retry_warnings(caplog)
    assert len(warnings) == 6
    url = f"{s3_bucket}/run/a.bin"
    for i, w in enumerate(warnings[:3], start=1):
        assert f"write {url} failed (attempt {i} of 6)" in w and "SlowDown (HTTP 503)" in w
    assert all(f"read {url} failed" in w for w in warnings[3:])


@pytest.mark.parametrize("fault", ["503", "reset"])  # the other transient answers: test_what_counts_as_transient
def test_every_store_operation_survives_transient_faults(proxy, s3_bucket, tmp_path, fault):
    store = _store(s3_bucket, proxy)
    local = tmp_path / "up.bin"
    local.write_bytes(b"u" * 1000)
    ops = [
        ("write_bytes", lambda: store.write_bytes(b"x", "d", "x.bin"), None),
        ("write_json", lambda: store.write_json({"a": 1}, "d", "m.json"), None),
        ("put_file", lambda: store.put_file(str(local), "d", "up.bin"), None),
        ("exists", lambda: store.exists("d", "x.bin"), True),
        ("ls", lambda: store.ls("d"), ["m.json", "up.bin", "x.bin"]),
        ("read_bytes", lambda: store.read_bytes("d", "up.bin"), b"u" * 1000),
        ("read_json", lambda: store.read_json("d", "m.json"), {"a": 1}),
        ("rm", lambda: store.rm("d", "x.bin"), None),
        ("rm recursive", lambda: store.rm("d", recursive=True), None),
        ("ls after rm", lambda: store.ls("d"), []),
    ]
    for name, op, want in ops:
        proxy.fail(2, fault)
        got = op()
        assert want is None or got == want, name
        assert all(r.times == 0 for r in proxy.rules), f"{name}: the faults were not all hit"


def test_stalled_response_beyond_the_timeout_is_retried(proxy, s3_bucket, caplog):
    store = _store(s3_bucket, proxy, timeout_s=0.5)
    store.write_bytes(b"slow", "s.bin")
    proxy.fail(1, "stall", stall_s=5.0)
    t0 = time.perf_counter()
    assert store.read_bytes("s.bin") == b"slow"
    assert time.perf_counter() - t0 < 4.0  # abandoned after timeout_s, not after the 5 s stall
    assert len(proxy.faults("stall")) == 1
    (w,) = _retry_warnings(caplog)
    assert "attempt 1 of 6" in w and "ReadTimeoutError" in w


def test_streaming_reads_through_store_fs_retry_in_botocore(proxy, s3_bucket):
    """``Store.fs`` (streamed reads: validation, the partitioner, Ray Train's checkpoints) retries too."""
    store = _store(s3_bucket, proxy)
    t = pa.table({"id": pa.array(range(100), pa.int64())})
    store.write_bytes(table_to_parquet_bytes(t), "users", "part-00000.parquet")
    proxy.fail(2, "503", method="GET")
    assert sum(b.num_rows for b in iter_table_batches(store, "users", batch_rows=30)) == 100
    assert len(proxy.faults("503")) == 2


# ---------------------------------------------------------------- giving up, permanent faults

@pytest.mark.parametrize("what", ["read", "write"])
def test_persistent_503_gives_up_after_the_retry_budget(proxy, s3_bucket, caplog, what):
    store = _store(s3_bucket, proxy, retries=3)
    store.write_bytes(b"x", "k.bin")
    proxy.fail(None, "503")
    with pytest.raises(StorageUnavailable) as e:
        store.read_bytes("k.bin") if what == "read" else store.write_bytes(b"y", "k.bin")
    msg = str(e.value)
    assert isinstance(e.value, StorageError)
    assert f"{what} {s3_bucket}/run/k.bin" in msg and "gave up after 4 attempts" in msg
    assert "storage.retries" in msg and "\n" not in msg
    assert len(proxy.faults("503")) == 4  # exactly retries + 1 requests: no second layer retries underneath
    assert len(_retry_warnings(caplog)) == 3


@pytest.mark.parametrize("fault, code", [("403", "AccessDenied"), ("403-key", "InvalidAccessKeyId")])
def test_access_denied_fails_at_once_without_retries(proxy, s3_bucket, caplog, fault, code):
    store = _store(s3_bucket, proxy)
    proxy.fail(None, fault)
    ops = {"write": lambda: store.write_bytes(b"x", "k.bin"), "read": lambda: store.read_bytes("k.bin"),
           "check": lambda: store.exists("k.bin"), "list": lambda: store.ls(), "delete": lambda: store.rm("k.bin")}
    for op, fn in ops.items():
        n = len(proxy.requests)
        with pytest.raises(StorageError) as e:
            fn()
        assert not isinstance(e.value, StorageUnavailable)
        msg = str(e.value)
        assert f"{op} {s3_bucket}/run" in msg and "access denied" in msg and "AWS_ACCESS_KEY_ID" in msg, msg
        assert len(proxy.requests) == n + 1, f"{op}: retried a permanent error"
    assert code in str(e.value) or "HTTP 403" in str(e.value)
    assert _retry_warnings(caplog) == []


def test_missing_bucket_fails_at_once(proxy):
    store = Store("s3://ripple-no-such-bucket/run", StorageOptions(endpoint_url=proxy.url, **FAST))
    with pytest.raises(StorageError, match=r"bucket does not exist \(NoSuchBucket\)") as e:
        store.write_bytes(b"x", "k.bin")
    assert "s3://ripple-no-such-bucket/run/k.bin" in str(e.value)
    assert len(proxy.requests) == 1
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.ls()
    with pytest.raises(StorageError, match="does not exist"):
        store.read_bytes("k.bin")
    assert store.exists("k.bin") is False
    assert not proxy.faults()


def test_unreachable_endpoint_says_so_after_the_retries(caplog):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store("s3://bucket/data", StorageOptions(endpoint_url=f"http://127.0.0.1:{port}", retries=2, **FAST))
    with pytest.raises(StorageError) as e:
        store.exists()
    assert not isinstance(e.value, StorageUnavailable)  # a wrong endpoint is bad input (exit 2)
    msg = str(e.value)
    assert msg.startswith(f"cannot reach s3://bucket/data (endpoint http://127.0.0.1:{port})")
    assert "gave up after 3 attempts" in msg and "--s3-endpoint-url" in msg
    assert len(_retry_warnings(caplog)) == 2


def test_backoff_doubles_with_jitter_and_a_cap(proxy, s3_bucket, sleeps):
    store = _store(s3_bucket, proxy, retry_backoff_s=0.1)
    proxy.fail(4, "503")
    store.write_bytes(b"x", "k.bin")
    assert len(sleeps) == 4
    for i, s in enumerate(sleeps):  # equal jitter: between half and all of 0.1 * 2**i
        assert 0.05 * 2 ** i <= s <= 0.1 * 2 ** i
    assert all(10.0 <= st.backoff_s(30, 0.5) <= 20.0 for _ in range(20))


def _client_error(status: int, code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def _raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def test_what_counts_as_transient():
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    transient = [_client_error(503, "SlowDown"), _client_error(500, "InternalError"), _client_error(503, "503"),
                 _client_error(429, "TooManyRequests"), _client_error(400, "RequestTimeout"),
                 _client_error(400, "Throttling"),
                 _raised_from(OSError(errno.EBUSY, "Please reduce your request rate."), _client_error(503, "SlowDown")),
                 ReadTimeoutError(endpoint_url="http://h"), EndpointConnectionError(endpoint_url="http://h"),
                 ConnectionClosedError(endpoint_url="http://h"), ConnectionResetError(), TimeoutError()]
    permanent = [_client_error(403, "AccessDenied"), _client_error(403, "InvalidAccessKeyId"),
                 _client_error(404, "NoSuchBucket"), _client_error(404, "NoSuchKey"), _client_error(400, "BadDigest"),
                 _raised_from(PermissionError("Forbidden"), _client_error(403, "403")),
                 FileNotFoundError("bucket/key"), ValueError("bad argument"), OSError(errno.ENOSPC, "disk full"),
                 _raised_from(EndpointConnectionError(endpoint_url="http://h"),
                              socket.gaierror(socket.EAI_NONAME, "Name or service not known"))]
    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in permanent if is_transient(e)] == []


def test_local_stores_are_not_retried(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "d"))
    calls = []

    def flaky(*a, **kw):
        calls.append(a)
        raise TimeoutError("local disk hiccup")

    monkeypatch.setattr(store.fs, "cat_file", flaky)
    with pytest.raises(TimeoutError):
        store.read_bytes("x")
    assert len(calls) == 1


def test_retry_knobs_are_validated_and_come_from_the_config():
    from ripple.config import ConfigError, from_dict

    cfg = from_dict({"storage": {"retries": 2, "retry_backoff_s": 0.1, "timeout_s": 5, "connect_timeout_s": 1}})
    assert (cfg.storage.retries, cfg.storage.retry_backoff_s, cfg.storage.timeout_s) == (2, 0.1, 5.0)
    assert cfg.storage.for_protocol("s3")["config_kwargs"] == {
        "connect_timeout": 1.0, "read_timeout": 5.0, "retries": {"mode": "standard", "total_max_attempts": 3}}
    for bad, named in [({"retries": -1}, "retries"), ({"timeout_s": 0}, "timeout_s"),
                       ({"retry_backoff_s": -0.5}, "retry_backoff_s")]:
        with pytest.raises(ConfigError, match=named):
            from_dict({"storage": bad})
    with pytest.raises(StorageError, match="retries"):
        StorageOptions(retries=True)


# ---------------------------------------------------------------- through the CLI

def test_cli_validate_on_s3_survives_a_proxy_failing_the_first_requests(proxy, s3_server, s3_bucket, capsys,
                                                                        caplog, sleeps):
    data = write_tiny_dataset(f"{s3_bucket}/data", options=StorageOptions(endpoint_url=s3_server))
    proxy.fail(3, "503")
    assert main(["validate", data, "--s3-endpoint-url", proxy.url]) == EXIT_OK
    assert f"dataset {data}: OK" in capsys.readouterr().out
    assert len(proxy.faults("503")) == 3 and len(sleeps) == 3
    assert len(_retry_warnings(caplog)) == 3


def test_cli_exit_codes_for_storage_faults(proxy, s3_server, s3_bucket, capsys, sleeps):
    data = write_tiny_dataset(f"{s3_bucket}/data", options=StorageOptions(endpoint_url=s3_server))
    # the service keeps failing: a runtime failure (exit 1), one line naming the URL
    proxy.fail(None, "503")
    assert main(["validate", data, "--s3-endpoint-url", proxy.url]) == EXIT_RUNTIME
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: check ") and "gave up after 6 attempts" in err[0]
    assert len(proxy.faults("503")) == 6
    # access denied on the user's dataset: bad input (exit 2), one line, no retries
    proxy.clear()
    proxy.fail(None, "403")
    assert main(["validate", data, "--s3-endpoint-url", proxy.url]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "access denied" in err[0] and data in err[0]
    assert len(proxy.requests) == 1
