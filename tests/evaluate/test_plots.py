"""The run's pictures: valid PNGs from plain numbers, and clear errors for what cannot be drawn."""
from __future__ import annotations

import numpy as np
import pytest
from images import assert_png

from ripple.evaluate import plots


def test_training_curve():
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_mse": 0.5 / (e + 1) + 0.1, "val_spearman": 0.1 * e,
                "train_seeds_per_s": 100.0, "epoch_s": 1.0} for e in range(6)]
    assert_png(plots.training_curve(history))
    with pytest.raises(ValueError, match="at least one epoch"):
        plots.training_curve([])


def test_predicted_vs_observed_subsamples_large_test_sets():
    rng = np.random.default_rng(0)
    observed = 1 + rng.pareto(1.5, 50_000)
    predicted = observed * rng.lognormal(0, 0.5, observed.size)
    small = plots.predicted_vs_observed(observed[:500], predicted[:500], {"gnn": 0.8, "follower_count": 0.3})
    big = plots.predicted_vs_observed(observed, predicted, {"gnn": 0.8, "oracle": float("nan")}, max_points=2000)
    assert_png(small)
    assert_png(big)
    assert len(big) < 4 * len(small)  # subsampled: the file does not grow with the test set
    with pytest.raises(ValueError, match="1-D of one non-zero length"):
        plots.predicted_vs_observed(observed[:3], predicted[:2], {})


def test_spread_vs_k():
    table = [{"method": m, "k": k, "spread_mean": s * k, "spread_se": 1.0, "selection_s": 0.1}
             for m, s in (("ripple", 3.0), ("follower_count", 2.0)) for k in (10, 50, 100)]
    assert_png(plots.spread_vs_k(table))
    with pytest.raises(ValueError, match="at least one evaluated seed set"):
        plots.spread_vs_k([])
