"""Influence maximization: the overlap-aware greedy, the baselines, the cynetdiff evaluator and ``ripple seeds``.

Tiny literal graphs only. The end-to-end CLI tests build a real run layout without training: a ``config.yaml``
written from ``RippleConfig`` and embeddings committed through ``ripple.data.storage`` (what ``ripple train`` leaves
behind), over the tiny dataset of ``tests/tiny_dataset.py``.
"""
from __future__ import annotations

import itertools
import json
import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from images import assert_png
from tiny_dataset import FOLLOWS, NUM_USERS, tiny_tables, write_tiny_dataset

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, main
from ripple.config import RippleConfig
from ripple.data.storage import Store, begin, commit, write_part
from ripple.infer.embed import embeddings_table
from ripple.influence.greedy import build_footprints, degree_discount, lookahead_reach, overlap_greedy, top_k
from ripple.influence.spread import SpreadOracle, celf

# ----------------------------------------------------------------------------------------------- a literal graph
# Hubs 0 and 1 are followed by the same ten users (10..19); hub 2 by eight others (20..27). By predicted reach alone
# the two overlapping hubs are the top two; a set that reaches more users takes one of them and hub 2.
HUB_A, HUB_B, HUB_C = 0, 1, 2
SHARED_FOLLOWERS = list(range(10, 20))
OWN_FOLLOWERS = list(range(20, 28))
REACH = {HUB_A: 11.0, HUB_B: 10.5, HUB_C: 9.0}


def _hub_edges():
    """follows rows (follower, followee) of the literal hub graph."""
    rows = [(f, HUB_A) for f in SHARED_FOLLOWERS] + [(f, HUB_B) for f in SHARED_FOLLOWERS]
    rows += [(f, HUB_C) for f in OWN_FOLLOWERS]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def _hub_footprints(hop2: bool = False):
    follower, followee = _hub_edges()
    cand = np.array([HUB_A, HUB_B, HUB_C])
    pos = np.searchsorted(cand, followee)
    kw = {}
    if hop2:  # nobody follows the followers: an empty second hop must change nothing
        empty = np.zeros(0, np.int64)
        kw = dict(hop2_mid=empty, hop2_node=empty, hop2_weight=np.zeros(0), mid_keys=empty, mid_onward=np.zeros(0))
    return build_footprints(cand, np.array([REACH[c] for c in cand]), pos, follower, np.full(follower.shape[0], 0.5),
                            **kw)


@pytest.mark.parametrize("hop2", [False, True])
def test_greedy_avoids_the_overlapping_hub(hop2):
    fp = _hub_footprints(hop2)
    chosen, gains = overlap_greedy(2, fp)
    picked = fp.keys[fp.self_node[chosen]].tolist()
    assert picked == [HUB_A, HUB_C]  # not the top-2 by score, {A, B}
    assert gains[0] == pytest.approx(REACH[HUB_A]) and gains[1] == pytest.approx(REACH[HUB_C])
    # the hub sharing A's whole audience is worth only itself once A is chosen (A's footprint covers it with q = 1)
    chosen3, gains3 = overlap_greedy(3, fp)
    assert fp.keys[fp.self_node[chosen3[2]]] == HUB_B and gains3[2] == pytest.approx(1.0)
    # and the simulated truth agrees when every follow edge passes influence
    follower, followee = _hub_edges()
    oracle = SpreadOracle(followee, follower, np.ones(follower.shape[0]), 28)
    assert oracle.spread([HUB_A, HUB_C], 10)[0] == 20 > oracle.spread([HUB_A, HUB_B], 10)[0] == 12


def test_second_hop_reveals_a_shared_audience():
    # A (0) and B (1) have disjoint followers (10, 11 and 12, 13), but those four are all followed by 20..29;
    # C (2) has its own two-hop audience (14, 15 followed by 30..39). Only the second hop shows A and B overlap.
    hop1 = [(10, 0), (11, 0), (12, 1), (13, 1), (14, 2), (15, 2)]
    hop2 = [(x, u) for u in (10, 11, 12, 13) for x in range(20, 30)] + [(x, u) for u in (14, 15)
                                                                        for x in range(30, 40)]
    cand = np.array([0, 1, 2])
    reach = np.array([10.0, 9.5, 9.0])
    h1_node, h1_cand = np.array([f for f, _ in hop1]), np.array([c for _, c in hop1])
    mids = np.arange(10, 16)
    args = (cand, reach, h1_cand, h1_node, np.full(6, 0.5))
    two = build_footprints(*args, np.array([u for _, u in hop2]), np.array([x for x, _ in hop2]), np.ones(len(hop2)),
                           mids, np.full(6, 4.0))
    chosen, _ = overlap_greedy(2, two)
    assert two.keys[two.self_node[chosen]].tolist() == [0, 2]
    one = build_footprints(*args)  # one hop: A and B look disjoint, so the two best scores win
    chosen, _ = overlap_greedy(2, one)
    assert one.keys[one.self_node[chosen]].tolist() == [0, 1]
    # footprint mass is the candidate's value minus the seed itself, every q a probability
    for c in range(3):
        q = two.q[two.indptr[c]:two.indptr[c + 1]]
        assert q.sum() == pytest.approx(reach[c] - 1) and q.max() <= 1.0


