"""Non-GNN baselines for per-user cascade reach: raw follower count, PageRank, and LightGBM on flat, 2-hop and
engineered features (what a data scientist would build by hand from the same tables: ``engineered_features``).

Graph convention (see :mod:`ripple.data.schema`): a ``follows`` edge ``src -> dst`` means ``src`` follows ``dst``;
influence flows from the followee ``dst`` to the follower ``src``, so a user's reach depends on its followers
(the ``src`` of edges whose ``dst`` is the user), their followers, and so on.

LightGBM is used through its native ``lightgbm.train`` API (a :class:`lightgbm.Booster`), not ``LGBMRegressor``,
so that scikit-learn is not a dependency.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = [
    "pagerank",
    "hop_aggregates",
    "engineered_features",
    "fit_lightgbm",
    "predict_lightgbm",
    "run_baselines",
    "BASELINE_NAMES",
]

#: Keys of :func:`run_baselines`'s result, in order.
BASELINE_NAMES = ("follower_count", "pagerank", "lightgbm_flat", "lightgbm_2hop", "lightgbm_engineered")

#: LightGBM settings shared by every baseline fit.
LGBM_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}
LGBM_MAX_ROUNDS = 500
LGBM_EARLY_STOPPING_ROUNDS = 50


# --------------------------------------------------------------------------------------------------- validation


def _check_num_nodes(num_nodes) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative integer, got {num_nodes!r}")
    return int(num_nodes)


def _check_edges(src, dst, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(src)
    d = np.asarray(dst)
    for name, a in (("src", s), ("dst", d)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer node indices, got dtype {a.dtype}")
    if s.shape[0] != d.shape[0]:
        raise ValueError(f"src and dst must have the same length, got len(src)={s.shape[0]} and len(dst)={d.shape[0]}")
    for name, a in (("src", s), ("dst", d)):
        if a.size and (a.min() < 0 or a.max() >= num_nodes):
            raise ValueError(f"{name} indices must lie in [0, {num_nodes}), got min={a.min()} max={a.max()}")
    return s.astype(np.int64, copy=False), d.astype(np.int64, copy=False)


def check_indices(name: str, a, n: int) -> np.ndarray:
    """``a`` as int64 node indices, or a ValueError: 1-D, integer, every value in [0, n). Shapes: [K] -> [K]."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer node indices, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name} must lie in [0, {n}), got min={a.min()} max={a.max()}")
    return a.astype(np.int64, copy=False)


def _check_1d(name: str, a, n: int | None = None, dtype=np.float64) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    return arr


