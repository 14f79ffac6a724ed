"""Ranking and regression metrics for per-user cascade-reach predictions.

Every metric takes ``y_true`` (the observed ``cascade_reach``) and ``y_pred`` (a model's predicted reach, or any
score whose order is what matters) as 1-D arrays of the same length, one entry per evaluated user.

Rank metrics (Spearman, Kendall tau-b, NDCG@k) only look at the order of ``y_pred``; MSLE looks at its values and
so only makes sense for predictions on the reach scale.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

__all__ = ["spearman", "kendall", "ndcg_at_k", "msle", "score_all", "bootstrap_spearman", "format_table",
           "METRIC_NAMES"]

#: Keys of :func:`score_all`'s result, in the column order :func:`format_table` uses by default.
METRIC_NAMES = ("spearman", "kendall", "ndcg_at_100", "msle")


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (y_true, y_pred) pair to 1-D float64 arrays of equal, non-zero length."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {t.shape}")
    if p.ndim != 1:
        raise ValueError(f"y_pred must be 1-D, got shape {p.shape}")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and y_pred must have the same length, got len(y_true)={t.shape[0]} "
                         f"and len(y_pred)={p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("y_true and y_pred are empty (length 0)")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"y_true has {int(np.sum(~np.isfinite(t)))} non-finite values")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"y_pred has {int(np.sum(~np.isfinite(p)))} non-finite values")
    return t, p


def _is_constant(a: np.ndarray) -> bool:
    return a.shape[0] < 2 or bool(np.all(a == a[0]))


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation between true and predicted reach.

    Shapes:
        y_true: [n] observed reach.
        y_pred: [n] predicted reach or score.

    Returns 0.0 (not NaN) when either side is constant or ``n == 1``, since the correlation is undefined there
    and a constant predictor carries no ranking information.
    """
    t, p = _check_pair(y_true, y_pred)
    if _is_constant(t) or _is_constant(p):
        return 0.0
    return float(stats.spearmanr(t, p).statistic)


def kendall(y_true, y_pred) -> float:
    """Kendall tau-b between true and predicted reach (``scipy.stats.kendalltau``, tie-corrected).

    Shapes:
        y_true: [n] observed reach.
        y_pred: [n] predicted reach or score.

    Returns 0.0 (not NaN) when either side is constant or ``n == 1``.
    """
    t, p = _check_pair(y_true, y_pred)
    if _is_constant(t) or _is_constant(p):
        return 0.0
    return float(stats.kendalltau(t, p, variant="b").statistic)


def ndcg_at_k(y_true, y_pred, k: int = 100) -> float:
    """Normalized discounted cumulative gain of the top ``k`` users ranked by ``y_pred``.

    The gain of a user is its true reach (linear gain, ``y_true`` must be >= 0); position ``i`` (0-based) is
    discounted by ``1 / log2(i + 2)``. The ideal ordering sorts by ``y_true``. ``k`` is clipped to ``n``.

    Ties in ``y_pred`` are handled by averaging: every position occupied by a group of tied predictions receives
    the group's mean gain (the expected DCG over all orderings of the tie, as ``sklearn.metrics.ndcg_score`` does
    by default), so the result does not depend on the input order of tied users.

    Shapes:
        y_true: [n] observed reach, >= 0.
        y_pred: [n] predicted reach or score.

    Returns 0.0 when all gains are zero (the ideal DCG is 0).
    """
    t, p = _check_pair(y_true, y_pred)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if np.any(t < 0):
        raise ValueError(f"y_true must be >= 0 for ndcg_at_k (gains), got min(y_true)={t.min()}")
    n = t.shape[0]
    k = min(int(k), n)
    discount = 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)

    ideal = np.sort(t)[::-1]
    idcg = float(np.sum(ideal[:k] * discount[:k]))
    if idcg == 0.0:
        return 0.0

    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    g_sorted = t[order]
    # Group boundaries of equal predictions in the sorted order; each group gets its mean gain at every position.
    starts = np.flatnonzero(np.concatenate(([True], p_sorted[1:] != p_sorted[:-1])))
    sizes = np.diff(np.append(starts, n))
    group_mean = np.add.reduceat(g_sorted, starts) / sizes
    gains = np.repeat(group_mean, sizes)
    dcg = float(np.sum(gains[:k] * discount[:k]))
    return dcg / idcg


