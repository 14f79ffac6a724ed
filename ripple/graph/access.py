"""How a worker reaches its graph: the ``GraphAccess`` contract and its two implementations.

- ``LocalAccess``: the whole graph in this process (a dataset small enough for one machine).
- ``ShardedAccess``: a partitioned graph. With W workers and P parts (W <= P), rank r owns parts
  ``r, r + W, r + 2W, ...``: it starts those parts' ``GraphShard`` actors on its own node, maps their arrays
  zero-copy and samples them in-process; every other part is reached through its actor. A rank's training and
  validation users are the labelled users of its own parts, so the first hop never leaves the process.

Training (``ripple.train.worker``) and sampled inference (``ripple.infer.embed``) see only the protocol, so where
the graph lives never reaches the training loop. ``open_access`` picks the implementation from the data.

Two kinds of "seed" meet here; the names keep them apart: ``rng_seed`` seeds a random stream, and *users* are
the nodes a mini-batch is sampled around (PyG's seed nodes).
"""
from __future__ import annotations

import logging
from typing import Iterable, Protocol

import numpy as np
import torch
from torch import Tensor
from torch_geometric.sampler import BaseSampler

from ripple.config import RippleConfig
from ripple.context import WorkerContext
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.graph import LocalGraph, load_local_graph
from ripple.data.timeline import as_of, snapshot
from ripple.graph.local import local_stores
from ripple.graph.sharded_sampler import DistributedNeighborSampler
from ripple.graph.part_io import PartitionMeta
from ripple.graph.shards import (ShardedFeatureStore, ShardedGraph, ShardedGraphStore, shard_key, start_shard,
                                 this_node)
from ripple.run import is_partitioned, run_dir
from ripple.sampling import backends
from ripple.sampling.loader import AsOfTensors, Seeds, make_loader, make_sampler

log = logging.getLogger(__name__)


class GraphAccess(Protocol):
    """What a worker needs from a graph, wherever it lives."""

    #: the sampling kernel, reported with the training metrics
    backend: str
    #: sampling waits on other processes (shard actors): a prefetch thread can overlap that wait
    remote_sampling: bool
    #: its ``generator`` (where it has one) is saved with each checkpoint, so a restart draws the same batches
    sampler: BaseSampler

    def loader(self, users: Tensor | Seeds, batch_size: int) -> Iterable:
        """PyG ``NodeLoader`` batches around ``users`` (Shapes: [U] global user indices), or around label rows
        at their cut times (``Seeds``: a training table at many cut times, batched by time)."""

    def resident_bytes(self) -> int:
        """Bytes of graph arrays this process holds."""

    def train_users(self, epoch: int) -> Tensor | Seeds:
        """This rank's training users (label rows with their times: ``Seeds``) for ``epoch``, shuffled per epoch; the same count on every rank (DDP
        needs equal step counts)."""

    def eval_users(self, split: str) -> tuple[Tensor | Seeds, Tensor]:
        """This rank's share of the labelled users of ``split`` (the ranks' shares together cover the split), and
        their labels. Shapes: -> (users [V], log1p(reach) [V]). The labels come from here, never from the
        feature store, which holds training labels only (NaN elsewhere), so no batch can carry another split's."""

    def users(self, part: int, num_parts: int) -> tuple[Tensor, np.ndarray]:
        """Slice ``part`` of ``num_parts`` of all users: (global indices [U], original ids [U])."""

    def traffic(self) -> dict:
        """Counters of what sampling and feature lookups moved through other processes so far
        (``ripple.graph.shards.Traffic``; ``Traffic.since`` turns two of these into a report)."""

    def placement(self) -> dict:
        """Where this process's graph lives: its Ray node, the parts it maps in-process and the parts it reaches
        through their actors, each with its actor's node."""


