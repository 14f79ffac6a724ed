"""CLI exit codes on bad input: 0 ok, 2 bad input or usage; bad input never writes a run and never starts Ray.

Every kind of bad input, through the verbs that read it: test_bad_input_catalogue.py."""
from __future__ import annotations

import os

import pytest
from bad_inputs import DATASET_FAULTS, edited

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, main

pytestmark = pytest.mark.usefixtures("no_ray")  # tests/conftest.py


def test_validate_ok(tiny_dataset, capsys):
    assert main(["validate", tiny_dataset]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK" in out and tiny_dataset in out


@pytest.mark.parametrize("name", DATASET_FAULTS)
def test_validate_bad_dataset(tmp_path, capsys, name):
    build, expected = DATASET_FAULTS[name]
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


def test_validate_bad_url_protocol(capsys):
    assert main(["validate", "nosuchproto://bucket/data"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "nosuchproto://bucket/data" in captured.out + captured.err


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

    from ripple.graph.partition import read_partition_manifest
    from ripple.run import is_partitioned

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
    bad = edited("follows", "dst", 2, 424242)(str(tmp_path / "bad"))
    out = tmp_path / "parts"
    assert main(["partition", bad, "--num-parts", "2", "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "follows" in err and "dst" in err and "424242" in err
    assert not out.exists() or not (out / "manifest.json").exists()


def test_train_on_parts_refuses_more_workers_than_parts(tmp_path, tiny_dataset, capsys):
    from ripple.graph.access import parts_of_rank

    parts = str(tmp_path / "parts")
    assert main(["partition", tiny_dataset, "--num-parts", "2", "--out", parts]) == EXIT_OK
    assert main(["train", "--data", parts, "--storage-path", str(tmp_path / "runs"), "--num-workers", "3"]) \
        == EXIT_BAD_INPUT
    assert "3 workers but the graph has 2 parts" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    with pytest.raises(ValueError, match="--num-workers <= 2"):
        parts_of_rank(2, 3, 0)
    assert parts_of_rank(5, 2, 0) == [0, 2, 4] and parts_of_rank(5, 2, 1) == [1, 3]
