from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_inputs import after, raw_part
from tiny_dataset import tiny_tables, write_tiny_dataset

from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.storage import StorageOptions, Store, table_to_parquet_bytes
from ripple.data.validate import DatasetInvalid, Problem, Report, require_valid, validate_dataset

F32_LIST = pa.list_(pa.float32())


# ---------------------------------------------------------------- helpers

def _set(tables: dict, table: str, column: str, values, type_=None) -> None:
    t = tables[table]
    i = t.schema.get_field_index(column)
    tables[table] = t.set_column(i, t.schema.field(i).name, pa.array(values, type_ or t.schema.field(i).type))


def _edit(table: str, column: str, fn):
    """A corruption: write the tiny dataset with ``column`` replaced by ``fn(old values)``."""
    def corrupt(url: str) -> None:
        tables = tiny_tables()
        _set(tables, table, column, fn(tables[table][column].to_pylist()))
        write_tiny_dataset(url, tables)
    return corrupt


def _at(i: int, value):
    def fn(values):
        values = list(values)
        values[i] = value
        return values
    return fn


def _list_at(i: int, j: int, value):
    def fn(values):
        values = [list(v) for v in values]
        values[i][j] = value
        return values
    return fn


def _truncate(url: str) -> None:
    path = os.path.join(url, "follows", "part-00000.parquet")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _empty_users(url: str) -> None:
    tables = tiny_tables()
    tables["user"] = S.USER.arrow_schema().empty_table()
    write_tiny_dataset(url, tables)


def _find(report: Report, table: str, column: str | None, kind: str) -> Problem:
    hits = [p for p in report.problems if (p.table, p.column, p.kind) == (table, column, kind)]
    assert hits, f"no {kind} problem for {table}.{column}; report:\n{report.text()}"
    assert len(hits) == 1
    return hits[0]


# ---------------------------------------------------------------- valid data

def test_tiny_dataset_is_valid(tiny_dataset):
    report = validate_dataset(tiny_dataset)
    assert report.ok, report.text()
    assert report.rows["user"] == 8 and report.rows["follows"] == len(tiny_tables()["follows"])
    assert "OK" in report.text()
    assert require_valid(tiny_dataset).ok


def test_truth_tables_are_optional(tmp_path):
    tables = {k: v for k, v in tiny_tables().items() if not S.TABLES[k].truth}
    url = write_tiny_dataset(str(tmp_path / "d"), tables)
    assert not Store(url).exists("_truth")
    report = validate_dataset(url)
    assert report.ok, report.text()


def test_empty_edge_tables_other_than_follows_are_fine(tmp_path):
    tables = tiny_tables()
    for name in ("shared", "created", "member_of", "reply_to", "_truth/ic_edges"):
        tables[name] = S.TABLES[name].arrow_schema().empty_table()
    report = validate_dataset(write_tiny_dataset(str(tmp_path / "d"), tables))
    assert report.ok, report.text()


# ---------------------------------------------------------------- one corruption each

CORRUPTIONS = [
    # id, corruption, table, column, kind, an offending example as printed
    ("missing_table", after(lambda u: Store(u).rm("content", recursive=True)), "content", None, "missing",
     "content"),
    ("missing_column", raw_part("user", lambda t: t.drop_columns(["avg_engagement"])), "user", "avg_engagement",
     "missing_column", "part-00000.parquet"),
    ("wrong_dtype", raw_part("user", lambda t: t.set_column(1, "follower_count", t["follower_count"].cast(
        pa.float64()))), "user", "follower_count", "dtype", "double"),
    ("duplicate_ids", _edit("content", "id", _at(3, 1)), "content", "id", "duplicate", "1"),
    ("dangling_endpoint", _edit("follows", "dst", _at(2, 99)), "follows", "dst", "dangling", "99"),
    ("self_loop", _edit("follows", "dst", _at(0, 1)), "follows", "src", "self_loop", "1"),
    ("nan_in_list", _edit("user", "topic_vector", _list_at(4, 2, float("nan"))), "user", "topic_vector", "nan",
     "id=4"),
    ("inf", _edit("user", "avg_engagement", _at(1, float("inf"))), "user", "avg_engagement", "inf", "id=1: inf"),
    ("negative", _edit("user", "follower_count", _at(2, -5)), "user", "follower_count", "below_min", "-5"),
    ("reach_below_one", _edit("labels", "cascade_reach", _at(5, 0.5)), "labels", "cascade_reach", "below_min",
     "0.5"),
    ("replicate_nan", _edit("labels", "cascade_reach_replicate", _at(0, float("nan"))), "labels",
     "cascade_reach_replicate", "nan", "user_id=0"),
    ("unknown_split", _edit("labels", "split", _at(4, "holdout")), "labels", "split", "not_allowed", "'holdout'"),
    ("labels_unknown_user", _edit("labels", "user_id", _at(7, 42)), "labels", "user_id", "dangling", "42"),
    ("labels_duplicate_user", _edit("labels", "user_id", _at(7, 0)), "labels", "user_id", "duplicate", "0"),
    ("no_test_split", _edit("labels", "split", lambda v: ["train" if s == "test" else s for s in v]), "labels",
     "split", "split_missing", "'test'"),
    ("content_type", _edit("content", "type", _at(0, 7)), "content", "type", "not_allowed", "7"),
    ("wrong_width", _edit("content", "text_emb", lambda v: [x if i != 2 else x[:15] for i, x in enumerate(v)]),
     "content", "text_emb", "width", "id=2 has 15"),
    ("null_value", raw_part("community", lambda t: t.set_column(3, "density", pa.array([0.4, None],
                                                                                      pa.float32()))),
     "community", "density", "null", "id=1"),
    ("truncated_parquet", after(_truncate), "follows", None, "unreadable", "part-00000.parquet"),
    ("missing_manifest", after(lambda u: Store(u).rm("manifest.json")), "manifest.json", None, "missing",
     "manifest.json"),
    ("empty_user_table", _empty_users, "user", None, "empty", "0 rows"),
    ("truth_dangling", _edit("_truth/ic_edges", "src", _at(0, 77)), "_truth/ic_edges", "src", "dangling", "77"),
]