class LocalAccess:
    """``GraphAccess`` over a graph held whole in this process: in-memory PyG stores and a kernel sampler."""

    remote_sampling = False

    def __init__(self, graph: LocalGraph, cfg: RippleConfig, ctx: WorkerContext, rng_seed: int):
        self.graph, self.ctx, self.shuffle_seed = graph, ctx, cfg.train.seed
        # sampling.on_device: graph, features and labels in the accelerator's memory, sampled there
        where = torch.device(ctx.device) if cfg.sampling.on_device else torch.device("cpu")
        self.feature_store, self.graph_store = local_stores(graph, where)
        self.num_nodes = {t: graph.num_nodes(t) for t in S.NODE_TYPES}
        # training labels only: a validation or test user's label never enters a batch
        y = torch.full((self.num_nodes["user"],), float("nan"))
        train = graph.split == "train"
        y[torch.from_numpy(graph.label_index[train])] = torch.from_numpy(np.log1p(graph.reach[train]))
        self.feature_store.put_tensor(y.to(where), group_name="user", attr_name="y", index=None)
        self.edge_attr = graph.edge_attr_tensors(where)
        self.as_of, edge_time = None, None
        if graph.temporal:  # rows at many cut times: each sees the graph and its activity as of its own time
            self.as_of = as_of_tensors(graph, where)
            edge_time = {et: torch.from_numpy(t).to(where) for et, t in graph.edge_time.items()}
            log.info("training table at %d cut times: time-aware sampling (%s), inputs as of each time (%.1f MiB)",
                     len(self.as_of), cfg.sampling.temporal_strategy,
                     sum(a.user.nbytes + a.content.nbytes + a.y.nbytes + (0 if a.follows is None else a.follows.nbytes)
                         for a in self.as_of.values()) / 2**20)
        self.backend = "native" if edge_time is not None else \
            backends.select("native" if cfg.sampling.on_device else cfg.sampling.backend)
        self.sampler = make_sampler(self.feature_store, self.graph_store, self.num_nodes, cfg.sampling,
                                    list(S.EDGE_TYPES), self.backend, seed=rng_seed, device=where, edge_time=edge_time)

    def loader(self, users: Tensor | Seeds, batch_size: int):
        if self.as_of is not None and not isinstance(users, Seeds):  # users now: the graph as it is
            users = Seeds(users, torch.full_like(users, max(self.as_of)))
        return make_loader(self.feature_store, self.graph_store, self.sampler, users, batch_size, self.edge_attr,
                           as_of=self.as_of)

    def resident_bytes(self) -> int:
        g = self.graph
        arrays = [*g.x.values(), *g.edge_attr.values(), *(a for c in g.csc.values() for a in c)]
        return int(sum(a.nbytes for a in arrays))

    def rows(self, rows: np.ndarray) -> Seeds:
        """Label rows (positions in the label arrays) as seeds with their cut times."""
        g = self.graph
        return Seeds(torch.from_numpy(g.label_index[rows]), torch.from_numpy(g.label_time[rows]))

    def train_users(self, epoch: int) -> Tensor | Seeds:
        index, world = self.graph.split_index("train"), self.ctx.world_size
        g = torch.Generator().manual_seed(self.shuffle_seed * 1000 + epoch)
        if self.as_of is not None:
            # each rank takes its share of every cut time's rows: batches hold one time, and every rank must run
            # the same number of steps (DDP)
            rows = np.flatnonzero(self.graph.split == "train")
            mine = []
            for t in np.unique(self.graph.label_time[rows]):
                at = rows[self.graph.label_time[rows] == t]
                at = at[torch.randperm(len(at), generator=g).numpy()]
                per = len(at) // world
                mine.append(at[self.ctx.rank * per:(self.ctx.rank + 1) * per])
            mine = np.concatenate(mine)
            return self.rows(mine[torch.randperm(len(mine), generator=g).numpy()])
        if len(index) < world:
            raise ValueError(f"{len(index)} training users cannot be split over {world} workers; "
                             "use fewer --num-workers or label more users")
        # every rank draws the same permutation and takes its own slice of it
        perm = torch.from_numpy(index)[torch.randperm(len(index), generator=g)]
        per = len(index) // world
        return perm[self.ctx.rank * per:(self.ctx.rank + 1) * per]

    def eval_users(self, split: str) -> tuple[Tensor | Seeds, Tensor]:
        g, world, rank = self.graph, self.ctx.world_size, self.ctx.rank
        rows = np.flatnonzero(g.split == split)
        if self.as_of is not None:  # grouped by time: the loader's batches keep their order
            rows = rows[np.argsort(g.label_time[rows], kind="stable")]
        mine = np.array_split(rows, world)[rank]  # positions in the label arrays
        users = self.rows(mine) if self.as_of is not None else torch.from_numpy(g.label_index[mine])
        return users, torch.from_numpy(np.log1p(g.reach[mine]))

    def users(self, part: int, num_parts: int) -> tuple[Tensor, np.ndarray]:
        users = np.array_split(np.arange(self.graph.num_nodes("user")), num_parts)[part]
        return torch.from_numpy(users), self.graph.ids["user"][users]

    def traffic(self) -> dict:
        return {}  # the whole graph is in this process: nothing moves

    def placement(self) -> dict:
        return {"node": this_node(), "whole_graph": True}


