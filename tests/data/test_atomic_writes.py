"""Atomic outputs under real kills: a writer process is SIGKILLed mid-way, then the folder is read and rewritten.

The writer (``atomic_writer.py``, run with ``sys.executable``) writes an embeddings-style folder through
``ripple.data.storage``'s commit protocol (``begin``, ``write_part`` x N, ``commit``) and, at the chosen point,
creates a signal file and waits; the test then kills it with SIGKILL (no handler, no cleanup, as the OOM killer or
a lost node would). What the protocol promises, and what these tests check on local disk and on moto S3:

* a killed first write leaves no readable output (``read_committed`` refuses a folder without a manifest);
* a killed re-write also leaves no readable output: ``begin`` deletes the previous manifest before any part is
  written, so the old output is not readable either (its parts stay until the next commit);
* a kill after the manifest is written (while ``commit`` deletes stale parts) leaves exactly the new output;
* re-running the same write afterwards completes and leaves exactly its own parts: no stale ones;
* a single ``write_bytes`` killed mid-file never leaves a partial file under the final name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import atomic_writer
import pyarrow as pa
import pytest

from ripple.data.storage import (MANIFEST, Store, StorageError, StorageOptions, list_parts, read_committed,
                                 read_manifest)

PARTS = 6
ROWS = 50

def expected(gen: int) -> pa.Table:
    """Exactly what a complete write of generation ``gen`` holds."""
    return pa.concat_tables([atomic_writer.table(gen, i, ROWS) for i in range(PARTS)])


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path) -> tuple[str, str | None]:
    """(folder URL, S3 endpoint or None): an embeddings folder on local disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "run" / "embeddings"), None
    endpoint = request.getfixturevalue("s3_server")  # its AWS_* test credentials are in os.environ: inherited
    return f"{request.getfixturevalue('s3_bucket')}/run/embeddings", endpoint


def _store(target) -> Store:
    url, endpoint = target
    return Store(url, StorageOptions(endpoint_url=endpoint))


def _args(target, tmp_path, gen: int, **kw) -> dict:
    url, endpoint = target
    return {"url": url, "endpoint": endpoint, "signal": str(tmp_path / f"signal-{gen}-{time.monotonic_ns()}"),
            "gen": gen, "parts": PARTS, "rows": ROWS, **kw}


def _spawn(target, tmp_path, gen: int, **kw) -> tuple[subprocess.Popen, str]:
    args = _args(target, tmp_path, gen, **kw)
    proc = subprocess.Popen([sys.executable, atomic_writer.__file__, json.dumps(args)], stderr=subprocess.PIPE)
    return proc, args["signal"]


