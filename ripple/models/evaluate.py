"""Held-out evaluation: the GNN next to its baselines and the noise ceiling, on the same test users.

The ceiling is how well one independent set of cascade simulations ranks the users against another: no model
can be expected to beat it, and a model close to it has learned what the labels can tell.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from ripple.distributed.stores import LocalGraph, dense_index
from ripple.models.baselines import run_baselines
from ripple.models.metrics import score_all

log = logging.getLogger(__name__)

MODEL_ORDER = ["gnn", "follower_count", "pagerank", "lightgbm_flat", "lightgbm_2hop", "ceiling"]


def gnn_test_predictions(graph: LocalGraph, embeddings: pa.Table) -> np.ndarray:
    """The written ``influence_score`` of every test user, in label order."""
    test_users = graph.label_index[graph.split == "test"]
    pos = dense_index(graph.ids["user"], embeddings["user_id"].to_numpy(), "embeddings.user_id")
    score = np.full(graph.num_nodes("user"), np.nan)
    score[pos] = embeddings["influence_score"].to_numpy()
    out = score[test_users]
    if np.isnan(out).any():
        raise ValueError(f"embeddings lack {int(np.isnan(out).sum())} test users; re-run `ripple embed`")
    return out


def evaluate(graph: LocalGraph, embeddings: pa.Table, seed: int = 0, lightgbm_threads: int = 1) -> dict:
    """Returns ``{"spearman": {model: v}, "kendall": ..., "ndcg_at_100": ..., "msle": ...}``."""
    test = graph.split == "test"
    y = graph.reach[test].astype(np.float64)
    x_flat = graph.x["user"]
    follower_count = np.rint(np.expm1(x_flat[:, 0].astype(np.float64)))  # column 0 is log1p(follower_count)
    src, dst = graph.follows_coo()
    preds = {"gnn": gnn_test_predictions(graph, embeddings)}
    preds.update(run_baselines(x_flat, follower_count, src, dst, graph.label_index, graph.reach, graph.split,
                               seed=seed, num_threads=lightgbm_threads))
    preds["ceiling"] = graph.replicate[test].astype(np.float64)
    return score_all(y, {k: preds[k] for k in MODEL_ORDER})


def evaluate_from_tables(labels: pa.Table, users: pa.Table, embeddings: pa.Table) -> dict:
    """The GNN, follower count and the ceiling from the labels and user tables alone (O(users) memory): what a
    sharded run reports when the graph is too large for the whole-graph baselines on one machine.

    ``users`` needs ``id`` and ``follower_count``; ``labels`` is the dataset's labels table."""
    ids = np.sort(users["id"].to_numpy())
    order = np.argsort(users["id"].to_numpy(), kind="stable")
    followers = users["follower_count"].to_numpy()[order].astype(np.float64)
    test = labels["split"].to_numpy(zero_copy_only=False).astype(str) == "test"
    test_users = dense_index(ids, labels["user_id"].to_numpy()[test], "labels.user_id")
    score = np.full(len(ids), np.nan)
    score[dense_index(ids, embeddings["user_id"].to_numpy(), "embeddings.user_id")] = \
        embeddings["influence_score"].to_numpy()
    gnn = score[test_users]
    if np.isnan(gnn).any():
        raise ValueError(f"embeddings lack {int(np.isnan(gnn).sum())} test users; re-run `ripple embed`")
    y = labels["cascade_reach"].to_numpy()[test].astype(np.float64)
    return score_all(y, {"gnn": gnn, "follower_count": followers[test_users],
                         "ceiling": labels["cascade_reach_replicate"].to_numpy()[test].astype(np.float64)})