def as_of_tensors(graph: LocalGraph, device) -> dict[int, AsOfTensors]:
    """Per cut time of the graph's label rows: its activity inputs (``ripple.data.timeline.as_of``) and the
    training labels of that time's rows, on ``device``."""
    out = {}
    train = graph.split == "train"
    for t in np.unique(graph.label_time):
        a = as_of(graph, int(t))
        y = torch.full((graph.num_nodes("user"),), float("nan"))
        rows = train & (graph.label_time == t)
        y[torch.from_numpy(graph.label_index[rows])] = torch.from_numpy(np.log1p(graph.reach[rows]))
        out[int(t)] = AsOfTensors(torch.from_numpy(a.user).to(device), torch.from_numpy(a.content).to(device),
                                  None if a.follows is None else torch.from_numpy(a.follows).to(device), y.to(device))
    return out


def parts_of_rank(num_parts: int, world_size: int, rank: int) -> list[int]:
    if world_size > num_parts:
        raise ValueError(f"{world_size} workers but the graph has {num_parts} parts: every worker must own at least "
                         f"one part; use --num-workers <= {num_parts} or re-partition with --num-parts >= "
                         f"{world_size}")
    return list(range(rank, num_parts, world_size))


class ShardedAccess:
    """``GraphAccess`` over graph shards: every part whose actor runs on this process's Ray node is mapped
    zero-copy from that node's object store (the rank's own parts, and any other part co-located with it); only
    parts on other nodes are reached through their actors.

    ``local_parts``/``key``: an inference task holds one given part of the shard actors started under ``key``
    (the driver's), instead of the rank's parts of the training run's actors."""

    remote_sampling = True
    backend = "distributed"

    def __init__(self, cfg: RippleConfig, ctx: WorkerContext, rng_seed: int, local_parts: list[int] | None = None,
                 key: str | None = None):
        self.meta = PartitionMeta.open(cfg.data, cfg.storage)
        self.ctx, self.shuffle_seed = ctx, cfg.train.seed
        mine = parts_of_rank(self.meta.num_parts, ctx.world_size, ctx.rank) if local_parts is None else local_parts
        self.key = key or shard_key(cfg.data, run_dir(cfg))
        # handles held for the access's lifetime: an unreferenced actor is destroyed, even a named one
        self._owned = [start_shard(self.meta, self.key, p, max_restarts=cfg.scaling.shard_max_restarts)
                       for p in mine]
        self.graph = ShardedGraph.connect(self.meta, self.key, mine)
        self.feature_store = ShardedFeatureStore(self.graph)
        self.graph_store = ShardedGraphStore(self.meta)
        self.sampler = DistributedNeighborSampler(self.graph, cfg.sampling.num_neighbors(self.meta.edge_types),
                                                  seed=rng_seed)
        self.parts = mine
        # per-epoch user count: the smallest rank's, so every rank runs the same number of DDP steps
        counts = [sum(self.meta.label_count("train", p) for p in parts_of_rank(self.meta.num_parts, ctx.world_size, r))
                  for r in range(ctx.world_size)] if local_parts is None else [0]
        self.train_per_rank = min(counts)
        log.info("sharded graph %s: %d parts, this rank owns %s and maps %s zero-copy (%.1f MiB); parts on "
                 "other nodes: %s", cfg.data, self.meta.num_parts, mine, sorted(self.graph.local),
                 self.graph.resident_bytes() / 2**20, sorted(set(range(self.meta.num_parts)) - set(self.graph.local)))

    def loader(self, users: Tensor | Seeds, batch_size: int):
        # the sharded sampler returns edge features with the edges: no join from a store
        return make_loader(self.feature_store, self.graph_store, self.sampler, users, batch_size)

    def resident_bytes(self) -> int:
        """Its own parts' arrays: the rank's share of the graph. Co-located parts it also maps are other
        actors' objects in the same node's object store, counted by those parts' owners."""
        return sum(self.graph.local[p].resident_bytes() for p in self.parts)

    def traffic(self) -> dict:
        return self.graph.traffic.snapshot()

    def placement(self) -> dict:
        g = self.graph
        return {"node": g.here, "owned": list(self.parts),
                "mapped": {p: g.nodes[p] for p in sorted(g.local)},
                "remote": {p: g.nodes[p] for p in range(self.meta.num_parts) if p not in g.local}}

    def _labelled(self, split: str) -> np.ndarray:
        return np.concatenate([self.graph.local[p].labelled(split) for p in self.parts])

    def train_users(self, epoch: int) -> Tensor | Seeds:
        own = self._labelled("train")
        if self.train_per_rank < 1:
            raise ValueError(f"a worker's parts hold no training users (per-rank counts from the partition "
                             f"manifest: {self.train_per_rank}); use fewer --num-workers or label more users")
        g = torch.Generator().manual_seed(self.shuffle_seed * 1000 + epoch * 31 + self.ctx.rank)
        perm = torch.randperm(len(own), generator=g)[: self.train_per_rank]
        return torch.from_numpy(own)[perm]

    def eval_users(self, split: str) -> tuple[Tensor | Seeds, Tensor]:
        users = self._labelled(split)
        parts = [self.graph.local[p] for p in self.parts]
        y = np.concatenate([s.y.numpy()[s.labelled(split) - s.node_offset["user"]] for s in parts])
        return torch.from_numpy(users), torch.from_numpy(y)

    def users(self, part: int, num_parts: int) -> tuple[Tensor, np.ndarray]:
        """All users of graph part ``part``, which this access must hold: the slices are the graph's parts."""
        if num_parts != self.meta.num_parts or part not in self.graph.local:
            raise ValueError(f"a partitioned graph is sliced by its own {self.meta.num_parts} parts, of which this "
                             f"process holds {sorted(self.graph.local)}; asked for slice {part} of {num_parts}")
        shard = self.graph.local[part]
        return torch.arange(len(shard.ids["user"])) + shard.node_offset["user"], shard.ids["user"]


