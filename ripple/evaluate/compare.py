"""Held-out evaluation: the GNN next to its baselines and the labels' reliability, on the same test users.

What each reference number is, and what it bounds:
- ``label_reliability`` (alias ``ceiling`` for one release; the name was wrong): how well the labels agree with
  themselves. For simulated labels, one independent set of cascade simulations against another; for labels
  observed in a cascade history (``ripple labels``), the split-half reliability its manifest records. It is *not*
  an upper bound on a model: a label agrees better with its own expectation than with a second noisy draw, so a
  predictor of the true expected reach scores above it.
- ``oracle`` (synthetic history-labelled data): the Spearman of ``_truth/users.expected_reach`` against the labels,
  what a perfect predictor of true influence would score. (For simulated labels ``expected_reach`` *is* the label's
  simulation mean, so no independent oracle exists and none is reported.)
- ``spearman_vs_truth``: each model against the oracle's expected reach, how well it recovers true influence from
  noisy labels; its ``label`` entry is the labels themselves.
- ``lightgbm_engineered``: the bar a feature engineer sets with the same tables (``engineered_features``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ripple.data.features import has_activity
from ripple.data.graph import LocalGraph
from ripple.data.ids import dense_index
from ripple.data.history import iso
from ripple.data.timeline import snapshot
from ripple.evaluate.baselines import (baseline_features, engineered_features, fit_baselines, fit_lightgbm, hybrid,
                                       hybrid_weight, pagerank, predict_lightgbm, stack_features)
from ripple.evaluate.metrics import bootstrap_spearman, score_all, spearman

log = logging.getLogger(__name__)

MODEL_ORDER = ["gnn", "hybrid", "stacked", "follower_count", "pagerank", "lightgbm_flat", "lightgbm_2hop",
               "lightgbm_engineered", "label_reliability", "oracle", "label"]
CREATED = ("user", "created", "content")
FOLLOWS = ("user", "follows", "user")


@dataclass
class Evaluation:
    """A run's held-out evaluation: the metrics (``metrics.json``) and the test users' numbers behind them, for
    the predicted-vs-observed picture."""

    metrics: dict
    observed: np.ndarray  # Shapes: [n] the test users' observed reach
    predicted: np.ndarray  # Shapes: [n] the written influence_score (predicted reach) of the same users
    #: Shapes: [N] every user's predicted reach by the model that won on validation, when it is not the GNN
    #: (whose scores the embeddings already hold): the pipeline writes them as ``influence_score``
    scores: np.ndarray | None = None


def _reliability(metrics: dict, y, ceiling, reliability: float | None) -> dict:
    """``label_reliability`` and its alias ``ceiling``: a replicate's scores, or a given split-half value."""
    if reliability is None:
        scored = score_all(y, {"label_reliability": ceiling})
        for m, per_model in scored.items():
            metrics[m]["label_reliability"] = metrics[m]["ceiling"] = per_model["label_reliability"]
    else:
        metrics["spearman"]["label_reliability"] = metrics["spearman"]["ceiling"] = reliability
    return metrics


def _uncertainty(metrics: dict, y: np.ndarray, preds: dict[str, np.ndarray], seed: int = 0) -> None:
    """``spearman_se``: each model's bootstrap SE over the test users, and ``spearman_diff_se``: the paired SE of the
    GNN's lead over each model (``bootstrap_spearman``); ``test_users``: how many users the table scores."""
    boot = bootstrap_spearman(y, preds, reference="gnn", seed=seed)
    metrics["spearman_se"] = boot["se"]
    metrics["spearman_diff_se"] = boot.get("diff_se", {})
    metrics["test_users"] = boot["users"]


