"""ripple's own neighbour sampler: vectorized torch over CSC graphs, on CPU or CUDA.

NeighborLoader semantics: per hop and per relation, each frontier node of the relation's destination type draws
``min(fanout, degree)`` distinct in-neighbours uniformly (all of them for ``fanout = -1``); seeds come first in
the output, new nodes are appended in order of first appearance. No Python loop runs per node: the only loops are
over hops and relations.

Exact without-replacement draws without touching all edges of a hub:
  * nodes with degree <= 2 * fanout rank all their edges by a random key and keep the first ``fanout``;
  * larger nodes draw positions with replacement, round after round, and keep the first ``fanout`` *distinct*
    positions in draw order — sequential rejection, which yields a uniform random subset.
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

    Shapes:
        deg, fanout: [F] -> (owner [S] segment index, offset [S] within the segment), grouped by owner.
    """
    dev = deg.device
    take_all = (fanout < 0) | (deg <= fanout)
    k = torch.where(take_all, deg, fanout)
    small = take_all | (deg <= 2 * fanout)
    owners, offs = [], []

    # All edges of small segments, ranked by random keys (every edge kept, in order, when all are taken).
    idx_s = torch.nonzero(small).view(-1)
    if len(idx_s):
        d = deg[idx_s]
        own = torch.repeat_interleave(idx_s, d)
        pos = _segment_arange(d)
        key = torch.rand(len(own), device=dev, generator=generator)
        key = torch.where(take_all[own], torch.zeros_like(key), key)
        order = torch.argsort(own.to(torch.float64) * 2.0 + key.to(torch.float64), stable=True)  # owner, then key
        own, pos = own[order], pos[order]
        keep = _segment_arange(d) < torch.repeat_interleave(k[idx_s], d)
        owners.append(own[keep])
        offs.append(pos[keep])

    # Large segments: rejection rounds until each has fanout distinct positions.
    idx_l = torch.nonzero(~small).view(-1)
    if len(idx_l):
        width = int(deg[idx_l].max()) + 1
        drawn_own, drawn_pos = [], []
        need = idx_l
        while len(need):
            own = torch.repeat_interleave(need, fanout[need])
            pos = (torch.rand(len(own), device=dev, generator=generator) * deg[own]).long()
            drawn_own.append(own)
            drawn_pos.append(torch.minimum(pos, deg[own] - 1))
            uniq = torch.unique(torch.cat(drawn_own) * width + torch.cat(drawn_pos))
            have = torch.bincount(uniq // width, minlength=len(deg))
            need = idx_l[have[idx_l] < fanout[idx_l]]
        all_own, all_pos = torch.cat(drawn_own), torch.cat(drawn_pos)
        n_draws = len(all_own)
        all_seq = torch.arange(n_draws, device=dev)
        key = all_own * width + all_pos
        # first occurrence (in draw order) of each distinct (owner, position)
        order = torch.argsort(key.to(torch.float64) + all_seq.to(torch.float64) / (n_draws + 1))
        key_o, own_o, pos_o, seq_o = key[order], all_own[order], all_pos[order], all_seq[order]
        first = torch.ones(len(key_o), dtype=torch.bool, device=dev)
        first[1:] = key_o[1:] != key_o[:-1]
        own_o, pos_o, seq_o = own_o[first], pos_o[first], seq_o[first]
        order = torch.argsort(own_o.to(torch.float64) * (n_draws + 1) + seq_o.to(torch.float64))
        own_o, pos_o = own_o[order], pos_o[order]
        counts = torch.bincount(own_o, minlength=len(deg))[own_o.unique_consecutive()]
        keep = _segment_arange(counts) < torch.repeat_interleave(fanout[own_o.unique_consecutive()], counts)
        owners.append(own_o[keep])
        offs.append(pos_o[keep])

    owner = torch.cat(owners) if owners else torch.empty(0, dtype=torch.long, device=dev)
    off = torch.cat(offs) if offs else torch.empty(0, dtype=torch.long, device=dev)
    order = torch.argsort(owner, stable=True)
    return owner[order], off[order]


class _NodeSet:
    """Global -> local ids for one node type within one batch; seeds first, then first appearance."""

    def __init__(self, num_nodes: int, device):
        self.assoc = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
        self.nodes: list[Tensor] = []
        self.count = 0

    def add(self, glob: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (local ids of ``glob``, the newly added global ids)."""
        uniq, first = _unique_first(glob)
        new = uniq[self.assoc[uniq] < 0]
        self.assoc[new] = torch.arange(self.count, self.count + len(new), device=glob.device)
        self.count += len(new)
        self.nodes.append(new)
        return self.assoc[glob], new

    def finish(self) -> Tensor:
        out = torch.cat(self.nodes) if self.nodes else torch.empty(0, dtype=torch.long, device=self.assoc.device)
        self.assoc[out] = -1  # reset only touched entries; the table is reused across batches
        return out


def _unique_first(x: Tensor) -> tuple[Tensor, Tensor]:
    """Unique values in order of first appearance, and the first positions."""
    if len(x) == 0:
        return x, x
    uniq, inv = torch.unique(x, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inv, torch.arange(len(x), device=x.device), reduce="amin")
    order = torch.argsort(first)
    return uniq[order], first[order]


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
        cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
        return HeteroSamplerOutput(node=node, row=cat(rows), col=cat(cols), edge=cat(edges), batch=None,
                                   num_sampled_nodes=num_sampled_nodes, num_sampled_edges=num_sampled_edges)