def open_access(cfg: RippleConfig, ctx: WorkerContext, rng_seed: int) -> GraphAccess:
    """``ShardedAccess`` when ``cfg.data`` is a partitioned graph, else the whole graph in this process."""
    if is_partitioned(cfg.data, cfg.storage):
        if cfg.inference.as_of is not None:
            raise ValueError(f"inference.as_of (--as-of) cuts a graph held whole, but {cfg.data} is a partitioned "
                             "graph; score the dataset itself (`ripple embed RUN --data DATASET --as-of T`)")
        if cfg.sampling.on_device:
            raise ValueError(f"sampling.on_device needs the whole graph in each worker, but {cfg.data} is a "
                             "partitioned graph, sampled by its shards; set sampling.on_device: false")
        return ShardedAccess(cfg, ctx, rng_seed)
    return LocalAccess(load_graph(cfg), cfg, ctx, rng_seed)


def load_graph(cfg: RippleConfig) -> LocalGraph:
    """``cfg.data`` held whole in this process; with ``inference.as_of`` the graph as it stood before that time
    (a snapshot has no label rows: it is scored, not trained on)."""
    graph = load_local_graph(Dataset(cfg.data, cfg.storage))
    return graph if cfg.inference.as_of is None else snapshot(graph, cfg.inference.as_of)
