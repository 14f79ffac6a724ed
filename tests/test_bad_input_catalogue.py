"""The bad-input catalogue: every kind of corrupt or hostile input ripple refuses, one test case each.

Each case builds its input under ``tmp_path`` (or names a missing bucket or a closed port), runs the real CLI
(``ripple train``, ``partition``, ``embed`` or ``seeds``) and checks the promise of issue E: exit code 2; stderr
ends with ONE ``error:`` line naming the table or file, the column (or config key) where there is one, and an
example offending value; nothing under ``tmp_path`` was written or changed (no run or output folder). Ray is never
started (``no_ray``, tests/conftest.py). ``DATASET_FAULTS`` (tests/bad_inputs.py) holds the dataset
corruptions, shared with ``test_cli_bad_input`` (which runs them through ``ripple validate``).
"""
from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from bad_inputs import DATASET_FAULTS, _drop, edited, raw_part
from tiny_dataset import write_tiny_dataset

from ripple.cli import EXIT_BAD_INPUT, main
from ripple.config import load_config
from ripple.data.storage import StorageError, Store, begin, commit, read_committed, write_part
from ripple.infer.embed import embeddings_table
from ripple.run import PARTITIONS_MANIFEST

pytestmark = pytest.mark.usefixtures("no_ray")


@dataclass(frozen=True)
class Case:
    #: (tmp_path, pytest request) -> argv; builds the bad input first
    argv: Callable[[Path, pytest.FixtureRequest], list[str]]
    #: strings the one error line must contain: table/file, column or key, an example value
    expect: tuple[str, ...]


def _train(data: str, tmp: Path, *extra: str) -> list[str]:
    return ["train", "--data", data, "--storage-path", str(tmp / "runs"), "--run-name", "r", "--num-workers", "1",
            *extra]


def train_on(name: str) -> Case:
    build, expect = DATASET_FAULTS[name]
    return Case(lambda tmp, request: _train(build(str(tmp / "data")), tmp), tuple(expect))


def partition_of(name: str) -> Case:
    build, expect = DATASET_FAULTS[name]
    return Case(lambda tmp, request: ["partition", build(str(tmp / "data")), "--num-parts", "2",
                                      "--out", str(tmp / "parts")], tuple(expect))


def _config(text: str):
    def argv(tmp: Path, request) -> list[str]:
        (tmp / "cfg.yaml").write_text(text)
        return ["train", "--config", str(tmp / "cfg.yaml"), "--data", write_tiny_dataset(str(tmp / "data")),
                "--storage-path", str(tmp / "runs"), "--run-name", "r"]
    return argv


def _run_with_config(text: str | None):
    """``ripple embed`` of a run folder whose config.yaml is ``text`` (None: a folder that is not a run)."""
    def argv(tmp: Path, request) -> list[str]:
        run = tmp / "runs" / "r"
        run.mkdir(parents=True)
        if text is not None:
            (run / "config.yaml").write_text(text)
        return ["embed", str(run)]
    return argv


def _bad_url(tmp: Path, request) -> list[str]:
    return _train("nosuchproto://bucket/data", tmp)


def _missing_bucket(tmp: Path, request) -> list[str]:
    endpoint = request.getfixturevalue("s3_server")
    return _train("s3://ripple-no-such-bucket-7f3a/data", tmp, "--s3-endpoint-url", endpoint)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unreachable(tmp: Path, request) -> list[str]:
    mp = request.getfixturevalue("monkeypatch")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        mp.setenv(k, v)
    (tmp / "cfg.yaml").write_text("storage:\n  retries: 0\n")  # fail at the first refused connection
    return _train("s3://bucket/data", tmp, "--config", str(tmp / "cfg.yaml"),
                  "--s3-endpoint-url", f"http://127.0.0.1:{_closed_port()}")