def test_lookahead_reach_is_one_step_of_the_recursion():
    # candidate 0: two followers with tie weights 1 and 3, predicted reaches 5 and 2, engagement 0.25 per follower:
    # 0.5 expected first-hop activations, shared 1:3 -> p = 0.125, 0.375; reach = 1 + 0.125*5 + 0.375*2 = 2.375.
    # candidate 1: zero engagement reaches nobody; candidate 2: no followers.
    reach, p = lookahead_reach(3, np.array([0, 0, 1]), np.array([1.0, 3.0, 0.0]), np.array([5.0, 2.0, 9.0]),
                               np.array([0.25, 0.0, 0.7]))
    assert p.tolist() == pytest.approx([0.125, 0.375, 0.0])
    assert reach.tolist() == pytest.approx([2.375, 1.0, 1.0])
    # all-zero tie weights count as equal shares; probabilities are capped at 1
    reach, p = lookahead_reach(1, np.array([0, 0]), np.zeros(2), np.array([0.5, 3.0]), np.array([3.0]))
    assert p.tolist() == [1.0, 1.0] and reach[0] == pytest.approx(1 + 1 + 3)
    with pytest.raises(ValueError, match=r"engagement\[0\] = -1.0: must be >= 0"):
        lookahead_reach(1, np.array([0]), np.ones(1), np.ones(1), np.array([-1.0]))


def test_seed_sets_are_distinct_valid_ids():
    fp = _hub_footprints()
    for k in (1, 2, 3):
        chosen, gains = overlap_greedy(k, fp)
        ids = fp.keys[fp.self_node[chosen]]
        assert len(set(ids.tolist())) == k and set(ids.tolist()) <= {HUB_A, HUB_B, HUB_C}
        assert np.all(np.diff(gains) <= 1e-12)  # greedy gains never grow (submodular surrogate)
    score = np.array([3.0, 1.0, 3.0, 2.0, 0.5])
    assert top_k(score, 3).tolist() == [0, 2, 3]  # ties by lower index
    assert top_k(score, 5).tolist() == [0, 2, 3, 1, 4]


def test_k_larger_than_users_is_a_value_error():
    with pytest.raises(ValueError, match=r"k=4 is larger than the number of candidates \(3\)"):
        overlap_greedy(4, _hub_footprints())
    with pytest.raises(ValueError, match=r"k=6 is larger than the number of users \(5\)"):
        top_k(np.arange(5.0), 6)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        top_k(np.arange(5.0), 0)
    with pytest.raises(ValueError, match="larger than the number of users"):
        degree_discount(np.array([0, 1, 1]), np.array([1]), 3)
    with pytest.raises(ValueError, match=r"reach\[1\] = nan is not finite"):
        build_footprints(np.array([1, 2]), np.array([2.0, np.nan]), np.zeros(0), np.zeros(0), np.zeros(0))


def test_degree_discount_discounts_neighbours_of_chosen_seeds():
    # influence CSR (influencer -> follower): 0 -> 1..4, 1 -> 0,2,3 (1 is 0's follower), 5 -> 6,7
    out = {0: [1, 2, 3, 4], 1: [0, 2, 3], 5: [6, 7]}
    indptr = np.concatenate([[0], np.cumsum([len(out.get(u, [])) for u in range(8)])])
    indices = np.concatenate([out.get(u, []) for u in range(8)]).astype(np.int64)
    assert degree_discount(indptr, indices, 1).tolist() == [0]
    # 1 has degree 3 but is a neighbour of seed 0: 3 - 2 - 2 * 0.5 = 0 < 2, so 5 comes second
    assert degree_discount(indptr, indices, 2, p=0.5).tolist() == [0, 5]
    assert degree_discount(indptr, indices, 2, p=0.0).tolist() == [0, 5]  # 3 - 2 = 1 < 2 even without p


