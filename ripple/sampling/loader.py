"""Loader construction: PyG ``NodeLoader`` over a (FeatureStore, GraphStore) pair with the chosen sampler.

The sampler returns index tensors only; ``NodeLoader`` joins node features from the feature store, and
``EdgeFeatureJoin`` adds edge features by the sampled edge ids (PyG's custom-store path does not fetch edge
features itself).
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.loader import NodeLoader
from torch_geometric.sampler import BaseSampler, NeighborSampler

from ripple.config import SamplingConfig
from ripple.sampling.native import CSCGraph, NativeNeighborSampler

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
                 backend: str, seed: int | None = None, device="cpu") -> BaseSampler:
    nn = cfg.num_neighbors(edge_types)
    if backend == "native":
        return NativeNeighborSampler(CSCGraph.from_graph_store(graph_store, num_nodes, device), nn, seed=seed)
    # PyG's NeighborSampler dispatches to pyg-lib or torch-sparse itself.
    return NeighborSampler((feature_store, graph_store), num_neighbors=nn)


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


def make_loader(feature_store, graph_store, sampler: BaseSampler, seeds: Tensor, batch_size: int,
                edge_attr: dict[EdgeType, Tensor] | None = None, shuffle: bool = False) -> NodeLoader:
    """Batches of user seeds. Shapes: seeds [S] global user indices; each batch's first ``batch_size`` users
    are its seeds."""
    distinct = torch.unique(seeds).numel()
    if distinct != seeds.numel():
        # samplers dedupe seeds, and then the first ``batch_size`` users of a batch would not all be seeds
        raise ValueError(f"loader seeds must be distinct users; got {seeds.numel()} seeds, {distinct} distinct")
    if getattr(sampler, "returns_edge_attr", False):
        return _EdgeAttrFromSamplerLoader((feature_store, graph_store), node_sampler=sampler,
                                          input_nodes=("user", seeds), batch_size=batch_size, shuffle=shuffle,
                                          filter_per_worker=False)
    return NodeLoader((feature_store, graph_store), node_sampler=sampler, input_nodes=("user", seeds),
                      batch_size=batch_size, shuffle=shuffle, transform=EdgeFeatureJoin(edge_attr),
                      filter_per_worker=False)
