"""The native sampler's time-aware mode: PyG's temporal ``NeighborLoader`` semantics, vectorized torch on CPU or CUDA.

Each seed has a time (``input_time``, or its own node time). Its subgraph is its own (PyG samples temporal batches
*disjoint*: a node reached from two seeds appears once per seed, and ``batch`` says whose subgraph holds it), and
an in-edge is sampled only if its time (``edge_time``, or its source node's ``node_time``) is <= the seed's time;
a relation or node type without times is never filtered. ``temporal_strategy``: ``uniform`` draws ``fanout``
of the valid in-edges uniformly without replacement; ``last`` takes the ``fanout`` most recent valid ones.

How: at construction every CSC segment is sorted by time once (the store's edge ids follow through
``edge_permutation``), so the edges valid at time t are a prefix of their segment, found by a binary search run
over the whole frontier at once (``valid_prefix``: log2(max degree) elementwise steps). Then the prefix is drawn
from exactly as the plain sampler draws from a whole segment (``sample_segments``). Sampled nodes are deduplicated
per (seed, node) by sorted keys, not by the plain sampler's graph-sized table (a (seed, node) pair has no slot
there). Memory: the times at CSC positions and the store edge id of each position, 16 bytes per edge next to the
8 of ``row``.

``disjoint=False`` adds ripple's training path: a batch whose seeds share one time (training rows batched by cut
time) is sampled as one shared subgraph by the plain sampler on the valid prefixes, at about the plain sampler's
speed; PyG's disjoint path costs 2-4x more per batch (``python -m benchmarks devices``).
"""
from __future__ import annotations

import threading

import torch
from torch import Tensor
from torch_geometric.sampler import HeteroSamplerOutput, NodeSamplerInput

from ripple.sampling.fanouts import check_num_neighbors
from ripple.sampling.native import CSCGraph, NativeNeighborSampler, SeedSampler
from ripple.sampling.segments import last_segments, sample_segments, sort_segments_by_time, valid_prefix

EdgeType = tuple[str, str, str]
STRATEGIES = ("uniform", "last")
#: the time of an edge that has none: valid at every seed time
_ALWAYS = torch.iinfo(torch.int64).min


