"""Distributed neighbour sampling over graph shards: a PyG ``BaseSampler`` returning ``HeteroSamplerOutput``.

Each hop groups the frontier of every relation by the part that owns the destination node and makes one
batched call per part (``ShardedGraph.sample``: remote parts concurrently, local parts in-process). The shards
run ripple's exact without-replacement CSC sampler (``ripple.sampling.native.sample_segments``) on their own edges,
so the semantics are NeighborLoader's: per-hop, per-relation fanouts, seeds first, nodes appended in order of
first appearance, sampled edges reported by global edge id (for the edge-feature join).

Bookkeeping never allocates per graph node: global -> batch-local ids live in a hash table of the batch's own
nodes (``_BatchNodes``), so a trainer's memory does not grow with the graph.

Determinism: every hop draws one 63-bit seed from the sampler's generator, and part p samples with a generator
seeded from (hop seed, p): the same sampler seed gives the same batches whatever the timing of remote calls.

Time (PyG's temporal semantics, ``ripple.sampling.temporal``'s shared-time path): a batch at time T samples only
in-edges with time <= T (relations without times are never filtered), each part drawing from the valid prefix of
its time-sorted CSC segments (``ripple.graph.partition`` writes them sorted). The batch is one subgraph at one
time: ripple batches training rows by cut time, and a batch of mixed times is refused, not sampled disjointly.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch_geometric.sampler import HeteroSamplerOutput, NodeSamplerInput

from ripple.graph.shards import ShardedGraph, group_by_part
from ripple.sampling.fanouts import check_num_neighbors
from ripple.sampling.native import SeedSampler
from ripple.sampling.temporal import STRATEGIES

EdgeType = tuple[str, str, str]


class _BatchNodes:
    """Global -> batch-local ids of one node type, sized by the batch (not the graph).

    A hash table of the batch's own nodes (pandas' ``Index``, rebuilt once per hop; ``factorize`` dedups a hop's
    sampled ids in order of first appearance in one pass): measured 3.4x faster than sorting them (``unique``,
    ``searchsorted`` and a re-sorted key table), with no per-graph-node array."""

    def __init__(self):
        self.index = pd.Index(np.empty(0, dtype=np.int64))  # unique global ids, in order of addition
        self.vals = np.empty(0, dtype=np.int64)              # the local id of each
        self.nodes: list[Tensor] = []
        self.count = 0

    def add(self, glob: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (local ids of ``glob``, the newly added global ids in first-appearance order).
        Shapes: glob [S] -> [S], [M]."""
        codes, uniq = pd.factorize(glob.numpy())  # uniq in order of first appearance
        pos = self.index.get_indexer(uniq)
        miss = pos < 0
        loc = np.empty(len(uniq), dtype=np.int64)
        loc[~miss] = self.vals[pos[~miss]]
        new = torch.from_numpy(uniq[miss].astype(np.int64, copy=False))
        loc[miss] = np.arange(self.count, self.count + len(new))
        if len(new):
            self.index = self.index.append(pd.Index(new.numpy()))
            self.vals = np.concatenate([self.vals, loc[miss]])
            self.count += len(new)
            self.nodes.append(new)
        return torch.from_numpy(loc[codes]), new

    def add_seeds(self, seeds: Tensor) -> None:
        """The batch's seeds, every position kept as PyG keeps them (``n_id[:batch_size]`` is the input, repeats
        included): seed i is local id i; a global id seeded twice maps to its first position."""
        codes, uniq = pd.factorize(seeds.numpy())
        first = np.full(len(uniq), len(seeds), dtype=np.int64)
        np.minimum.at(first, codes, np.arange(len(seeds)))
        self.index, self.vals, self.count = pd.Index(uniq.astype(np.int64, copy=False)), first, len(seeds)
        self.nodes.append(seeds)

    def finish(self) -> Tensor:
        return torch.cat(self.nodes) if self.nodes else torch.empty(0, dtype=torch.long)


def _part_seed(hop_seed: int, part: int) -> int:
    return int((hop_seed * 0x9E3779B1 + part * 0x85EBCA77 + 1) % (2**63 - 1))


