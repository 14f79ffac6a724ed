"""Tests for ripple.evaluate.baselines: PageRank vs networkx, hand-computed hop aggregates, the LightGBM pipeline."""
from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import pytest

from ripple.evaluate.baselines import (BASELINE_NAMES, fit_lightgbm, hop_aggregates, pagerank, predict_lightgbm,
                                       run_baselines)
from ripple.evaluate.metrics import spearman


def _random_graph(rng, n, mean_out):
    """Each user follows 1 + Poisson(mean_out - 1) distinct random other users (no self loops)."""
    src, dst = [], []
    for u in range(n):
        k = min(1 + rng.poisson(mean_out - 1), n - 1)
        targets = rng.choice(n - 1, size=k, replace=False)
        targets[targets >= u] += 1
        src.append(np.full(k, u))
        dst.append(targets)
    return np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64)


# ----------------------------------------------------------------------------------------------------- pagerank


def test_pagerank_matches_networkx():
    rng = np.random.default_rng(0)
    n = 40
    src, dst = _random_graph(rng, n, 3)
    keep = (src >= 5)  # users 0..4 follow nobody: dangling nodes
    src, dst = src[keep], dst[keep]
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    expected = nx.pagerank(g, alpha=0.85, tol=1e-12, max_iter=500)
    got = pagerank(src, dst, n)
    assert got.shape == (n,)
    assert got.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(got, [expected[i] for i in range(n)], rtol=1e-6, atol=1e-9)


def test_pagerank_small_literal_and_edge_cases():
    # 0 -> 1 and 2 -> 1: user 1 is followed by both and must rank highest; 0 and 2 are symmetric
    r = pagerank(np.array([0, 2]), np.array([1, 1]), 3)
    assert r[1] > r[0] and r[0] == pytest.approx(r[2])
    # no edges at all: uniform
    np.testing.assert_allclose(pagerank(np.zeros(0, np.int64), np.zeros(0, np.int64), 4), np.full(4, 0.25))
    assert pagerank(np.zeros(0, np.int64), np.zeros(0, np.int64), 0).shape == (0,)
    with pytest.raises(ValueError, match=r"dst indices must lie in \[0, 3\), got min=3 max=3"):
        pagerank(np.array([0]), np.array([3]), 3)
    with pytest.raises(ValueError, match="len\\(src\\)=2 and len\\(dst\\)=1"):
        pagerank(np.array([0, 1]), np.array([1]), 3)
    with pytest.raises(ValueError, match="damping"):
        pagerank(np.array([0]), np.array([1]), 3, damping=1.0)


def test_pagerank_warns_when_not_converged(caplog):
    with caplog.at_level(logging.WARNING, logger="ripple.evaluate.baselines"):
        r = pagerank(np.array([0, 1]), np.array([1, 2]), 3, max_iter=1)
    assert "did not converge" in caplog.text
    assert r.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------- features


def test_hop_aggregates_literal_graph():
    # edges u -> v (u follows v): 0->2, 1->2, 2->3, 0->3. Followers: 2 <- {0, 1}, 3 <- {2, 0}; 0 and 1 have none.
    src = np.array([0, 1, 2, 0])
    dst = np.array([2, 2, 3, 3])
    x = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0], [7.0, 40.0]])
    got = hop_aggregates(x, src, dst, 4, hops=2)
    # hop 1: mean over followers; 2 -> mean(x0, x1) = [2, 15], 3 -> mean(x2, x0) = [3, 20]; counts [0, 0, 2, 2]
    # hop 2: mean over followers of their hop-1 means; 2 -> mean(0, 0) = [0, 0], 3 -> mean([2, 15], 0) = [1, 7.5]
    #        2-hop paths ending at v: 2 -> indeg(0) + indeg(1) = 0, 3 -> indeg(2) + indeg(0) = 2
    l2 = np.log(3.0)
    expected = np.array([
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [2.0, 15.0, l2, 0.0, 0.0, 0.0],
        [3.0, 20.0, l2, 1.0, 7.5, l2],
    ])
    assert got.shape == (4, 2 * (2 + 1))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hop_aggregates(x, src, dst, 4, hops=1), expected[:, :3], rtol=1e-12, atol=1e-12)


