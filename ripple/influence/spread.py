"""Independent evaluation of seed sets: expected independent-cascade (IC) spread with ``cynetdiff``, and CELF.

Why a separate module, and why cynetdiff: ``ripple seeds`` must be judged by something that shares no code with the
way the seeds were chosen, nor with the simulator that made the labels (``ripple.data.ic``). cynetdiff is an
independent C++ IC implementation; the expected spread of every method's seeds is its Monte-Carlo mean over
``num_sims`` (>= 1000 for reported numbers) simulations, with the standard error next to it.

Edge direction: an IC edge ``src -> dst`` with probability ``p`` means *src can activate dst*. On ripple's datasets
that is ``<data>/_truth/ic_edges`` as written (src = influencer = followee, dst = follower). Reach counts every
activated user, the seeds included.

CELF (Leskovec et al. 2007, lazy greedy over Monte-Carlo marginal gains) lives here as the expensive reference
method: its gains come from simulations on the truth probabilities, which only an evaluation may see.

Everything takes dense node indices ``0..num_nodes-1``; mapping user ids is the caller's job.
"""
from __future__ import annotations

import heapq
import logging
import math
import time

import numpy as np

from ripple.evaluate.baselines import check_indices

log = logging.getLogger(__name__)

__all__ = ["SpreadOracle", "expected_spread", "celf"]