# ------------------------------------------------------------------------------------------------- the evaluator
SRC = np.array([0, 0, 1, 2, 3, 1])  # influencer
DST = np.array([1, 2, 3, 3, 4, 4])  # influenced
P = np.array([0.5, 0.3, 0.7, 0.2, 0.9, 0.4])


def _exact_spread(seeds) -> float:
    """Expected IC spread by enumerating all 2^|E| live-edge worlds (each edge live with probability p)."""
    total = 0.0
    for live in itertools.product((False, True), repeat=len(P)):
        weight = float(np.prod(np.where(live, P, 1 - P)))
        active, frontier = set(seeds), list(seeds)
        while frontier:
            u = frontier.pop()
            for e in np.flatnonzero((SRC == u) & np.array(live)):
                if DST[e] not in active:
                    active.add(int(DST[e]))
                    frontier.append(int(DST[e]))
        total += weight * len(active)
    return total


@pytest.mark.parametrize("seeds", [[0], [1], [0, 3], [2, 4]])
def test_cynetdiff_spread_matches_exact_enumeration(seeds):
    mean, se = SpreadOracle(SRC, DST, P, 5, seed=7).spread(seeds, 4000)
    exact = _exact_spread(seeds)
    assert se > 0
    assert abs(mean - exact) < 4 * se, (mean, se, exact)


def test_marginal_gain_and_celf_on_a_literal_graph():
    oracle = SpreadOracle(SRC, DST, P, 5, seed=3)
    gain = oracle.marginal_gain([0], 3, 4000)
    assert gain == pytest.approx(_exact_spread([0, 3]) - _exact_spread([0]), abs=0.05)
    assert oracle.marginal_gain([0, 3], 3, 10) == 0.0
    # deterministic edges: CELF must take the two hubs with disjoint audiences
    follower, followee = _hub_edges()
    hub = SpreadOracle(followee, follower, np.ones(follower.shape[0]), 28)
    chosen, gains, at = celf(hub, 2, None, 5, checkpoints=(1, 2))
    assert set(chosen.tolist()) == {HUB_A, HUB_C} or set(chosen.tolist()) == {HUB_B, HUB_C}
    assert gains.tolist() == [11.0, 9.0] and set(at) == {1, 2}
    with pytest.raises(ValueError, match="k must be an integer in"):
        celf(hub, 29, None, 5)


def test_evaluator_rejects_bad_input():
    with pytest.raises(ValueError, match="not a probability"):
        SpreadOracle(SRC, DST, P + 0.6, 5)
    with pytest.raises(ValueError, match=r"dst indices must lie in \[0, 4\)"):
        SpreadOracle(SRC, DST, P, 4)
    with pytest.raises(ValueError, match="num_sims must be a positive integer"):
        SpreadOracle(SRC, DST, P, 5).spread([0], 0)
    assert SpreadOracle(SRC, DST, P, 5).spread([], 10) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------- `ripple seeds` end to end
SCORES = [6.0, 3.0, 1.5, 4.0, 1.2, 1.0, 1.0, 1.0]  # predicted reach of tiny users 0..7


def _fake_run(tmp_path, data: str, name: str = "run") -> str:
    """A real run layout without training: config.yaml + committed embeddings (what `ripple train` writes)."""
    storage = tmp_path / "runs"
    cfg = RippleConfig(data=data, storage_path=str(storage), run_name=name)
    run = Store(str(storage / name))
    run.write_bytes(cfg.to_yaml().encode(), "config.yaml")
    emb = run.child("embeddings")
    begin(emb)
    ids = np.arange(NUM_USERS, dtype=np.int64)
    log_reach = np.log1p(np.array(SCORES))
    parts = [write_part(emb, embeddings_table(ids[:5], np.ones((5, 4)), log_reach[:5]), 0),
             write_part(emb, embeddings_table(ids[5:], np.zeros((3, 4)), log_reach[5:]), 1)]
    commit(emb, parts)
    return str(storage / name)


