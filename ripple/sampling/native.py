"""ripple's own neighbour sampler: vectorized torch over CSC graphs, on CPU or CUDA.

NeighborLoader semantics: per hop and per relation, each frontier node of the relation's destination type draws
``min(fanout, degree)`` distinct in-neighbours uniformly (all of them for ``fanout = -1``); seeds come first in
the output, new nodes are appended in order of first appearance. No Python loop runs per node or edge: the only
loops are over hops, relations and fanout steps.

Exact without-replacement draws that never touch all edges of a hub: nodes with degree <= fanout take every edge,
larger ones run Floyd's subset algorithm vectorized over nodes (``sample_segments``): ``fanout`` steps of a few
elementwise kernels each, no sort. Deduplication of sampled nodes is a scatter into graph-sized tables (``_NodeSet``),
also without a sort, so a hop costs O(sampled edges) and the same code runs as a handful of kernels on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.sampler import BaseSampler, HeteroSamplerOutput, NodeSamplerInput

EdgeType = tuple[str, str, str]


def _segment_arange(counts: Tensor) -> Tensor:
    """[3, 2] -> [0, 1, 2, 0, 1]."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


def sample_csc(colptr: Tensor, frontier: Tensor, fanout: int, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
    """Sample in-edges of ``frontier`` nodes in one CSC relation.

    Shapes:
        colptr: [N_dst + 1]; frontier: [F] destination indices
        returns (owner [S] = position in ``frontier``, edge [S] = CSC edge position), grouped by owner.
    """
    start = colptr[frontier]
    deg = colptr[frontier + 1] - start
    owner, offset = sample_segments(deg, torch.full_like(deg, fanout), generator)
    return owner, start[owner] + offset


def sample_segments(deg: Tensor, fanout: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw ``min(fanout_i, deg_i)`` distinct offsets in ``[0, deg_i)`` for every segment i, uniformly
    (``fanout_i < 0``: all of them, in order). Segments may come from different relations, so one call serves
    every relation of a hop.

    Segments with ``deg <= fanout`` take every offset. Larger ones run Floyd's algorithm, vectorized over
    segments: step ``i`` of a segment with fanout f draws t uniform in [0, d - f + i] and keeps t, or d - f + i
    if t was drawn before — an exact uniform f-subset in f steps, with no sort and no rejection rounds. The work
    is ``O(F * max_fanout^2)`` compares; the loop runs over fanout steps, never over nodes or edges.

    Shapes:
        deg, fanout: [F] -> (owner [S] segment index, offset [S] within the segment), grouped by owner.
    """
    dev = deg.device
    every = fanout < 0
    if bool(every.any()):  # fanout -1: unbounded counts, handled apart (rare: full-neighbourhood inference)
        idx_e = torch.nonzero(every).view(-1)
        idx_b = torch.nonzero(~every).view(-1)
        own_e = torch.repeat_interleave(idx_e, deg[idx_e])
        off_e = _segment_arange(deg[idx_e])
        own_b, off_b = sample_segments(deg[idx_b], fanout[idx_b], generator)
        owner = torch.cat([own_e, idx_b[own_b]])
        order = torch.argsort(owner, stable=True)
        return owner[order], torch.cat([off_e, off_b])[order]
    width = int(fanout.max()) if len(fanout) else 0
    if width == 0:
        empty = torch.empty(0, dtype=torch.long, device=dev)
        return empty, empty
    k = torch.minimum(fanout, deg)
    # [F, width] offsets: row i holds segment i's draws in its first k_i columns; all-taken rows are 0..deg-1
    slots = torch.arange(width, device=dev).expand(len(deg), width).clone()
    big = torch.nonzero(deg > fanout).view(-1)
    if len(big):
        d, f = deg[big], fanout[big]
        chosen = torch.empty(len(big), width, dtype=torch.long, device=dev)
        u = torch.rand(len(big), width, device=dev, generator=generator, dtype=torch.float64)
        for i in range(width):
            j = d - f + i                                   # Floyd's upper bound at this step
            t = torch.minimum((u[:, i] * (j + 1).to(torch.float64)).long(), j)
            seen = (chosen[:, :i] == t.unsqueeze(1)).any(1) if i else torch.zeros_like(t, dtype=torch.bool)
            chosen[:, i] = torch.where(seen, j, t)          # rows with f <= i are past their fanout: masked below
        slots[big] = chosen
    keep = torch.arange(width, device=dev).unsqueeze(0) < k.unsqueeze(1)
    owner, col = torch.nonzero(keep, as_tuple=True)         # row-major: grouped by owner, in segment order
    return owner, slots[owner, col]


class _NodeSet:
    """Global -> local ids for one node type within one batch; seeds first, then first appearance.

    Two graph-sized tables, reused across batches (only touched entries are reset): ``assoc`` maps global to
    local ids, ``first`` finds the first occurrence of each id in an input by a scatter-min of positions, so
    deduplication is O(n) with no sort.
    """

    def __init__(self, num_nodes: int, device):
        self.assoc = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        self.first = torch.full((num_nodes,), _NO_POS, dtype=torch.long, device=device)
        self.nodes: list[Tensor] = []
        self.count = 0

    def add(self, glob: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (local ids of ``glob``, the newly added global ids in first-appearance order)."""
        pos = torch.arange(len(glob), device=glob.device)
        self.first.scatter_reduce_(0, glob, pos, reduce="amin")
        uniq = glob[self.first[glob] == pos]  # each id once, at its first position: appearance order
        self.first[glob] = _NO_POS
        new = uniq[self.assoc[uniq] < 0]
        self.assoc[new] = torch.arange(self.count, self.count + len(new), device=glob.device)
        self.count += len(new)
        self.nodes.append(new)
        return self.assoc[glob], new

    def finish(self) -> Tensor:
        out = torch.cat(self.nodes) if self.nodes else torch.empty(0, dtype=torch.long, device=self.assoc.device)
        self.assoc[out] = -1  # reset only touched entries; the table is reused across batches
        return out


_NO_POS = torch.iinfo(torch.long).max


@dataclass
class CSCGraph:
    """Per relation (colptr, row) tensors and node counts, on the sampling device."""

    colptr: dict[EdgeType, Tensor]
    row: dict[EdgeType, Tensor]
    num_nodes: dict[str, int]

    @classmethod
    def from_graph_store(cls, graph_store, num_nodes: dict[str, int], device="cpu") -> "CSCGraph":
        row, col, _ = graph_store.csc()
        return cls({k: v.to(device) for k, v in col.items()}, {k: v.to(device) for k, v in row.items()},
                   dict(num_nodes))


class NativeNeighborSampler(BaseSampler):
    """A PyG ``BaseSampler``: plugs into ``NodeLoader`` and returns ``HeteroSamplerOutput`` index tensors.

    Args:
        graph: CSC relations on the sampling device (CPU or CUDA).
        num_neighbors: relation -> per-hop fanouts (-1 = all neighbours).
    """

    def __init__(self, graph: CSCGraph, num_neighbors: dict[EdgeType, list[int]], seed: int | None = None):
        self.graph = graph
        self.num_neighbors = {tuple(k): list(v) for k, v in num_neighbors.items()}
        self.num_hops = max((len(v) for v in self.num_neighbors.values()), default=0)
        self.device = next(iter(graph.colptr.values())).device if graph.colptr else torch.device("cpu")
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed(seed)
        self._sets = {t: _NodeSet(n, self.device) for t, n in graph.num_nodes.items()}

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> HeteroSamplerOutput:
        seeds = index.node.to(self.device)
        out = self.sample(index.input_type, seeds)
        out.metadata = (index.input_id, index.time)
        return out

    def sample_from_edges(self, index, neg_sampling=None):
        raise TypeError("ripple samples around seed users (node-level regression); edge-seeded sampling for link "
                        "prediction is not part of this sampler")

    def sample(self, input_type: str, seeds: Tensor) -> HeteroSamplerOutput:
        """Shapes: seeds [B] global ids of ``input_type`` -> node dict of global ids, row/col local, edge CSC ids."""
        sets = self._sets
        for s in sets.values():
            s.nodes, s.count = [], 0
        _, new = sets[input_type].add(seeds)
        frontier = {input_type: new}
        num_sampled_nodes = {t: [0] * (self.num_hops + 1) for t in sets}
        num_sampled_nodes[input_type][0] = len(new)
        rows, cols, edges = {}, {}, {}
        num_sampled_edges = {et: [] for et in self.num_neighbors}
        for hop in range(self.num_hops):
            nxt: dict[str, list[Tensor]] = {}
            for et, fanouts in self.num_neighbors.items():
                src_t, _, dst_t = et
                f = frontier.get(dst_t)
                if hop >= len(fanouts) or f is None or len(f) == 0 or et not in self.graph.colptr:
                    num_sampled_edges[et].append(0)
                    continue
                owner, e = sample_csc(self.graph.colptr[et], f, fanouts[hop], self.generator)
                src_glob = self.graph.row[et][e]
                src_loc, new = sets[src_t].add(src_glob)
                nxt.setdefault(src_t, []).append(new)
                rows.setdefault(et, []).append(src_loc)
                cols.setdefault(et, []).append(sets[dst_t].assoc[f[owner]])
                edges.setdefault(et, []).append(e)
                num_sampled_edges[et].append(len(e))
            frontier = {t: torch.cat(v) for t, v in nxt.items()}
            for t, v in frontier.items():
                num_sampled_nodes[t][hop + 1] = len(v)
        node = {t: s.finish() for t, s in sets.items()}
        # every relation, as PyG's samplers return them: one with nothing to sample has empty tensors
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        cat = lambda d: {et: torch.cat(d[et]) if et in d else empty for et in self.num_neighbors}  # noqa: E731
        return HeteroSamplerOutput(node=node, row=cat(rows), col=cat(cols), edge=cat(edges), batch=None,
                                   num_sampled_nodes=num_sampled_nodes, num_sampled_edges=num_sampled_edges)
