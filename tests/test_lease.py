"""One writer per run (``ripple.lease``), on local disk and on S3 through moto's server: a held run refuses a
second writer, naming the holder; a killed holder is taken over (at once on the same host, after the TTL from
another); heartbeats keep a live holder's lease; of writers racing for one lease exactly one wins."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ripple.data.storage import StorageOptions, Store
from ripple.lease import LEASE_FILE, LeaseHeld, RunLease

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["local", "s3"])
def run(request, tmp_path) -> tuple[str, StorageOptions | None]:
    """A run folder URL and its storage options, on local disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "runs" / "r1"), None
    endpoint = request.getfixturevalue("s3_server")
    return f"{request.getfixturevalue('s3_bucket')}/runs/r1", StorageOptions(endpoint_url=endpoint)


def _plant(url: str, options, **fields) -> None:
    """A lease written by someone else: another host unless ``fields`` says otherwise."""
    now = time.time()
    record = {"id": "other", "host": "other-host", "pid": 1, "command": "ripple train", "since": now,
              "since_iso": "then", "heartbeat": now, "heartbeat_iso": "now", "ttl_s": 60.0, **fields}
    Store(url, options).write_bytes(json.dumps(record).encode(), LEASE_FILE)


def test_a_held_run_refuses_a_second_writer_naming_the_holder(run):
    url, options = run
    with RunLease(url, options, 30, "ripple train"):
        with pytest.raises(LeaseHeld) as e:
            RunLease(url, options, 30, "ripple embed").acquire()
        msg = str(e.value)
        assert "held by another writer" in msg and "'ripple train'" in msg and f"pid {os.getpid()}" in msg
        assert "TTL" in msg and LEASE_FILE in msg and "--run-name" in msg
    # released: the next writer takes it, and nothing of the first is left
    with RunLease(url, options, 30, "ripple embed") as lease:
        assert json.loads(Store(url, options).read_bytes(LEASE_FILE))["id"] == lease.me["id"]
    assert not Store(url, options).exists(LEASE_FILE)


def test_another_hosts_lease_is_taken_over_only_after_its_ttl(run):
    url, options = run
    _plant(url, options, ttl_s=1.0)
    with pytest.raises(LeaseHeld, match="other-host"):
        RunLease(url, options, 30, "ripple train").acquire()
    time.sleep(1.3)
    with RunLease(url, options, 30, "ripple train") as lease:
        assert json.loads(Store(url, options).read_bytes(LEASE_FILE))["id"] == lease.me["id"]


def test_a_killed_holder_on_this_host_is_taken_over_at_once(run, tmp_path):
    url, options = run
    ready = tmp_path / "ready"
    code = textwrap.dedent(f"""
        import sys, time
        from ripple.data.storage import StorageOptions
        from ripple.lease import RunLease
        opts = StorageOptions(endpoint_url={options.endpoint_url if options else None!r})
        RunLease({url!r}, opts, 600, "ripple train").acquire()
        open({str(ready)!r}, "w").close()
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)
    with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"):  # alive: refused, though its TTL is long
        RunLease(url, options, 600, "ripple train").acquire()
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the lease stays behind, as after the OOM killer
    proc.wait(timeout=30)
    assert Store(url, options).exists(LEASE_FILE)
    with RunLease(url, options, 600, "ripple train") as lease:  # its process is gone: taken at once
        assert json.loads(Store(url, options).read_bytes(LEASE_FILE))["pid"] == os.getpid() == lease.me["pid"]


def test_heartbeats_keep_a_live_holders_lease(run):
    url, options = run
    with RunLease(url, options, 0.6, "ripple train"):
        first = json.loads(Store(url, options).read_bytes(LEASE_FILE))["heartbeat"]
        time.sleep(1.5)  # more than two TTLs: only the heartbeat keeps it held
        assert json.loads(Store(url, options).read_bytes(LEASE_FILE))["heartbeat"] > first
        with pytest.raises(LeaseHeld):
            lease = RunLease(url, options, 0.6, "ripple embed")
            lease.me["host"] = "other-host"  # not judged by this host's process table: by the heartbeat alone
            lease.acquire()


def test_a_holder_whose_lease_was_replaced_knows_it_lost_it(run, caplog):
    url, options = run
    lease = RunLease(url, options, 0.4, "ripple train").acquire()
    try:
        Store(url, options).write_bytes(b'{"id": "intruder"}', LEASE_FILE)  # as a taker after a long pause would
        deadline = time.monotonic() + 10
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.lost
        assert any("lost the lease" in r.getMessage() for r in caplog.records)
    finally:
        lease.release()
    assert Store(url, options).read_bytes(LEASE_FILE) == b'{"id": "intruder"}'  # never deleted someone else's


def test_of_writers_racing_for_a_free_or_stale_lease_exactly_one_wins(run):
    url, options = run
    for stale in (False, True):
        if stale:
            _plant(url, options, heartbeat=0.0)
        results, barrier = [], threading.Barrier(6)

        def take():
            lease = RunLease(url, options, 30, "ripple train")
            lease.me["host"] = f"host-{threading.get_ident()}"
            barrier.wait()
            try:
                results.append(lease.acquire())
            except LeaseHeld:
                results.append(None)

        threads = [threading.Thread(target=take) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, (stale, len(winners))
        assert json.loads(Store(url, options).read_bytes(LEASE_FILE))["id"] == winners[0].me["id"]
        winners[0].release()


def test_ripple_train_on_a_held_run_exits_2_before_anything_runs(run, tmp_path, capsys):
    from ripple.cli import EXIT_BAD_INPUT, main
    from tiny_dataset import write_tiny_dataset

    url, options = run
    data = write_tiny_dataset(str(tmp_path / "data"))
    _plant(url, options)
    storage_path, name = url.rsplit("/", 1)
    flags = ["--s3-endpoint-url", options.endpoint_url] if options else []
    assert main(["train", "--data", data, "--storage-path", storage_path, "--run-name", name, *flags]) == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "held by another writer" in err[0] and "other-host" in err[0]
    assert Store(url, options).ls() == [LEASE_FILE]  # nothing else was written into the run
