"""A quality test that can fail: on a fixed generated graph the trained GNN must beat follower count and LightGBM
on flat features by margins set from measured runs, and a broken model must fail the same check.

Broken models: the same model trained and scored on the graph with every edge removed (message passing
disabled; the users' own features, follower counts included, stay), and the trained model's predictions shuffled,
made constant or reversed.

Graph: 10,000 users, generator seed 0 (1,510 test users: one Spearman has a standard error of about 0.02). At 3,000
users the neighbourhood adds nothing measurable (GNN 0.714-0.722, the same model without message passing
0.706-0.726: too few training users to learn from it), so a no-message-passing model could not fail there. The model
trains in this process with the worker loop's own steps and is scored layer-wise, as a run scores it
(``ripple.train.local.fit_in_process``): 6 epochs at batch 128 (about 330 optimizer steps), the native sampler.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from ripple.config import RippleConfig
from ripple.data.dataset import Dataset
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.graph import LocalGraph, load_local_graph
from ripple.evaluate.baselines import fit_lightgbm, predict_lightgbm
from ripple.evaluate.metrics import spearman
from ripple.train.local import fit_in_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

USERS, SEED, EPOCHS, BATCH = 10000, 0, 6, 128
#: one run of this file's setup (test Spearman); the bars sit between the trained GNN and the best broken model
MEASURED = {"gnn": 0.747, "no_message_passing": 0.690, "follower_count": 0.395, "lightgbm_flat": 0.702}
MARGIN_OVER_FOLLOWER_COUNT = 0.25
MARGIN_OVER_LIGHTGBM_FLAT = 0.02  # the GNN clears it by 0.025, the model without message passing misses by 0.032


def without_edges(g: LocalGraph) -> LocalGraph:
    """The graph with every relation emptied: a model on it passes no messages (own features unchanged)."""
    csc = {et: (np.zeros_like(colptr), row[:0]) for et, (colptr, row) in g.csc.items()}
    return dataclasses.replace(g, csc=csc, edge_attr={et: a[:0] for et, a in g.edge_attr.items()})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # the machine's cores for this one (the session's tests run single-threaded): the tier's longest test
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, os.cpu_count() or 1))
    try:
        yield _train(str(tmp_path_factory.mktemp("quality") / "data"))
    finally:
        torch.set_num_threads(threads)


def _train(data: str) -> dict:
    generate(data, GeneratorConfig(users=USERS, seed=SEED))
    g = load_local_graph(Dataset(data))
    cfg = RippleConfig()
    cfg.train.epochs, cfg.train.patience = EPOCHS, 4
    cfg.sampling.batch_size, cfg.sampling.backend = BATCH, "native"
    test = g.split == "test"
    tr, va = g.split == "train", g.split == "val"
    x = g.x["user"]
    flat = fit_lightgbm(x[g.label_index[tr]], g.reach[tr], x[g.label_index[va]], g.reach[va], seed=0)
    return {"y": g.reach[test].astype(np.float64), "gnn": fit_in_process(g, cfg)["test_pred"],
            "no_message_passing": fit_in_process(without_edges(g), cfg)["test_pred"],
            "follower_count": np.expm1(x[g.label_index[test], 0].astype(np.float64)),
            "lightgbm_flat": predict_lightgbm(flat, x[g.label_index[test]])}


def check(y, pred, follower_count, lightgbm_flat) -> float:
    """The bar a trained GNN clears on this graph; returns its Spearman. Raises AssertionError below it."""
    rho = spearman(y, pred)
    fc, flat = spearman(y, follower_count), spearman(y, lightgbm_flat)
    assert rho >= fc + MARGIN_OVER_FOLLOWER_COUNT, f"gnn {rho:.3f} vs follower_count {fc:.3f}"
    assert rho >= flat + MARGIN_OVER_LIGHTGBM_FLAT, f"gnn {rho:.3f} vs lightgbm_flat {flat:.3f}"
    return rho


def test_the_trained_gnn_clears_the_bar(trained):
    scores = {k: spearman(trained["y"], trained[k]) for k in MEASURED}
    print("test Spearman:", {k: round(v, 3) for k, v in scores.items()})
    rho = check(trained["y"], trained["gnn"], trained["follower_count"], trained["lightgbm_flat"])
    assert np.isfinite(rho)


def test_without_message_passing_the_same_model_fails(trained):
    with pytest.raises(AssertionError, match="lightgbm_flat"):
        check(trained["y"], trained["no_message_passing"], trained["follower_count"], trained["lightgbm_flat"])


@pytest.mark.parametrize("break_it", ["shuffled", "constant", "reversed"])
def test_a_broken_model_fails_the_same_check(trained, break_it):
    pred = trained["gnn"]
    broken = {"shuffled": np.random.default_rng(0).permutation(pred), "constant": np.full_like(pred, pred.mean()),
              "reversed": -pred}[break_it]
    with pytest.raises(AssertionError):
        check(trained["y"], broken, trained["follower_count"], trained["lightgbm_flat"])
