"""The pictures of a run, as PNG bytes: the training curve, predicted vs observed reach, seed-set spread vs K.

Each function takes plain numbers (no run, no storage) and returns the PNG's bytes; the caller writes them through
the storage module next to ``metrics.json``. Drawn with matplotlib's Agg backend on a private ``Figure``, so a
plot never touches pyplot's global state, needs no display and is safe in any thread.
"""
from __future__ import annotations

import io
import math

import numpy as np

TRAINING_CURVE = "training_curve.png"
PREDICTED_VS_OBSERVED = "predicted_vs_observed.png"
SPREAD_VS_K = "seeds_spread.png"


def _figure(width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def training_curve(history: list[dict]) -> bytes:
    """Training loss and validation MSE (log1p reach, left axis) and validation Spearman (right axis) per epoch.

    ``history``: one dict per epoch with ``epoch``, ``train_loss``, ``val_mse`` and ``val_spearman``."""
    if not history:
        raise ValueError("training_curve needs at least one epoch of history, got none")
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]  # 1-based, as the console counts them
    fig = _figure()
    ax = fig.subplots()
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss (MSE)")
    ax.plot(epochs, [h["val_mse"] for h in history], "s--", color="tab:cyan", label="validation MSE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of log1p(reach)")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right = ax.twinx()
    right.plot(epochs, [h["val_spearman"] for h in history], "^-", color="tab:red", label="validation Spearman")
    right.set_ylabel("validation Spearman", color="tab:red")
    best = min(history, key=lambda h: h["val_mse"])
    ax.axvline(best["epoch"] + 1, color="grey", lw=0.8, ls=":")
    lines = ax.get_lines()[:2] + right.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    ax.set_title(f"training (best epoch {best['epoch'] + 1}: val MSE {best['val_mse']:.3f}, "
                 f"Spearman {best['val_spearman']:.3f})", fontsize=10)
    return _png(fig)


def predicted_vs_observed(observed: np.ndarray, predicted: np.ndarray, spearman: dict[str, float],
                          max_points: int = 20000, seed: int = 0) -> bytes:
    """Log-log scatter of the GNN's predicted reach against the observed reach of the test users, with every
    model's test Spearman in the legend. Shapes: observed, predicted [n] (reach >= 1 is expected; values are
    clipped at 1 for the log axes)."""
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if observed.shape != predicted.shape or observed.ndim != 1 or len(observed) == 0:
        raise ValueError(f"observed and predicted must be 1-D of one non-zero length, got {observed.shape} and "
                         f"{predicted.shape}")
    if len(observed) > max_points:  # a readable picture, and a bounded file, on any number of test users
        keep = np.random.default_rng(seed).choice(len(observed), max_points, replace=False)
        observed, predicted = observed[keep], predicted[keep]
    x, y = np.maximum(observed, 1.0), np.maximum(predicted, 1.0)
    fig = _figure(5.6, 5.2)
    ax = fig.subplots()
    ax.scatter(x, y, s=5, alpha=0.35, color="tab:blue", edgecolors="none", label="test users")
    lo, hi = 1.0, max(float(x.max()), float(y.max()), 2.0)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="predicted = observed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("observed cascade reach")
    ax.set_ylabel("predicted reach (gnn)")
    # one legend line per model: its test Spearman against the observed reach
    for name, rho in spearman.items():
        if rho is not None and math.isfinite(rho):
            ax.plot([], [], " ", label=f"{name}: Spearman {rho:.3f}")
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(f"predicted vs observed reach, {len(observed):,} test users", fontsize=10)
    return _png(fig)


def spread_vs_k(table: list[dict]) -> bytes:
    """Simulated IC spread (mean ± standard error) of each seed-selection method against K.

    ``table``: rows with ``method``, ``k``, ``spread_mean`` and ``spread_se`` (``ripple seeds --evaluate``)."""
    if not table:
        raise ValueError("spread_vs_k needs at least one evaluated seed set, got none")
    fig = _figure()
    ax = fig.subplots()
    for method in dict.fromkeys(r["method"] for r in table):
        rows = sorted((r for r in table if r["method"] == method), key=lambda r: r["k"])
        ax.errorbar([r["k"] for r in rows], [r["spread_mean"] for r in rows], yerr=[r["spread_se"] for r in rows],
                    marker="o", capsize=3, label=method)
    ax.set_xlabel("K (seed users)")
    ax.set_ylabel("expected spread (simulated IC)")
    ax.legend(fontsize=8)
    ax.set_title("influence maximization: spread vs K", fontsize=10)
    return _png(fig)
