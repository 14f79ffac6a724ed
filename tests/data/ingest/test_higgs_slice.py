"""A slice of the real Higgs Twitter activity file (``tests/data/higgs/SOURCE.md``) through ``ripple import
snap-activity`` -> ``ripple labels`` (fast, no Ray), and on to ``ripple train`` on a real local Ray cluster (slow).

The expected row counts are computed here from the raw lines with plain Python, not with the importer's code."""
from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections import defaultdict

import pytest

from ripple.cli import EXIT_OK, main
from ripple.data.dataset import Dataset
from ripple.data.history import parse_time
from ripple.data.storage import Store, read_committed, read_manifest

SLICE = os.path.join(os.path.dirname(__file__), "..", "higgs", "higgs-activity-slice.txt.gz")
CUTOFF, HORIZON = "2012-07-04T12:00:00Z", "30h"
POST_GAP = 3600  # the importer's default --post-gap
MODELS = ("gnn", "follower_count", "pagerank", "lightgbm_flat", "lightgbm_2hop", "lightgbm_engineered",
          "label_reliability")


def raw_lines() -> list[tuple[int, int, int, str]]:
    with gzip.open(SLICE, "rt") as f:
        return [(int(a), int(b), int(t), k) for a, b, t, k in (line.split() for line in f)]


def expected_rows(lines) -> dict[str, int]:
    """What the slice implies: users = distinct ids; interactions = distinct lines of two different users;
    shared = those that are RT; follows = distinct (A, B) pairs with A != B; content = created = B's retweet
    sessions (a retweet more than the post gap after B's previous one opens a post)."""
    events = {e for e in lines if e[0] != e[1]}
    retweets = defaultdict(list)
    for a, b, t, k in events:
        if k == "RT":
            retweets[b].append(t)
    posts = 0
    for times in retweets.values():
        times.sort()
        posts += 1 + sum(later - earlier > POST_GAP for earlier, later in zip(times, times[1:]))
    return {"user": len({u for a, b, _, _ in lines for u in (a, b)}), "interactions": len(events),
            "shared": sum(k == "RT" for *_, k in events), "follows": len({(a, b) for a, b, _, _ in events}),
            "content": posts, "created": posts, "community": 0, "member_of": 0, "reply_to": 0}


def import_and_label(tmp_path) -> tuple[str, str]:
    out, labelled = str(tmp_path / "higgs"), str(tmp_path / "labelled")
    assert main(["import", "snap-activity", SLICE, "--out", out]) == EXIT_OK
    assert main(["labels", out, "--cutoff", CUTOFF, "--horizon", HORIZON, "--out", labelled]) == EXIT_OK
    return out, labelled


@pytest.mark.timeout(120)
def test_slice_imports_validates_and_labels(tmp_path):
    lines = raw_lines()
    assert len(lines) == 11_218  # SOURCE.md's count: the file is the slice it documents
    out, labelled = import_and_label(tmp_path)
    assert main(["validate", out]) == EXIT_OK
    assert main(["validate", labelled]) == EXIT_OK

    m = Dataset(out).manifest
    with open(SLICE, "rb") as f:
        assert m.source["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert m.source["format"] == "snap-activity" and m.source["lines"] == len(lines)
    assert m.rows == expected_rows(lines)
    times = [t for _, _, t, _ in lines]
    assert m.history == {"start": min(times), "end": max(times) + 1}

    # labelled: a few hundred users in every split, a past graph with follows and posts, nothing at or after T
    info = Dataset(labelled).manifest.labels
    T = parse_time(CUTOFF)
    assert info["cutoff"] == T and 300 <= info["labelled_users"] <= 1000
    labels = Dataset(labelled).read("labels")
    splits = labels["split"].to_pylist()
    assert labels.num_rows == info["labelled_users"]
    assert {s: splits.count(s) >= 30 for s in ("train", "val", "test")} == {"train": True, "val": True, "test": True}
    assert info["reliability"]["test"]["spearman_brown"] is not None  # enough test users with 2+ window posts
    rows = Dataset(labelled).manifest.rows
    assert rows["user"] == m.rows["user"]
    assert rows["follows"] >= 1000 and rows["content"] >= 300 and rows["shared"] >= 1000
    past = {e for e in lines if e[0] != e[1] and e[2] < T}
    assert rows["interactions"] == len(past) and rows["follows"] == len({(a, b) for a, b, _, _ in past})
    assert rows["shared"] == sum(k == "RT" for *_, k in past)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_slice_end_to_end_trains_on_ray(tmp_path):
    """import -> labels -> train (one DDP worker, 2 epochs, real local Ray) -> metrics for every model and the
    labels' split-half reliability, and the committed embeddings of every user."""
    import ray

    _, labelled = import_and_label(tmp_path)
    runs = str(tmp_path / "runs")
    try:
        assert main(["train", "--data", labelled, "--storage-path", runs, "--run-name", "r", "--num-workers", "1",
                     "--epochs", "2"]) == EXIT_OK
    finally:
        ray.shutdown()
    run = Store(os.path.join(runs, "r"))
    metrics = run.read_json("metrics.json")
    spearman = metrics["spearman"]
    assert all(math.isfinite(spearman[k]) for k in MODELS), spearman
    info = Dataset(labelled).manifest.labels
    assert spearman["label_reliability"] == info["reliability"]["test"]["spearman_brown"]
    assert metrics["test_users"] == Dataset(labelled).read("labels")["split"].to_pylist().count("test")
    users = Dataset(labelled).manifest.rows["user"]
    emb_store = run.child("embeddings")
    assert read_manifest(emb_store)["rows"] == users
    emb = read_committed(emb_store)  # every part's checksum verified
    assert emb.num_rows == users and len(set(emb["user_id"].to_pylist())) == users
