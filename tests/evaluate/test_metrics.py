"""Tests for ripple.evaluate.metrics: literal values for every metric, edge cases and input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ripple.evaluate.metrics import bootstrap_spearman, format_table, kendall, msle, ndcg_at_k, score_all, spearman

TRUE = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


def test_spearman_perfect_and_reversed():
    assert spearman(TRUE, TRUE * 10) == pytest.approx(1.0)
    assert spearman(TRUE, -TRUE) == pytest.approx(-1.0)


def test_spearman_hand_computed():
    # ranks of pred: [1, 3, 2, 4, 5]; d^2 = 0+1+1+0+0 = 2; rho = 1 - 6*2/(5*24) = 0.9
    assert spearman(TRUE, [10, 30, 20, 40, 50]) == pytest.approx(0.9)


def test_kendall_hand_computed():
    # one discordant pair (1, 2) out of 6: tau = (5 - 1) / 6
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # tie in y_true at (1, 2): C=5, D=0, n0=6, n1=1, n2=0 -> tau_b = 5 / sqrt(5 * 6)
    assert kendall([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert kendall(TRUE, TRUE) == pytest.approx(1.0)
    assert kendall(TRUE, TRUE[::-1]) == pytest.approx(-1.0)


def test_constant_predictions_give_zero_correlation():
    const = np.full(5, 3.0)
    for fn in (spearman, kendall):
        assert fn(TRUE, const) == 0.0
        assert fn(const, TRUE) == 0.0
        assert fn([2.0], [1.0]) == 0.0


def test_ndcg_perfect_is_one():
    assert ndcg_at_k(TRUE, TRUE) == pytest.approx(1.0)
    assert ndcg_at_k(TRUE, TRUE, k=2) == pytest.approx(1.0)


def test_ndcg_hand_computed():
    y = np.array([3.0, 2.0, 1.0])
    # reversed ranking: DCG = 1 + 2/log2(3) + 3/2, IDCG = 3 + 2/log2(3) + 1/2
    expected = (1 + 2 / math.log2(3) + 1.5) / (3 + 2 / math.log2(3) + 0.5)
    assert ndcg_at_k(y, [1.0, 2.0, 3.0]) == pytest.approx(expected)
    assert ndcg_at_k(y, [1.0, 2.0, 3.0], k=1) == pytest.approx(1 / 3)
    # k larger than n is clipped
    assert ndcg_at_k(y, [1.0, 2.0, 3.0], k=1000) == pytest.approx(expected)


def test_ndcg_ties_average_gains():
    # both tied at the top: position 1 gets the mean gain (3 + 1) / 2 = 2, ideal is 3
    assert ndcg_at_k([3.0, 1.0], [0.5, 0.5], k=1) == pytest.approx(2 / 3)
    # independent of input order of tied items
    assert ndcg_at_k([1.0, 3.0], [0.5, 0.5], k=1) == pytest.approx(2 / 3)


def test_ndcg_zero_gains_and_bad_k():
    assert ndcg_at_k([0.0, 0.0], [1.0, 2.0]) == 0.0
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k(TRUE, TRUE, k=0)
    with pytest.raises(ValueError, match="y_true must be >= 0"):
        ndcg_at_k([-1.0, 2.0], [1.0, 2.0])


def test_msle():
    assert msle(TRUE, TRUE) == 0.0
    # pred e-1 vs true 0: (1 - 0)^2; negative pred clipped to 0 vs true e-1: (0 - 1)^2
    assert msle([0.0, math.e - 1], [math.e - 1, -5.0]) == pytest.approx(1.0)


def test_shape_validation_names_lengths():
    with pytest.raises(ValueError, match=r"len\(y_true\)=3 and len\(y_pred\)=2"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="y_pred must be 1-D"):
        msle([1, 2], [[1, 2]])
    with pytest.raises(ValueError, match="empty"):
        kendall([], [])
    with pytest.raises(ValueError, match="non-finite"):
        ndcg_at_k([1.0, 2.0], [np.nan, 1.0])


def test_score_all_and_format_table():
    preds = {"perfect": TRUE * 2, "reversed": -TRUE}
    m = score_all(TRUE, preds)
    assert list(m) == ["spearman", "kendall", "ndcg_at_100", "msle"]
    assert m["spearman"] == pytest.approx({"perfect": 1.0, "reversed": -1.0})
    assert m["kendall"] == pytest.approx({"perfect": 1.0, "reversed": -1.0})
    assert m["ndcg_at_100"]["perfect"] == pytest.approx(1.0)
    assert m["msle"]["reversed"] == pytest.approx(float(np.mean(np.log1p(TRUE) ** 2)))

    table = format_table(m, order=["reversed", "perfect"])
    lines = table.splitlines()
    assert lines[0].split() == ["model", "spearman", "kendall", "ndcg_at_100", "msle"]
    assert lines[2].split()[:3] == ["reversed", "-1.000", "-1.000"]
    assert lines[3].split()[:4] == ["perfect", "1.000", "1.000", "1.000"]
    assert format_table(m).splitlines()[2].startswith("perfect")

    with pytest.raises(ValueError, match="not in metrics"):
        format_table(m, order=["nope"])
    with pytest.raises(ValueError, match=r"preds\['bad'\].*len\(y_pred\)=2"):
        score_all(TRUE, {"bad": np.ones(2)})


def test_format_table_missing_value():
    table = format_table({"spearman": {"a": 0.5}, "msle": {"a": 0.25, "b": 1.0}})
    assert table.splitlines()[3].split() == ["b", "-", "1.000"]


def test_bootstrap_spearman_matches_the_sampling_error():
    """The bootstrap SE of a Spearman over n users is close to its sampling SD across fresh samples; the paired SE of
    two models' difference is 0 for identical predictions and below either SE for strongly correlated ones."""
    rng = np.random.default_rng(12345)  # not one of the samples' seeds
    n = 2000

    def sample(seed):
        r = np.random.default_rng(seed)
        z = r.normal(size=n)
        y = z + r.normal(size=n)
        return y, z, z + 0.3 * r.normal(size=n)

    fresh = [spearman(y, a) for y, a, _ in (sample(s) for s in range(1, 41))]
    y, a, b = sample(0)
    boot = bootstrap_spearman(y, {"gnn": a, "same": a.copy(), "close": b, "noise": rng.normal(size=n)}, rounds=200)
    assert boot["users"] == n and boot["rounds"] == 200
    assert boot["se"]["gnn"] == pytest.approx(np.std(fresh, ddof=1), rel=0.35)
    assert boot["se"]["noise"] == pytest.approx(1 / math.sqrt(n - 1), rel=0.25)  # SE of rho = 0
    assert boot["diff_se"]["same"] == 0.0
    assert boot["diff_se"]["close"] < 0.5 * min(boot["se"]["gnn"], boot["se"]["close"])
    assert set(boot["diff_se"]) == {"same", "close", "noise"}
