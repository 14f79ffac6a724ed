"""Vectorized independent-cascade (IC) simulation in numpy.

Model: a directed edge ``src -> dst`` with probability ``p`` means *src influences dst*. A node activated in
round ``r`` gets exactly one chance, in round ``r + 1``, to activate each of its out-neighbours ``v`` with
probability ``p(u -> v)``, independently of everything else. Seeds are active in round 0. The cascade stops when a
round activates nothing new. The *reach* (spread) of a simulation is the number of activated nodes, the seeds
included, so a single-seed reach is always >= 1. Parallel edges give independent chances; self loops are harmless.

Many independent simulations run at once. The state of a batch ("chunk") of simulations is a set of
``(sim, node)`` pairs encoded as int64 keys ``sim * num_nodes + node``:

* the *frontier* (pairs activated in the last round) is expanded through the out-edge CSR with
  ``np.repeat`` / offset arithmetic, one uniform draw per traversed edge;
* successful draws are de-duplicated against the pairs already activated in the same simulation, using either a
  boolean bitmap over ``chunk_sims * num_nodes`` cells (when that is small) or a sorted int64 key array merged
  every round (``np.searchsorted`` + ``np.insert``). The choice is automatic.

Python only loops over BFS rounds (and over chunks). Memory is bounded by ``max_active_pairs``: chunk sizes are
picked from the reach observed so far, a chunk whose number of active pairs grows past the bound is split in two
(simulations are independent, so splitting a batch by simulation id changes nothing statistically), and a round
whose frontier would traverse more than ``max_active_pairs`` edges is expanded in pieces.

Results are a deterministic function of the graph, the arguments and the state of ``rng``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ICGraph", "simulate_reach", "simulate_set_spread", "simulate_cascades"]

#: Largest bitmap (cells = chunk_sims * num_nodes, one byte each) used for de-duplication.
_BITMAP_MAX_CELLS = 50_000_000
#: Below this many simulations per chunk a bitmap chunk is considered too small to be worth it; the sorted-key
#: representation with a larger chunk is used instead.
_MIN_BITMAP_CHUNK_SIMS = 2048
#: Use a bitmap only when the expected reach is at least ``num_nodes / _BITMAP_MIN_REACH_RATIO``.
_BITMAP_MIN_REACH_RATIO = 1000
#: Simulations in the first chunk, which measures the typical reach for sizing the following chunks.
_PROBE_SIMS = 1024
#: Keys ``sim * num_nodes + node`` must stay well inside int64.
_MAX_KEY = 2**62


class ICGraph:
    """A directed graph with per-edge activation probabilities, stored as a CSR by influencer (``src``).

    Built once and reused by every simulation call.

    Args:
        src: influencer node id of each edge.
        dst: influenced node id of each edge.
        p: activation probability of each edge, in ``[0, 1]``.
        num_nodes: number of nodes; ids must lie in ``[0, num_nodes)``.

    Shapes:
        src, dst, p: ``[E]`` (integer, integer, float).
        indptr: ``[num_nodes + 1]`` int64 — out-edges of ``u`` are ``indptr[u]:indptr[u + 1]``.
        indices: ``[E]`` int64 — ``dst`` in CSR order.
        probs: ``[E]`` float64 — ``p`` in CSR order.
        out_degree: ``[num_nodes]`` int64.

    Raises:
        ValueError: mismatched lengths, non-1-D or non-integer ids, ids out of range, p outside ``[0, 1]`` or NaN,
            negative ``num_nodes``. The message names the array, the offending value and its index.
    """

    def __init__(self, src, dst, p, num_nodes: int):
        if isinstance(num_nodes, (bool, np.bool_)) or not isinstance(num_nodes, (int, np.integer)):
            raise ValueError(f"num_nodes must be an integer, got {num_nodes!r}")
        num_nodes = int(num_nodes)
        if num_nodes < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        src = _as_id_array(src, "src")
        dst = _as_id_array(dst, "dst")
        p = np.asarray(p)
        if p.ndim != 1:
            raise ValueError(f"p must be 1-D, got shape {p.shape}")
        if p.size and p.dtype.kind not in "fiu":
            raise ValueError(f"p must be a real-valued array, got dtype {p.dtype}")
        p = p.astype(np.float64, copy=False)
        if not (src.size == dst.size == p.size):
            raise ValueError(
                f"src, dst and p must have the same length, got len(src)={src.size}, len(dst)={dst.size}, "
                f"len(p)={p.size}"
            )
        for name, arr in (("src", src), ("dst", dst)):
            bad = np.flatnonzero((arr < 0) | (arr >= num_nodes))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"{name}[{i}] = {int(arr[i])} is out of range: node ids must be in [0, {num_nodes}) "
                    f"({bad.size} offending entries)"
                )
        bad = np.flatnonzero(~((p >= 0.0) & (p <= 1.0)))  # also catches NaN
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"p[{i}] = {float(p[i])!r} is not a probability: must be in [0, 1] ({bad.size} offending entries)"
            )

        self.num_nodes = num_nodes
        self.num_edges = int(src.size)
        order = np.argsort(src, kind="stable")
        self.out_degree = np.bincount(src, minlength=num_nodes).astype(np.int64, copy=False)
        self.indptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(self.out_degree, out=self.indptr[1:])
        self.indices = np.ascontiguousarray(dst[order])
        self.probs = np.ascontiguousarray(p[order])

    def __repr__(self) -> str:
        return f"ICGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges})"


def simulate_reach(
    graph: ICGraph,
    seeds: np.ndarray,
    num_sims: int,
    rng: np.random.Generator,
    max_active_pairs: int = 20_000_000,
) -> np.ndarray:
    """Mean reach of each single seed, each seed simulated ``num_sims`` times independently.

    Args:
        graph: the IC graph.
        seeds: seed node ids (repeats allowed; each entry is simulated independently).
        num_sims: simulations per seed, >= 1.
        rng: source of randomness.
        max_active_pairs: bound on the ``(sim, node)`` pairs (and on the edges expanded per round piece) held in
            memory at once. It is a soft bound: a batch is split once it passes the bound, so one round's growth,
            a single huge simulation or a single node with more out-edges can overshoot it.

    Returns:
        Mean number of activated nodes (seed included) per seed, float64.

    Shapes:
        seeds: ``[S]`` int. Returns ``[S]`` float64.
    """
    seeds = _check_seeds(graph, seeds, "seeds")
    num_sims = _check_num_sims(num_sims)
    _check_rng(rng)
    if seeds.size == 0:
        return np.zeros(0, dtype=np.float64)
    total = seeds.size * num_sims
    init_sim = np.arange(total, dtype=np.int64)  # sim g simulates seed g // num_sims
    init_node = np.repeat(seeds, num_sims)
    counts, _ = _run(graph, init_sim, init_node, total, rng, max_active_pairs, record=False)
    return counts.reshape(seeds.size, num_sims).mean(axis=1)


def simulate_set_spread(
    graph: ICGraph,
    seed_set: np.ndarray,
    num_sims: int,
    rng: np.random.Generator,
    *,
    max_active_pairs: int = 20_000_000,
) -> tuple[float, float]:
    """Mean and standard error of the spread of a seed *set* (all seeds active in round 0).

    Repeated ids in ``seed_set`` count once. An empty set has spread 0.

    Args:
        graph: the IC graph.
        seed_set: node ids of the seed set.
        num_sims: number of simulations, >= 1.
        rng: source of randomness.
        max_active_pairs: memory bound, see :func:`simulate_reach`.

    Returns:
        ``(mean, stderr)`` where ``stderr = std(ddof=1) / sqrt(num_sims)`` (0.0 when ``num_sims == 1``).

    Shapes:
        seed_set: ``[K]`` int. Returns two Python floats.
    """
    seed_set = np.unique(_check_seeds(graph, seed_set, "seed_set"))
    num_sims = _check_num_sims(num_sims)
    _check_rng(rng)
    if seed_set.size == 0:
        return 0.0, 0.0
    init_sim = np.repeat(np.arange(num_sims, dtype=np.int64), seed_set.size)
    init_node = np.tile(seed_set, num_sims)
    counts, _ = _run(graph, init_sim, init_node, num_sims, rng, max_active_pairs, record=False)
    mean = float(counts.mean())
    stderr = float(counts.std(ddof=1) / math.sqrt(num_sims)) if num_sims > 1 else 0.0
    return mean, stderr


def simulate_cascades(
    graph: ICGraph,
    seeds: np.ndarray,
    rng: np.random.Generator,
    *,
    max_active_pairs: int = 20_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one cascade per entry of ``seeds`` and return every activation.

    Args:
        graph: the IC graph.
        seeds: seed node id of each cascade (repeats allowed: independent cascades).
        rng: source of randomness.
        max_active_pairs: memory bound, see :func:`simulate_reach`.

    Returns:
        ``(cascade_index, node, round)`` of every activated node, the seed included with round 0.
        ``cascade_index[i]`` indexes ``seeds``. Rows are sorted by (cascade_index, round, node); each
        ``(cascade_index, node)`` pair appears at most once.

    Shapes:
        seeds: ``[C]`` int. Returns three ``[A]`` int64 arrays, ``A = total activations >= C``.
    """
    seeds = _check_seeds(graph, seeds, "seeds")
    _check_rng(rng)
    if seeds.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    init_sim = np.arange(seeds.size, dtype=np.int64)
    _, records = _run(graph, init_sim, seeds, seeds.size, rng, max_active_pairs, record=True)
    sim = np.concatenate([r[0] for r in records])
    node = np.concatenate([r[1] for r in records])
    rnd = np.concatenate([r[2] for r in records])
    order = np.lexsort((node, rnd, sim))
    return sim[order], node[order], rnd[order]


