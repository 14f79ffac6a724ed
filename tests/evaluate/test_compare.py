"""Evaluation against history labels: the manifest's split-half reliability, and Spearman vs the truth oracle."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ripple.evaluate.compare import evaluate_from_tables, vs_truth

pytestmark = pytest.mark.timeout(60)


def _tables(n=50, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    truth = rng.lognormal(0, 1, n) + 1
    observed = truth + rng.normal(0, 0.5, n).clip(-0.9, None)  # noisy future reach
    labels = pa.table({"user_id": ids, "cascade_reach": observed.astype(np.float32),
                       "cascade_reach_replicate": pa.array(np.where(np.arange(n) % 3, observed, np.nan),
                                                           mask=np.arange(n) % 3 == 0, type=pa.float32()),
                       "split": ["test"] * n})
    users = pa.table({"id": ids[::-1].copy(), "follower_count": np.arange(n)[::-1].copy()})
    emb = pa.table({"user_id": ids, "influence_score": (truth * 2).astype(np.float32)})
    return labels, users, emb, pa.table({"id": ids, "expected_reach": truth.astype(np.float32)}), truth, observed


def test_history_labels_report_the_given_reliability_and_truth():
    labels, users, emb, truth_table, truth, observed = _tables()
    m = evaluate_from_tables(labels, users, emb, reliability=0.61, truth=truth_table).metrics
    assert m["spearman"]["label_reliability"] == m["spearman"]["ceiling"] == 0.61
    t = m["spearman_vs_truth"]
    assert t["gnn"] == pytest.approx(1.0)  # the score is a monotone function of the truth
    assert t["users"] == 50 and -1 <= t["follower_count"] <= 1
    assert t["label"] < 1.0  # the observed labels are a noisy reading of the truth


def test_simulated_labels_score_the_replicate_as_the_ceiling():
    labels, users, emb, *_ = _tables()
    labels = labels.set_column(2, "cascade_reach_replicate", labels["cascade_reach"])
    m = evaluate_from_tables(labels, users, emb).metrics
    assert m["spearman"]["ceiling"] == m["spearman"]["label_reliability"] == pytest.approx(1.0)
    assert m["kendall"]["label_reliability"] == pytest.approx(1.0)
    assert "spearman_vs_truth" not in m


def test_vs_truth_skips_users_the_oracle_did_not_simulate():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    truth = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    out = vs_truth(y, {"m": np.array([5.0, 0.0, 3.0, 2.0, 1.0])}, truth)
    assert out["users"] == 4 and out["m"] == pytest.approx(-1.0) and out["label"] == pytest.approx(1.0)
    assert vs_truth(y, {"m": y}, np.full(5, np.nan)) == {}


def test_active_users_slice_and_standard_errors():
    """Test users without past activity are one constant to every model; ``spearman_active`` scores the rest, with
    bootstrap SEs, and is left out when every test user is active."""
    from ripple.data.features import USER_DIM, USER_FLAT_NAMES, has_activity
    from ripple.evaluate.compare import _active_users, _uncertainty

    x = np.zeros((6, USER_DIM), np.float32)
    x[1, USER_FLAT_NAMES.index("log_follower_count")] = 1.0
    x[2, USER_FLAT_NAMES.index("log_created")] = 0.5
    x[3, USER_FLAT_NAMES.index("avg_engagement")] = 2.0  # a rate alone is no activity count
    x[:, USER_FLAT_NAMES.index("topic_0")] = 1.0
    assert has_activity(x).tolist() == [False, True, True, False, False, False]

    rng = np.random.default_rng(0)
    y = rng.lognormal(0, 1, 400) + 1
    active = np.arange(400) % 4 == 0
    preds = {"gnn": np.where(active, y, 1.0), "follower_count": np.where(active, -y, 0.0)}
    m: dict = {}
    _uncertainty(m, y, preds)
    _active_users(m, y, preds, active)
    assert m["test_users"] == 400 and m["active_test_users"] == 100
    assert m["spearman_active"]["gnn"] == pytest.approx(1.0)
    assert m["spearman_active"]["follower_count"] == pytest.approx(-1.0)
    assert m["spearman_active_se"]["gnn"] == pytest.approx(0.0, abs=1e-9)
    assert m["spearman_diff_se"]["follower_count"] > 0 and set(m["spearman_se"]) == {"gnn", "follower_count"}
    none: dict = {}
    _active_users(none, y, preds, np.ones(400, bool))
    assert none == {}


@pytest.mark.timeout(300)
def test_rows_at_many_cut_times_get_features_as_of_their_time_and_the_written_model_wins_on_validation(tmp_path):
    from ripple.data.dataset import Dataset
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.graph import load_local_graph
    from ripple.data.labels import LabelSpec, derive_labels, every_cutoffs, history_range
    from ripple.data.timeline import snapshot
    from ripple.evaluate.compare import baseline_inputs, evaluate

    day = 86400
    data, out = str(tmp_path / "data"), str(tmp_path / "many")
    generate(data, GeneratorConfig(users=600, seed=2, label_sims=5))
    derive_labels(data, out, LabelSpec.many(every_cutoffs(*history_range(data), 14 * day, 14 * day), 14 * day))
    g = load_local_graph(Dataset(out))
    inputs = baseline_inputs(g)
    for t in np.unique(g.label_time)[[0, -1]]:
        at = g.label_time == t
        np.testing.assert_allclose(inputs.rows["lightgbm_flat"][at], snapshot(g, int(t)).x["user"][g.label_index[at]])
    np.testing.assert_allclose(inputs.now["lightgbm_flat"], g.x["user"])  # the graph as it is: the test time
    val = g.split == "val"
    emb = pa.table({"user_id": g.ids["user"], "influence_score": np.ones(g.num_nodes("user"), np.float32)})
    # a GNN perfect on validation is written; one that is noise there loses to a model fit on the rows
    good = evaluate(g, emb, reliability=0.5, gnn_rows={"val": (g.reach[val].astype(np.float64), None)})
    assert good.metrics["influence_score"]["model"] == "gnn" and good.scores is None
    noise = np.random.default_rng(0).random(int(val.sum()))
    bad = evaluate(g, emb, reliability=0.5, gnn_rows={"val": (noise, None)})
    chosen = bad.metrics["influence_score"]["model"]
    assert chosen != "gnn" and chosen == max(bad.metrics["val_spearman"], key=bad.metrics["val_spearman"].get)
    assert bad.scores.shape == (g.num_nodes("user"),)
    test_users = g.label_index[g.split == "test"]
    np.testing.assert_allclose(bad.scores[test_users], bad.predicted, rtol=1e-6)  # written = scored on test

    # the stacked model (engineered features + the GNN's prediction and embedding, fit on the training rows) reads
    # the training and validation rows' embeddings as of their time, given, not the written ones of the graph as
    # it is: informative given rows, noise written for every user -> it wins on validation, on the given rows
    from ripple.infer.embed import embeddings_table

    rng, hidden = np.random.default_rng(1), 4
    n_users = g.num_nodes("user")
    given = {s: (rng.random(int((g.split == s).sum())),
                 (np.log1p(g.reach[g.split == s])[:, None] + 0.05 * rng.standard_normal((int((g.split == s).sum()),
                                                                                           hidden))).astype(np.float32))
             for s in ("train", "val")}
    written = embeddings_table(g.ids["user"], rng.standard_normal((n_users, hidden)), np.zeros(n_users))
    stacked = evaluate(g, written, reliability=0.5, gnn_rows=given)
    val_rho = stacked.metrics["val_spearman"]
    assert stacked.metrics["influence_score"]["model"] == "stacked"
    assert val_rho["stacked"] > 0.6 and val_rho["stacked"] > max(v for k, v in val_rho.items() if k != "stacked") + 0.1
    assert "stacked" in stacked.metrics["spearman"] and stacked.scores.shape == (n_users,)
    without = evaluate(g, written.drop(["embedding"]), reliability=0.5, gnn_rows=given)
    assert "stacked" not in without.metrics["val_spearman"]