def _manifest_not_json(tmp: Path, request) -> list[str]:
    data = write_tiny_dataset(str(tmp / "data"))
    Path(data, PARTITIONS_MANIFEST).write_text('{"format": "ripple.partitions/1", "num_parts": 2,')
    return _train(data, tmp)


def _partition_file_gone(tmp: Path, request) -> list[str]:
    """A partitioned graph whose manifest lists a file that was deleted since."""
    data = write_tiny_dataset(str(tmp / "data"))
    parts = str(tmp / "parts")
    assert main(["partition", data, "--num-parts", "2", "--out", parts]) == 0
    os.remove(os.path.join(parts, "part-00001", "user.parquet"))
    return _train(parts, tmp)


def _partition_file_truncated(tmp: Path, request) -> list[str]:
    """A partitioned graph one of whose files was cut short after the manifest was written."""
    data = write_tiny_dataset(str(tmp / "data"))
    parts = str(tmp / "parts")
    assert main(["partition", data, "--num-parts", "2", "--out", parts]) == 0
    path = os.path.join(parts, "part-00000", "edges", "follows.parquet")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 7)
    return _train(parts, tmp)


def _run_with_embeddings(fault: Callable[[Store, list], None]):
    """``ripple seeds`` of a run (config.yaml + committed embeddings of the tiny dataset), after ``fault(embeddings
    store, parts)``."""
    def argv(tmp: Path, request) -> list[str]:
        data = write_tiny_dataset(str(tmp / "data"))
        cfg = load_config(None, {"data": data, "storage_path": str(tmp / "runs"), "run_name": "r"})
        run = Store(str(tmp / "runs" / "r"))
        run.write_bytes(cfg.to_yaml().encode(), "config.yaml")
        emb = run.child("embeddings")
        begin(emb)
        ids = np.arange(8)
        parts = [write_part(emb, embeddings_table(ids[i:i + 4], np.ones((4, 8)), np.ones(4)), i // 4)
                 for i in (0, 4)]
        commit(emb, parts)
        fault(emb, parts)
        return ["seeds", run.url, "--k", "2"]
    return argv


def _uncommitted(emb: Store, parts: list) -> None:
    """What a killed ``ripple embed`` leaves: ``begin`` removed the manifest, parts were written, no commit."""
    begin(emb)


def _tampered(emb: Store, parts: list) -> None:
    data = bytearray(emb.read_bytes(parts[1].path))
    data[len(data) // 2] ^= 0xFF
    emb.write_bytes(bytes(data), parts[1].path)


HOSTILE = "run_name: !!python/object/apply:os.system ['touch pwned']\n"

def _labels(build: Callable[[str], str], *flags: str):
    """``ripple labels`` of a history built by ``build`` (the tiny dataset's posts run from 1700000000 to
    1700000300, its reshares to 1700001004)."""
    def argv(tmp: Path, request) -> list[str]:
        return ["labels", build(str(tmp / "data")), *flags, "--out", str(tmp / "out")]
    return argv


def _import(fmt: str, name: str, content: str | bytes | None, *extra: str, edges: str | None = None):
    """``ripple import FMT`` of the file ``name`` holding ``content`` (None: a file that does not exist), with a
    ``u,v`` links file ``edges.txt`` holding ``edges`` when given."""
    def argv(tmp: Path, request) -> list[str]:
        f = tmp / name
        if content is not None:
            f.write_bytes(content.encode() if isinstance(content, str) else content)
        flags = list(extra)
        if edges is not None:
            (tmp / "edges.txt").write_text(edges)
            flags += ["--edges", str(tmp / "edges.txt")]
        return ["import", fmt, str(f), *flags, "--out", str(tmp / "out")]
    return argv


def _snap(content, *extra: str):
    return _import("snap-activity", "activity.txt", content, *extra)


def _cascades(content, *extra: str, edges: str | None = None):
    return _import("cascades", "cascades.txt", content, *extra, edges=edges)


def _unlabelled_history(tmp: Path, request) -> list[str]:
    """``ripple train`` on what ``ripple import`` wrote: a history whose labels ``ripple labels`` has not derived."""
    (tmp / "activity.txt").write_text("1 2 100 RT\n3 2 150 RT\n1 3 200 MT\n")
    assert main(["import", "snap-activity", str(tmp / "activity.txt"), "--out", str(tmp / "history")]) == 0
    return _train(str(tmp / "history"), tmp)


def _embed_snapshot(*flags: str):
    """``ripple embed RUN`` of a run folder with a valid config.yaml, with ``flags``."""
    def argv(tmp: Path, request) -> list[str]:
        data = write_tiny_dataset(str(tmp / "data"))
        cfg = load_config(None, {"data": data, "storage_path": str(tmp / "runs"), "run_name": "r"})
        Store(str(tmp / "runs" / "r")).write_bytes(cfg.to_yaml().encode(), "config.yaml")
        return ["embed", str(tmp / "runs" / "r"), *[f.replace("TMP", str(tmp)) for f in flags]]
    return argv


def _gzip_cut_short() -> bytes:
    import gzip

    data = gzip.compress(b"".join(b"%d 2 %d RT\n" % (i, 1000 + i) for i in range(3, 2000)), mtime=0)
    return data[:len(data) // 2]


CATALOGUE: dict[str, Case] = {
    # dataset tables: files, columns, dtypes, ids, edges, values
    "missing_table": train_on("missing_table"),
    "missing_column": train_on("missing_column"),
    "wrong_dtype": train_on("wrong_dtype"),
    "duplicate_ids": partition_of("duplicate_ids"),
    "dangling_edge_endpoint": train_on("dangling_edge"),
    "self_loop": partition_of("self_loop"),
    "nan_feature": train_on("nan_feature"),
    "nan_in_feature_vector": train_on("nan_in_vector"),
    "inf_feature": train_on("inf_feature"),
    "negative_count": train_on("negative_count"),
    "reach_below_one": train_on("reach_below_one"),
    "empty_table": train_on("empty_table"),
    "truncated_parquet": partition_of("truncated_parquet"),
    "not_parquet": train_on("not_parquet"),
    "mismatched_embedding_width": train_on("width_mismatch"),
    "labels_for_unknown_users": train_on("dangling_label"),
    "unknown_split": train_on("bad_split"),
    # ripple labels: a history cut at --cutoff with window --horizon
    "labels_cutoff_outside_history": Case(_labels(write_tiny_dataset, "--cutoff", "2000-01-01", "--horizon", "1d"),
                                          ("created.timestamp", "--cutoff 2000-01-01T00:00:00Z", "outside")),
    "labels_no_posts_in_window": Case(_labels(write_tiny_dataset, "--cutoff", "1700000050", "--horizon", "20s"),
                                      ("created.timestamp", "no posts in the window", "2023-11-14T22:14:10Z")),
    "labels_window_past_the_history": Case(_labels(write_tiny_dataset, "--cutoff", "1700000150", "--horizon", "1d"),
                                           ("created.timestamp", "cut off", "2023-11-16T22:15:50Z")),
    "labels_null_timestamp": Case(_labels(edited("created", "timestamp", 1, None), "--cutoff", "1700000150",
                                          "--horizon", "100s"), ("created.timestamp", "null", "row 1")),
    "labels_missing_timestamp": Case(_labels(raw_part("shared", _drop("timestamp")), "--cutoff", "1700000150",
                                             "--horizon", "100s"), ("shared.timestamp", "missing")),
    "labels_horizon_not_positive": Case(_labels(write_tiny_dataset, "--cutoff", "1700000150", "--horizon", "0d"),
                                        ("--horizon", "got 0")),
    "labels_bad_horizon": Case(_labels(write_tiny_dataset, "--cutoff", "1700000150", "--horizon=-3d"),
                               ("--horizon", "got -259200")),
    "labels_min_posts_below_one": Case(_labels(write_tiny_dataset, "--cutoff", "1700000150", "--horizon", "100s",
                                               "--min-posts", "0"), ("--min-posts", "got 0")),
    # ripple labels at many cut times: --cutoffs T1,T2,... or --every D (issue N)
    "labels_training_cut_overlaps_validation": Case(
        _labels(write_tiny_dataset, "--cutoffs", "1700000050,1700000100,1700000200", "--horizon", "100s"),
        ("--cutoffs", "the cut 2023-11-14T22:14:10Z is a training cut", "validation cut 2023-11-14T22:15:00Z",
         "overlap")),
    "labels_cutoffs_only_two_times": Case(
        _labels(write_tiny_dataset, "--cutoffs", "1700000100,1700000200", "--horizon", "100s"),
        ("--cutoffs", "at least 3 distinct times", "2023-11-14T22:15:00Z, 2023-11-14T22:16:40Z")),
    "labels_every_not_positive": Case(_labels(write_tiny_dataset, "--every", "0d", "--horizon", "100s"),
                                      ("--every", "got 0")),
    "labels_every_history_too_short": Case(_labels(write_tiny_dataset, "--every", "1d", "--horizon", "1d"),
                                           ("--every", "2023-11-14T22:13:20Z", "2023-11-14T22:30:05Z", "too short",
                                            "H = 86400 s")),
    # ripple import: public diffusion data (issue M)
    "snap_wrong_token_count": Case(_snap("1 2 100 RT\n1 2 100\n"),
                                   ("activity.txt line 2", "expected 4 tokens", "'1 2 100'")),
    "snap_non_numeric_timestamp": Case(_snap("# A B t K\n1 2 noon RT\n"),
                                       ("activity.txt line 2", "timestamp 'noon' is not a number")),
    "snap_negative_timestamp": Case(_snap("1 2 100 RT\n\n3 2 -5 RT\n"),
                                    ("activity.txt line 3", "timestamp '-5' is negative", "'3 2 -5 RT'")),
    "snap_unknown_kind": Case(_snap("1 2 100 RT\n1 2 101 LIKE\n"),
                              ("activity.txt line 2", "unknown KIND 'LIKE'", "RT, MT, RE")),
    "snap_non_integer_user": Case(_snap("alice 2 100 RT\n"),
                                  ("activity.txt line 1", "user A 'alice'", "non-negative integer")),
    "snap_empty_file": Case(_snap("# only a header\n\n"),
                            ("activity.txt: empty", "no `A B time KIND` events")),
    "snap_only_self_interactions": Case(_snap("5 5 100 RT\n5 5 200 MT\n"),
                                        ("activity.txt", "no follows edge", "'self_interactions': 2")),
    "snap_gzip_cut_short": Case(_import("snap-activity", "activity.txt.gz", _gzip_cut_short()),
                                ("activity.txt.gz line", "corrupt or cut short")),
    "snap_bad_post_gap": Case(_snap("1 2 100 RT\n", "--post-gap", "soon"),
                              ("--post-gap", "'soon'", "not a duration")),
    "import_missing_file": Case(_import("snap-activity", "nosuch.txt", None), ("nosuch.txt", "does not exist")),
    "cascades_chunk_token_count": Case(_cascades("1 10,2 20\n3 30,4 40 5\n"),
                                       ("cascades.txt line 2", "chunk 2 ('4 40 5') has 3 tokens", "'3 30,4 40 5'")),
    "cascades_negative_timestamp": Case(_cascades("1 10,2 -20\n"),
                                        ("cascades.txt line 1", "timestamp '-20' is negative", "'1 10,2 -20'")),
    "cascades_non_numeric_timestamp": Case(_cascades("\n7 1 10,2 20x\n"),
                                           ("cascades.txt line 2", "timestamp '20x' is not a number")),
    "cascades_empty_file": Case(_cascades("\n  \n"),
                                ("cascades.txt: empty", "no cascades")),
    "cascades_no_follows": Case(_cascades("1 10\n2 20,2 30\n"),
                                ("cascades.txt", "no follows edge", "'duplicate_adoptions': 0",
                                 "'author_readoptions': 1")),
    "edges_not_a_pair": Case(_cascades("1 10,2 20\n", edges="1,2\n3 4\n"),
                             ("edges.txt line 2", "expected one `u,v` pair", "'3 4'")),
    "edges_missing_file": Case(_cascades("1 10,2 20\n", "--edges", "nosuch-edges.txt"),
                               ("nosuch-edges.txt", "does not exist")),
    "train_on_unlabelled_history": Case(_unlabelled_history, ("labels:", "history", "has no labels",
                                                              "ripple labels")),
    # ripple embed RUN --data NEW --out OUT (issue N)
    "embed_snapshot_without_out": Case(_embed_snapshot("--data", "TMP/data"), ("--data needs --out",)),
    "embed_out_without_snapshot": Case(_embed_snapshot("--out", "TMP/scores"), ("--out needs --data",)),
    "embed_snapshot_missing": Case(_embed_snapshot("--data", "TMP/no-such-export", "--out", "TMP/scores"),
                                   ("no-such-export", "does not exist")),
    # manifests
    "missing_manifest": train_on("missing_manifest"),
    "manifest_rows_mismatch": train_on("manifest_rows_mismatch"),
    "manifest_lists_gone_table": train_on("manifest_table_gone"),
    "manifest_not_json": Case(_manifest_not_json, (PARTITIONS_MANIFEST, "not valid JSON", "line 1 column")),
    "partition_file_gone": Case(_partition_file_gone, ("part-00001/user.parquet", PARTITIONS_MANIFEST,
                                                       "missing")),
    "partition_file_truncated": Case(_partition_file_truncated, ("part-00000/edges/follows.parquet",
                                                                 PARTITIONS_MANIFEST, "bytes")),
    "uncommitted_embeddings": Case(_run_with_embeddings(_uncommitted), ("runs/r/embeddings", "_manifest.json",
                                                                        "incomplete")),
    "tampered_embeddings": Case(_run_with_embeddings(_tampered), ("runs/r/embeddings/part-0-00001-",
                                                                  "checksum")),
    # URLs
    "bad_url": Case(_bad_url, ("nosuchproto://bucket/data", "nosuchproto")),
    "s3_missing_bucket": Case(_missing_bucket, ("s3://ripple-no-such-bucket-7f3a/data", "does not exist")),
    "unreachable_endpoint": Case(_unreachable, ("cannot reach", "s3://bucket/data", "http://127.0.0.1:")),
    # configs
    "hostile_yaml": Case(_config(HOSTILE), ("cfg.yaml", "line 1", "run_name", "python/object/apply:os.system")),
    "invalid_config_value": Case(_config("train:\n  epochs: 0\n"), ("cfg.yaml", "train.epochs", "got 0")),
    "config_wrong_type": Case(_config("scaling:\n  num_workers: two\n"), ("cfg.yaml", "scaling.num_workers",
                                                                            "'two'")),
    "embed_not_a_run": Case(_run_with_config(None), ("runs/r", "config.yaml", "not a ripple run")),
    "embed_hostile_run_config": Case(_run_with_config(HOSTILE), ("runs/r/config.yaml", "run_name",
                                                                 "python/object/apply:os.system")),
    "embed_invalid_run_config": Case(_run_with_config("scaling:\n  num_workers: 0\n"),
                                     ("runs/r/config.yaml", "scaling.num_workers", "got 0")),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: (size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size if n in filenames else -1, st.st_mtime_ns)
    return out


def _one_error_line(err: str) -> str:
    """The one ``error:`` line; it must be the last thing on stderr (progress bars and logs come before it)."""
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got {len(errors)}:\n{err}"
    assert lines[-1] == errors[0], f"the error is not the last line of stderr:\n{err}"
    assert "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("name", CATALOGUE)
def test_bad_input_is_refused_before_any_output(name, tmp_path, capsys, request, monkeypatch):
    case = CATALOGUE[name]
    monkeypatch.chdir(tmp_path)  # a hostile config's relative paths land here, where the snapshot sees them
    argv = case.argv(tmp_path, request)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    line = _one_error_line(err)
    for s in case.expect:
        assert s in line, f"{s!r} not in the error line:\n{line}"
    assert _snapshot(tmp_path) == before, "bad input wrote or changed files"
    assert seconds < 20, f"refusing bad input took {seconds:.1f}s"


def test_catalogue_covers_the_issue():
    """Issue E lists these kinds; each has at least one case above."""
    kinds = {
        "missing table": "missing_table", "missing column": "missing_column", "wrong dtype": "wrong_dtype",
        "duplicate ids": "duplicate_ids", "dangling edge endpoints": "dangling_edge_endpoint",
        "self-loops": "self_loop", "NaN/inf in features": "inf_feature", "negative counts": "negative_count",
        "negative reach": "reach_below_one", "empty tables": "empty_table", "truncated parquet": "truncated_parquet",
        "mismatched embedding widths": "mismatched_embedding_width", "missing manifest": "missing_manifest",
        "inconsistent manifest": "manifest_rows_mismatch", "labels for unknown users": "labels_for_unknown_users",
        "bad URL": "bad_url", "unreachable URL": "unreachable_endpoint", "invalid config value":
        "invalid_config_value",
        # issue G: ripple labels
        "cutoff outside the data's time range": "labels_cutoff_outside_history",
        "no posts in the window": "labels_no_posts_in_window", "null timestamps": "labels_null_timestamp",
        "missing timestamps": "labels_missing_timestamp", "H <= 0": "labels_horizon_not_positive",
        "K < 1": "labels_min_posts_below_one",
        # issue N: ripple labels at many cut times
        "--cutoffs: a training cut overlapping validation": "labels_training_cut_overlaps_validation",
        "--cutoffs: fewer than 3 times": "labels_cutoffs_only_two_times", "--every <= 0": "labels_every_not_positive",
        "--every: history too short": "labels_every_history_too_short",
        # issue M: ripple import
        "snap: wrong token count": "snap_wrong_token_count", "snap: non-numeric timestamp":
        "snap_non_numeric_timestamp", "snap: negative timestamp": "snap_negative_timestamp",
        "snap: unknown KIND": "snap_unknown_kind", "snap: empty file": "snap_empty_file",
        "cascades: chunk with the wrong token count": "cascades_chunk_token_count",
        "cascades: negative timestamp": "cascades_negative_timestamp",
        "cascades: non-numeric timestamp": "cascades_non_numeric_timestamp",
        "cascades: empty file": "cascades_empty_file", "--edges line that is not u,v": "edges_not_a_pair",
        "missing input file": "import_missing_file",
    }
    assert set(kinds.values()) <= set(CATALOGUE)
    assert len(CATALOGUE) >= 15


def test_embeddings_of_different_widths_are_refused_naming_column_and_parts(tmp_path):
    """Two parts of a committed embeddings folder written with different ``model.hidden``: reading them (what
    ``ripple train`` does after writing back) names the column, both widths and both files."""
    store = Store(str(tmp_path / "embeddings"))
    begin(store)
    ids = np.arange(4)
    parts = [write_part(store, embeddings_table(ids[:2], np.zeros((2, 32)), np.zeros(2)), 0),
             write_part(store, embeddings_table(ids[2:], np.zeros((2, 16)), np.zeros(2)), 1)]
    commit(store, parts)
    with pytest.raises(StorageError) as e:
        read_committed(store)
    msg = str(e.value)
    assert "\n" not in msg
    for s in (store.url, "'embedding'", "[32]", "[16]", parts[0].path, parts[1].path):
        assert s in msg, msg
    assert read_committed(store, columns=["user_id", "influence_score"]).num_rows == 4  # what evaluation reads