@pytest.mark.parametrize("corrupt,table,column,kind,example", [c[1:] for c in CORRUPTIONS],
                         ids=[c[0] for c in CORRUPTIONS])
def test_corruption_is_reported(tmp_path, corrupt, table, column, kind, example):
    url = str(tmp_path / "d")
    corrupt(url)
    report = validate_dataset(url)
    assert not report.ok
    problem = _find(report, table, column, kind)
    line = str(problem)
    assert line.startswith(f"{table}.{column}:" if column else f"{table}:"), line
    assert example in line, line
    assert len(problem.examples) <= 5
    assert line in report.text()
    with pytest.raises(DatasetInvalid) as err:
        require_valid(url)
    assert isinstance(err.value, ValueError) and line in str(err.value)


def test_wrong_dtype_states_expected_and_actual(tmp_path):
    url = str(tmp_path / "d")
    raw_part("follows", lambda t: t.set_column(0, "src", t["src"].cast(pa.int32())))(url)
    p = _find(validate_dataset(url), "follows", "src", "dtype")
    assert "expected int64, found int32" in p.message
    # a column of the wrong type is not value-checked, so it cannot cause follow-on problems
    assert not [q for q in validate_dataset(url).problems if q.kind == "dangling"]


def test_dangling_examples_and_counts_accumulate_over_batches(tmp_path):
    url = str(tmp_path / "d")
    tables = tiny_tables()
    _set(tables, "follows", "dst", [0, 100, 0, 101, 1, 102, 103, 104, 105])
    write_tiny_dataset(url, tables)
    report = validate_dataset(url, chunk_rows=2)
    p = _find(report, "follows", "dst", "dangling")
    assert p.message.startswith("6 rows reference user ids that do not exist")
    assert p.examples == [100, 101, 102, 103, 104]
    assert str(p).startswith("follows.dst: 6 rows reference user ids")
    assert validate_dataset(url).problems == report.problems  # same report whatever the batch size


def test_manifest_row_counts_must_match_files(tiny_dataset):
    store = Store(tiny_dataset)
    m = store.read_json("manifest.json")
    m["rows"]["follows"] += 3
    store.write_json(m, "manifest.json")
    report = validate_dataset(tiny_dataset)
    p = _find(report, "follows", None, "manifest_rows")
    assert "says 12 rows, the part files hold 9" in p.message


def test_unreadable_manifest(tiny_dataset):
    Store(tiny_dataset).write_bytes(b"{not json", "manifest.json")
    report = validate_dataset(tiny_dataset)
    p = _find(report, "manifest.json", None, "unreadable")
    assert "not valid JSON" in str(p)
    Store(tiny_dataset).write_bytes(json.dumps({"schema_version": 99, "rows": {}}).encode(), "manifest.json")
    report = validate_dataset(tiny_dataset)
    assert _find(report, "manifest.json", "schema_version", "version").examples == [99]


def test_nonexistent_dataset(tmp_path):
    report = validate_dataset(str(tmp_path / "nope"))
    assert [p.kind for p in report.problems] == ["missing"]
    assert "does not exist" in report.text()


def test_truncated_node_table_does_not_cascade(tmp_path):
    url = str(tmp_path / "d")
    write_tiny_dataset(url)
    path = os.path.join(url, "user", "part-00000.parquet")
    with open(path, "r+b") as f:
        f.truncate(100)
    report = validate_dataset(url)
    assert _find(report, "user", None, "unreadable")
    assert not [p for p in report.problems if p.kind == "dangling"], report.text()


