"""Builders of corrupt or hostile input for the CLI bad-input tests (``test_cli_bad_input``, the catalogue).

A dataset builder takes a URL, writes a corrupted copy of the tiny dataset (``tests/tiny_dataset.py``) there and
returns the URL. ``DATASET_FAULTS`` names each corruption with the strings its report must contain: the
table.column and an offending example value.
"""
from __future__ import annotations

import math
import os

import pyarrow as pa
from tiny_dataset import tiny_tables, write_tiny_dataset

from ripple.data import schema as S
from ripple.data.storage import Store, table_to_parquet_bytes


def _set(tables: dict, table: str, column: str, values) -> None:
    t = tables[table]
    i = t.schema.get_field_index(column)
    tables[table] = t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def edited(table: str, column: str, index: int, value):
    """The tiny dataset with ``table.column[index] = value``."""
    def build(url: str) -> str:
        tables = tiny_tables()
        values = tables[table][column].to_pylist()
        values[index] = value
        _set(tables, table, column, values)
        return write_tiny_dataset(url, tables)
    return build


def edited_list(table: str, column: str, fn):
    """The tiny dataset with the list column ``table.column`` replaced by ``fn(rows as lists)``."""
    def build(url: str) -> str:
        tables = tiny_tables()
        _set(tables, table, column, fn([list(v) for v in tables[table][column].to_pylist()]))
        return write_tiny_dataset(url, tables)
    return build


def _nan_in_list(rows: list) -> list:
    rows[3][5] = math.nan
    return rows


def raw_part(table: str, fn):
    """A corruption ``DatasetWriter`` refuses (it checks columns and casts to the schema): overwrite the part."""
    def build(url: str) -> str:
        write_tiny_dataset(url)
        Store(url).write_bytes(table_to_parquet_bytes(fn(tiny_tables()[table])), table, "part-00000.parquet")
        return url
    return build


def after(fn):
    """The valid tiny dataset, then ``fn(url)`` applied to its files."""
    def build(url: str) -> str:
        write_tiny_dataset(url)
        fn(url)
        return url
    return build


def with_tables(**replace):
    """The tiny dataset with whole tables replaced (``name=fn(tiny table) -> table``)."""
    def build(url: str) -> str:
        tables = tiny_tables()
        for name, fn in replace.items():
            tables[name] = fn(tables[name])
        return write_tiny_dataset(url, tables)
    return build


def _drop(column: str):
    return lambda t: t.drop_columns([column])


def _as_string(column: str):
    def fn(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index(column)
        return t.set_column(i, column, pa.array([str(v) for v in t[column].to_pylist()], pa.string()))
    return fn


def truncate(table: str, part: str = "part-00000.parquet"):
    """Cut a part file in half, as an interrupted upload or copy would."""
    def fn(url: str) -> None:
        path = os.path.join(url, table, part)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    return fn


def write_file(rel_path: str, data: bytes):
    def fn(url: str) -> None:
        Store(url).write_bytes(data, *rel_path.split("/"))
    return fn


def edit_manifest(fn):
    """Rewrite the dataset's ``manifest.json`` through ``fn(manifest dict)``."""
    def edit(url: str) -> None:
        store = Store(url)
        m = store.read_json("manifest.json")
        fn(m)
        store.write_json(m, "manifest.json")
    return edit


def _add_user_rows(m: dict) -> None:
    m["rows"]["user"] += 1


#: name -> (builder, strings the one-line message must contain: table.column (or file) and an example value)
DATASET_FAULTS = {
    "missing_table": (after(lambda u: Store(u).rm("content", recursive=True)),
                      ["content", "required table is missing", "part-*.parquet"]),
    "missing_column": (raw_part("user", _drop("follower_count")),
                       ["user.follower_count", "missing", "part-00000.parquet"]),
    "wrong_dtype": (raw_part("follows", _as_string("since_date")),
                    ["follows.since_date", "int64", "string", "part-00000.parquet"]),
    "duplicate_ids": (with_tables(content=lambda t: pa.concat_tables([t, t.slice(2, 1)])),
                      ["content.id", "duplicated ids: 1 distinct value repeated", "(examples: 2)"]),
    "dangling_edge": (edited("follows", "dst", 2, 99), ["follows.dst", "user", "(examples: 99)"]),
    "self_loop": (edited("follows", "dst", 0, 1), ["follows.src", "self-loop", "(examples: 1)"]),
    "nan_feature": (edited("user", "avg_engagement", 4, math.nan), ["user.avg_engagement", "NaN", "id=4"]),
    "nan_in_vector": (edited_list("user", "topic_vector", _nan_in_list), ["user.topic_vector", "NaN", "id=3"]),
    "inf_feature": (edited("follows", "interaction_freq", 5, math.inf),
                    ["follows.interaction_freq", "inf", "part-00000.parquet row 5: inf"]),
    "negative_count": (edited("user", "follower_count", 1, -5), ["user.follower_count", "negative", "-5"]),
    "reach_below_one": (edited("labels", "cascade_reach", 2, 0.5), ["labels.cascade_reach", ">= 1", "0.5"]),
    "empty_table": (with_tables(follows=lambda t: t.schema.empty_table()), ["follows", "0 rows"]),
    "truncated_parquet": (after(truncate("follows")), ["follows", "not readable parquet", "part-00000.parquet"]),
    "not_parquet": (after(write_file("user/part-00001.parquet", b"id,follower_count\n0,3\n")),
                    ["user", "not readable parquet", "part-00001.parquet"]),
    "width_mismatch": (edited_list("user", "topic_vector", lambda rows: [r[:5] if i == 6 else r
                                                                         for i, r in enumerate(rows)]),
                       ["user.topic_vector", f"exactly {S.NUM_TOPICS}", "id=6 has 5"]),
    "missing_manifest": (after(lambda u: Store(u).rm("manifest.json")), ["manifest.json", "is missing"]),
    "manifest_rows_mismatch": (after(edit_manifest(_add_user_rows)),
                               ["user", "manifest.json says 9 rows, the part files hold 8", "(examples: 9, 8)"]),
    "manifest_table_gone": (after(lambda u: Store(u).rm("_truth/users", recursive=True)),
                            ["_truth/users", "manifest.json says 8 rows but there are no part files",
                             "(examples: 8)"]),
    "dangling_label": (edited("labels", "user_id", 0, 12345), ["labels.user_id", "(examples: 12345)"]),
    "bad_split": (edited("labels", "split", 0, "holdout"), ["labels.split", "allowed set", "'holdout'"]),
}