def _active_users(metrics: dict, y: np.ndarray, preds: dict[str, np.ndarray], active: np.ndarray,
                  seed: int = 0) -> None:
    """``spearman_active`` (with ``spearman_active_se``, ``spearman_active_diff_se``, ``active_test_users``): every
    model on the test users with past activity (``has_activity``), when some test users have none. New users are one
    constant to every model; on real data they can be most of the test set, and then the whole-set Spearman says
    mostly how each model places that block, while this says how it ranks the users the past graph knows."""
    if active.all() or active.sum() < 3:
        return
    sub = {k: np.asarray(p, dtype=np.float64)[active] for k, p in preds.items()}
    metrics["spearman_active"] = {k: spearman(y[active], p) for k, p in sub.items()}
    boot = bootstrap_spearman(y[active], sub, reference="gnn", seed=seed)
    metrics["spearman_active_se"] = boot["se"]
    metrics["spearman_active_diff_se"] = boot.get("diff_se", {})
    metrics["active_test_users"] = boot["users"]


def _oracle(metrics: dict) -> None:
    """``spearman.oracle``: the truth's expected reach scored against the labels (``vs_truth``'s ``label``)."""
    label = metrics["spearman_vs_truth"].get("label")
    if label is not None:
        metrics["spearman"]["oracle"] = label


def vs_truth(y: np.ndarray, preds: dict[str, np.ndarray], truth: np.ndarray) -> dict:
    """Spearman of every model (and of the label ``y``) against the oracle's expected reach, over the test users
    the oracle simulated. Shapes: y, preds[*], truth [n] (truth NaN where not simulated)."""
    ok = np.isfinite(truth)
    if ok.sum() < 3:
        return {}
    out = {k: spearman(truth[ok], np.asarray(p, dtype=np.float64)[ok]) for k, p in preds.items()}
    out["label"] = spearman(truth[ok], y[ok])
    out["users"] = int(ok.sum())
    return out


def truth_of(user_ids: np.ndarray, truth: pa.Table, test_ids: np.ndarray) -> np.ndarray:
    """``expected_reach`` of ``test_ids`` (NaN where the oracle did not simulate). ``user_ids``: sorted user ids;
    ``truth``: ``_truth/users`` with ``id`` and ``expected_reach``. Shapes: test_ids [n] -> [n] float64."""
    out = np.full(len(user_ids), np.nan)
    pos = dense_index(user_ids, truth["id"].to_numpy(), "_truth/users.id")
    out[pos] = truth["expected_reach"].to_numpy(zero_copy_only=False).astype(np.float64)
    return out[dense_index(user_ids, test_ids, "labels.user_id")]


def gnn_test_predictions(graph: LocalGraph, embeddings: pa.Table, scores: np.ndarray | None = None) -> np.ndarray:
    """The written ``influence_score`` of every test user, in label order (``scores``: every user's, if read)."""
    scores = _scores_of(graph, embeddings) if scores is None else scores
    out = scores[graph.label_index[graph.split == "test"]]
    if np.isnan(out).any():
        raise ValueError(f"embeddings lack {int(np.isnan(out).sum())} test users; re-run `ripple embed`")
    return out


def engineered_of(graph: LocalGraph) -> np.ndarray:
    """``engineered_features`` of every user of ``graph``. Shapes: -> [N_user, F]."""
    src, dst = graph.follows_coo()
    colptr, author = graph.csc[CREATED]  # CSC over posts: one author per post
    shares = np.expm1(graph.x["content"][:, -1].astype(np.float64))  # last content column: log1p(times shared)
    return engineered_features(graph.x["user"], src, dst, graph.edge_attr[FOLLOWS], author,
                               np.repeat(shares, np.diff(colptr)))


@dataclass
class BaselineInputs:
    """What the baselines read, each as of the right time: ``rows`` {name: [L, F]} the LightGBM features of every
    label row as of the row's own cut time (``snapshot``); ``now`` {name: [N, F]} the same per user on the graph
    as it is (the test rows' time, and what a written ``influence_score`` is predicted from); ``follower_count``
    and ``pagerank`` [N] on that graph."""

    rows: dict[str, np.ndarray]
    now: dict[str, np.ndarray]
    follower_count: np.ndarray
    pagerank: np.ndarray


