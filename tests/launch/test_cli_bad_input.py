"""CLI exit codes on bad input: 0 ok, 2 bad input or usage; bad input never writes a run and never starts Ray."""
from __future__ import annotations

import math
import os

import pyarrow as pa
import pytest

from ripple.data.storage import Store, table_to_parquet_bytes
from ripple.data.tiny import tiny_tables, write_tiny_dataset
from ripple.launch.cli import EXIT_BAD_INPUT, EXIT_OK, main


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Bad input must be refused before Ray: fail loudly (without starting it) if the pipeline gets that far."""
    from ripple.launch import pipeline

    def refuse(*a, **kw):
        pytest.fail("the pipeline went past validation: it would start Ray")

    monkeypatch.setattr(pipeline, "init_ray", refuse)
    monkeypatch.setattr(pipeline, "fit", refuse)


def _set(tables: dict, table: str, column: str, values) -> None:
    t = tables[table]
    i = t.schema.get_field_index(column)
    tables[table] = t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def _edited(table: str, column: str, index: int, value):
    def build(url: str) -> str:
        tables = tiny_tables()
        values = tables[table][column].to_pylist()
        values[index] = value
        _set(tables, table, column, values)
        return write_tiny_dataset(url, tables)
    return build


def _nan_in_list(url: str) -> str:
    tables = tiny_tables()
    vectors = tables["user"]["topic_vector"].to_pylist()
    vectors[3][5] = math.nan
    _set(tables, "user", "topic_vector", vectors)
    return write_tiny_dataset(url, tables)


def _raw_part(table: str, fn):
    """A corruption ``DatasetWriter`` refuses (it checks columns and casts to the schema): overwrite the part."""
    def build(url: str) -> str:
        write_tiny_dataset(url)
        Store(url).write_bytes(table_to_parquet_bytes(fn(tiny_tables()[table])), table, "part-00000.parquet")
        return url
    return build


def _drop(column: str):
    return lambda t: t.drop_columns([column])


def _as_string(column: str):
    def fn(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index(column)
        return t.set_column(i, column, pa.array([str(v) for v in t[column].to_pylist()], pa.string()))
    return fn


# (name, builder, strings the report must contain: table.column and the offending value)
CORRUPTIONS = [
    ("missing_column", _raw_part("user", _drop("follower_count")), ["user.follower_count", "missing"]),
    ("dangling_edge", _edited("follows", "dst", 2, 99), ["follows.dst", "99", "user"]),
    ("dangling_label", _edited("labels", "user_id", 0, 12345), ["labels.user_id", "12345"]),
    ("nan_feature", _edited("user", "avg_engagement", 4, math.nan), ["user.avg_engagement", "NaN", "id=4"]),
    ("nan_in_vector", _nan_in_list, ["user.topic_vector", "NaN", "id=3"]),
    ("duplicate_ids", _edited("content", "id", 3, 2), ["content.id", "duplicated ids: 1 distinct value repeated", "2"]),
    ("wrong_dtype", _raw_part("follows", _as_string("since_date")), ["follows.since_date", "int64", "string"]),
    ("negative_count", _edited("user", "follower_count", 1, -5), ["user.follower_count", "-5"]),
    ("reach_below_one", _edited("labels", "cascade_reach", 2, 0.5), ["labels.cascade_reach", "0.5"]),
    ("self_loop", _edited("follows", "dst", 0, 1), ["follows.src", "self-loop", "1"]),
    ("bad_split", _edited("labels", "split", 0, "holdout"), ["labels.split", "'holdout'"]),
]


def test_validate_ok(tiny_dataset, capsys):
    assert main(["validate", tiny_dataset]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK" in out and tiny_dataset in out


@pytest.mark.parametrize("name, build, expected", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_validate_bad_dataset(tmp_path, capsys, name, build, expected):
    url = build(str(tmp_path / name))
    assert main(["validate", url]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "INVALID" in text
    for s in expected:
        assert s in text, f"{s!r} not in report:\n{text}"


def test_validate_missing_path(tmp_path, capsys):
    missing = str(tmp_path / "no-such-data")
    assert main(["validate", missing]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "no-such-data" in captured.out + captured.err


def test_validate_without_manifest(tiny_dataset, capsys):
    os.remove(os.path.join(tiny_dataset, "manifest.json"))
    assert main(["validate", tiny_dataset]) == EXIT_BAD_INPUT
    assert "manifest.json" in capsys.readouterr().out


def test_validate_bad_url_protocol(capsys):
    assert main(["validate", "nosuchproto://bucket/data"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "nosuchproto://bucket/data" in captured.out + captured.err


@pytest.mark.parametrize("name, build, expected", [CORRUPTIONS[1], CORRUPTIONS[3], CORRUPTIONS[6]],
                         ids=[CORRUPTIONS[i][0] for i in (1, 3, 6)])
def test_train_on_bad_data_writes_nothing(tmp_path, capsys, name, build, expected):
    bad = build(str(tmp_path / "bad"))
    runs = tmp_path / "runs"
    code = main(["train", "--data", bad, "--storage-path", str(runs), "--run-name", "x", "--num-workers", "1"])
    assert code == EXIT_BAD_INPUT
    assert not runs.exists(), f"bad input wrote {list(runs.rglob('*'))}"
    err = capsys.readouterr().err
    assert "error:" in err
    for s in expected:
        assert s in err, f"{s!r} not in:\n{err}"


def test_train_on_missing_data_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--data", str(tmp_path / "nothing-here"), "--storage-path", str(runs), "--run-name", "x"])
    assert code == EXIT_BAD_INPUT
    assert not runs.exists()
    assert "nothing-here" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    [],
    ["validate"],
    ["validate", "a", "b"],
    ["validate", "--bogus", "x"],
    ["train", "--num-workers", "two"],
    ["train", "--no-such-flag"],
    ["generate", "out", "--users", "many"],
])
def test_bad_usage_exits_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip()
    assert os.listdir(tmp_path) == []


def test_generate_too_few_users_exits_2(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", str(out), "--users", "5"]) == EXIT_BAD_INPUT
    assert "--users" in capsys.readouterr().err
    assert not out.exists()


def test_train_missing_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "missing.yaml"]) == EXIT_BAD_INPUT
    assert "missing.yaml" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text, named", [
    ("train:\n  epochs: 0\n", "train.epochs"),
    ("scaling:\n  num_workers: two\n", "scaling.num_workers"),
    ("scaling:\n  bogus: 1\n", "bogus"),
    ("run_name: !!python/object/apply:os.getcwd []\n", "cfg.yaml"),
])
def test_train_invalid_config_value(tmp_path, capsys, tiny_dataset, text, named):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    runs = tmp_path / "runs"
    code = main(["train", "--config", str(cfg), "--data", tiny_dataset, "--storage-path", str(runs),
                 "--run-name", "x"])
    assert code == EXIT_BAD_INPUT
    assert named in capsys.readouterr().err
    assert not runs.exists()


def test_invalid_flag_value_is_config_error(tmp_path, capsys, tiny_dataset):
    runs = tmp_path / "runs"
    code = main(["train", "--data", tiny_dataset, "--storage-path", str(runs), "--run-name", "x",
                 "--num-workers", "0"])
    assert code == EXIT_BAD_INPUT
    assert "num_workers" in capsys.readouterr().err
    assert not runs.exists()


# ---------------------------------------------------------------- ripple partition

def test_partition_verb_writes_shards_and_manifest(tmp_path, tiny_dataset, capsys):
    import json

    from ripple.distributed.partition import is_partitioned, read_partition_manifest

    out = str(tmp_path / "parts")
    assert main(["partition", tiny_dataset, "--num-parts", "2", "--out", out]) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    manifest = read_partition_manifest(out)
    assert is_partitioned(out) and printed["num_parts"] == manifest["num_parts"] == 2
    assert sum(manifest["node_counts"]["user"]) == 8


@pytest.mark.parametrize("args,needle", [
    (["--num-parts", "0"], "--num-parts must be >= 1"),
    (["--num-parts", "2", "--method", "metis"], "invalid choice"),
    (["--num-parts", "2", "--balance", "0.5"], "balance"),
])
def test_partition_verb_usage_errors_exit_2(tmp_path, tiny_dataset, capsys, args, needle):
    out = tmp_path / "parts"
    assert main(["partition", tiny_dataset, "--out", str(out), *args]) == EXIT_BAD_INPUT
    assert needle in capsys.readouterr().err
    assert not (out / "manifest.json").exists()


def test_partition_verb_refuses_an_invalid_dataset(tmp_path, capsys):
    bad = _edited("follows", "dst", 2, 424242)(str(tmp_path / "bad"))
    out = tmp_path / "parts"
    assert main(["partition", bad, "--num-parts", "2", "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "follows" in err and "dst" in err and "424242" in err
    assert not out.exists() or not (out / "manifest.json").exists()


def test_train_on_parts_refuses_more_workers_than_parts(tmp_path, tiny_dataset, capsys):
    from ripple.distributed.sharded_access import parts_of_rank

    parts = str(tmp_path / "parts")
    assert main(["partition", tiny_dataset, "--num-parts", "2", "--out", parts]) == EXIT_OK
    assert main(["train", "--data", parts, "--storage-path", str(tmp_path / "runs"), "--num-workers", "3"]) \
        == EXIT_BAD_INPUT
    assert "3 workers but the graph has 2 parts" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    with pytest.raises(ValueError, match="--num-workers <= 2"):
        parts_of_rank(2, 3, 0)
    assert parts_of_rank(5, 2, 0) == [0, 2, 4] and parts_of_rank(5, 2, 1) == [1, 3]