def test_hop_aggregates_validation():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="x must have 4 rows, got 3"):
        hop_aggregates(np.zeros((3, 2)), np.array([0]), np.array([1]), 4)
    with pytest.raises(ValueError, match="hops must be a positive integer, got 0"):
        hop_aggregates(x, np.array([0]), np.array([1]), 4, hops=0)
    with pytest.raises(ValueError, match=r"src indices must lie in \[0, 4\), got min=-1"):
        hop_aggregates(x, np.array([-1]), np.array([1]), 4)


# ----------------------------------------------------------------------------------------------------- lightgbm


def test_fit_predict_lightgbm_learns_simple_function():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(600, 3))
    y = np.expm1(2.0 * x[:, 0] + 0.5)
    model = fit_lightgbm(x[:400], y[:400], x[400:500], y[400:500], seed=0, num_threads=1)
    pred = predict_lightgbm(model, x[500:])
    assert pred.shape == (100,) and np.all(pred >= 0)
    assert spearman(y[500:], pred) > 0.95
    # deterministic for a fixed seed
    again = fit_lightgbm(x[:400], y[:400], x[400:500], y[400:500], seed=0, num_threads=1)
    np.testing.assert_array_equal(predict_lightgbm(again, x[500:]), pred)
    with pytest.raises(ValueError, match="x must have 3 columns"):
        predict_lightgbm(model, x[:, :2])
    with pytest.raises(ValueError, match="y_train must have length 400, got 399"):
        fit_lightgbm(x[:400], y[:399], x[400:500], y[400:500])
    with pytest.raises(ValueError, match="y_val must be finite and > -1"):
        fit_lightgbm(x[:400], y[:400], x[400:500], np.full(100, -2.0))


def _synthetic_problem(seed=0, n=3000):
    """Reach driven by followers' and followers-of-followers' engagement, which flat features cannot see."""
    rng = np.random.default_rng(seed)
    src, dst = _random_graph(rng, n, 5)
    indeg = np.bincount(dst, minlength=n)
    engagement = rng.uniform(0, 1, n).astype(np.float32)
    topics = rng.normal(size=(n, 16)).astype(np.float32)
    agg = hop_aggregates(engagement[:, None].astype(np.float64), src, dst, n, hops=2)
    m1, m2 = agg[:, 0], agg[:, 2]
    log_reach = 0.3 * np.log1p(indeg) + 3.0 * m1 + 3.0 * m2 + rng.normal(0, 0.1, n)
    reach = 1.0 + np.expm1(log_reach.clip(0))
    label_idx = rng.permutation(n)[: int(0.9 * n)]
    split = np.array(["train"] * len(label_idx), dtype=object)
    u = rng.uniform(size=len(label_idx))
    split[u > 0.6] = "val"
    split[u > 0.8] = "test"
    following = np.bincount(src, minlength=n)
    x_flat = np.column_stack([np.log1p(indeg), engagement, np.log1p(following), topics])
    return dict(x_flat=x_flat, follower_count=indeg.astype(np.int64), follows_src=src, follows_dst=dst,
                label_idx=label_idx, reach=reach[label_idx], split=split.astype(str))


def test_run_baselines_two_hop_beats_flat():
    prob = _synthetic_problem()
    preds = run_baselines(**prob, seed=0, num_threads=1)
    test_mask = prob["split"] == "test"
    y_test = prob["reach"][test_mask]
    assert list(preds) == [n for n in BASELINE_NAMES if n != "lightgbm_engineered"]  # no x_engineered given
    for name, p in preds.items():
        assert p.shape == y_test.shape, name
        assert np.all(np.isfinite(p)), name
    np.testing.assert_array_equal(preds["follower_count"], prob["follower_count"][prob["label_idx"][test_mask]])
    rho = {name: spearman(y_test, p) for name, p in preds.items()}
    assert rho["lightgbm_2hop"] > 0.8, rho
    assert rho["lightgbm_2hop"] > rho["lightgbm_flat"] + 0.2, rho