def baseline_inputs(graph: LocalGraph) -> BaselineInputs:
    """``BaselineInputs`` of a dataset's label rows: at one time, the graph's own features; at many cut times,
    each row's features from the graph as it stood before its time, the test rows at the last cut."""
    times = np.unique(graph.label_time) if graph.temporal else [None]
    test = graph.split == "test"
    rows: dict[str, np.ndarray] = {}
    for t in times:
        snap = graph if t is None else snapshot(graph, int(t))
        at = np.ones(len(graph.label_index), bool) if t is None else graph.label_time == t
        src, dst = snap.follows_coo()
        feats = baseline_features(snap.x["user"], src, dst, engineered_of(snap))
        for name, f in feats.items():
            rows.setdefault(name, np.zeros((len(at), f.shape[1])))[at] = f[graph.label_index[at]]
        if t is not None and (at & test).any() and not (at == test).all():
            raise ValueError(f"the test rows must be exactly the rows of the last cut time; rows at {iso(int(t))} mix "
                             "test with other splits (derive them with `ripple labels --cutoffs`)")
    followers = np.rint(np.expm1(snap.x["user"][:, 0].astype(np.float64)))  # the last time: the graph as it is
    return BaselineInputs(rows, feats, followers, pagerank(src, dst, snap.num_nodes("user")))


def _scores_of(graph: LocalGraph, embeddings: pa.Table, column: str = "influence_score") -> np.ndarray:
    """A column of the written embeddings for every user of ``graph`` (NaN rows for a user they lack): the
    ``influence_score`` (Shapes: [N]) or the ``embedding`` ([N, H])."""
    values = embeddings[column]
    if column == "embedding":
        values = np.asarray(values.combine_chunks().flatten()).reshape(len(embeddings), -1)
    else:
        values = values.to_numpy()
    out = np.full((graph.num_nodes("user"), *values.shape[1:]), np.nan)
    out[dense_index(graph.ids["user"], embeddings["user_id"].to_numpy(), "embeddings.user_id")] = values
    return out