def _wait_for(proc: subprocess.Popen, path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"writer exited ({proc.returncode}) before the kill point: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("writer did not reach the kill point")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def write_killed(target, tmp_path, gen: int, stop) -> None:
    """Run a writer of generation ``gen`` and SIGKILL it at ``stop`` (a part index, or "cleanup")."""
    proc, sig = _spawn(target, tmp_path, gen, stop=stop)
    _wait_for(proc, sig)
    _kill(proc)


def write_complete(target, tmp_path, gen: int) -> None:
    """The same write, not killed (in this process: it would only cost another interpreter start)."""
    atomic_writer.write(_args(target, tmp_path, gen))


def _assert_exactly(store: Store, gen: int) -> None:
    """The folder reads back exactly generation ``gen``, and holds no part its manifest does not list."""
    got = read_committed(store).sort_by("user_id")
    assert got.equals(expected(gen)), got.slice(0, 5).to_pylist()
    assert sorted(list_parts(store)) == sorted(p["path"] for p in read_manifest(store)["parts"])


def _assert_unreadable(store: Store) -> None:
    with pytest.raises(StorageError, match=MANIFEST) as e:
        read_committed(store)
    assert "incomplete" in str(e.value)


def test_killed_first_write_leaves_no_readable_output_and_a_rerun_completes(target, tmp_path):
    store = _store(target)
    write_killed(target, tmp_path, gen=1, stop=3)
    assert len(list_parts(store)) == 3  # written, but listed by no manifest
    _assert_unreadable(store)
    write_complete(target, tmp_path, gen=2)
    _assert_exactly(store, 2)  # the killed write's three parts are gone


def test_killed_rewrite_leaves_no_readable_output_and_a_rerun_replaces_cleanly(target, tmp_path):
    store = _store(target)
    write_complete(target, tmp_path, gen=1)
    _assert_exactly(store, 1)
    old = set(list_parts(store))
    write_killed(target, tmp_path, gen=2, stop=2)
    # begin() deleted the old manifest first: the previous output is not readable any more (not half-new either)
    _assert_unreadable(store)
    assert old < set(list_parts(store))  # the old parts are still there, the next commit deletes them
    write_complete(target, tmp_path, gen=3)
    _assert_exactly(store, 3)


def test_kill_during_commit_cleanup_leaves_exactly_the_new_output(target, tmp_path):
    store = _store(target)
    write_complete(target, tmp_path, gen=1)
    write_killed(target, tmp_path, gen=2, stop="cleanup")
    got = read_committed(store).sort_by("user_id")  # the manifest was written: the new output, whole
    assert got.equals(expected(2))
    assert len(list_parts(store)) == 2 * PARTS  # the old parts were not deleted yet: unlisted, never read
    write_complete(target, tmp_path, gen=3)
    _assert_exactly(store, 3)


def test_local_write_bytes_killed_mid_file_leaves_no_partial_file(tmp_path):
    """One large ``write_bytes`` (what ``write_part`` does with a part's parquet bytes) SIGKILLed while its bytes
    are being written: the final name never appears; the temp file it leaves is removed by the next commit."""
    target = (str(tmp_path / "run" / "embeddings"), None)
    folder = tmp_path / "run" / "embeddings"
    name = "part-w-00000-0123abcd.parquet"
    mb = 256
    proc, sig = _spawn(target, tmp_path, gen=0, mode="bytes", mb=mb, name=name)
    _wait_for(proc, sig)
    deadline = time.monotonic() + 120
    partial = None
    while partial is None:  # kill as soon as the temp file has some, not all, of the bytes
        assert proc.poll() is None, f"the write finished before it could be killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the temp file never appeared"
        for n in os.listdir(folder) if folder.exists() else []:
            if n.startswith(name + ".tmp-") and (folder / n).stat().st_size > 0:
                partial = folder / n
        if partial is None:
            time.sleep(0.0005)
    _kill(proc)
    assert not (folder / name).exists(), "a partial file exists under the final name"
    assert partial.stat().st_size < mb << 20, "the kill came after the last byte: nothing was interrupted"
    store = _store(target)
    assert list_parts(store) == [] and not store.exists(name)
    write_complete(target, tmp_path, gen=1)  # the re-run: exactly its parts, and no temp file left behind
    _assert_exactly(store, 1)
    assert sorted(os.listdir(folder)) == sorted([MANIFEST, *list_parts(store)])


def test_s3_put_killed_mid_upload_leaves_no_partial_object(s3_server, s3_bucket, tmp_path):
    """On S3 an object appears whole when its PUT completes, or not at all: a large upload killed 0.2 s after it
    starts (or, on a fast machine, just after it ends) never leaves a partial object under its name."""
    target = (f"{s3_bucket}/out", s3_server)
    mb = 48
    proc, sig = _spawn(target, tmp_path, gen=0, mode="bytes", mb=mb, name="big.bin")
    _wait_for(proc, sig)
    time.sleep(0.2)  # the upload is under way (48 MiB through moto takes seconds)
    if proc.poll() is None:
        _kill(proc)
    store = _store(target)
    if store.exists("big.bin"):  # only if the PUT had completed before the kill
        assert len(store.read_bytes("big.bin")) == mb << 20, "a partial object is readable under the final name"
    store.write_bytes(b"complete", "big.bin")
    assert store.read_bytes("big.bin") == b"complete"
