"""The one IO module: commit protocol (local and moto S3), pickling, URL errors, atomic local writes, secrets."""
from __future__ import annotations

import json
import os
import pickle

import pyarrow as pa
import pytest

from ripple.data import storage as st
from ripple.data.storage import (MANIFEST, Store, StorageError, StorageOptions, begin, commit, filesystem,
                                 list_parts, pyarrow_filesystem, read_committed, write_part)


def _table(lo: int, n: int) -> pa.Table:
    return pa.table({"user_id": pa.array(range(lo, lo + n), pa.int64()),
                     "score": pa.array([float(i) / 2 for i in range(lo, lo + n)], pa.float32())})


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path) -> Store:
    """An empty committed-parts folder, on local disk or on the moto S3 server."""
    if request.param == "local":
        return Store(str(tmp_path / "out" / "embeddings"))
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return Store(f"{bucket}/run/embeddings", StorageOptions(endpoint_url=endpoint))


def _write_and_commit(store: Store, tables: list[pa.Table], writer: str = "0") -> dict:
    begin(store)
    parts = [write_part(store, t, i, writer=writer) for i, t in enumerate(tables)]
    return commit(store, parts)


def _sorted(t: pa.Table) -> list:
    return sorted(t.to_pylist(), key=lambda r: r["user_id"])


# ---------------------------------------------------------------- commit protocol

def test_commit_then_read_round_trips(folder):
    m = _write_and_commit(folder, [_table(0, 5), _table(5, 3)])
    assert m["rows"] == 8 and len(m["parts"]) == 2 and m["format"] == st.PARTS_FORMAT
    got = read_committed(folder)
    assert _sorted(got) == _sorted(pa.concat_tables([_table(0, 5), _table(5, 3)]))
    assert read_committed(folder, columns=["user_id"]).column_names == ["user_id"]


def test_read_committed_refuses_folder_without_manifest(folder):
    # parts exist, but were never committed
    write_part(folder, _table(0, 4), 0)
    assert list_parts(folder)
    with pytest.raises(StorageError) as e:
        read_committed(folder)
    assert folder.url in str(e.value) and MANIFEST in str(e.value)


def test_read_committed_refuses_missing_folder(tmp_path):
    store = Store(str(tmp_path / "never-written"))
    with pytest.raises(StorageError, match="never-written"):
        read_committed(store)


def test_begin_makes_previous_output_unreadable(folder):
    _write_and_commit(folder, [_table(0, 4)])
    assert read_committed(folder).num_rows == 4
    begin(folder)
    with pytest.raises(StorageError, match=MANIFEST):
        read_committed(folder)
    # a rewrite in progress (parts written, no commit yet) is still unreadable
    write_part(folder, _table(100, 2), 0)
    with pytest.raises(StorageError, match=MANIFEST):
        read_committed(folder)


def test_changed_part_fails_checksum_naming_the_file(folder):
    m = _write_and_commit(folder, [_table(0, 4), _table(4, 4)])
    victim = m["parts"][1]["path"]
    # same row count, different bytes: only the checksum can catch it
    folder.write_bytes(st.table_to_parquet_bytes(_table(50, 4)), victim)
    with pytest.raises(StorageError) as e:
        read_committed(folder)
    assert victim in str(e.value) and "checksum" in str(e.value)
    # verify=False skips the checksum (and the rows still match)
    assert read_committed(folder, verify=False).num_rows == 8