class DistributedNeighborSampler(SeedSampler):
    """NeighborLoader-style sampling over a ``ShardedGraph``.

    Args:
        graph: the trainer's sharded graph client.
        num_neighbors: relation -> per-hop fanouts (-1 = all neighbours).
        seed: sampler seed (same seed, same batches).
        temporal_strategy: how a batch with a time draws from the valid in-edges: ``uniform`` (as without a time)
            or ``last`` (the most recent ones).
    """

    def __init__(self, graph: ShardedGraph, num_neighbors: dict[EdgeType, list[int]], seed: int | None = None,
                 temporal_strategy: str = "uniform"):
        if temporal_strategy not in STRATEGIES:
            raise ValueError(f"temporal_strategy must be one of {STRATEGIES}, got {temporal_strategy!r}")
        self.graph = graph
        self.strategy = temporal_strategy
        self.num_neighbors = check_num_neighbors(num_neighbors, graph.meta.edge_types)
        self.num_hops = max((len(v) for v in self.num_neighbors.values()), default=0)
        self.generator = torch.Generator()
        self.generator.manual_seed(0 if seed is None else int(seed))
        #: calls per hop of the last batch, for tests and benchmarks: {hop: number of parts called}
        self.last_calls: dict[int, int] = {}
        self._lock = threading.Lock()

    #: the shards return edge features with the sampled edges; ``make_loader`` attaches them (metadata[2])
    returns_edge_attr = True

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> HeteroSamplerOutput:
        """``index.time`` (the seeds' times, PyG's ``input_time``): one time for the whole batch, sampled at it."""
        at = None
        if index.time is not None and len(index.time):
            times = torch.unique(index.time)
            if len(times) > 1:
                raise ValueError(f"the sharded sampler takes batches of one time, got seeds at {len(times)} times "
                                 f"({times[:5].tolist()}{' ...' if len(times) > 5 else ''}): batch the rows by their "
                                 "time (ripple batches training rows by cut time), or sample on the whole graph "
                                 "(TemporalNeighborSampler samples each seed at its own time)")
            at = int(times[0])
        out = self.sample(index.input_type, index.node.cpu(), at=at)
        out.metadata = (index.input_id, index.time, out.metadata)
        return out

    def sample(self, input_type: str, seeds: Tensor, at: int | None = None) -> HeteroSamplerOutput:
        """Shapes: seeds [B] global ids -> node dict (global ids), row/col (batch-local), edge (global edge ids).
        ``at``: the batch's time: only in-edges with time <= ``at`` are sampled (module docstring).
        One batch at a time: threads sharing the sampler take turns (its generator and ``last_calls``)."""
        if at is not None:
            self.graph.meta.check_edge_times()  # before any part is called
        with self._lock:
            return self._sample(input_type, seeds, at)

    def _sample(self, input_type: str, seeds: Tensor, at: int | None = None) -> HeteroSamplerOutput:
        types = {t for et in self.num_neighbors for t in (et[0], et[2])} | {input_type}
        sets = {t: _BatchNodes() for t in types}
        seeds = seeds.long()
        sets[input_type].add_seeds(seeds)
        # a frontier's nodes were appended together, so frontier[t][i] has batch-local id base[t] + i (a repeated
        # seed is sampled at each of its positions, as PyG does)
        frontier, base = {input_type: seeds}, {input_type: 0}
        num_sampled_nodes = {t: [0] * (self.num_hops + 1) for t in types}
        num_sampled_nodes[input_type][0] = len(seeds)
        num_sampled_edges = {et: [] for et in self.num_neighbors}
        rows, cols, edges, attrs = {}, {}, {}, {}
        self.last_calls = {}
        for hop in range(self.num_hops):
            # owners are found once per node type, not once per relation
            groups = {t: group_by_part(self.graph.offsets[t], f) for t, f in frontier.items() if len(f)}
            by_part: dict[int, dict] = {}
            where: dict[tuple[int, str], Tensor] = {}
            for et, fanouts in self.num_neighbors.items():
                if hop >= len(fanouts) or et[2] not in groups:
                    continue
                for p, pos, local in groups[et[2]]:
                    by_part.setdefault(p, {})[et] = (local.numpy(), fanouts[hop])
                    where[(p, et[2])] = pos
            hop_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            timed = {} if at is None else {"at": at, "strategy": self.strategy}
            answers = self.graph.sample({p: (req, _part_seed(hop_seed, p)) for p, req in by_part.items()}, **timed)
            self.last_calls[hop] = len(by_part)
            sampled: dict[str, list[tuple[EdgeType, Tensor, Tensor, Tensor]]] = {}
            for et in self.num_neighbors:
                dst_pos, src, eid, attr = [], [], [], []
                for p in sorted(answers):
                    if et in answers[p]:
                        owner, s_glob, e, a = answers[p][et]
                        dst_pos.append(where[(p, et[2])][torch.as_tensor(owner).long()])
                        src.append(torch.as_tensor(s_glob).long())
                        eid.append(torch.as_tensor(e).long() + self.graph.edge_offsets[et][p])
                        if a is not None:
                            attr.append(torch.as_tensor(a))
                if not src:
                    num_sampled_edges[et].append(0)
                    continue
                if attr:
                    attrs.setdefault(et, []).append(torch.cat(attr))
                sampled.setdefault(et[0], []).append((et, torch.cat(src), torch.cat(eid), torch.cat(dst_pos)))
            nxt_frontier, nxt_base = {}, {}
            for src_t, items in sampled.items():
                # one lookup per source type: same first-appearance order as adding relation by relation
                nxt_base[src_t] = sets[src_t].count
                locs, new = sets[src_t].add(torch.cat([it[1] for it in items]))
                nxt_frontier[src_t] = new
                for (et, s_glob, e, d_pos), loc in zip(items, torch.split(locs, [len(it[1]) for it in items])):
                    rows.setdefault(et, []).append(loc)
                    cols.setdefault(et, []).append(d_pos + base[et[2]])
                    edges.setdefault(et, []).append(e)
                    num_sampled_edges[et].append(len(e))
            frontier, base = nxt_frontier, nxt_base
            for t, v in frontier.items():
                num_sampled_nodes[t][hop + 1] = len(v)
        node = {t: s.finish() for t, s in sets.items()}
        # every relation, as PyG's samplers return them: one with nothing to sample has empty tensors (and empty
        # edge features where the relation has them)
        empty = torch.empty(0, dtype=torch.long)
        cat = lambda d: {et: torch.cat(d[et]) if et in d else empty for et in self.num_neighbors}  # noqa: E731
        dims = self.graph.meta.edge_dims
        attr = {et: torch.cat(attrs[et]) if et in attrs else torch.empty(0, dims[et])
                for et in self.num_neighbors if et in attrs or et in dims}
        return HeteroSamplerOutput(node=node, row=cat(rows), col=cat(cols), edge=cat(edges), batch=None,
                                   num_sampled_nodes=num_sampled_nodes, num_sampled_edges=num_sampled_edges,
                                   metadata=attr)

