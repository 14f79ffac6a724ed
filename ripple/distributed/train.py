"""Ray Train: the per-worker training loop and the driver that runs it.

``train_loop_per_worker`` reads top to bottom: context -> graph -> loader -> model (DDP) -> resume -> epochs
(train, validate, checkpoint). Device and rank come from ``WorkerContext``; the model never sees them.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.graph import LocalGraph, load_local_graph
from ripple.data.storage import pyarrow_filesystem
from ripple.distributed.context import WorkerContext, setup_worker_logging
from ripple.distributed.stores import local_stores
from ripple.models.gnn import InfluenceGNN
from ripple.models.metrics import spearman
from ripple.run import CHECKPOINTS, SCORE, SCORE_MODE, best_of, is_partitioned, run_dir, run_path
from ripple.sampling import backends
from ripple.sampling.loader import make_loader, make_sampler
from ripple.sampling.prefetch import Prefetcher, prefetch_depth

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
#: key of ``train_loop_config`` naming one ``fit`` call: a checkpoint written under the same id was written by a
#: worker group of this call that was lost (restart), another id by an earlier run of the same name (resume)
FIT_ID = "_fit_id"


def load_state(checkpoint, map_location="cpu") -> dict:
    """The training state a ``ray.train.Checkpoint`` holds (model, optimizer, epoch, early-stopping state)."""
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=map_location, weights_only=False)


def rng_state(access, device) -> dict:
    """This process's random streams: torch's (dropout, and PyG's samplers draw from it) and the sampler's own
    generator where it has one. Saved per rank with each checkpoint, so that a worker group restarted from it
    draws what the lost one would have: a restarted run trains exactly as an uninterrupted one."""
    state = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    gen = getattr(access.sampler, "generator", None)
    if gen is not None:
        state["sampler"] = gen.get_state()
    return state


def set_rng_state(access, device, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    gen = getattr(access.sampler, "generator", None)
    if gen is not None and "sampler" in state:
        gen.set_state(state["sampler"])


def build_model(cfg) -> InfluenceGNN:
    return InfluenceGNN(FT.NODE_DIMS, list(S.EDGE_TYPES), cfg.model, edge_dims=FT.EDGE_DIMS)


class GraphAccess:
    """What a worker needs from a graph held whole in this process: PyG stores, a sampler, edge features, and
    its share of the labelled users. ``ShardedAccess`` provides the same methods over graph shards."""

    #: sampling waits on other processes (shard actors): a prefetch thread can overlap that wait
    remote_sampling = False

    def __init__(self, graph: LocalGraph, cfg, device, seed: int):
        self.graph = graph
        # sampling.on_device: graph, features and labels in the accelerator's memory, sampled there
        where = torch.device(device) if cfg.sampling.on_device else torch.device("cpu")
        self.feature_store, self.graph_store = local_stores(graph, where)
        self.num_nodes = {t: graph.num_nodes(t) for t in S.NODE_TYPES}
        y = torch.full((self.num_nodes["user"],), float("nan"))
        y[torch.from_numpy(graph.label_index)] = torch.from_numpy(np.log1p(graph.reach))
        self.feature_store.put_tensor(y.to(where), group_name="user", attr_name="y", index=None)
        self.edge_attr = graph.edge_attr_tensors(where)
        self.backend = backends.select("native" if cfg.sampling.on_device else cfg.sampling.backend)
        self.sampler = make_sampler(self.feature_store, self.graph_store, self.num_nodes, cfg.sampling,
                                    list(S.EDGE_TYPES), self.backend, seed=seed, device=where)

    def loader(self, seeds: torch.Tensor, batch_size: int):
        return make_loader(self.feature_store, self.graph_store, self.sampler, seeds, batch_size, self.edge_attr)

    def resident_bytes(self) -> int:
        """Bytes of graph arrays this process holds (the whole graph here)."""
        g = self.graph
        arrays = [*g.x.values(), *g.edge_attr.values(), *(a for c in g.csc.values() for a in c)]
        return int(sum(a.nbytes for a in arrays))

    def train_seeds(self, ctx: WorkerContext, epoch: int, seed: int) -> torch.Tensor:
        """Equal-size, per-epoch shuffled share of the training users for this rank (DDP needs equal batch
        counts)."""
        index = self.graph.split_index("train")
        if len(index) < ctx.world_size:
            raise ValueError(f"{len(index)} training users cannot be split over {ctx.world_size} workers; "
                             "use fewer --num-workers or label more users")
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        perm = torch.from_numpy(index)[torch.randperm(len(index), generator=g)]
        per = len(index) // ctx.world_size
        return perm[ctx.rank * per:(ctx.rank + 1) * per]

    def eval_seeds(self, split: str, ctx: WorkerContext) -> torch.Tensor:
        return torch.from_numpy(np.array_split(self.graph.split_index(split), ctx.world_size)[ctx.rank])

    def users(self, part: int, num_parts: int) -> tuple[torch.Tensor, np.ndarray]:
        """Slice ``part`` of ``num_parts`` of all users: (dense indices, original ids)."""
        users = np.array_split(np.arange(self.graph.num_nodes("user")), num_parts)[part]
        return torch.from_numpy(users), self.graph.ids["user"][users]


def open_access(cfg, ctx: WorkerContext, seed: int):
    """``ShardedAccess`` when ``cfg.data`` is a partitioned graph, else the whole graph in this process."""
    if is_partitioned(cfg.data, cfg.storage):
        from ripple.distributed.sharded_access import ShardedAccess

        if cfg.sampling.on_device:
            raise ValueError(f"sampling.on_device needs the whole graph in each worker, but {cfg.data} is a "
                             "partitioned graph, sampled by its shards; set sampling.on_device: false")

        return ShardedAccess(cfg, ctx, seed)
    return GraphAccess(load_local_graph(Dataset(cfg.data, cfg.storage)), cfg, ctx.device, seed)


@torch.no_grad()
def predict(model, access, users: torch.Tensor, batch_size: int, device, prefetch: int = -1):
    """Shapes: users [U] user indices -> (pred [U] log1p reach, embedding [U, hidden], label [U] (NaN if none)).
    ``prefetch``: ``sampling.prefetch`` (-1 = auto)."""
    model.eval()
    preds, embs, ys = [], [], []
    depth = prefetch_depth(prefetch, device, access.remote_sampling)
    for inp in Prefetcher(access.loader(users, batch_size), device, depth):
        p, e = model(inp.x, inp.edge_index, inp.edge_attr)
        bs = inp.batch_size
        # clone: a slice is a view that would keep the whole batch's node tensors alive until the end
        preds.append(p[:bs].cpu().clone())
        embs.append(e[:bs].cpu().clone())
        ys.append(inp.y.cpu().clone())
    if not preds:
        return torch.empty(0), torch.empty(0, model.cfg.hidden), torch.empty(0)
    return torch.cat(preds), torch.cat(embs), torch.cat(ys)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg, fit_id = loop_config["cfg"], loop_config.get(FIT_ID)
    ctx = WorkerContext.from_ray()
    setup_worker_logging(ctx.rank)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))

    access = open_access(cfg, ctx, seed=cfg.train.seed + 7919 * ctx.rank)
    resident = ctx.all_gather(access.resident_bytes())  # per rank: the graph bytes each trainer holds

    # A batch may lack a relation (no sampled replies, say): its parameters then get no gradient this step.
    model = ray.train.torch.prepare_model(build_model(cfg),
                                          parallel_strategy_kwargs={"find_unused_parameters": True})
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    start_epoch, best, bad_epochs = 0, math.inf, 0
    # resumed_from: the checkpoint's epoch; restarts: worker groups of this fit lost and restarted from a checkpoint
    resumed_from, restarts = None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        state = load_state(checkpoint, map_location=ctx.device)
        core.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best, bad_epochs = state["epoch"] + 1, state["best"], state["bad_epochs"]
        resumed_from = state["epoch"]
        restarted = fit_id is not None and state.get("fit_id") == fit_id
        restarts = state.get("restarts", 0) + 1 if restarted else 0
        rng = state.get("rng") or []
        if len(rng) == ctx.world_size:
            set_rng_state(access, ctx.device, rng[ctx.rank])
        else:  # another world size (or an older checkpoint): the run goes on, with other random draws
            log.warning("checkpoint of epoch %d holds random states for %d workers, not %d: not restored",
                        state["epoch"], len(rng), ctx.world_size)
        log.info("%s from the checkpoint of epoch %d (best %s %.4f)",
                 f"worker group restarted (restart {restarts})" if restarted else "resumed", state["epoch"],
                 SCORE, best)

    # sampling.batch_size is the global batch: the same optimisation whatever the number of workers
    bs = max(1, cfg.sampling.batch_size // ctx.world_size)
    for epoch in range(start_epoch, cfg.train.epochs):
        if cfg.train.patience and bad_epochs >= cfg.train.patience:
            break
        model.train()
        seeds = access.train_seeds(ctx, epoch, cfg.train.seed)
        # sampling (and the host-to-device copy) runs ahead in a background thread
        batches = Prefetcher(access.loader(seeds, bs), ctx.device,
                             prefetch_depth(cfg.sampling.prefetch, ctx.device, access.remote_sampling))
        t0, n_seen, n_edges = time.perf_counter(), 0, 0
        loss_sum = torch.zeros((), device=ctx.device)  # summed on the device: no host sync per step
        for inp in batches:
            n = inp.batch_size
            pred, _ = model(inp.x, inp.edge_index, inp.edge_attr)
            loss = F.mse_loss(pred[:n], inp.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * n
            n_seen += n
            n_edges += sum(int(v.size(1)) for v in inp.edge_index.values())
        loss_sum = float(loss_sum)  # waits for the device's queue: the epoch's time below is honest
        elapsed = time.perf_counter() - t0

        # validation: every rank predicts its slice, rank-gathered for one Spearman
        vp, _, vy = predict(core, access, access.eval_seeds("val", ctx), bs * 4, ctx.device, cfg.sampling.prefetch)
        gathered = ctx.all_gather((vy.numpy(), vp.numpy(), loss_sum, n_seen, n_edges, elapsed, batches.wait_s,
                                   rng_state(access, ctx.device)))
        v_y = np.concatenate([g[0] for g in gathered])
        v_pred = np.concatenate([g[1] for g in gathered])
        val_rho = spearman(v_y, v_pred) if len(v_y) > 1 else 0.0
        val_mse = float(np.mean((v_y - v_pred) ** 2)) if len(v_y) else 0.0
        loss_tot, seen_tot, edges_tot = (sum(g[i] for g in gathered) for i in (2, 3, 4))
        times = [g[5] for g in gathered]
        improved = val_mse < best
        best, bad_epochs = (val_mse, 0) if improved else (best, bad_epochs + 1)
        wall = max(sum(times) / ctx.world_size, 1e-9)  # mean per-rank epoch time
        metrics = {"epoch": epoch, "train_loss": loss_tot / max(seen_tot, 1), "val_mse": val_mse,
                   "val_spearman": val_rho, "best_" + SCORE: best, "train_seeds_per_s": seen_tot / wall,
                   "train_edges_per_s": edges_tot / wall,
                   # per worker: a slow rank (a straggler GPU, a remote shard) shows here, not in the mean
                   "train_seeds_per_s_per_rank": [g[3] / max(g[5], 1e-9) for g in gathered],
                   "data_wait_fraction_per_rank": [g[6] / max(g[5], 1e-9) for g in gathered],
                   "kernel_backend": access.backend, "world_size": ctx.world_size, "start_epoch": start_epoch,
                   "resumed_from_epoch": resumed_from, "restarts": restarts,
                   "device": str(ctx.device), "graph_resident_bytes": resident}
        log.info("epoch %d per-worker seeds/s %s, waiting on data %s", epoch,
                 [round(v, 1) for v in metrics["train_seeds_per_s_per_rank"]],
                 [f"{v:.0%}" for v in metrics["data_wait_fraction_per_rank"]])
        log.info("epoch %d loss %.4f val_mse %.4f val_spearman %.4f (%.0f seeds/s)", epoch, metrics["train_loss"],
                 val_mse, val_rho, metrics["train_seeds_per_s"])
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if ctx.is_primary:
                torch.save({"model": core.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                            "best": best, "bad_epochs": bad_epochs, "config": cfg.to_dict(),
                            "rng": [g[7] for g in gathered], "fit_id": fit_id, "restarts": restarts},
                           os.path.join(tmp, CHECKPOINT_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def lost_ranks(error) -> list[int]:
    """Ranks of a ``WorkerGroupError`` whose process was lost (it died, or stopped answering Ray's health checks),
    as opposed to ranks whose training code raised."""
    from ray.exceptions import RayActorError

    lost = []
    for rank, err in (getattr(error, "worker_failures", None) or {}).items():
        cause = getattr(err, "health_check_failure", err)  # Ray Train's WorkerHealthCheckFailedError wraps it
        if isinstance(cause, RayActorError) or type(err).__name__ == "WorkerHealthCheckTimeoutError":
            lost.append(int(rank))
    return sorted(lost)


@dataclass
class FitOutcome:
    best_checkpoint: object  # ray.train.Checkpoint
    best_metrics: dict
    last_metrics: dict


def fit(cfg) -> FitOutcome:
    """Run (or resume) the Ray Train job; checkpoints live under ``<storage>/<run>/checkpoints``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    path, pafs = pyarrow_filesystem(run_dir(cfg), cfg.storage)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, FIT_ID: uuid.uuid4().hex},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker,
                                  **({"GPU": 1} if cfg.scaling.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=CHECKPOINTS, storage_path=path, storage_filesystem=pafs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=SCORE,
                                                         checkpoint_score_order=SCORE_MODE)),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        lost = lost_ranks(e)
        if not lost:  # an error raised by the training code itself: restarting would not help
            raise
        budget = "no restarts allowed" if cfg.scaling.max_failures == 0 else \
            f"--max-failures {cfg.scaling.max_failures} restarts used up"
        raise RuntimeError(
            f"training of run {cfg.run_name!r} failed: lost the process of worker rank(s) {lost} ({budget}). "
            f"Checkpoints so far are under {run_path(cfg, CHECKPOINTS)}: rerun the same command to resume "
            f"from the last one, or pass --max-failures K to let Ray Train restart lost workers from it.\n"
            f"Ray Train: {e}") from e
    best = best_of(result)
    if best is None:
        raise RuntimeError(f"training of run {cfg.run_name!r} produced no checkpoint")
    best_metrics = next((m for c, m in (result.best_checkpoints or []) if c.path == best.path), result.metrics)
    return FitOutcome(best, dict(best_metrics or {}), dict(result.metrics or {}))
