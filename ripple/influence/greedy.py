"""Influence maximization from a trained run: pick K seed users whose *joint* cascade reach is large.

Why not just the K highest predicted reaches: the model predicts each user's reach *alone*. Seeds whose cascades
run through the same followers (the same community, two hubs with one audience) add far less together than the
sum of their scores; the best set spreads its seeds over audiences that do not overlap. Spread is submodular, so the
classic answer is greedy on marginal gains (CELF), but that needs the activation probabilities and thousands of
simulations per gain. ripple has neither (``_truth`` is off limits), and has something better than nothing: a
learned per-user reach and the observable follower graph.

The surrogate here is a *probabilistic coverage* function, in two steps:

1. Value: each candidate's reach, re-estimated by one step of the cascade recursion
   (:func:`lookahead_reach`): ``1 + sum_u p(c, u) * reach(u)`` over its followers, with the model's predicted reach
   of every follower and an activation probability from observable columns (the candidate's observed
   engagement rate, shared among its followers by tie strength). A regression on log-reach shrinks the extreme users
   that influence maximization is about; many followers' predictions plus an observed rate do not shrink that way.
2. Overlap: each candidate ``c`` gets a footprint over its follower neighbourhood (followers, and followers of
   followers): ``q_c(x)``, a pseudo-probability that ``c``'s cascade reaches ``x``, shaped by the likely paths
   (:func:`build_footprints`) and scaled so that ``1 + sum_x q_c(x)`` is ``c``'s value. A set ``S`` covers ``x``
   with ``1 - prod_{c in S} (1 - q_c(x))``; the objective (expected covered users) is monotone submodular, so lazy
   greedy (:func:`overlap_greedy`) solves the surrogate exactly in milliseconds. A candidate's marginal gain is its
   value minus what the chosen seeds' footprints already reach: two hubs with one audience are worth one hub.

Everything here is pure numpy/scipy on arrays: no IO, no Ray. ``ripple.pipeline.seeds`` streams the inputs
(the run's scores, the follows table) and calls these functions. Baselines that see only the graph
(:func:`top_k` on follower counts, :func:`degree_discount`) live here too; CELF on the truth probabilities is in
``ripple.influence.spread``.
"""
from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = ["Footprints", "top_k", "lookahead_reach", "build_footprints", "overlap_greedy",
           "degree_discount"]


def _check_k(k, n: int, what: str) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of {what} ({n}); ask for at most {n} seeds")
    return int(k)


def _check_1d(name: str, a, n: int | None = None, dtype=None) -> np.ndarray:
    arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    return arr


def _check_finite(name: str, a: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {float(a[bad[0]])} is not finite ({bad.size} such values); "
                         "re-run `ripple embed` or check the input")