def test_cli_seeds_writes_the_seed_table(tmp_path, capsys):
    data = write_tiny_dataset(str(tmp_path / "tiny"))
    shutil.rmtree(tmp_path / "tiny" / "_truth")  # selection must never need (or read) the truth
    run = _fake_run(tmp_path, data)
    assert main(["seeds", run, "--k", "3"]) == EXIT_OK
    t = pq.read_table(f"{run}/seeds.parquet")
    assert t.schema.names == ["rank", "user_id", "score", "marginal_gain"]
    assert [str(f.type) for f in t.schema] == ["int32", "int64", "float", "float"]
    assert t["rank"].to_pylist() == [1, 2, 3]
    ids = t["user_id"].to_pylist()
    assert len(set(ids)) == 3 and set(ids) <= set(range(NUM_USERS))
    assert ids[0] == 0  # the highest predicted reach goes first
    assert t["score"].to_pylist()[0] == pytest.approx(SCORES[0], rel=1e-5)
    gains = t["marginal_gain"].to_numpy()
    assert np.all(np.diff(gains) <= 1e-5)
    assert "wrote 3 seeds" in capsys.readouterr().out
    assert not Store(run).exists("seeds_eval.json")


def test_cli_seeds_evaluate_on_the_tiny_truth(tmp_path):
    run = _fake_run(tmp_path, write_tiny_dataset(str(tmp_path / "tiny")))
    assert main(["seeds", run, "--k", "2", "--evaluate", "--sims", "200"]) == EXIT_OK
    table = json.loads(Store(run).read_bytes("seeds_eval.json"))["table"]
    assert {r["method"] for r in table} == {"ripple", "follower_count", "pagerank", "degree_discount", "celf"}
    assert {r["k"] for r in table} == {2}  # K = 10, 50, 100 exceed the tiny graph's 8 users
    for r in table:
        assert r["spread_mean"] >= 2.0 and r["spread_se"] >= 0 and r["selection_s"] >= 0
    metrics = json.loads(Store(run).read_bytes("metrics.json"))
    assert metrics["influence_maximization"]["table"] == table
    assert_png(Store(run).read_bytes("seeds_spread.png"), min_side=100)  # the spread-vs-K picture


def test_cli_seeds_on_partitioned_data_reads_the_source(tmp_path):
    from ripple.config import PartitionConfig
    from ripple.graph.partition import partition

    data = write_tiny_dataset(str(tmp_path / "tiny"))
    parts = str(tmp_path / "parts")
    partition(data, parts, PartitionConfig(num_parts=2))
    plain, sharded = _fake_run(tmp_path, data, "plain"), _fake_run(tmp_path, parts, "sharded")
    assert main(["seeds", plain, "--k", "4"]) == EXIT_OK
    assert main(["seeds", sharded, "--k", "4"]) == EXIT_OK
    assert pq.read_table(f"{plain}/seeds.parquet").equals(pq.read_table(f"{sharded}/seeds.parquet"))


def test_cli_seeds_bad_input_exits_2(tmp_path, capsys):
    not_a_run = tmp_path / "nothing"
    not_a_run.mkdir()
    assert main(["seeds", str(not_a_run), "--k", "3"]) == EXIT_BAD_INPUT
    assert "is not a ripple run: no config.yaml" in capsys.readouterr().err
    run = _fake_run(tmp_path, write_tiny_dataset(str(tmp_path / "tiny")))
    assert main(["seeds", run, "--k", "0"]) == EXIT_BAD_INPUT
    assert "--k must be >= 1, got 0" in capsys.readouterr().err
    assert main(["seeds", run, "--k", "9"]) == EXIT_BAD_INPUT
    assert "--k 9 is larger than the number of users the run scored (8)" in capsys.readouterr().err
    assert main(["seeds", run]) == EXIT_BAD_INPUT  # --k is required
    assert main(["seeds", run, "--k", "3", "--candidates", "2"]) == EXIT_BAD_INPUT
    assert not Store(run).exists("seeds.parquet")
    Store(run).rm("embeddings", "_manifest.json")
    assert main(["seeds", run, "--k", "3"]) == EXIT_BAD_INPUT
    assert "_manifest.json" in capsys.readouterr().err


def test_tiny_truth_is_the_reversed_follows():
    # the evaluator's direction assumption, checked on the literal dataset: influencer = followee
    t = tiny_tables()["_truth/ic_edges"]
    assert list(zip(t["dst"].to_pylist(), t["src"].to_pylist())) == FOLLOWS


def test_evaluate_without_the_eval_extra_names_it_before_any_work(tmp_path, monkeypatch, capsys):
    """``ripple seeds --evaluate`` where cynetdiff is not installed: one error line naming the extra, at once."""
    from ripple import cli

    monkeypatch.setitem(sys.modules, "cynetdiff", None)  # what an interpreter without it sees: ImportError
    monkeypatch.setitem(sys.modules, "cynetdiff.models", None)
    assert cli.main(["seeds", str(tmp_path / "no-such-run"), "--k", "3", "--evaluate"]) == cli.EXIT_RUNTIME
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "pip install 'ripple[eval]'" in err[0], err