def evaluate(graph: LocalGraph, embeddings: pa.Table, seed: int = 0, lightgbm_threads: int = 1,
             reliability: float | None = None, truth: pa.Table | None = None,
             gnn_rows: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Evaluation:
    """Metrics ``{"spearman": {model: v}, "kendall": ..., "ndcg_at_100": ..., "msle": ...}`` and, given the
    oracle's ``truth`` table, ``spearman_vs_truth``. ``reliability``: the labels' own split-half reliability
    (history labels); without it the replicate column is scored as the ceiling.

    Every model is scored on the same test rows, each with its features as of the row's time
    (``baseline_inputs``). ``hybrid`` blends the GNN with engineered LightGBM, its weight chosen on the validation
    rows; ``stacked`` is a LightGBM over the engineered features and the GNN's prediction and embedding
    (``stack_features``), fit on the training rows like the other LightGBMs (where the embeddings table has an
    ``embedding`` column). ``influence_score`` (``metrics["influence_score"]``) names the model with the best
    validation Spearman, whose predictions for every user ``Evaluation.scores`` holds when it is not the GNN.

    ``gnn_rows``: ``{split: (predicted reach [L_split], embedding [L_split, H])}`` of the GNN for the ``train``
    and ``val`` rows in label order, each as of its row's time (a training table at many cut times, where they
    are not the written embeddings of the graph as it is); without it they are read from ``embeddings``."""
    test, val = graph.split == "test", graph.split == "val"
    reach = graph.reach.astype(np.float64)
    y = reach[test]
    inputs = baseline_inputs(graph)
    test_users = graph.label_index[test]
    gnn_now = _scores_of(graph, embeddings)
    preds = {"gnn": gnn_test_predictions(graph, embeddings, gnn_now),
             "follower_count": inputs.follower_count[test_users], "pagerank": inputs.pagerank[test_users]}
    rows = _gnn_rows(graph, embeddings, gnn_rows, gnn_now)
    val_preds = {"gnn": rows["val"][0] if "val" in rows else gnn_now[graph.label_index[val]]}
    now = {"gnn": gnn_now}
    for name, model in fit_baselines(inputs.rows, reach, graph.split, seed, lightgbm_threads).items():
        preds[name] = predict_lightgbm(model, inputs.rows[name][test])
        val_preds[name] = predict_lightgbm(model, inputs.rows[name][val])
        now[name] = predict_lightgbm(model, inputs.now[name])
    if "lightgbm_engineered" in inputs.rows and {"train", "val", "test", "now"} <= set(rows):
        eng, tr = inputs.rows["lightgbm_engineered"], graph.split == "train"
        x = {k: stack_features(*rows[k], eng[m]) for k, m in (("train", tr), ("val", val), ("test", test))}
        x["now"] = stack_features(*rows["now"], inputs.now["lightgbm_engineered"])
        model = fit_lightgbm(x["train"], reach[tr], x["val"], reach[val], seed=seed, num_threads=lightgbm_threads)
        for d, k in ((preds, "test"), (val_preds, "val"), (now, "now")):
            d["stacked"] = predict_lightgbm(model, x[k])
    w = None
    if "lightgbm_engineered" in preds and val.sum() > 2:
        w = hybrid_weight(reach[val], val_preds["gnn"], val_preds["lightgbm_engineered"])
        for d in (preds, val_preds, now):
            d["hybrid"] = hybrid(d["gnn"], d["lightgbm_engineered"], w)
    metrics = _reliability(score_all(y, preds), y, graph.replicate[test].astype(np.float64), reliability)
    val_rho = {k: spearman(reach[val], v) for k, v in val_preds.items()} if val.sum() > 2 else {}
    winner = max(val_rho, key=val_rho.get) if val_rho else "gnn"
    metrics["val_spearman"] = val_rho
    metrics["influence_score"] = {"model": winner, "chosen_by": "validation Spearman", "hybrid_gnn_weight": w}
    _uncertainty(metrics, y, preds, seed)
    _active_users(metrics, y, preds, has_activity(graph.x["user"][test_users]), seed)
    if truth is not None:
        test_ids = graph.ids["user"][test_users]
        metrics["spearman_vs_truth"] = vs_truth(y, preds, truth_of(graph.ids["user"], truth, test_ids))
        _oracle(metrics)
    return Evaluation(metrics, y, preds[winner], None if winner == "gnn" else now[winner])


def _gnn_rows(graph: LocalGraph, embeddings: pa.Table, given: dict | None, scores: np.ndarray
              ) -> dict[str, tuple[np.ndarray, ...]]:
    """The GNN's (predicted reach, embedding) per split's label rows and for every user (``now``): the given
    training and validation rows (as of their times), the rest from the written embeddings of the graph as it is
    (the test rows always: their time is the graph's). Without an ``embedding`` column, only the given rows.
    ``scores``: the written ``influence_score`` of every user (``_scores_of``), read once by the caller."""
    out = dict(given or {})
    if "embedding" not in embeddings.column_names:
        return out
    now = (scores, _scores_of(graph, embeddings, "embedding"))
    out["now"] = now
    for split in ("train", "val", "test"):  # test rows: always the graph as it is (the test time)
        if split not in out or split == "test":
            users = graph.label_index[graph.split == split]
            out[split] = (now[0][users], now[1][users])
    return out


def evaluate_from_tables(labels: pa.Table, users: pa.Table, embeddings: pa.Table,
                         reliability: float | None = None, truth: pa.Table | None = None) -> Evaluation:
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
    preds = {"gnn": gnn, "follower_count": followers[test_users]}
    replicate = labels["cascade_reach_replicate"].to_numpy(zero_copy_only=False)[test].astype(np.float64)
    metrics = _reliability(score_all(y, preds), y, replicate, reliability)
    _uncertainty(metrics, y, preds)
    if truth is not None:
        metrics["spearman_vs_truth"] = vs_truth(y, preds, truth_of(ids, truth, labels["user_id"].to_numpy()[test]))
        _oracle(metrics)
    return Evaluation(metrics, y, gnn)
