"""Loader construction: PyG ``NodeLoader`` over a (FeatureStore, GraphStore) pair with the chosen sampler.

The sampler returns index tensors only; ``NodeLoader`` joins node features from the feature store, and
``EdgeFeatureJoin`` adds edge features by the sampled edge ids (PyG's custom-store path does not fetch edge
features itself).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.loader import NodeLoader
from torch_geometric.sampler import BaseSampler, NeighborSampler

from ripple.config import SamplingConfig
from ripple.sampling.native import CSCGraph, NativeNeighborSampler
from ripple.sampling.temporal import TemporalNeighborSampler

log = logging.getLogger(__name__)
EdgeType = tuple[str, str, str]


class EdgeFeatureJoin:
    """``transform`` for NodeLoader: ``data[et].edge_attr`` = the relation's edge features at ``data[et].e_id``.

    ``source``: relation -> [E, D] tensor of a graph held in this process. (The sharded sampler returns edge
    features with the edges instead: see ``_EdgeAttrFromSamplerLoader``.)
    """

    def __init__(self, source: dict[EdgeType, Tensor] | None):
        self.source = source if source is not None else {}

    def __call__(self, data: HeteroData) -> HeteroData:
        for et, attr in self.source.items():
            if et in data.edge_types and "e_id" in data[et]:
                data[et].edge_attr = attr.index_select(0, data[et].e_id.to(attr.device))
        return data


def make_sampler(feature_store, graph_store, num_nodes: dict[str, int], cfg: SamplingConfig, edge_types,
                 backend: str, seed: int | None = None, device="cpu",
                 edge_time: dict[EdgeType, Tensor] | None = None) -> BaseSampler:
    """``edge_time`` (relation -> [E] in the store's edge order): a time-aware sampler, batches of one time
    sampled as one subgraph (``TemporalNeighborSampler(disjoint=False)``); it is ripple's native sampler."""
    nn = cfg.num_neighbors(edge_types)
    if edge_time is not None:
        return TemporalNeighborSampler(CSCGraph.from_graph_store(graph_store, num_nodes, device), nn,
                                       edge_time=edge_time, temporal_strategy=cfg.temporal_strategy, seed=seed,
                                       disjoint=False)
    if backend == "native":
        return NativeNeighborSampler(CSCGraph.from_graph_store(graph_store, num_nodes, device), nn, seed=seed)
    # PyG's NeighborSampler dispatches to pyg-lib or torch-sparse itself.
    return NeighborSampler((feature_store, graph_store), num_neighbors=nn)


@dataclass
class Seeds:
    """The label rows a loader samples around: users, and in a training table at many cut times each row's cut
    time T (the row sees what existed strictly before T). Shapes: users [S] global user indices; time [S] or None."""

    users: Tensor
    time: Tensor | None = None

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class AsOfTensors:
    """One cut time's time-varying inputs (``ripple.data.timeline.AsOf``) as tensors, and the training labels of
    that cut's rows. Shapes: user [N_user, 5]; content [N_content]; follows [E] or None; y [N_user] log1p reach
    (NaN but for the cut's training rows)."""

    user: Tensor
    content: Tensor
    follows: Tensor | None
    y: Tensor


class AsOfJoin(EdgeFeatureJoin):
    """``transform`` for batches of one cut time: node features, follows' edge features and the seeds' labels as
    of the batch's time (``seed_time`` + 1: the sampler's time is the last second before the cut), on top of the
    static columns the stores hold."""

    def __init__(self, source: dict[EdgeType, Tensor] | None, as_of: dict[int, AsOfTensors]):
        super().__init__(source)
        self.as_of = as_of

    def __call__(self, data: HeteroData) -> HeteroData:
        data = super().__call__(data)
        snap = self.as_of[int(data["user"].seed_time[0]) + 1]
        user = data["user"]
        user.x = user.x.clone()
        user.x[:, :snap.user.size(1)] = snap.user.index_select(0, user.n_id.to(snap.user.device))
        user.y = snap.y.index_select(0, user.n_id.to(snap.y.device))
        if "content" in data.node_types and data["content"].num_nodes:
            c = data["content"]
            c.x = c.x.clone()
            c.x[:, -1] = snap.content.index_select(0, c.n_id.to(snap.content.device))
        et = ("user", "follows", "user")
        if snap.follows is not None and et in data.edge_types and "e_id" in data[et]:
            e = data[et]
            e.edge_attr = e.edge_attr.clone()
            e.edge_attr[:, 0] = snap.follows.index_select(0, e.e_id.to(snap.follows.device))
        return data


class _OneTimeBatches:
    """Batches of ``batch_size`` positions that share one time: each time's positions in the given order, cut
    into batches, the batches in order of their first position. Seeds already grouped by time keep their order,
    so predictions come back in seed order."""

    def __init__(self, time: Tensor, batch_size: int):
        self.batches: list[list[int]] = []
        t = time.cpu().numpy()
        uniq, inverse = np.unique(t, return_inverse=True)
        for k in range(len(uniq)):
            pos = np.flatnonzero(inverse == k)
            self.batches += [pos[i:i + batch_size].tolist() for i in range(0, len(pos), batch_size)]
        self.batches.sort(key=lambda b: b[0])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _EdgeAttrFromSamplerLoader(NodeLoader):
    """``NodeLoader`` for samplers that return edge features with the edges (``metadata[2]``: relation ->
    [E, D] rows in ``e_id`` order), so no second lookup is needed. A feature store's ``seed_attrs`` (a sharded
    store's labels) are joined for the batch's seeds only: ``batch[group][attr]`` has ``batch_size`` rows."""

    def filter_fn(self, out):
        data = super().filter_fn(out)
        for et, attr in out.metadata[2].items():
            if et in data.edge_types:
                data[et].edge_attr = attr
        # attributes the store serves for the seeds only (``seed_attrs``: the labels): [batch_size] rows
        store = self.data[0]
        for a in getattr(store, "seed_attrs", []):
            seeds = data[a.group_name].n_id[:data[a.group_name].batch_size]
            data[a.group_name][a.attr_name] = store.get_tensor(group_name=a.group_name, attr_name=a.attr_name,
                                                               index=seeds)
        return data


def make_loader(feature_store, graph_store, sampler: BaseSampler, seeds: Tensor | Seeds, batch_size: int,
                edge_attr: dict[EdgeType, Tensor] | None = None, shuffle: bool = False,
                as_of: dict[int, AsOfTensors] | None = None) -> NodeLoader:
    """Batches of user seeds. Shapes: seeds [S] global user indices (or ``Seeds`` with each row's cut time: then
    every batch holds rows of one time, sampled at the last second before it, with ``as_of``'s inputs of that
    time); each batch's first ``batch_size`` users are its seeds."""
    seeds = seeds if isinstance(seeds, Seeds) else Seeds(seeds)
    distinct = (torch.unique(seeds.users).numel() if seeds.time is None else
                torch.unique(torch.stack([seeds.users, seeds.time]), dim=1).size(1))
    if distinct != len(seeds):
        # samplers dedupe seeds, and then the first ``batch_size`` users of a batch would not all be seeds
        raise ValueError(f"loader seeds must be distinct users (at each time); got {len(seeds)} seeds, {distinct} "
                         "distinct")
    batching = {"batch_size": batch_size, "shuffle": shuffle}
    timed = {}
    if seeds.time is not None:
        if as_of is None or not set(torch.unique(seeds.time).tolist()) <= set(as_of):
            raise ValueError("seeds with cut times need the inputs as of each time (as_of); have "
                             f"{sorted(as_of or {})}, seeds at {torch.unique(seeds.time).tolist()}")
        batching = {"batch_sampler": _OneTimeBatches(seeds.time, batch_size)}
        timed = {"input_time": seeds.time - 1}
    if getattr(sampler, "returns_edge_attr", False):
        return _EdgeAttrFromSamplerLoader((feature_store, graph_store), node_sampler=sampler,
                                          input_nodes=("user", seeds.users), filter_per_worker=False, **batching,
                                          **timed)
    transform = EdgeFeatureJoin(edge_attr) if seeds.time is None else AsOfJoin(edge_attr, as_of)
    return NodeLoader((feature_store, graph_store), node_sampler=sampler, input_nodes=("user", seeds.users),
                      transform=transform, filter_per_worker=False, **batching, **timed)