class _PairSet:
    """(seed, node) -> batch-local id for one node type within one batch: seeds first, then first appearance.
    Keys ``seed * num_nodes + node`` are kept sorted, with their local ids, for the lookups of later hops."""

    def __init__(self, num_nodes: int, device):
        self.n, self.device = max(int(num_nodes), 1), device
        self.keys = torch.empty(0, dtype=torch.long, device=device)
        self.local = torch.empty(0, dtype=torch.long, device=device)
        self.nodes: list[Tensor] = []
        self.batch: list[Tensor] = []
        self.count = 0

    def _insert(self, keys: Tensor, local: Tensor) -> None:
        keys, local = torch.cat([self.keys, keys]), torch.cat([self.local, local])
        order = torch.argsort(keys)
        self.keys, self.local = keys.index_select(0, order), local.index_select(0, order)

    def add_seeds(self, seeds: Tensor) -> None:
        b = torch.arange(len(seeds), device=self.device)
        self._insert(b * self.n + seeds, b.clone())
        self.nodes.append(seeds)
        self.batch.append(b)
        self.count = len(seeds)

    def add(self, glob: Tensor, seed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (local ids [S], the new nodes' global ids, their seeds), new nodes in first-appearance order
        with local ids ``count - len(new) ... count - 1``."""
        key = seed * self.n + glob
        loc = torch.empty(len(key), dtype=torch.long, device=self.device)
        found = torch.zeros(len(key), dtype=torch.bool, device=self.device)
        if len(self.keys):
            pos = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
            found = self.keys.index_select(0, pos) == key
            loc[found] = self.local.index_select(0, pos[found])
        fresh = key[~found]
        uniq, inverse = torch.unique(fresh, return_inverse=True)
        first = torch.full((len(uniq),), len(fresh), dtype=torch.long, device=self.device)
        first.scatter_reduce_(0, inverse, torch.arange(len(fresh), device=self.device), reduce="amin")
        order = torch.argsort(first)  # unique keys in order of first appearance
        local_of = torch.empty(len(uniq), dtype=torch.long, device=self.device)
        local_of[order] = torch.arange(self.count, self.count + len(uniq), device=self.device)
        loc[~found] = local_of.index_select(0, inverse)
        self._insert(uniq, local_of)
        new = uniq.index_select(0, order)
        new_glob, new_seed = new % self.n, torch.div(new, self.n, rounding_mode="floor")
        self.nodes.append(new_glob)
        self.batch.append(new_seed)
        self.count += len(uniq)
        return loc, new_glob, new_seed


class TemporalNeighborSampler(SeedSampler):
    """A PyG ``BaseSampler`` for temporal ``NodeLoader`` batches (see the module docstring).

    Args:
        graph: CSC relations on the sampling device; ``graph.perm`` maps CSC positions to store edge ids.
        num_neighbors: relation -> per-hop fanouts (-1 = every valid neighbour).
        node_time: node type -> [N_t] time of each node (a node type without an entry is never filtered), or
        edge_time: relation -> [E] time of each edge, in the store's edge order (one of the two).
        temporal_strategy: ``uniform`` or ``last``.
        disjoint: True (PyG's temporal semantics): every seed a subgraph of its own. False: a batch whose seeds
            all have the same time is sampled as one shared subgraph (the plain sampler's path, each segment cut
            to its valid prefix: every seed sees exactly the edges it may), which is how ripple's training tables,
            batched by cut time, are sampled; a batch of mixed times still goes disjoint.
    """

    def __init__(self, graph: CSCGraph, num_neighbors: dict[EdgeType, list[int]],
                 node_time: dict[str, Tensor] | None = None, edge_time: dict[EdgeType, Tensor] | None = None,
                 temporal_strategy: str = "uniform", seed: int | None = None, disjoint: bool = True):
        if (node_time is None) == (edge_time is None):
            raise ValueError("temporal sampling needs node_time or edge_time (one of them): the times that hide "
                             "each seed's future")
        if temporal_strategy not in STRATEGIES:
            raise ValueError(f"temporal_strategy must be one of {STRATEGIES}, got {temporal_strategy!r}")
        self.num_neighbors = check_num_neighbors(num_neighbors, graph.colptr)
        self.num_hops = max((len(v) for v in self.num_neighbors.values()), default=0)
        self.strategy = temporal_strategy
        self.device = next(iter(graph.colptr.values())).device if graph.colptr else torch.device("cpu")
        self.node_time = {t: v.to(self.device).long() for t, v in (node_time or {}).items()}
        rows, perms, self.time = {}, {}, {}
        for et, colptr in graph.colptr.items():
            row, perm = graph.row[et], graph.perm.get(et)
            if edge_time is not None:
                t = edge_time.get(et)
                t = None if t is None else t.to(self.device).long()
                t = None if t is None else (t if perm is None else t.index_select(0, perm))
            else:
                t = self.node_time[et[0]].index_select(0, row) if et[0] in self.node_time else None
            if t is None:  # no times on this relation: every edge is valid at every seed time
                t = torch.full((len(row),), _ALWAYS, dtype=torch.long, device=self.device)
            rows[et], self.time[et], perms[et] = sort_segments_by_time(colptr, row, t, perm)
        self.graph = CSCGraph(dict(graph.colptr), rows, dict(graph.num_nodes), perms)
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(seed)
        self._lock = threading.Lock()
        self._shared = None
        if not disjoint:
            self._shared = NativeNeighborSampler(self.graph, self.num_neighbors, seed=seed)
            self._shared.time, self._shared.strategy = self.time, temporal_strategy

    @property
    def edge_permutation(self) -> dict[EdgeType, Tensor]:
        return self.graph.perm

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> HeteroSamplerOutput:
        seeds = index.node.to(self.device)
        seed_time = index.time
        if seed_time is None:
            if index.input_type not in self.node_time:
                raise ValueError(f"temporal sampling needs each seed's time: pass input_time, or node times for "
                                 f"{index.input_type!r}")
            seed_time = self.node_time[index.input_type].index_select(0, seeds)
        out = self.sample(index.input_type, seeds, seed_time.to(self.device).long())
        out.metadata = (index.input_id, index.time)
        return out

    def _draw(self, et: EdgeType, hop: int, frontier: Tensor, limit: Tensor) -> tuple[Tensor, Tensor]:
        """(owner [S] = frontier position, CSC position [S]) of the in-edges drawn for one relation."""
        colptr, fanout = self.graph.colptr[et], int(self.num_neighbors[et][hop])
        start = colptr.index_select(0, frontier)
        valid = valid_prefix(self.time[et], start, colptr.index_select(0, frontier + 1), limit)
        if self.strategy == "uniform":
            owner, offset = sample_segments(valid, torch.full_like(valid, fanout), self.generator)
        else:  # last: the most recent valid ones, the end of the time-sorted prefix
            owner, offset = last_segments(valid, torch.full_like(valid, fanout))
        return owner, start.index_select(0, owner) + offset

    def sample(self, input_type: str, seeds: Tensor, seed_time: Tensor) -> HeteroSamplerOutput:
        """Shapes: seeds, seed_time [B] -> node/batch dicts (global ids, seed of each node), row/col local, edge
        (CSC positions; ``edge_permutation`` maps them to store edge ids)."""
        if self._shared is not None and len(seed_time) and bool((seed_time == seed_time[0]).all()):
            return self._shared.sample(input_type, seeds, at=int(seed_time[0]))
        with self._lock:
            sets = {t: _PairSet(n, self.device) for t, n in self.graph.num_nodes.items()}
            sets[input_type].add_seeds(seeds.long())
            # frontier per type: global ids, their seeds, their batch-local ids
            frontier = {input_type: (seeds.long(), torch.arange(len(seeds), device=self.device),
                                     torch.arange(len(seeds), device=self.device))}
            num_sampled_nodes = {t: [0] * (self.num_hops + 1) for t in sets}
            num_sampled_nodes[input_type][0] = len(seeds)
            num_sampled_edges = {et: [] for et in self.num_neighbors}
            rows, cols, edges = {}, {}, {}
            for hop in range(self.num_hops):
                by_src: dict[str, list] = {}
                for et in self.num_neighbors:
                    if et[2] not in frontier or not len(frontier[et[2]][0]) or et not in self.graph.colptr:
                        num_sampled_edges[et].append(0)
                        continue
                    glob, seed, local = frontier[et[2]]
                    owner, e = self._draw(et, hop, glob, seed_time.index_select(0, seed))
                    num_sampled_edges[et].append(len(e))
                    by_src.setdefault(et[0], []).append((et, local.index_select(0, owner), e,
                                                         self.graph.row[et].index_select(0, e),
                                                         seed.index_select(0, owner)))
                nxt = {}
                for src_t, items in by_src.items():
                    loc, new_glob, new_seed = sets[src_t].add(torch.cat([it[3] for it in items]),
                                                              torch.cat([it[4] for it in items]))
                    for (et, dst_local, e, _, _), l in zip(items, torch.split(loc, [len(it[2]) for it in items])):
                        rows.setdefault(et, []).append(l)
                        cols.setdefault(et, []).append(dst_local)
                        edges.setdefault(et, []).append(e)
                    c = sets[src_t].count
                    nxt[src_t] = (new_glob, new_seed, torch.arange(c - len(new_glob), c, device=self.device))
                    num_sampled_nodes[src_t][hop + 1] = len(new_glob)
                frontier = nxt
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            cat = lambda d: {et: torch.cat(d[et]) if et in d else empty for et in self.num_neighbors}  # noqa: E731
            return HeteroSamplerOutput(
                node={t: torch.cat(s.nodes) if s.nodes else empty for t, s in sets.items()},
                row=cat(rows), col=cat(cols), edge=cat(edges),
                batch={t: torch.cat(s.batch) if s.batch else empty for t, s in sets.items()},
                num_sampled_nodes=num_sampled_nodes, num_sampled_edges=num_sampled_edges)