def _check_2d(name: str, a, n: int | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, got {arr.shape[0]}")
    return arr


def _in_adjacency(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> sp.csr_matrix:
    """B[v, u] = number of edges u -> v (rows: followees, columns: their followers)."""
    data = np.ones(src.shape[0], dtype=np.float64)
    b = sp.csr_matrix((data, (dst, src)), shape=(num_nodes, num_nodes))
    b.sum_duplicates()
    return b


# ----------------------------------------------------------------------------------------------------- pagerank


def pagerank(src, dst, num_nodes, damping: float = 0.85, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """PageRank of every user over follower -> followee edges (important users are followed by important users).

    Power iteration ``r <- damping * (M r + dangling_mass / N) + (1 - damping) / N`` with ``M[v, u] =
    w(u -> v) / outdeg(u)``; users who follow nobody (dangling) spread their rank uniformly over all users.
    Parallel edges count with multiplicity (networkx's ``DiGraph`` would collapse them). Iterates until the L1
    change is below ``num_nodes * tol`` (networkx's criterion) or ``max_iter`` is reached (logged as a warning).

    Shapes:
        src: [E] int, follower index of each ``follows`` edge.
        dst: [E] int, followee index of each edge.
        returns: [num_nodes] float64, non-negative, summing to 1 (empty when ``num_nodes == 0``).
    """
    n = _check_num_nodes(num_nodes)
    s, d = _check_edges(src, dst, n)
    if not (0.0 <= float(damping) < 1.0):
        raise ValueError(f"damping must be in [0, 1), got {damping}")
    if not float(tol) > 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if n == 0:
        return np.zeros(0, dtype=np.float64)

    outdeg = np.bincount(s, minlength=n).astype(np.float64)
    dangling = outdeg == 0
    inv_out = np.zeros(n, dtype=np.float64)
    inv_out[~dangling] = 1.0 / outdeg[~dangling]
    # M[v, u] = 1/outdeg(u) per edge u -> v; duplicates are summed by the constructor.
    m = sp.csr_matrix((inv_out[s], (d, s)), shape=(n, n))

    r = np.full(n, 1.0 / n)
    teleport = (1.0 - damping) / n
    for it in range(1, int(max_iter) + 1):
        r_new = damping * (m @ r + r[dangling].sum() / n) + teleport
        err = float(np.abs(r_new - r).sum())
        r = r_new
        if err < n * tol:
            log.debug("pagerank converged after %d iterations (L1 change %.3g)", it, err)
            break
    else:
        log.warning("pagerank did not converge in %d iterations (last L1 change %.3g, tol %.3g)", max_iter, err,
                    n * tol)
    return r / r.sum()


# ----------------------------------------------------------------------------------------------------- features


def hop_aggregates(x, src, dst, num_nodes, hops: int = 2) -> np.ndarray:
    """Aggregate features over each user's followers, their followers, ... up to ``hops`` hops.

    With ``B[v, u]`` = number of edges ``u -> v`` (u follows v) and ``A = D_in^-1 B`` its row-normalized form
    (``A[v, u] = 1 / indeg(v)`` per edge), hop ``h`` contributes ``[A^h x, log1p(B^h 1)]``: the mean of the
    hop-(h-1) means over the user's followers (hop 1: the plain mean of the followers' features) and the log of
    the number of length-``h`` follower paths ending at the user (hop 1: ``log1p(indeg)``). Users with no
    followers get zeros for every hop; parallel edges count with multiplicity.

    Shapes:
        x: [num_nodes, F] float node features.
        src: [E] int, follower index of each ``follows`` edge.
        dst: [E] int, followee index of each edge.
        returns: [num_nodes, hops * (F + 1)] float64, laid out hop by hop as
            ``[A x, log1p(B 1), A^2 x, log1p(B^2 1), ...]``.
    """
    n = _check_num_nodes(num_nodes)
    feats = _check_2d("x", x, n)
    s, d = _check_edges(src, dst, n)
    if isinstance(hops, bool) or not isinstance(hops, (int, np.integer)) or hops < 1:
        raise ValueError(f"hops must be a positive integer, got {hops!r}")

    b = _in_adjacency(s, d, n)
    indeg = np.asarray(b.sum(axis=1)).ravel()
    inv_in = np.zeros(n, dtype=np.float64)
    inv_in[indeg > 0] = 1.0 / indeg[indeg > 0]
    a = sp.diags(inv_in) @ b

    out = []
    mean_h = feats
    paths_h = np.ones(n, dtype=np.float64)
    for _ in range(int(hops)):
        mean_h = a @ mean_h
        paths_h = b @ paths_h
        out.append(mean_h)
        out.append(np.log1p(paths_h)[:, None])
    return np.hstack(out) if out else np.zeros((n, 0))


#: names of ``engineered_features``'s columns after the user's own features, in order
ENGINEERED_NAMES = [
    "log_followers", "log_sum_interaction", "mean_interaction", "mean_log_interaction", "mean_tie_age",
    "log_sum_follower_shares", "mean_follower_log_shares", "log_sum_interaction_x_follower_shares",
    "mean_follower_engagement", "log_own_post_reshares", "log_reshares_per_post",
    "log_paths_2hop", "log_sum_interaction_2hop", "log_sum_follower_shares_2hop",
]


def engineered_features(x_user, follows_src, follows_dst, follows_attr, created_user, created_shares):
    """A feature engineer's view of reach: reach is a *sum* over followers (how receptive each is, how strong the
    tie), so next to the user's own features come follower sums and means of the follows edge features, the
    followers' reshare activity, the reshares the user's own posts drew, and 2-hop sums.

    Shapes:
        x_user: [N, F] ``ripple.data.features.user_features`` (columns ``USER_FLAT_NAMES``: 1 = log1p(10 x
            avg_engagement), 3 = log1p(shares made)).
        follows_src, follows_dst: [E] follower, followee of each ``follows`` edge.
        follows_attr: [E, 2] ``follows_edge_features`` (log1p interaction_freq, tie age in years).
        created_user: [P] the author of each post; created_shares: [P] times each post was reshared.
        returns: [N, F + len(ENGINEERED_NAMES)] float64.
    """
    x = _check_2d("x_user", x_user)
    n = x.shape[0]
    s, d = _check_edges(follows_src, follows_dst, n)
    attr = _check_2d("follows_attr", follows_attr, s.shape[0])
    author = check_indices("created_user", created_user, n)
    shares = _check_1d("created_shares", created_shares, author.shape[0])
    indeg = np.bincount(d, minlength=n).astype(np.float64)
    per = np.maximum(indeg, 1.0)

    def follower_sum(v):  # [E] per edge -> [N] summed over each user's followers
        return np.bincount(d, weights=v, minlength=n)

    freq = np.expm1(attr[:, 0])
    f_shares = np.expm1(x[s, 3])  # shares made by the follower of each edge
    posts = np.bincount(author, minlength=n).astype(np.float64)
    own = np.bincount(author, weights=shares, minlength=n)
    b = _in_adjacency(s, d, n)  # B[v, u] = edges u -> v
    w = sp.csr_matrix((freq, (d, s)), shape=(n, n))
    hop1_freq, hop1_shares = follower_sum(freq), follower_sum(f_shares)
    cols = [np.log1p(indeg), np.log1p(hop1_freq), hop1_freq / per, follower_sum(attr[:, 0]) / per,
            follower_sum(attr[:, 1]) / per, np.log1p(hop1_shares), follower_sum(x[s, 3]) / per,
            np.log1p(follower_sum(freq * f_shares)), follower_sum(x[s, 1]) / per, np.log1p(own),
            np.log1p(own / np.maximum(posts, 1.0)), np.log1p(b @ indeg), np.log1p(w @ hop1_freq),
            np.log1p(b @ hop1_shares)]
    return np.hstack([x, np.stack(cols, 1)])


# ----------------------------------------------------------------------------------------------------- lightgbm


def fit_lightgbm(x_train, y_train, x_val, y_val, seed: int = 0, num_threads: int = 2):
    """Fit a LightGBM regressor on ``log1p(y)`` with early stopping on the validation rows.

    Settings: learning rate 0.05, 31 leaves, at most 500 rounds, stopping after 50 rounds without validation
    L2 improvement; deterministic for a given ``seed`` and ``num_threads``.

    Shapes:
        x_train: [n_train, F] float features.
        y_train: [n_train] reach, > -1 (cascade reach is >= 1).
        x_val: [n_val, F] float features, same F.
        y_val: [n_val] reach, > -1.

    Returns a :class:`lightgbm.Booster` (``best_iteration`` set); use :func:`predict_lightgbm`.
    """
    import lightgbm as lgb

    xt = _check_2d("x_train", x_train)
    yt = _check_1d("y_train", y_train, xt.shape[0])
    xv = _check_2d("x_val", x_val)
    yv = _check_1d("y_val", y_val, xv.shape[0])
    if xt.shape[0] == 0:
        raise ValueError("x_train has 0 rows")
    if xv.shape[0] == 0:
        raise ValueError("x_val has 0 rows")
    if xv.shape[1] != xt.shape[1]:
        raise ValueError(f"x_val must have as many columns as x_train ({xt.shape[1]}), got {xv.shape[1]}")
    for name, y in (("y_train", yt), ("y_val", yv)):
        if not np.all(np.isfinite(y)) or y.min() <= -1:
            raise ValueError(f"{name} must be finite and > -1 (log1p target), got min={y.min()} max={y.max()}")
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")

    params = dict(LGBM_PARAMS, seed=int(seed), num_threads=int(num_threads))
    dtrain = lgb.Dataset(xt, label=np.log1p(yt), free_raw_data=True)
    dval = lgb.Dataset(xv, label=np.log1p(yv), reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=LGBM_MAX_ROUNDS,
        valid_sets=[dval],
        valid_names=["val"],
        callbacks=[lgb.early_stopping(LGBM_EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    log.info("lightgbm: %d features, %d train / %d val rows, best iteration %d (val l2 %.4f)", xt.shape[1],
             xt.shape[0], xv.shape[0], booster.best_iteration, booster.best_score["val"]["l2"])
    return booster


def predict_lightgbm(model, x) -> np.ndarray:
    """Predicted reach ``expm1(model(x))`` at the best iteration, clipped at 0.

    Shapes:
        x: [n, F] float features, same F as in training.
        returns: [n] float64.
    """
    feats = _check_2d("x", x)
    expected = model.num_feature()
    if feats.shape[1] != expected:
        raise ValueError(f"x must have {expected} columns (the model's features), got {feats.shape[1]}")
    best = model.best_iteration if model.best_iteration and model.best_iteration > 0 else None
    pred = model.predict(feats, num_iteration=best)
    return np.clip(np.expm1(np.asarray(pred, dtype=np.float64)), 0.0, None)


# ----------------------------------------------------------------------------------------------------- pipeline


def run_baselines(x_flat, follower_count, follows_src, follows_dst, label_idx, reach, split, seed: int = 0,
                  num_threads: int = 1, x_engineered=None) -> dict[str, np.ndarray]:
    """Fit and evaluate every baseline; return predictions for the test users.

    ``x_flat`` is built by the caller; the pipeline passes :func:`ripple.data.features.user_features` (columns
    ``USER_FLAT_NAMES``). ``lightgbm_flat`` uses ``x_flat``; ``lightgbm_2hop`` uses ``x_flat`` followed by
    :func:`hop_aggregates` of it over 2 hops; ``lightgbm_engineered`` uses ``x_engineered``
    (:func:`engineered_features`), and is left out when it is not given. LightGBM models train on the ``"train"`` labels with early stopping
    on the ``"val"`` labels. ``follower_count`` and ``pagerank`` are scores (only their order is meaningful), the
    LightGBM predictions are on the reach scale. ``num_threads`` defaults to 1 (measured faster than 2 on the
    2-core development machine).

    Shapes:
        x_flat: [N, F] float, per-user flat features.
        follower_count: [N] int, >= 0.
        follows_src: [E] int, follower index of each edge.
        follows_dst: [E] int, followee index of each edge.
        label_idx: [L] int, dense user index of each labeled user.
        reach: [L] float, cascade_reach of each labeled user.
        split: [L] str, each one of ``"train"``, ``"val"``, ``"test"``.
        x_engineered: [N, F'] float or None.
        returns: {name: [L_test] float64} for ``BASELINE_NAMES``, rows in label order filtered to ``"test"``.
    """
    flat = _check_2d("x_flat", x_flat)
    n = flat.shape[0]
    fc = _check_1d("follower_count", follower_count, n)
    if n and fc.min() < 0:
        raise ValueError(f"follower_count must be >= 0, got min={fc.min()}")
    s, d = _check_edges(follows_src, follows_dst, n)

    idx = check_indices("label_idx", label_idx, n)
    y = _check_1d("reach", reach, idx.shape[0])
    sp_arr = np.asarray(split).astype(str)
    if sp_arr.ndim != 1 or sp_arr.shape[0] != idx.shape[0]:
        raise ValueError(f"split must be 1-D with length {idx.shape[0]}, got shape {sp_arr.shape}")
    bad = sorted(set(np.unique(sp_arr).tolist()) - {"train", "val", "test"})
    if bad:
        raise ValueError(f"split values must be 'train', 'val' or 'test', got {bad}")
    masks = {name: sp_arr == name for name in ("train", "val", "test")}
    for name, mask in masks.items():
        if not mask.any():
            raise ValueError(f"split has no {name!r} rows (counts: "
                             f"{ {k: int(v.sum()) for k, v in masks.items()} })")

    log.info("baselines: %d users, %d edges, %d/%d/%d train/val/test labels", n, s.shape[0],
             *(int(m.sum()) for m in masks.values()))
    feats = baseline_features(flat, s, d, x_engineered)
    te = idx[masks["test"]]
    out: dict[str, np.ndarray] = {"follower_count": fc[te].astype(np.float64), "pagerank": pagerank(s, d, n)[te]}
    for name, model in fit_baselines({k: f[idx] for k, f in feats.items()}, y, sp_arr, seed, num_threads).items():
        out[name] = predict_lightgbm(model, feats[name][te])
    return out


def baseline_features(x_flat: np.ndarray, follows_src: np.ndarray, follows_dst: np.ndarray,
                      x_engineered: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each LightGBM baseline's per-user features (``run_baselines``). Shapes: x_flat [N, F] -> {name: [N, F_name]}."""
    n = x_flat.shape[0]
    flat = np.asarray(x_flat, dtype=np.float64)
    feats = {"lightgbm_flat": flat,
             "lightgbm_2hop": np.hstack([flat, hop_aggregates(flat, follows_src, follows_dst, n, hops=2)])}
    if x_engineered is not None:
        feats["lightgbm_engineered"] = _check_2d("x_engineered", x_engineered, n)
    return feats


def fit_baselines(rows: dict[str, np.ndarray], reach: np.ndarray, split: np.ndarray, seed: int = 0,
                  num_threads: int = 1) -> dict:
    """Fit each LightGBM on the ``train`` rows with early stopping on the ``val`` rows; returns the boosters
    (``predict_lightgbm`` predicts with them).

    The rows are label rows, not users: in a training table at many cut times one user has a row per time, each
    with the features as of that time. Shapes: rows {name: [L, F]}; reach, split [L]."""
    tr, va = split == "train", split == "val"
    return {name: fit_lightgbm(f[tr], reach[tr], f[va], reach[va], seed=seed, num_threads=num_threads)
            for name, f in rows.items()}


#: the hybrid's weights on the GNN's log prediction, tried on the validation rows
HYBRID_WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def hybrid(gnn: np.ndarray, lgbm: np.ndarray, w: float) -> np.ndarray:
    """The GNN's and engineered LightGBM's predicted reach blended in log space, ``w`` on the GNN.
    Shapes: [n], [n] -> [n] reach."""
    return np.expm1(w * np.log1p(np.clip(gnn, 0, None)) + (1 - w) * np.log1p(np.clip(lgbm, 0, None)))


def hybrid_weight(y_val: np.ndarray, gnn_val: np.ndarray, lgbm_val: np.ndarray) -> float:
    """The weight in ``HYBRID_WEIGHTS`` whose blend ranks the validation rows best (Spearman; ties: the first,
    i.e. more weight on LightGBM)."""
    from ripple.evaluate.metrics import spearman

    scores = [spearman(y_val, hybrid(gnn_val, lgbm_val, w)) for w in HYBRID_WEIGHTS]
    return float(HYBRID_WEIGHTS[int(np.argmax(scores))])


def stack_features(gnn_pred: np.ndarray, gnn_emb: np.ndarray, x_engineered: np.ndarray) -> np.ndarray:
    """The stacked model's inputs per row (LightRDL's recipe: a GNN for the structure, engineered temporal features
    beside it): the row's engineered features, the GNN's predicted reach (log1p) and its embedding, all as of the
    row's time. Shapes: gnn_pred [n]; gnn_emb [n, H]; x_engineered [n, F] -> [n, F + 1 + H]."""
    pred = np.log1p(np.clip(_check_1d("gnn_pred", gnn_pred), 0, None))[:, None]
    return np.hstack([_check_2d("x_engineered", x_engineered, len(pred)), pred,
                      _check_2d("gnn_emb", gnn_emb, len(pred))])
