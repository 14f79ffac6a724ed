"""The per-worker training loop that Ray Train runs on every rank.

``train_loop_per_worker`` reads top to bottom: setup (context, graph, model under DDP) -> resume -> per epoch:
``train_epoch``, ``validate``, report with a checkpoint. Device and rank come from ``WorkerContext``; the graph
from ``ripple.graph.access``; the model never sees either.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ripple.config import RippleConfig
from ripple.context import WorkerContext, setup_worker_logging
from ripple.evaluate.metrics import spearman
from ripple.graph.access import GraphAccess, open_access
from ripple.graph.part_io import HeapTrim
from ripple.graph.shards import Traffic
from ripple.models.gnn import build_model
from ripple.run import SCORE
from ripple.sampling.prefetch import Prefetcher, prefetch_depth
from ripple.train.checkpoint import FIT_ID, INIT_WEIGHTS, PROGRESS, report, resume, rng_state

log = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    cfg: RippleConfig = loop_config["cfg"]
    ctx = WorkerContext.from_ray()
    setup_worker_logging(ctx.rank)
    torch.manual_seed(cfg.train.seed)
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    access = open_access(cfg, ctx, rng_seed=cfg.train.seed + 7919 * ctx.rank)  # one sampler stream per rank
    resident = ctx.all_gather(access.resident_bytes())
    placement = ctx.all_gather(access.placement())

    # Every parameter takes part in every step (the model treats a relation a batch lacks as empty), so DDP
    # needs no extra pass over the autograd graph to find unused ones.
    model = ray.train.torch.prepare_model(build_model(cfg))
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    state = resume(ray.train.get_checkpoint(), core, opt, access.sampler, ctx, loop_config.get(FIT_ID),
                   loop_config.get(INIT_WEIGHTS))
    start = state.next_epoch

    # sampling.batch_size is the global batch: the same optimisation whatever the number of workers
    batch_size = max(1, cfg.sampling.batch_size // ctx.world_size)
    val_users, val_y = access.eval_users("val")  # the same users every epoch
    for epoch in state.epochs(cfg.train.epochs, cfg.train.patience):
        stats = train_epoch(model, opt, access, ctx, cfg, epoch, batch_size)
        stats.val_y = val_y
        stats.val_pred, _, _ = predict(core, access, val_users, no_grad_batch(batch_size), ctx.device,
                                       cfg.sampling.prefetch)
        stats.rng = rng_state(access.sampler, ctx.device)
        ranks = ctx.all_gather(stats)
        metrics = epoch_metrics(ranks, epoch)
        state.update(epoch, metrics["val_mse"], metrics)
        metrics.update({"history": state.history, "best_" + SCORE: state.best, "kernel_backend": access.backend,
                        "world_size": ctx.world_size, "start_epoch": start, "resumed_from_epoch": state.resumed_from,
                        "restarts": state.restarts, "device": str(ctx.device), "graph_resident_bytes": resident,
                        "placement": placement})
        report(core, opt, cfg, epoch, state, [r.rng for r in ranks], loop_config.get(FIT_ID), metrics, ctx)
        if ctx.is_primary and loop_config.get(PROGRESS) is not None:  # the driver's console line of this epoch
            loop_config[PROGRESS].put_nowait(state.history[-1])


@dataclass
class RankEpoch:
    """One rank's epoch, rank-gathered so that every rank reports the whole group's metrics."""

    loss_sum: float  # the epoch's training loss, summed over its users
    users: int
    edges: int  # sampled edges the model passed messages over
    seconds: float
    wait_s: float  # time the model waited on sampling and the host-to-device copy
    traffic: dict  # what sampling and feature lookups moved through shard actors (``Traffic`` counts)
    val_pred: torch.Tensor | None = None  # Shapes: [V] log1p reach of this rank's validation users
    val_y: torch.Tensor | None = None  # Shapes: [V]
    rng: dict | None = None  # this rank's random streams after the epoch, for the checkpoint


def train_epoch(model, opt, access: GraphAccess, ctx: WorkerContext, cfg: RippleConfig, epoch: int,
                batch_size: int) -> RankEpoch:
    model.train()
    before = access.traffic()
    # sampling (and the host-to-device copy) runs ahead in a background thread
    batches = Prefetcher(access.loader(access.train_users(epoch), batch_size), ctx.device,
                         prefetch_depth(cfg.sampling.prefetch, ctx.device, access.remote_sampling))
    t0, users, edges = time.perf_counter(), 0, 0
    loss_sum = torch.zeros((), device=ctx.device)  # summed on the device: no host sync per step
    trim = HeapTrim()
    for inp in batches:
        n = inp.batch_size
        pred, _ = model(*inp.model_args())
        loss = F.mse_loss(pred[:n], inp.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * n
        users += n
        edges += sum(int(v.size(1)) for v in inp.edge_index.values())
        trim()  # what the step freed goes back to the OS, not into the arenas' fragments
    loss_sum = float(loss_sum)  # waits for the device's queue: the epoch's time below is honest
    return RankEpoch(loss_sum, users, edges, time.perf_counter() - t0, batches.wait_s,
                     Traffic.since(access.traffic(), before))


def epoch_metrics(ranks: list[RankEpoch], epoch: int) -> dict:
    """The worker group's metrics of one epoch: one validation Spearman over every rank's users, throughput."""
    y = np.concatenate([r.val_y.numpy() for r in ranks])
    pred = np.concatenate([r.val_pred.numpy() for r in ranks])
    val_rho = spearman(y, pred) if len(y) > 1 else 0.0
    val_mse = float(np.mean((y - pred) ** 2)) if len(y) else 0.0
    users = sum(r.users for r in ranks)
    wall = max(sum(r.seconds for r in ranks) / len(ranks), 1e-9)  # mean per-rank epoch time
    metrics = {"epoch": epoch, "train_loss": sum(r.loss_sum for r in ranks) / max(users, 1), "val_mse": val_mse,
               "val_spearman": val_rho, "train_seeds_per_s": users / wall, "epoch_s": wall,
               "train_edges_per_s": sum(r.edges for r in ranks) / wall,
               # per worker: a slow rank (a straggler GPU, a remote shard) shows here, not in the mean
               "train_seeds_per_s_per_rank": [r.users / max(r.seconds, 1e-9) for r in ranks],
               "data_wait_fraction_per_rank": [r.wait_s / max(r.seconds, 1e-9) for r in ranks]}
    # what the epoch's training batches moved between processes, and over the network (other Ray nodes)
    traffic = Traffic.report(Traffic.total([r.traffic for r in ranks]))
    edges = sum(r.edges for r in ranks)
    traffic["sampled_edges"] = edges
    traffic["cross_node_bytes_per_sampled_edge"] = traffic["cross_node_bytes"] / max(edges, 1)
    traffic["cross_node_bytes_per_rank"] = [Traffic.report(r.traffic)["cross_node_bytes"] for r in ranks]
    metrics["traffic"] = traffic
    log.info("epoch %d per-worker seeds/s %s, waiting on data %s", epoch,
             [round(v, 1) for v in metrics["train_seeds_per_s_per_rank"]],
             [f"{v:.0%}" for v in metrics["data_wait_fraction_per_rank"]])
    log.info("epoch %d loss %.4f val_mse %.4f val_spearman %.4f (%.0f seeds/s)", epoch, metrics["train_loss"],
             val_mse, val_rho, metrics["train_seeds_per_s"])
    return metrics


def no_grad_batch(train_batch: int) -> int:
    """Seeds per batch of a no-grad pass (validation, sampled inference) next to training batches of
    ``train_batch``: a no-grad forward holds about 0.6x a training step's memory per seed (measured at 500k
    users, [15, 10]: 245 MiB against 390 MiB at 128 seeds, 800 MiB at 512), so half again the step's seeds
    keeps the pass below the step's peak. Four times (as before) made validation the training stage's peak."""
    return max(1, train_batch * 3 // 2)


@torch.no_grad()
def predict(model, access: GraphAccess, users: torch.Tensor, batch_size: int, device, prefetch: int = -1):
    """Shapes: users [U] user indices -> (pred [U] log1p reach, embedding [U, hidden], label [U] (the feature
    store's: NaN except for training users)).
    ``prefetch``: ``sampling.prefetch`` (-1 = auto)."""
    model.eval()
    preds, embs, ys = [], [], []
    depth = prefetch_depth(prefetch, device, access.remote_sampling)
    trim = HeapTrim()
    for inp in Prefetcher(access.loader(users, batch_size), device, depth):
        p, e = model(*inp.model_args())
        bs = inp.batch_size
        # clone: a slice is a view that would keep the whole batch's node tensors alive until the end
        preds.append(p[:bs].cpu().clone())
        embs.append(e[:bs].cpu().clone())
        ys.append(inp.y.cpu().clone())
        trim()
    if not preds:
        return torch.empty(0), torch.empty(0, model.cfg.hidden), torch.empty(0)
    return torch.cat(preds), torch.cat(embs), torch.cat(ys)