def msle(y_true, y_pred) -> float:
    """Mean squared log error ``mean((log1p(max(pred, 0)) - log1p(true))^2)``.

    Predictions below zero are clipped to 0 before the log; ``y_true`` must be >= 0.

    Shapes:
        y_true: [n] observed reach, >= 0.
        y_pred: [n] predicted reach.
    """
    t, p = _check_pair(y_true, y_pred)
    if np.any(t < 0):
        raise ValueError(f"y_true must be >= 0 for msle, got min(y_true)={t.min()}")
    diff = np.log1p(np.clip(p, 0.0, None)) - np.log1p(t)
    return float(np.mean(diff * diff))


def bootstrap_spearman(y_true, preds: dict[str, np.ndarray], reference: str | None = "gnn", rounds: int = 200,
                       seed: int = 0) -> dict:
    """Bootstrap standard errors over the evaluated users: every model scored on the same resamples (paired).

    Shapes: y_true [n]; preds {name: [n]}.

    Returns ``{"se": {name: SE of its Spearman}, "diff_se": {name: SE of Spearman(reference) - Spearman(name)},
    "rounds", "users"}``: ``diff_se`` says whether a gap between two models on the same users is more than
    resampling noise (a gap of 2 ``diff_se`` or more is), which the two models' own SEs overstate."""
    t = np.asarray(y_true, dtype=np.float64)
    rng = np.random.default_rng(seed)
    names = list(preds)
    draws = np.zeros((rounds, len(names)))
    for r in range(rounds):
        idx = rng.integers(0, len(t), len(t))
        yt = t[idx]
        for j, name in enumerate(names):
            p = np.asarray(preds[name], dtype=np.float64)[idx]
            draws[r, j] = 0.0 if _is_constant(yt) or _is_constant(p) else float(stats.spearmanr(yt, p).statistic)
    out = {"se": {n: float(draws[:, j].std(ddof=1)) for j, n in enumerate(names)}, "rounds": rounds,
           "users": int(len(t))}
    if reference in names:
        ref = draws[:, names.index(reference)]
        out["diff_se"] = {n: float((ref - draws[:, j]).std(ddof=1)) for j, n in enumerate(names) if n != reference}
    return out


def score_all(y_true, preds: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Score several models' predictions against the same truth.

    Shapes:
        y_true: [n] observed reach.
        preds: {model name: [n] predicted reach}.

    Returns ``{"spearman": {name: v}, "kendall": {...}, "ndcg_at_100": {...}, "msle": {...}}`` with models in
    the order of ``preds``.
    """
    if not isinstance(preds, dict):
        raise ValueError(f"preds must be a dict of model name -> predictions, got {type(preds).__name__}")
    out: dict[str, dict[str, float]] = {m: {} for m in METRIC_NAMES}
    for name, pred in preds.items():
        try:
            t, p = _check_pair(y_true, pred)
        except ValueError as e:
            raise ValueError(f"preds[{name!r}]: {e}") from None
        out["spearman"][name] = spearman(t, p)
        out["kendall"][name] = kendall(t, p)
        out["ndcg_at_100"][name] = ndcg_at_k(t, p, k=100)
        out["msle"][name] = msle(t, p)
        log.debug("scored %s: %s", name, {m: out[m][name] for m in METRIC_NAMES})
    return out


def format_table(metrics: dict, order: list[str] | None = None) -> str:
    """Render ``score_all``'s result as a plain-text table: one row per model, one column per metric.

    ``metrics`` is ``{metric: {model: value}}``; columns follow the dict's order. ``order`` gives the row order
    (model names); by default models appear in the order first seen. Values are printed with 3 decimals; a model
    missing a metric shows ``-``.
    """
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict of metric -> {{model: value}}, got {type(metrics).__name__}")
    for m, per_model in metrics.items():
        if not isinstance(per_model, dict):
            raise ValueError(f"metrics[{m!r}] must be a dict of model -> value, got {type(per_model).__name__}")
    seen: list[str] = []
    for per_model in metrics.values():
        for name in per_model:
            if name not in seen:
                seen.append(name)
    if order is None:
        rows = seen
    else:
        unknown = [name for name in order if name not in seen]
        if unknown:
            raise ValueError(f"order names models not in metrics: {unknown}; known models: {seen}")
        rows = list(order)
    columns = list(metrics)

    def cell(m: str, name: str) -> str:
        v = metrics[m].get(name)
        if v is None:
            return "-"
        v = float(v)
        return "nan" if math.isnan(v) else f"{v:.3f}"

    header = ["model"] + [str(c) for c in columns]
    body = [[str(name)] + [cell(m, name) for m in columns] for name in rows]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body]
    return "\n".join(lines)