def test_validates_dataset_on_s3(s3_server, s3_bucket, tmp_path):
    opts = StorageOptions(endpoint_url=s3_server)
    url = f"{s3_bucket}/tiny"
    write_tiny_dataset(url, options=opts)
    store = Store(url, opts)
    store.fs.invalidate_cache()
    assert store.exists("manifest.json")
    report = validate_dataset(url, opts)
    assert report.ok, report.text()
    assert report.rows["user"] == 8

    tables = tiny_tables()
    _set(tables, "follows", "dst", _at(2, 99)(tables["follows"]["dst"].to_pylist()))
    bad = f"{s3_bucket}/bad"
    write_tiny_dataset(bad, tables, options=opts)
    Store(bad, opts).fs.invalidate_cache()
    with pytest.raises(DatasetInvalid, match=r"follows\.dst: 1 row references user ids .* \(examples: 99\)"):
        require_valid(bad, opts)


def test_empty_user_table_is_reported_once(tmp_path):
    url = str(tmp_path / "d")
    _empty_users(url)
    report = validate_dataset(url)
    assert [str(p) for p in report.problems] == ["user: the user table has 0 rows; a dataset needs at least one "
                                                 "user row: write them"]


def test_stale_table_missing_from_manifest_is_reported(tiny_dataset):
    store = Store(tiny_dataset)
    m = store.read_json("manifest.json")
    del m["rows"]["_truth/users"]
    store.write_json(m, "manifest.json")
    p = _find(validate_dataset(tiny_dataset), "_truth/users", None, "manifest_rows")
    assert "no row count" in p.message


def test_rows_without_ids_are_named_by_file_and_row(tmp_path):
    url = str(tmp_path / "d")
    _edit("follows", "interaction_freq", _at(3, float("nan")))(url)
    p = _find(validate_dataset(url), "follows", "interaction_freq", "nan")
    assert p.examples == ["part-00000.parquet row 3"]


# ---------------------------------------------------------------- labels at many cut times (``time``)

def _labels_at(user_ids: list, times: list):
    """The tiny dataset with labels rows (user_id, time) = zip(user_ids, times) (splits and reach as in tiny)."""
    def write(url: str) -> str:
        tables = tiny_tables()
        _set(tables, "labels", "user_id", user_ids)
        _set(tables, "labels", "time", times)
        return write_tiny_dataset(url, tables)
    return write


@pytest.mark.timeout(60)
def test_labels_may_hold_a_user_at_several_times(tmp_path):
    # users 0 and 1 at 100 and again at 200: one row per (user_id, time)
    url = _labels_at([0, 1, 2, 3, 4, 5, 0, 1], [100] * 6 + [200] * 2)(str(tmp_path / "d"))
    report = validate_dataset(url)
    assert report.ok, report.text()
    assert report.rows["labels"] == 8


@pytest.mark.timeout(60)
def test_labels_same_user_at_the_same_time_twice_is_a_duplicate(tmp_path):
    url = _labels_at([0, 1, 2, 3, 4, 5, 0, 1], [100] * 6 + [100, 200])(str(tmp_path / "d"))
    p = _find(validate_dataset(url), "labels", "user_id", "duplicate")
    assert p.examples == [0]  # (1, 100) and (1, 200) are two times; (0, 100) is there twice
    line = str(p)
    assert line.startswith("labels.user_id: duplicated ids: 1 distinct value repeated in 1 row more"), line
    assert "user_id at each time must be unique" in line and "(examples: 0)" in line, line


@pytest.mark.timeout(60)
def test_labels_same_user_twice_without_times_is_a_duplicate(tmp_path):
    """Rows with a null time are labels at one time: a user twice among them is a duplicate."""
    url = _labels_at([0, 1, 2, 3, 4, 5, 6, 6], [None] * 8)(str(tmp_path / "d"))
    assert _find(validate_dataset(url), "labels", "user_id", "duplicate").examples == [6]


@pytest.mark.timeout(60)
def test_labels_without_a_time_column_still_validate(tmp_path):
    """Labels written before the ``time`` column existed: valid, and read with the column all null."""
    url = str(tmp_path / "d")
    raw_part("labels", lambda t: t.drop_columns(["time"]))(url)
    assert "time" not in pq.read_schema(os.path.join(url, "labels", "part-00000.parquet")).names
    report = validate_dataset(url)
    assert report.ok, report.text()
    labels = Dataset(url).read("labels")
    assert labels["time"].null_count == len(labels) == 8
    # the same file with a user twice is still a duplicate of user_id
    raw_part("labels", lambda t: t.drop_columns(["time"]).set_column(
        0, "user_id", pa.array([0, 1, 2, 3, 4, 5, 6, 0], pa.int64())))(url)
    assert _find(validate_dataset(url), "labels", "user_id", "duplicate").examples == [0]


@pytest.mark.timeout(60)
def test_labels_parts_with_and_without_a_time_column(tmp_path):
    """One labels part written before the ``time`` column existed, one after: a report, not a crash."""
    url = write_tiny_dataset(str(tmp_path / "d"))
    labels = tiny_tables()["labels"]
    store = Store(url)
    store.write_bytes(table_to_parquet_bytes(labels.slice(0, 4).drop_columns(["time"])), "labels",
                      "part-00000.parquet")
    store.write_bytes(table_to_parquet_bytes(labels.slice(4)), "labels", "part-00001.parquet")
    report = validate_dataset(url)
    assert report.ok, report.text()