def _check_graph(src, dst, p, num_nodes) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    if isinstance(num_nodes, (bool, np.bool_)) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
    n = int(num_nodes)
    if n >= 2**32:
        raise ValueError(f"num_nodes={n} does not fit cynetdiff's 32-bit node ids (< 2**32)")
    src, dst, p = np.asarray(src), np.asarray(dst), np.asarray(p, dtype=np.float64)
    for name, a in (("src", src), ("dst", dst), ("p", p)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not (src.size == dst.size == p.size):
        raise ValueError(f"src, dst and p must have the same length, got {src.size}, {dst.size}, {p.size}")
    for name, a in (("src", src), ("dst", dst)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer node indices, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"{name} indices must lie in [0, {n}), got min={a.min()} max={a.max()}")
    bad = np.flatnonzero(~((p >= 0.0) & (p <= 1.0)))
    if bad.size:
        raise ValueError(f"p[{bad[0]}] = {float(p[bad[0]])} is not a probability in [0, 1] ({bad.size} such edges)")
    return src.astype(np.int64), dst.astype(np.int64), p, n


def _check_seed_list(seeds, n: int, name: str = "seeds") -> list[int]:
    s = check_indices(name, seeds, n)
    return [int(x) for x in np.unique(s)]  # cynetdiff wants Python ints; repeats count once



def require_cynetdiff():
    """cynetdiff's IC model class, or an error naming the extra that installs it (only the evaluation of seed
    sets simulates cascades, so it is not a core dependency)."""
    try:
        from cynetdiff.models import IndependentCascadeModel
    except ImportError as e:
        raise RuntimeError("`ripple seeds --evaluate` simulates cascades with cynetdiff, which is not installed: "
                           "pip install 'ripple[eval]'") from e
    return IndependentCascadeModel

class SpreadOracle:
    """An IC model over fixed edges, built once, asked for the spread of many seed sets.

    Args:
        src, dst, p: IC edges (``src`` can activate ``dst`` with probability ``p``); parallel edges are independent
            chances.
        num_nodes: nodes are ``0..num_nodes-1``.
        seed: seeds the model's random generator (results are reproducible for a given call sequence).

    Shapes:
        src, dst: ``[E]`` int; p: ``[E]`` float in ``[0, 1]``.
    """

    def __init__(self, src, dst, p, num_nodes: int, seed: int = 0):
        IndependentCascadeModel = require_cynetdiff()

        src, dst, p, n = _check_graph(src, dst, p, num_nodes)
        order = np.argsort(src, kind="stable")
        # cynetdiff's CSR: starts[u] is the first out-edge of u, one entry per node (no trailing total)
        starts = np.searchsorted(src[order], np.arange(n)).astype(np.uint32)
        edges = np.ascontiguousarray(dst[order].astype(np.uint32))
        probs = np.ascontiguousarray(p[order].astype(np.float32))
        if edges.size == 0:  # cynetdiff needs a non-empty buffer; a lone self-loop with p=0 changes nothing
            edges, probs = np.zeros(1, np.uint32), np.zeros(1, np.float32)
        self.num_nodes, self.num_edges = n, int(src.size)
        self._arrays = (starts, edges, probs)  # the model keeps memoryviews: keep the buffers alive
        self.model = IndependentCascadeModel(starts, edges, activation_probs=probs,
                                             rng=np.random.default_rng(seed))

    def spread(self, seeds, num_sims: int = 1000) -> tuple[float, float]:
        """Mean and standard error (``std(ddof=1) / sqrt(num_sims)``) of the number of activated nodes.

        Shapes:
            seeds: ``[K]`` int node indices (repeats count once). Returns two floats; ``(0.0, 0.0)`` for no seeds.
        """
        counts = self.spread_samples(seeds, num_sims)
        if counts.size == 0:
            return 0.0, 0.0
        se = float(counts.std(ddof=1) / math.sqrt(counts.size)) if counts.size > 1 else 0.0
        return float(counts.mean()), se

    def spread_samples(self, seeds, num_sims: int = 1000) -> np.ndarray:
        """The activated-node count of each of ``num_sims`` independent simulations.

        Shapes:
            seeds: ``[K]`` int. Returns ``[num_sims]`` float64 (``[0]`` for an empty seed set).
        """
        if isinstance(num_sims, bool) or not isinstance(num_sims, (int, np.integer)) or num_sims < 1:
            raise ValueError(f"num_sims must be a positive integer, got {num_sims!r}")
        seeds = _check_seed_list(seeds, self.num_nodes)
        if not seeds:
            return np.zeros(0)
        m = self.model
        m.set_seeds(seeds)
        counts = np.empty(int(num_sims))
        for i in range(int(num_sims)):
            m.reset_model()
            m.advance_until_completion()
            counts[i] = m.get_num_activated_nodes()
        return counts

    def marginal_gain(self, seed_set, candidate: int, num_sims: int) -> float:
        """Mean number of nodes ``candidate`` activates on top of ``seed_set``'s cascade, in the same simulations.

        Each simulation runs ``seed_set``'s cascade, then adds ``candidate`` and counts only the newly activated
        nodes, so the estimate's variance is that of the gain, not of the whole spread.
        """
        base = _check_seed_list(seed_set, self.num_nodes, "seed_set")
        if candidate in base:
            return 0.0
        return float(self.model.compute_marginal_gains(base, [int(candidate)], int(num_sims))[1])


def expected_spread(src, dst, p, num_nodes: int, seeds, num_sims: int = 1000, seed: int = 0) -> tuple[float, float]:
    """One-shot :meth:`SpreadOracle.spread`: ``(mean, stderr)`` of the IC spread of ``seeds``.

    Shapes:
        src, dst: ``[E]`` int; p: ``[E]`` float; seeds: ``[K]`` int.
    """
    return SpreadOracle(src, dst, p, num_nodes, seed=seed).spread(seeds, num_sims)


def celf(oracle: SpreadOracle, k: int, candidates=None, num_sims: int = 200,
         checkpoints: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """CELF lazy greedy (Leskovec et al. 2007) over Monte-Carlo marginal gains.

    Greedy on a submodular spread picks, K times, the node with the largest marginal gain; CELF keeps every
    candidate's last computed gain in a max-heap and recomputes only the top one when it is stale (gains only
    shrink as the set grows), which is exact greedy with far fewer evaluations. Gains are Monte-Carlo estimates over
    ``num_sims`` simulations each, so the result is greedy up to that noise.

    Args:
        oracle: the IC model (truth probabilities: an evaluation-only method).
        k: number of seeds, 1 <= k <= number of candidates.
        candidates: node indices to choose from (default: every node).
        num_sims: simulations per marginal-gain estimate.
        checkpoints: seed-set sizes at which to record the elapsed selection time (the greedy's prefixes are its
            smaller-K answers).

    Returns:
        ``(seeds, gains, seconds_at)``: chosen nodes in order, their estimated marginal gains, and the elapsed
        seconds when the set reached each size in ``checkpoints`` (and ``k``).

    Shapes:
        candidates: ``[C]`` int. Returns ``[k]`` int64, ``[k]`` float64, dict.
    """
    t0 = time.perf_counter()
    pool = (np.arange(oracle.num_nodes) if candidates is None
            else np.unique(np.asarray(_check_seed_list(candidates, oracle.num_nodes, "candidates"))))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= pool.size:
        raise ValueError(f"k must be an integer in [1, {pool.size}] (the number of candidates), got {k!r}")
    heap = []
    for v in pool.tolist():
        heap.append((-oracle.marginal_gain([], v, num_sims), v, 0))
    heapq.heapify(heap)
    log.info("celf: first pass over %d candidates (%d sims each) in %.1fs", pool.size, num_sims,
             time.perf_counter() - t0)
    chosen: list[int] = []
    gains: list[float] = []
    seconds_at: dict[int, float] = {}
    evaluations = pool.size
    wanted = set(int(c) for c in checkpoints) | {int(k)}
    while len(chosen) < k:
        neg, v, round_ = heapq.heappop(heap)
        if round_ == len(chosen):  # fresh for the current set: by submodularity it is the best
            chosen.append(v)
            gains.append(-neg)
            if len(chosen) in wanted:
                seconds_at[len(chosen)] = time.perf_counter() - t0
            continue
        heapq.heappush(heap, (-oracle.marginal_gain(chosen, v, num_sims), v, len(chosen)))
        evaluations += 1
    log.info("celf: %d seeds, %d gain evaluations, %.1fs", k, evaluations, time.perf_counter() - t0)
    return np.asarray(chosen, dtype=np.int64), np.asarray(gains), seconds_at
