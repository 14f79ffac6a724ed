"""``ShardedAccess``: a worker's view of a partitioned graph, with the methods of ``GraphAccess``.

Placement: with W workers and P parts (W <= P), rank r owns parts ``r, r + W, r + 2W, ...``. It starts those
parts' ``GraphShard`` actors on its own node, maps their arrays zero-copy, and samples them in-process; every
other part is reached through its actor. A rank's training and validation seeds are the labelled users of its
own parts, so seeds are always local and the first hop never leaves the process.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ripple.distributed.context import WorkerContext
from ripple.distributed.shards import (PartitionMeta, ShardedFeatureStore, ShardedGraph, ShardedGraphStore,
                                       find_shards, shard_key, start_shard)
from ripple.run import run_dir
from ripple.sampling.distributed import DistributedNeighborSampler
from ripple.sampling.loader import make_loader

log = logging.getLogger(__name__)

BACKEND = "distributed"


def parts_of_rank(num_parts: int, world_size: int, rank: int) -> list[int]:
    if world_size > num_parts:
        raise ValueError(f"{world_size} workers but the graph has {num_parts} parts: every worker must own at least "
                         f"one part; use --num-workers <= {num_parts} or re-partition with --num-parts >= "
                         f"{world_size}")
    return list(range(rank, num_parts, world_size))


class ShardedAccess:
    """``GraphAccess``'s methods over graph shards: this rank's parts mapped from their actors, the rest remote."""

    remote_sampling = True  # parts this rank does not own are sampled through their actors

    def __init__(self, cfg, ctx: WorkerContext, seed: int, local_parts: list[int] | None = None,
                 key: str | None = None):
        self.meta = PartitionMeta.open(cfg.data, cfg.storage)
        self.ctx = ctx
        mine = parts_of_rank(self.meta.num_parts, ctx.world_size, ctx.rank) if local_parts is None else local_parts
        self.key = key or shard_key(cfg.data, run_dir(cfg))
        # handles held for the access's lifetime: an unreferenced actor is destroyed, even a named one
        self._owned = [start_shard(self.meta, self.key, p, max_restarts=cfg.scaling.shard_max_restarts)
                       for p in mine]
        actors = find_shards(self.meta, self.key)
        self.graph = ShardedGraph(self.meta, actors, mine)
        self.feature_store = ShardedFeatureStore(self.graph)
        self.graph_store = ShardedGraphStore(self.meta)
        self.sampler = DistributedNeighborSampler(self.graph, cfg.sampling.num_neighbors(self.meta.edge_types),
                                                  seed=seed)
        self.backend = BACKEND
        self.parts = mine
        # per-epoch seed count: the smallest rank's, so every rank runs the same number of DDP steps
        counts = [sum(self.meta.label_count("train", p) for p in parts_of_rank(self.meta.num_parts, ctx.world_size, r))
                  for r in range(ctx.world_size)] if local_parts is None else [0]
        self.train_per_rank = min(counts)
        log.info("sharded graph %s: %d parts, this rank holds %s (%.1f MiB resident)", cfg.data,
                 self.meta.num_parts, mine, self.graph.resident_bytes() / 2**20)

    def loader(self, seeds: torch.Tensor, batch_size: int):
        return make_loader(self.feature_store, self.graph_store, self.sampler, seeds, batch_size,
                           self.feature_store)

    def resident_bytes(self) -> int:
        """Bytes of graph arrays this process maps: its own parts only."""
        return self.graph.resident_bytes()

    def _labelled(self, split: str) -> np.ndarray:
        return np.concatenate([self.graph.local[p].labelled(split) for p in self.parts])

    def train_seeds(self, ctx: WorkerContext, epoch: int, seed: int) -> torch.Tensor:
        """A per-epoch shuffled sample of this rank's training users, the same size on every rank."""
        own = self._labelled("train")
        if self.train_per_rank < 1:
            raise ValueError(f"a worker's parts hold no training users (per-rank counts from the partition "
                             f"manifest: {self.train_per_rank}); use fewer --num-workers or label more users")
        g = torch.Generator().manual_seed(seed * 1000 + epoch * 31 + ctx.rank)
        perm = torch.randperm(len(own), generator=g)[: self.train_per_rank]
        return torch.from_numpy(own)[perm]

    def eval_seeds(self, split: str, ctx: WorkerContext) -> torch.Tensor:
        return torch.from_numpy(self._labelled(split))

    def users(self, part: int) -> tuple[torch.Tensor, np.ndarray]:
        """All users of local part ``part``: (global indices, original ids)."""
        shard = self.graph.local[part]
        n = len(shard.ids["user"])
        return torch.arange(n) + shard.node_offset["user"], shard.ids["user"]