# ----------------------------------------------------------------------------------------------------------------
# internals


def _as_id_array(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {a.dtype}")
    if a.dtype.kind == "u" and a.dtype.itemsize >= 8 and a.max() > np.iinfo(np.int64).max:
        i = int(np.argmax(a))
        raise ValueError(f"{name}[{i}] = {int(a[i])} is out of range")
    return a.astype(np.int64, copy=False)


def _check_seeds(graph: ICGraph, seeds, name: str) -> np.ndarray:
    s = np.asarray(seeds)
    if s.ndim == 0:
        s = s.reshape(1)
    s = _as_id_array(s, name)
    bad = np.flatnonzero((s < 0) | (s >= graph.num_nodes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {int(s[i])} is out of range: node ids must be in [0, {graph.num_nodes})")
    return s


def _check_num_sims(num_sims) -> int:
    if isinstance(num_sims, (bool, np.bool_)) or not isinstance(num_sims, (int, np.integer)) or num_sims < 1:
        raise ValueError(f"num_sims must be a positive integer, got {num_sims!r}")
    return int(num_sims)


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


@dataclass
class _Chunk:
    """Live state of a batch of simulations ``base .. base + num_sims - 1``.

    ``frontier`` / ``visited`` hold local keys ``(sim - base) * num_nodes + node``. ``visited`` is either a flat
    bool bitmap of ``num_sims * num_nodes`` cells or a sorted int64 key array.
    """

    base: int
    num_sims: int
    frontier: np.ndarray
    visited: np.ndarray
    num_visited: int
    round: int

    @property
    def bitmap(self) -> bool:
        return self.visited.dtype == np.bool_

    def split(self, num_nodes: int) -> tuple[_Chunk, _Chunk]:
        h = self.num_sims // 2
        cut = h * num_nodes
        first = self.frontier < cut
        f1, f2 = self.frontier[first], self.frontier[~first] - cut
        if self.bitmap:
            v1, v2 = self.visited[:cut], self.visited[cut:]
            n1 = int(np.count_nonzero(v1))
        else:
            k = int(np.searchsorted(self.visited, cut))
            v1, v2 = self.visited[:k], self.visited[k:] - cut
            n1 = k
        return (
            _Chunk(self.base, h, f1, v1, n1, self.round),
            _Chunk(self.base + h, self.num_sims - h, f2, v2, self.num_visited - n1, self.round),
        )


def _run(
    graph: ICGraph,
    init_sim: np.ndarray,
    init_node: np.ndarray,
    total_sims: int,
    rng: np.random.Generator,
    max_active_pairs: int,
    record: bool,
) -> tuple[np.ndarray, list | None]:
    """Simulate ``total_sims`` independent cascades.

    Shapes:
        init_sim: ``[I]`` int64, sorted ascending, global simulation id of each initial pair.
        init_node: ``[I]`` int64, node of each initial pair; pairs must be unique.
        Returns ``counts`` ``[total_sims]`` int64 (activated nodes per simulation) and, if ``record``, a list of
        ``(sim, node, round)`` int64 array triples.
    """
    if isinstance(max_active_pairs, (bool, np.bool_)) or not isinstance(max_active_pairs, (int, np.integer)):
        raise ValueError(f"max_active_pairs must be an integer, got {max_active_pairs!r}")
    budget = int(max_active_pairs)
    if budget < 1:
        raise ValueError(f"max_active_pairs must be >= 1, got {budget}")
    n = graph.num_nodes
    counts = np.zeros(total_sims, dtype=np.int64)
    records: list | None = [] if record else None
    init_per_sim = int(np.bincount(init_sim, minlength=1).max()) if init_sim.size else 1
    est_reach = float(max(init_per_sim, 1))
    max_sims_by_key = max(1, _MAX_KEY // max(n, 1))
    next_sim = 0
    num_chunks = num_splits = 0
    while next_sim < total_sims:
        remaining = total_sims - next_sim
        c = min(remaining, max(1, int(budget // (2.0 * est_reach))), max_sims_by_key)
        if num_chunks == 0:
            c = min(c, _PROBE_SIMS)  # small first chunk to learn the typical reach
        # A bitmap costs ~num_nodes bytes of zeroing per simulation but O(1) per activation; sorted keys cost
        # O(reach) per round. Bitmaps pay off once the reach is a noticeable fraction of the graph.
        bitmap_sims = _BITMAP_MAX_CELLS // max(n, 1)
        use_bitmap = est_reach * _BITMAP_MIN_REACH_RATIO >= n and bitmap_sims >= min(c, _MIN_BITMAP_CHUNK_SIMS)
        if use_bitmap:
            c = min(c, bitmap_sims)
        lo, hi = np.searchsorted(init_sim, [next_sim, next_sim + c])
        keys = (init_sim[lo:hi] - next_sim) * n + init_node[lo:hi]
        keys = _sorted_unique(keys)
        if use_bitmap:
            visited = np.zeros(c * n, dtype=np.bool_)
            visited[keys] = True
        else:
            visited = keys.copy()
        np.add.at(counts, next_sim + keys // n, 1)
        if record:
            records.append((next_sim + keys // n, keys % n, np.zeros(keys.size, dtype=np.int64)))
        stack = [_Chunk(next_sim, c, keys, visited, int(keys.size), 0)]
        while stack:
            ch = stack.pop()
            while ch.frontier.size:
                if ch.num_visited > budget and ch.num_sims > 1:
                    a, b = ch.split(n)
                    stack.append(b)
                    stack.append(a)
                    num_splits += 1
                    break
                _step(graph, ch, rng, budget, counts, records)
        num_chunks += 1
        est_reach = max(est_reach, float(counts[next_sim : next_sim + c].mean()))
        log.debug(
            "IC chunk %d: sims %d..%d (%s), mean reach so far %.3f",
            num_chunks, next_sim, next_sim + c - 1, "bitmap" if use_bitmap else "sorted keys", est_reach,
        )
        next_sim += c
    log.debug("IC run: %d sims in %d chunks, %d splits", total_sims, num_chunks, num_splits)
    return counts, records


def _step(
    graph: ICGraph,
    ch: _Chunk,
    rng: np.random.Generator,
    budget: int,
    counts: np.ndarray,
    records: list | None,
) -> None:
    """Advance ``ch`` by one BFS round in place (frontier, visited, counts, records)."""
    n = graph.num_nodes
    f = ch.frontier
    node = f % n
    deg = graph.out_degree[node]
    live = deg > 0
    if not live.all():
        f, node, deg = f[live], node[live], deg[live]
    ch.round += 1
    new_parts = []
    if f.size:
        base_key = f - node
        start = graph.indptr[node]
        cum = np.cumsum(deg)
        total = int(cum[-1])
        # Expand the frontier in pieces of <= budget traversed edges (a single node may exceed it).
        s = 0
        while s < f.size:
            before = int(cum[s - 1]) if s else 0
            e = int(np.searchsorted(cum, before + budget, side="right")) if total - before > budget else f.size
            e = max(e, s + 1)
            cand = _expand_piece(graph, base_key[s:e], start[s:e], deg[s:e], rng)
            if cand.size:
                cand = _dedupe_insert(ch, cand)
                if cand.size:
                    new_parts.append(cand)
            s = e
    new = np.concatenate(new_parts) if len(new_parts) > 1 else (new_parts[0] if new_parts else f[:0])
    if new.size:
        sim = new // n
        np.add.at(counts, ch.base + sim, 1)
        ch.num_visited += int(new.size)
        if records is not None:
            records.append((ch.base + sim, new - sim * n, np.full(new.size, ch.round, dtype=np.int64)))
    ch.frontier = new


def _expand_piece(
    graph: ICGraph, base_key: np.ndarray, start: np.ndarray, deg: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One activation attempt along every out-edge of a frontier piece.

    Shapes:
        base_key, start, deg: ``[F]`` int64 (``sim * n``, CSR start, out-degree of each frontier pair; deg > 0).
        Returns ``[H]`` int64 candidate keys of successful attempts (may contain duplicates / visited pairs).
    """
    cs = np.cumsum(deg)
    tot = int(cs[-1])
    eidx = np.arange(tot, dtype=np.int64)
    eidx += np.repeat(start - (cs - deg), deg)
    hit = np.flatnonzero(rng.random(tot) < graph.probs[eidx])
    if hit.size == 0:
        return hit
    owner = np.searchsorted(cs, hit, side="right")
    return base_key[owner] + graph.indices[eidx[hit]]


def _dedupe_insert(ch: _Chunk, cand: np.ndarray) -> np.ndarray:
    """Drop candidates already visited (or repeated), mark the rest visited; returns them sorted and unique."""
    if ch.bitmap:
        cand = cand[~ch.visited[cand]]
        cand = _sorted_unique(cand)
        ch.visited[cand] = True
        return cand
    cand = _sorted_unique(cand)
    v = ch.visited
    if v.size:
        pos = np.searchsorted(v, cand)
        fresh = v[np.minimum(pos, v.size - 1)] != cand
        cand, pos = cand[fresh], pos[fresh]
        ch.visited = np.insert(v, pos, cand)
    else:
        ch.visited = cand.copy()
    return cand


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted unique values of an int64 array.

    ``np.sort`` + neighbour compare; much faster than ``np.unique`` on large int64 arrays in numpy 2.x, which
    goes through a hash table.

    Shapes:
        a: ``[M]``. Returns ``[U]``, ``U <= M``.
    """
    if a.size < 2:
        return a
    a = np.sort(a)
    keep = np.empty(a.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]