def test_truncated_part_is_detected(folder):
    m = _write_and_commit(folder, [_table(0, 4)])
    victim = m["parts"][0]["path"]
    data = folder.read_bytes(victim)
    folder.write_bytes(data[: len(data) // 2], victim)
    with pytest.raises(StorageError, match=victim):
        read_committed(folder)
    with pytest.raises(StorageError, match=victim):  # not parquet any more, even unverified
        read_committed(folder, verify=False)


def test_row_count_mismatch_is_detected(folder):
    _write_and_commit(folder, [_table(0, 4), _table(4, 3)])
    manifest = folder.read_json(MANIFEST)
    manifest["parts"][0]["rows"] = 5
    folder.write_json(manifest, MANIFEST)
    with pytest.raises(StorageError) as e:
        read_committed(folder)
    msg = str(e.value)
    assert manifest["parts"][0]["path"] in msg and "4 rows" in msg and "5" in msg


def test_not_a_parts_manifest_is_refused(folder):
    folder.write_json({"rows": 3}, MANIFEST)
    with pytest.raises(StorageError, match=st.PARTS_FORMAT):
        read_committed(folder)


def test_commit_removes_stale_parts(folder):
    old = _write_and_commit(folder, [_table(0, 4), _table(4, 4), _table(8, 4)])
    old_names = {p["path"] for p in old["parts"]}
    # a rewrite with fewer parts (and an orphan from a "killed" writer that is never committed)
    begin(folder)
    orphan = write_part(folder, _table(999, 1), 7, writer="dead")
    keep = [write_part(folder, _table(100, 2), 0)]
    new = commit(folder, keep)
    assert set(list_parts(folder)) == {keep[0].path}
    assert orphan.path not in list_parts(folder)
    assert not old_names & set(list_parts(folder))
    assert new["rows"] == 2
    assert _sorted(read_committed(folder)) == _sorted(_table(100, 2))
    # the manifest lists exactly the committed parts
    assert [p["path"] for p in folder.read_json(MANIFEST)["parts"]] == [keep[0].path]


def test_commit_keeps_non_part_files(folder):
    folder.write_bytes(b"hello", "README.txt")
    _write_and_commit(folder, [_table(0, 1)])
    assert folder.read_bytes("README.txt") == b"hello"


def test_part_names_are_unique(folder):
    t = _table(0, 3)
    a = write_part(folder, t, 0, writer="w1")
    b = write_part(folder, t, 0, writer="w1")
    c = write_part(folder, t, 0, writer="w2")
    names = [a.path, b.path, c.path]
    assert len(set(names)) == 3
    assert all(n.startswith("part-") and n.endswith(".parquet") for n in names)
    assert set(names) <= set(list_parts(folder))
    assert a.sha256 == b.sha256 and a.rows == 3 and a.bytes == len(folder.read_bytes(a.path))


def test_concurrent_writers_commit_together(folder):
    parts = [write_part(folder, _table(10 * w, 2), 0, writer=str(w)) for w in range(3)]
    commit(folder, parts)
    assert read_committed(folder).num_rows == 6


def test_empty_commit_reads_as_empty(folder):
    _write_and_commit(folder, [])
    assert read_committed(folder).num_rows == 0


# ---------------------------------------------------------------- Store

def test_store_pickles_and_reopens(folder):
    _write_and_commit(folder, [_table(0, 3)])
    clone = pickle.loads(pickle.dumps(folder))
    assert isinstance(clone, Store) and clone is not folder
    assert clone.url == folder.url and clone.options == folder.options
    assert _sorted(read_committed(clone)) == _sorted(_table(0, 3))
    clone.write_bytes(b"x", "marker")
    assert folder.read_bytes("marker") == b"x"


def test_child_and_path(tmp_path):
    root = Store(str(tmp_path) + "/")
    assert root.url == str(tmp_path)
    child = root.child("a", "b")
    assert child.url == os.path.join(str(tmp_path), "a", "b")
    child.write_bytes(b"1", "c.bin")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"1"
    assert root.ls("a") == ["b"] and root.ls("nope") == []


def test_read_missing_file_names_url(folder):
    with pytest.raises(StorageError, match="nope.bin"):
        folder.read_bytes("nope.bin")


def test_read_json_invalid_names_file(folder):
    folder.write_bytes(b"{not json", "x.json")
    with pytest.raises(StorageError, match="x.json"):
        folder.read_json("x.json")


@pytest.mark.parametrize("url", ["nosuchproto://bucket/prefix", "gs://bucket/prefix"])
def test_filesystem_bad_protocol_is_storage_error(url):
    if url.startswith("gs://"):  # gcsfs is not a dependency; where it is installed the URL is fine
        import importlib.util

        if importlib.util.find_spec("gcsfs") is not None:
            pytest.skip("gcsfs is installed")
    with pytest.raises(StorageError) as e:
        filesystem(url)
    assert url in str(e.value)
    with pytest.raises(StorageError):
        Store(url)
    assert isinstance(e.value, ValueError)  # the CLI maps ValueError to exit 2


def test_join():
    assert st.join("s3://b/p/", "x", "y") == "s3://b/p/x/y"
    assert st.join("/tmp/a", "b") == "/tmp/a/b"


# ---------------------------------------------------------------- atomic local writes

def test_local_write_bytes_is_temp_then_rename(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "d"))
    store.write_bytes(b"old", "f.bin")
    final = tmp_path / "d" / "f.bin"
    seen = {}
    real_mv = store.fs.mv

    def spy_mv(src, dst, *a, **kw):
        # at rename time the final name still holds the complete old bytes, the temp holds the complete new ones
        seen["final"] = final.read_bytes()
        seen["tmp_name"] = os.path.basename(src)
        with open(src, "rb") as f:
            seen["tmp"] = f.read()
        return real_mv(src, dst, *a, **kw)

    monkeypatch.setattr(store.fs, "mv", spy_mv)
    store.write_bytes(b"new" * 1000, "f.bin")
    assert seen["final"] == b"old"
    assert seen["tmp"] == b"new" * 1000
    assert seen["tmp_name"].startswith("f.bin.tmp-")
    assert final.read_bytes() == b"new" * 1000
    assert sorted(os.listdir(tmp_path / "d")) == ["f.bin"]


def test_local_write_leaves_no_temp_files(tmp_path):
    store = Store(str(tmp_path / "w"))
    parts = [write_part(store, _table(i, 2), i) for i in range(3)]
    commit(store, parts)
    store.write_json({"a": 1}, "meta.json")
    files = os.listdir(tmp_path / "w")
    assert not [f for f in files if ".tmp-" in f]
    assert sorted(files) == sorted([p.path for p in parts] + [MANIFEST, "meta.json"])


def test_failed_local_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "d"))
    store.write_bytes(b"old", "f.bin")

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(store.fs, "mv", boom)
    with pytest.raises(OSError):
        store.write_bytes(b"new", "f.bin")
    assert (tmp_path / "d" / "f.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path / "d") == ["f.bin"]


def test_part_writer_writes_row_groups_and_commits(folder):
    """A part written batch by batch: buffered into row groups of at least ``row_group_rows``, published under
    its name on close (renamed locally, uploaded on S3), checksummed like ``write_part``'s."""
    import io

    import pyarrow.parquet as pq

    begin(folder)
    with st.PartWriter(folder, _table(0, 1).schema, 0, writer="w", row_group_rows=5) as w:
        for lo in range(0, 12, 3):
            w.write(_table(lo, 3))
        assert not [f for f in folder.ls() if f.endswith(".parquet")]  # nothing published before close
        info = w.close()
    assert info.rows == 12 and info.path.startswith("part-w-00000-")
    data = folder.read_bytes(info.path)
    assert pq.ParquetFile(io.BytesIO(data)).num_row_groups == 2  # 6 rows, then the remaining 6
    assert info.bytes == len(data)
    commit(folder, [info])
    assert _sorted(read_committed(folder)) == _sorted(_table(0, 12))
    assert not [f for f in folder.ls() if ".tmp-" in f]


def test_failed_part_writer_leaves_nothing(tmp_path):
    store = Store(str(tmp_path / "w"))
    with pytest.raises(RuntimeError, match="chunk failed"):
        with st.PartWriter(store, _table(0, 1).schema, 3) as w:
            w.write(_table(0, 2))
            raise RuntimeError("chunk failed")
    assert os.listdir(tmp_path / "w") == []


# ---------------------------------------------------------------- pyarrow filesystem for Ray Train

def test_pyarrow_filesystem_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, fs = pyarrow_filesystem("runs/x")
    assert fs is None and path == str(tmp_path / "runs" / "x")
    path, fs = pyarrow_filesystem(f"file://{tmp_path}/y")
    assert fs is None and path == f"{tmp_path}/y"


def test_pyarrow_filesystem_s3_uses_same_endpoint(s3_server, s3_bucket):
    opts = StorageOptions(endpoint_url=s3_server)
    path, fs = pyarrow_filesystem(f"{s3_bucket}/runs/r1/checkpoints", opts)
    assert fs is not None and path == f"{s3_bucket.removeprefix('s3://')}/runs/r1/checkpoints"
    with fs.open_output_stream(f"{path}/hello.txt") as f:
        f.write(b"hi")
    assert Store(f"{s3_bucket}/runs/r1/checkpoints", opts).read_bytes("hello.txt") == b"hi"


# ---------------------------------------------------------------- credentials never travel in options

def test_storage_options_hold_no_secrets(monkeypatch):
    secret = "sup3r-s3cret-VALUE-do-not-log"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
    field_names = {f for f in StorageOptions.__dataclass_fields__}
    assert not {n for n in field_names if any(w in n.lower() for w in ("secret", "key", "token", "password"))}
    opts = StorageOptions(endpoint_url="http://127.0.0.1:9000", region="us-east-1")
    for protocol in ("s3", "s3a", "file", "gs"):
        rendered = json.dumps(opts.for_protocol(protocol), default=str)
        assert secret not in rendered
        assert "AWS_SECRET_ACCESS_KEY" not in rendered
    assert secret not in repr(opts) and secret not in str(opts)
    assert opts.for_protocol("s3") == {
        "anon": False, "use_listings_cache": False,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "us-east-1"},
        "config_kwargs": {"connect_timeout": 10.0, "read_timeout": 60.0,
                          "retries": {"mode": "standard", "total_max_attempts": 6}}}
    # Store's own operations: one attempt per request, with_retries retries them (never two layers at once)
    assert opts.for_protocol("s3", transport_retries=False)["config_kwargs"]["retries"] == {
        "mode": "standard", "total_max_attempts": 1}
    assert opts.for_protocol("file") == {}


def test_store_pickle_carries_no_secrets(monkeypatch, tmp_path):
    secret = "another-s3cret-VALUE"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    blob = pickle.dumps(Store(str(tmp_path), StorageOptions(endpoint_url="http://h:1")))
    assert secret.encode() not in blob


def test_s3_store_pickle_carries_no_secrets(s3_server, s3_bucket):
    store = Store(f"{s3_bucket}/p", StorageOptions(endpoint_url=s3_server))
    store.write_bytes(b"z", "f")
    blob = pickle.dumps(store)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "testing"  # set by the s3_server fixture
    assert b"testing" not in blob
    assert pickle.loads(blob).read_bytes("f") == b"z"


def test_absolute_url_resolves_local_paths_only(tmp_path, monkeypatch):
    from ripple.data.storage import absolute_url

    monkeypatch.chdir(tmp_path)
    assert absolute_url("runs/x") == str(tmp_path / "runs" / "x")
    assert absolute_url("file://rel") == str(tmp_path / "rel")
    assert absolute_url("/abs/path") == "/abs/path"
    assert absolute_url("s3://bucket/key") == "s3://bucket/key"
