"""Tests for ripple.data.ic, the vectorized independent-cascade simulator.

Exact answers on tiny graphs, exact reachability / BFS-depth checks on {0,1}-probability graphs across every
internal code path (bitmap vs sorted-key dedupe, chunk splitting, piecewise frontier expansion), a statistical
comparison against the independent C++ simulator ``cynetdiff``, validation errors and determinism.
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from ripple.data import ic
from ripple.data.ic import ICGraph, simulate_cascades, simulate_reach, simulate_set_spread


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _chain(p: float) -> ICGraph:
    return ICGraph(np.array([0, 1]), np.array([1, 2]), np.array([p, p]), 3)


# ---------------------------------------------------------------------------------------------------------------
# tiny literal graphs


def test_chain_p1_exact():
    r = simulate_reach(_chain(1.0), np.array([0, 1, 2]), 50, _rng())
    assert r.dtype == np.float64 and r.shape == (3,)
    np.testing.assert_array_equal(r, [3.0, 2.0, 1.0])


def test_chain_p0_exact():
    r = simulate_reach(_chain(0.0), np.array([0, 1, 2]), 50, _rng())
    np.testing.assert_array_equal(r, [1.0, 1.0, 1.0])


def test_star_half():
    # centre 0 -> leaves 1..4 with p = 0.5: reach = 1 + Binomial(4, 0.5), mean 3, variance 1.
    g = ICGraph(np.zeros(4, dtype=np.int64), np.arange(1, 5), np.full(4, 0.5), 5)
    n = 20_000
    r = simulate_reach(g, np.array([0, 3]), n, _rng(1))
    assert abs(r[0] - 3.0) < 5 * 1.0 / math.sqrt(n)
    assert r[1] == 1.0  # a leaf influences nobody: direction is src -> dst


def test_isolated_node_and_empty_graph():
    g = ICGraph(np.array([0]), np.array([1]), np.array([1.0]), 4)
    np.testing.assert_array_equal(simulate_reach(g, np.array([3, 2]), 10, _rng()), [1.0, 1.0])
    empty = ICGraph(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([]), 3)
    np.testing.assert_array_equal(simulate_reach(empty, np.array([0, 1, 2]), 5, _rng()), [1.0, 1.0, 1.0])
    assert simulate_reach(g, np.array([], dtype=np.int64), 5, _rng()).shape == (0,)


def test_set_spread_no_double_count():
    g = _chain(1.0)
    assert simulate_set_spread(g, np.array([0, 1]), 20, _rng()) == (3.0, 0.0)
    assert simulate_set_spread(g, np.array([0, 0, 2]), 20, _rng()) == (3.0, 0.0)
    assert simulate_set_spread(g, np.array([2, 1]), 20, _rng()) == (2.0, 0.0)
    assert simulate_set_spread(g, np.array([], dtype=np.int64), 20, _rng()) == (0.0, 0.0)


def test_set_spread_star_stats():
    g = ICGraph(np.zeros(4, dtype=np.int64), np.arange(1, 5), np.full(4, 0.5), 5)
    mean, se = simulate_set_spread(g, np.array([0, 1]), 10_000, _rng(2))
    # leaf 1 is a seed, so spread = 2 + Binomial(3, 0.5): mean 3.5, sd sqrt(0.75)
    assert abs(mean - 3.5) < 0.05
    assert abs(se - math.sqrt(0.75 / 10_000)) < 2e-3


def test_cascades_structure():
    g = ICGraph(np.zeros(4, dtype=np.int64), np.arange(1, 5), np.full(4, 0.5), 5)
    seeds = np.array([0, 0, 3, 0])
    c, node, rnd = simulate_cascades(g, seeds, _rng(3))
    assert c.dtype == node.dtype == rnd.dtype == np.int64
    # every cascade has its seed at round 0 and nothing else at round 0
    r0 = rnd == 0
    np.testing.assert_array_equal(c[r0], np.arange(len(seeds)))
    np.testing.assert_array_equal(node[r0], seeds)
    # no duplicate (cascade, node)
    keys = c * g.num_nodes + node
    assert np.unique(keys).size == keys.size
    # leaves activate in round 1 only; cascade 2 (seed 3, a leaf) is just its seed
    assert set(rnd[~r0].tolist()) <= {1}
    assert (c == 2).sum() == 1
    # sorted by (cascade, round, node)
    assert np.all(np.diff(c) >= 0)


# ---------------------------------------------------------------------------------------------------------------
# exact checks on {0,1}-probability graphs, over every internal path


def _random_01_graph(seed: int, n: int = 200, m: int = 500):
    r = _rng(seed)
    src = r.integers(0, n, m)
    dst = r.integers(0, n, m)
    p = (r.random(m) < 0.6).astype(np.float64)
    dg = nx.DiGraph()
    dg.add_nodes_from(range(n))
    dg.add_edges_from((int(u), int(v)) for u, v, q in zip(src, dst, p) if q == 1.0)
    return ICGraph(src, dst, p, n), dg


@pytest.fixture(params=["default", "sorted", "bitmap", "tiny_budget"])
def mode(request, monkeypatch):
    if request.param == "sorted":
        monkeypatch.setattr(ic, "_BITMAP_MAX_CELLS", 0)
        return {}
    if request.param == "bitmap":
        monkeypatch.setattr(ic, "_BITMAP_MIN_REACH_RATIO", 10**12)
        monkeypatch.setattr(ic, "_PROBE_SIMS", 7)
        return {}
    if request.param == "tiny_budget":
        # forces chunk splits and piecewise frontier expansion
        return {"max_active_pairs": 37}
    return {}


def test_deterministic_graph_exact_reach_and_rounds(mode):
    g, dg = _random_01_graph(5)
    seeds = np.arange(g.num_nodes)
    expect = np.array([len(nx.descendants(dg, s)) + 1 for s in seeds], dtype=np.float64)
    np.testing.assert_array_equal(simulate_reach(g, seeds, 3, _rng(), **mode), expect)

    c, node, rnd = simulate_cascades(g, seeds, _rng(), **mode)
    for s in (0, 17, 123):
        dist = nx.single_source_shortest_path_length(dg, s)
        sel = c == s
        got = dict(zip(node[sel].tolist(), rnd[sel].tolist()))
        assert got == dist

    seed_set = np.array([3, 9, 9, 150])
    reach_set = set(seed_set.tolist()).union(*(nx.descendants(dg, int(s)) for s in seed_set))
    assert simulate_set_spread(g, seed_set, 4, _rng(), **mode) == (float(len(reach_set)), 0.0)


def test_budget_modes_agree_statistically():
    r = _rng(11)
    n, m = 300, 1500
    g = ICGraph(r.integers(0, n, m), r.integers(0, n, m), r.uniform(0.05, 0.4, m), n)
    seeds = np.array([0, 1, 2])
    a = simulate_reach(g, seeds, 1500, _rng(1))
    b = simulate_reach(g, seeds, 1500, _rng(2), max_active_pairs=500)
    assert np.all(np.abs(a - b) < 0.1 * np.maximum(a, b) + 1.0)


# ---------------------------------------------------------------------------------------------------------------
# agreement with cynetdiff


def _cynetdiff_reach(src, dst, p, n, seeds, num_sims, seed):
    from cynetdiff.utils import networkx_to_ic_model

    dg = nx.DiGraph()
    dg.add_nodes_from(range(n))
    for u, v, q in zip(src.tolist(), dst.tolist(), p.tolist()):
        dg.add_edge(u, v, activation_prob=q)
    model, mapping = networkx_to_ic_model(dg, rng=seed)
    assert all(mapping[i] == i for i in range(n))
    out = np.empty((len(seeds), num_sims))
    for i, s in enumerate(seeds):
        model.set_seeds([int(x) for x in np.atleast_1d(s)])
        for j in range(num_sims):
            model.reset_model()
            model.advance_until_completion()
            out[i, j] = model.get_num_activated_nodes()
    return out


def test_agrees_with_cynetdiff():
    r = _rng(42)
    n = 300
    # simple directed graph (cynetdiff rejects self loops / multi-edges), made clearly asymmetric:
    # node 0 is an out-hub, node 1 an in-sink with no out-edges.
    pairs = set()
    while len(pairs) < 1450:
        u, v = (int(x) for x in r.integers(2, n, 2))
        if u != v:
            pairs.add((u, v))
    pairs |= {(0, int(v)) for v in r.choice(np.arange(2, n), 30, replace=False)}
    pairs |= {(int(u), 1) for u in r.choice(np.arange(2, n), 30, replace=False)}
    pairs = sorted(pairs)
    src = np.array([u for u, _ in pairs])
    dst = np.array([v for _, v in pairs])
    p = r.uniform(0.01, 0.3, len(pairs)).astype(np.float32).astype(np.float64)  # cynetdiff stores float32
    g = ICGraph(src, dst, p, n)

    seeds = np.array([0, 1, 2, 57, 199])
    num_sims = 2000
    ours = np.empty((len(seeds), num_sims))
    for i, s in enumerate(seeds):  # per-sim samples for the variance, via single-sim cascades
        c, _, _ = simulate_cascades(g, np.full(num_sims, s), _rng(100 + i))
        ours[i] = np.bincount(c, minlength=num_sims)
    theirs = _cynetdiff_reach(src, dst, p, n, seeds, num_sims, seed=7)

    assert np.all(ours[1] == 1) and np.all(theirs[1] == 1)  # the sink reaches only itself in both
    assert ours[0].mean() > 2.0  # the hub spreads: direction is src -> dst
    se = np.sqrt(ours.var(axis=1, ddof=1) / num_sims + theirs.var(axis=1, ddof=1) / num_sims)
    diff = np.abs(ours.mean(axis=1) - theirs.mean(axis=1))
    assert np.all(diff < 4 * se + 0.02), (ours.mean(axis=1), theirs.mean(axis=1), se)

    # simulate_reach gives the same means
    means = simulate_reach(g, seeds, num_sims, _rng(9))
    assert np.all(np.abs(means - theirs.mean(axis=1)) < 4 * se + 0.02)

    # a seed set
    mean, stderr = simulate_set_spread(g, np.array([0, 2, 57]), num_sims, _rng(10))
    t = _cynetdiff_reach(src, dst, p, n, [np.array([0, 2, 57])], num_sims, seed=8)[0]
    assert abs(mean - t.mean()) < 4 * math.hypot(stderr, t.std(ddof=1) / math.sqrt(num_sims)) + 0.02


# ---------------------------------------------------------------------------------------------------------------
# validation


def test_p_out_of_range_message():
    with pytest.raises(ValueError, match=r"p\[1\] = 1\.5.*\[0, 1\]"):
        ICGraph([0, 1], [1, 2], [0.5, 1.5], 3)
    with pytest.raises(ValueError, match=r"p\[0\] = -0\.1"):
        ICGraph([0], [1], [-0.1], 3)
    with pytest.raises(ValueError, match=r"p\[0\] = nan"):
        ICGraph([0], [1], [float("nan")], 3)


def test_length_mismatch_message():
    with pytest.raises(ValueError, match=r"same length.*len\(src\)=2.*len\(dst\)=1.*len\(p\)=2"):
        ICGraph([0, 1], [1], [0.5, 0.5], 3)


def test_ids_out_of_range_message():
    with pytest.raises(ValueError, match=r"dst\[2\] = 3 is out of range.*\[0, 3\)"):
        ICGraph([0, 1, 2], [1, 2, 3], [0.1, 0.1, 0.1], 3)
    with pytest.raises(ValueError, match=r"src\[0\] = -1"):
        ICGraph([-1], [1], [0.1], 3)
    with pytest.raises(ValueError, match="integer dtype"):
        ICGraph([0.0, 1.5], [1, 2], [0.1, 0.1], 3)
    g = _chain(1.0)
    with pytest.raises(ValueError, match=r"seeds\[1\] = 7"):
        simulate_reach(g, np.array([0, 7]), 3, _rng())
    with pytest.raises(ValueError, match="num_sims"):
        simulate_reach(g, np.array([0]), 0, _rng())
    with pytest.raises(TypeError, match="Generator"):
        simulate_reach(g, np.array([0]), 3, 123)


# ---------------------------------------------------------------------------------------------------------------
# determinism


def test_determinism():
    r = _rng(3)
    n, m = 400, 3000
    g = ICGraph(r.integers(0, n, m), r.integers(0, n, m), r.uniform(0.0, 0.3, m), n)
    seeds = np.arange(0, n, 7)
    a = simulate_reach(g, seeds, 50, _rng(123))
    b = simulate_reach(g, seeds, 50, _rng(123))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, simulate_reach(g, seeds, 50, _rng(124)))
    ca = simulate_cascades(g, seeds, _rng(5))
    cb = simulate_cascades(g, seeds, _rng(5))
    for x, y in zip(ca, cb):
        np.testing.assert_array_equal(x, y)
    assert simulate_set_spread(g, seeds[:3], 200, _rng(6)) == simulate_set_spread(g, seeds[:3], 200, _rng(6))