def top_k(score, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first; ties go to the lower index (deterministic).

    Shapes:
        score: ``[N]`` float. Returns ``[k]`` int64.
    """
    score = _check_1d("score", score, dtype=np.float64)
    _check_finite("score", score)
    k = _check_k(k, score.shape[0], "users")
    part = np.argpartition(-score, k - 1)[:k] if k < score.shape[0] else np.arange(score.shape[0])
    # the k-th value may tie with users outside the partition: take every user at or above it, then sort
    cut = score[part].min()
    pool = np.flatnonzero(score >= cut)
    order = np.lexsort((pool, -score[pool]))
    return pool[order][:k].astype(np.int64)


@dataclass
class Footprints:
    """Per-candidate coverage footprints in CSR form over compact node indices.

    ``nodes[indptr[c]:indptr[c+1]]`` are the local node indices candidate ``c`` may reach and ``q`` the matching
    pseudo-probabilities in ``[0, 1]``; ``self_node[c]`` is ``c``'s own local index (covered with probability 1).
    ``keys[j]`` is the caller's key (user id or global index) of local node ``j``.

    Shapes:
        indptr: ``[M + 1]`` int64; nodes, q: ``[F]`` (int64, float64); self_node: ``[M]`` int64; keys: ``[U]`` int64.
    """

    indptr: np.ndarray
    nodes: np.ndarray
    q: np.ndarray
    self_node: np.ndarray
    keys: np.ndarray

    @property
    def num_candidates(self) -> int:
        return int(self.self_node.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.keys.shape[0])


def _row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    tot = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, tot, out=np.zeros_like(tot), where=tot > 0)
    return sp.csr_matrix(sp.diags(inv) @ m)


def lookahead_reach(num_candidates: int, hop1_cand, hop1_weight, follower_reach, engagement) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """One step of the cascade recursion: ``reach(c) = 1 + sum_u p(c, u) * reach(u)`` over ``c``'s followers ``u``.

    Why: a regression on log-reach shrinks the extreme users the greedy cares about most towards the mean, and one
    candidate's score is one noisy number. Its followers' predicted reaches are many numbers, and how many
    users ``c``'s own earlier posts activated is observed (``avg_engagement``: reshares per follower; a platform
    cannot tell a follower's reshare from a deeper one, so this is an upper end of the first-hop rate). The
    activation probability of follower ``u`` is that rate, shared among ``c``'s followers in proportion to the
    edge weight (``interaction_freq``, the observable strength of the tie):
    ``p(c, u) = min(1, engagement[c] * deg(c) * w(c, u) / sum_u' w(c, u'))``.

    Args:
        num_candidates: ``M``.
        hop1_cand: candidate position (``0..M-1``) of each follows edge into a candidate.
        hop1_weight: the edge's non-negative weight (all-zero weights of a candidate count as equal weights).
        follower_reach: the model's predicted reach of the edge's follower (values < 1 count as 1).
        engagement: observed reshares per follower of each candidate's posts (``avg_engagement``), >= 0.

    Returns:
        ``(reach, p)``: the look-ahead reach of every candidate (>= 1; exactly 1 without followers or engagement) and
        the activation probability of every edge.

    Shapes:
        hop1_cand, hop1_weight, follower_reach: ``[E1]``; engagement: ``[M]``. Returns ``[M]``, ``[E1]`` float64.
    """
    m = int(num_candidates)
    hop1_cand = _check_1d("hop1_cand", hop1_cand).astype(np.int64)
    e1 = hop1_cand.shape[0]
    w = _check_1d("hop1_weight", hop1_weight, e1, np.float64)
    r = _check_1d("follower_reach", follower_reach, e1, np.float64)
    eng = _check_1d("engagement", engagement, m, np.float64)
    for name, a in (("hop1_weight", w), ("follower_reach", r), ("engagement", eng)):
        _check_finite(name, a)
        bad = np.flatnonzero(a < 0)
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {float(a[bad[0]])}: must be >= 0")
    if e1 and (hop1_cand.min() < 0 or hop1_cand.max() >= m):
        raise ValueError(f"hop1_cand must index candidates in [0, {m}), got min={hop1_cand.min()} "
                         f"max={hop1_cand.max()}")
    deg = np.bincount(hop1_cand, minlength=m).astype(np.float64)
    wsum = np.bincount(hop1_cand, weights=w, minlength=m)
    share = np.where(wsum[hop1_cand] > 0, w / np.where(wsum[hop1_cand] > 0, wsum[hop1_cand], 1.0),
                     1.0 / np.maximum(deg[hop1_cand], 1.0))
    p = np.minimum(1.0, eng[hop1_cand] * deg[hop1_cand] * share)
    reach = 1.0 + np.bincount(hop1_cand, weights=p * np.maximum(r, 1.0), minlength=m)
    return reach, p


def build_footprints(cand_keys, reach, hop1_cand, hop1_node, hop1_p, hop2_mid=None, hop2_node=None,
                     hop2_weight=None, mid_keys=None, mid_onward=None, max_footprint: int = 20_000) -> Footprints:
    """Coverage footprints of the candidates over their follower neighbourhoods, sized by their estimated reach.

    Shape of a footprint: follower ``u`` of ``c`` gets weight ``p(c, u)`` (its activation probability); a follower
    ``x`` of ``u`` gets ``sum_u p(c, u) * onward(u) * s(u, x)``: the activations expected beyond ``u``
    (``onward(u)``, e.g. ``u``'s predicted reach minus itself) shared among ``u``'s followers by the normalized
    edge weight ``s(u, x)``. So users reached through many likely paths weigh most, and the cascade's deeper mass
    lands on the second hop instead of being dropped. Size: one factor per candidate scales the weights so they sum
    to ``reach[c] - 1`` (the seed itself is covered with probability 1), then each is clipped to 1. Each footprint
    keeps its ``max_footprint`` heaviest nodes.

    Args:
        cand_keys: key (user id) of each candidate.
        reach: estimated reach of each candidate (values < 1 count as 1).
        hop1_cand, hop1_node, hop1_p: one row per follows edge into a candidate: candidate position (``0..M-1``),
            the follower's key, the activation probability (any non-negative weight).
        hop2_mid, hop2_node, hop2_weight: one row per follows edge into a hop-1 follower: that follower's key, its
            follower's key, a non-negative weight. Omit all hop-2 arguments for 1-hop footprints.
        mid_keys, mid_onward: expected onward activations of hop-1 followers (keys absent count as 0).
        max_footprint: nodes kept per footprint (bounds memory at ``M * max_footprint``).

    Shapes:
        cand_keys, reach: ``[M]``; hop1_*: ``[E1]``; hop2_*: ``[E2]``; mid_keys, mid_onward: ``[V]``. Returns
        :class:`Footprints` over the union of candidates and their kept neighbours.
    """
    cand_keys = _check_1d("cand_keys", cand_keys).astype(np.int64)
    m = cand_keys.shape[0]
    if m == 0:
        raise ValueError("no candidates: the candidate pool is empty")
    if np.unique(cand_keys).shape[0] != m:
        raise ValueError("cand_keys must be distinct (a user is a candidate once)")
    reach = _check_1d("reach", reach, m, np.float64)
    _check_finite("reach", reach)
    if isinstance(max_footprint, bool) or not isinstance(max_footprint, (int, np.integer)) or max_footprint < 1:
        raise ValueError(f"max_footprint must be a positive integer, got {max_footprint!r}")
    hop1_cand = _check_1d("hop1_cand", hop1_cand).astype(np.int64)
    e1 = hop1_cand.shape[0]
    hop1_node = _check_1d("hop1_node", hop1_node, e1).astype(np.int64)
    hop1_p = _check_1d("hop1_p", hop1_p, e1, np.float64)
    if e1 and (hop1_cand.min() < 0 or hop1_cand.max() >= m):
        raise ValueError(f"hop1_cand must index candidates in [0, {m}), got min={hop1_cand.min()} "
                         f"max={hop1_cand.max()}")
    use_hop2 = hop2_mid is not None
    if use_hop2:
        hop2_mid = _check_1d("hop2_mid", hop2_mid).astype(np.int64)
        e2 = hop2_mid.shape[0]
        hop2_node = _check_1d("hop2_node", hop2_node, e2).astype(np.int64)
        hop2_weight = _check_1d("hop2_weight", hop2_weight, e2, np.float64)
        if mid_keys is None or mid_onward is None:
            raise ValueError("hop-2 edges need mid_keys and mid_onward (the onward activations of hop-1 followers)")
        mid_keys = _check_1d("mid_keys", mid_keys).astype(np.int64)
        mid_onward = _check_1d("mid_onward", mid_onward, mid_keys.shape[0], np.float64)
    else:
        hop2_mid = hop2_node = mid_keys = np.zeros(0, np.int64)
        hop2_weight = mid_onward = np.zeros(0)
    for name, w in (("hop1_p", hop1_p), ("hop2_weight", hop2_weight), ("mid_onward", mid_onward)):
        bad = np.flatnonzero(~(w >= 0) | ~np.isfinite(w))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {float(w[bad[0]])}: weights must be finite and >= 0")

    keys, inv = np.unique(np.concatenate([cand_keys, hop1_node, hop2_mid, hop2_node, mid_keys]),
                          return_inverse=True)
    u = keys.shape[0]
    cuts = np.cumsum([m, e1, hop2_mid.shape[0], hop2_node.shape[0]])
    self_node, h1, mid, h2, mk = np.split(inv, cuts)

    walk = sp.csr_matrix((hop1_p, (hop1_cand, h1)), shape=(m, u))
    if use_hop2 and hop2_mid.shape[0]:
        onward = np.zeros(u)
        onward[mk] = mid_onward
        s2 = _row_normalize(sp.csr_matrix((hop2_weight, (mid, h2)), shape=(u, u)))
        walk = walk + (walk @ sp.diags(onward)) @ s2
    # a candidate's footprint leaves out the candidate itself (covered with probability 1 when chosen)
    coo = sp.coo_matrix(walk)
    keep = coo.col != self_node[coo.row]
    walk = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=(m, u))
    walk.eliminate_zeros()

    mass = np.asarray(walk.sum(axis=1)).ravel()
    target = np.maximum(reach, 1.0) - 1.0
    scale = np.divide(target, mass, out=np.zeros(m), where=mass > 0)
    counts = np.diff(walk.indptr)
    if counts.max(initial=0) > max_footprint:  # keep each footprint's heaviest nodes (rare: huge neighbourhoods)
        order = np.lexsort((-walk.data, np.repeat(np.arange(m), counts)))
        rank = np.arange(order.shape[0]) - np.repeat(walk.indptr[:-1], counts)
        sel = np.sort(order[rank < max_footprint])
        rows = np.repeat(np.arange(m), counts)[sel]
        walk = sp.csr_matrix((walk.data[sel], (rows, walk.indices[sel])), shape=(m, u))
    q = np.minimum(walk.data * np.repeat(scale, np.diff(walk.indptr)), 1.0)
    fp = Footprints(walk.indptr.astype(np.int64), walk.indices.astype(np.int64), q, self_node.astype(np.int64), keys)
    log.debug("footprints: %d candidates, %d nodes, %d entries", m, u, fp.nodes.shape[0])
    return fp


def overlap_greedy(k: int, fp: Footprints) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy maximization of the expected coverage ``sum_x 1 - prod_{c in S} (1 - q_c(x))``.

    The marginal gain of ``c`` is ``(1 - pi(c)) + sum_x q_c(x) (1 - pi(x))``, where ``pi`` is the coverage of the
    seeds chosen so far: ``c``'s estimated reach, minus what the chosen seeds' footprints already reach. Gains only
    shrink as the set grows (submodularity), so a candidate is re-evaluated only when it surfaces at the top of
    the heap with a stale gain (CELF's trick, exact for this objective).

    Returns:
        ``(chosen, gains)``: candidate positions in pick order and their marginal gains.

    Shapes:
        Returns ``[k]`` int64 and ``[k]`` float64.
    """
    m = fp.num_candidates
    k = _check_k(k, m, "candidates")
    pi = np.zeros(fp.num_nodes)
    ptr, nodes, q, me = fp.indptr, fp.nodes, fp.q, fp.self_node

    def gain(c: int) -> float:
        lo, hi = ptr[c], ptr[c + 1]
        return float((1.0 - pi[me[c]]) + np.dot(q[lo:hi], 1.0 - pi[nodes[lo:hi]]))

    heap = [(-(1.0 + float(q[ptr[c]:ptr[c + 1]].sum())), c, 0) for c in range(m)]
    heapq.heapify(heap)
    chosen: list[int] = []
    gains: list[float] = []
    evaluations = m
    while len(chosen) < k:
        neg, c, stamp = heapq.heappop(heap)
        if stamp == len(chosen):
            chosen.append(c)
            gains.append(-neg)
            lo, hi = ptr[c], ptr[c + 1]
            pi[me[c]] = 1.0
            sel = nodes[lo:hi]
            pi[sel] = 1.0 - (1.0 - pi[sel]) * (1.0 - q[lo:hi])
            continue
        heapq.heappush(heap, (-gain(c), c, len(chosen)))
        evaluations += 1
    log.debug("overlap greedy: %d seeds from %d candidates, %d gain evaluations", k, m, evaluations)
    return np.asarray(chosen, dtype=np.int64), np.asarray(gains)


def degree_discount(indptr, indices, k: int, p: float = 0.01) -> np.ndarray:
    """DegreeDiscountIC (Chen, Wang & Yang 2009) on a directed influence graph with a uniform probability ``p``.

    ``d_v`` is ``v``'s out-degree in the influence direction (its number of followers); once ``u`` is chosen, every
    ``v`` that ``u`` can influence gets ``t_v += 1`` and the discounted degree ``d_v - 2 t_v - (d_v - t_v) t_v p``.
    A baseline: it sees only the graph (``p`` is a constant, never fitted to the truth probabilities).

    Shapes:
        indptr: ``[N + 1]`` int, out-edges of ``u`` are ``indices[indptr[u]:indptr[u+1]]``; indices: ``[E]`` int.
        Returns ``[k]`` int64.
    """
    indptr = _check_1d("indptr", indptr).astype(np.int64)
    indices = _check_1d("indices", indices).astype(np.int64)
    n = indptr.shape[0] - 1
    if n < 0 or (indptr.shape[0] and (indptr[0] != 0 or indptr[-1] != indices.shape[0]
                                      or np.any(np.diff(indptr) < 0))):
        raise ValueError("indptr must start at 0, be non-decreasing and end at len(indices)")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    k = _check_k(k, n, "users")
    d = np.diff(indptr).astype(np.float64)
    t = np.zeros(n)
    dd = d.copy()
    chosen = np.zeros(n, dtype=bool)
    heap = [(-dd[v], v) for v in range(n)]
    heapq.heapify(heap)
    out: list[int] = []
    while len(out) < k:
        neg, v = heapq.heappop(heap)
        if chosen[v] or -neg != dd[v]:
            continue  # stale entry
        out.append(v)
        chosen[v] = True
        for w in np.unique(indices[indptr[v]:indptr[v + 1]]).tolist():
            if chosen[w]:
                continue
            t[w] += 1
            dd[w] = d[w] - 2 * t[w] - (d[w] - t[w]) * t[w] * p
            heapq.heappush(heap, (-dd[w], w))
    return np.asarray(out, dtype=np.int64)