def test_run_baselines_validation():
    prob = _synthetic_problem(n=200)
    bad = dict(prob, split=np.where(prob["split"] == "val", "valid", prob["split"]))
    with pytest.raises(ValueError, match=r"split values must be 'train', 'val' or 'test', got \['valid'\]"):
        run_baselines(**bad)
    no_val = dict(prob, split=np.where(prob["split"] == "val", "train", prob["split"]))
    with pytest.raises(ValueError, match="split has no 'val' rows"):
        run_baselines(**no_val)
    with pytest.raises(ValueError, match="reach must have length"):
        run_baselines(**dict(prob, reach=prob["reach"][:-1]))
    with pytest.raises(ValueError, match=r"label_idx must lie in \[0, 200\)"):
        run_baselines(**dict(prob, label_idx=prob["label_idx"] + 200))
    with pytest.raises(ValueError, match="x_flat must be 2-D"):
        run_baselines(**dict(prob, x_flat=prob["x_flat"][:, 0]))
    with pytest.raises(ValueError, match="follower_count must have length 200, got 199"):
        run_baselines(**dict(prob, follower_count=prob["follower_count"][:-1]))
    with pytest.raises(ValueError, match="follower_count must be >= 0, got min=-1"):
        run_baselines(**dict(prob, follower_count=np.where(np.arange(200) == 0, -1, prob["follower_count"])))
    with pytest.raises(ValueError, match=r"src indices must lie in \[0, 200\)"):
        run_baselines(**dict(prob, follows_src=prob["follows_src"] + 200))


def test_engineered_features_hand_computed():
    """Users 0..3; 1 and 2 follow 0, 3 follows 1 (src follows dst). Follower sums and means of the edge
    features, the followers' shares, own-post reshares and 2-hop sums, checked by hand."""
    from ripple.evaluate.baselines import ENGINEERED_NAMES, engineered_features

    x = np.zeros((4, 3))
    x[:, 1] = np.log1p([0.0, 1.0, 2.0, 3.0])  # log1p(10 x avg_engagement)
    x = np.hstack([x, np.log1p([[0.0], [4.0], [9.0], [1.0]])])  # column 3: log1p(shares made)
    src, dst = np.array([1, 2, 3]), np.array([0, 0, 1])
    freq = np.array([3.0, 1.0, 7.0])
    attr = np.stack([np.log1p(freq), np.array([1.0, 2.0, 0.5])], 1)
    author, shares = np.array([0, 0, 1]), np.array([5.0, 1.0, 2.0])  # user 0 posted twice, user 1 once
    f = engineered_features(x, src, dst, attr, author, shares)
    assert f.shape == (4, x.shape[1] + len(ENGINEERED_NAMES))
    col = {n: f[:, x.shape[1] + i] for i, n in enumerate(ENGINEERED_NAMES)}
    assert np.allclose(f[:, :x.shape[1]], x)
    assert np.allclose(col["log_followers"], np.log1p([2, 1, 0, 0]))
    assert np.allclose(col["log_sum_interaction"], np.log1p([4.0, 7.0, 0, 0]))
    assert np.allclose(col["mean_interaction"], [2.0, 7.0, 0, 0])
    assert np.allclose(col["mean_tie_age"], [1.5, 0.5, 0, 0])
    assert np.allclose(col["log_sum_follower_shares"], np.log1p([4.0 + 9.0, 1.0, 0, 0]))
    assert np.allclose(col["log_sum_interaction_x_follower_shares"], np.log1p([3 * 4.0 + 1 * 9.0, 7 * 1.0, 0, 0]))
    assert np.allclose(col["mean_follower_engagement"], [(np.log1p(1) + np.log1p(2)) / 2, np.log1p(3), 0, 0])
    assert np.allclose(col["log_own_post_reshares"], np.log1p([6.0, 2.0, 0, 0]))
    assert np.allclose(col["log_reshares_per_post"], np.log1p([3.0, 2.0, 0, 0]))
    # 2 hops: user 0's followers are 1 (1 follower: 3) and 2 (none)
    assert np.allclose(col["log_paths_2hop"], np.log1p([1.0, 0, 0, 0]))
    assert np.allclose(col["log_sum_interaction_2hop"], np.log1p([3.0 * 7.0, 0, 0, 0]))
    assert np.allclose(col["log_sum_follower_shares_2hop"], np.log1p([1.0, 0, 0, 0]))
