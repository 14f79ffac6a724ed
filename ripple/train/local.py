"""Training in this process, without Ray: the worker loop's own steps (``train_epoch``, ``predict``) on a
``LocalAccess`` of rank 0 of 1. For model work that must compare variants side by side quickly (the ablation
benchmark, the quality test); runs and their checkpoints go through ``ripple.train.driver``.
"""
from __future__ import annotations

import copy
import logging
import math

import torch

from ripple.config import RippleConfig
from ripple.context import WorkerContext
from ripple.data.graph import LocalGraph
from ripple.graph.access import LocalAccess
from ripple.models.gnn import build_model
from ripple.models.layerwise import LayerwiseGraph, infer_local
from ripple.train.checkpoint import TrainState
from ripple.train.worker import no_grad_batch, predict, train_epoch

log = logging.getLogger(__name__)


def fit_in_process(graph: LocalGraph, cfg: RippleConfig, model: torch.nn.Module | None = None) -> dict:
    """Train ``cfg``'s model (or ``model``) with early stopping on validation MSE, as the workers do, then score
    the test users as a run does (layer-wise, every neighbour, the best epoch's weights); returns
    ``{"test_pred": [T] log1p reach of the test users in label order, "test_pred_sampled": [T] the same from
    sampled neighbourhoods (training's fanouts), "best_val_mse", "epochs", "model"}``."""
    ctx = WorkerContext()
    torch.manual_seed(cfg.train.seed)
    access = LocalAccess(graph, cfg, ctx, rng_seed=cfg.train.seed)
    model = model if model is not None else build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    state, best, sampled, epochs = TrainState(), None, None, 0
    val_users, val_y = access.eval_users("val")
    test_users = torch.from_numpy(graph.split_index("test"))
    for epoch in state.epochs(cfg.train.epochs, cfg.train.patience):
        stats = train_epoch(model, opt, access, ctx, cfg, epoch, cfg.sampling.batch_size)
        batch = no_grad_batch(cfg.sampling.batch_size)
        pred, _, _ = predict(model, access, val_users, batch, ctx.device, cfg.sampling.prefetch)
        mse = float(((pred - val_y) ** 2).mean()) if len(val_y) else math.inf
        if mse < state.best:
            best = copy.deepcopy(model.state_dict())
            sampled = predict(model, access, test_users, batch, ctx.device, cfg.sampling.prefetch)[0].numpy()
        state.update(epoch, mse)
        epochs += 1
        log.info("epoch %d loss %.4f val_mse %.4f", epoch, stats.loss_sum / max(stats.users, 1), mse)
    if best is not None:
        model.load_state_dict(best)
    pred, _ = infer_local(model.eval(), LayerwiseGraph.from_local(graph), cfg.inference.chunk_edges)
    return {"test_pred": pred[test_users].numpy(), "test_pred_sampled": sampled, "best_val_mse": state.best,
            "epochs": epochs, "model": model}
