"""What a training checkpoint holds, and how a worker group resumes from one.

A checkpoint is written by rank 0 after every epoch (``save``) and holds the model, the optimizer, the
early-stopping state and every rank's random streams, so that a worker group restarted from it draws what the
lost one would have: a restarted run trains exactly as an uninterrupted one. ``resume`` tells a *restart* (a
worker group of this ``fit`` call was lost; same ``fit_id``) from a *resume* (an earlier run of the same name).
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field

import torch

from ripple.config import RippleConfig
from ripple.context import WorkerContext
from ripple.run import SCORE

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
#: key of ``train_loop_config`` naming one ``fit`` call: a checkpoint written under the same id was written by a
#: worker group of this call that was lost (restart), another id by an earlier run of the same name (resume)
FIT_ID = "_fit_id"
#: ``train_loop_config`` key of the weights a warm-started run begins from (``ripple train --init-from``)
INIT_WEIGHTS = "_init_weights"
#: key of ``train_loop_config`` holding the driver's progress queue (a ``ray.util.queue.Queue`` or None): rank 0
#: puts each epoch's history record there, for the console
PROGRESS = "_progress"
#: what the training curve keeps of each epoch (``TrainState.history``; ``metrics.json``'s ``history``)
HISTORY_KEYS = ("epoch", "train_loss", "val_mse", "val_spearman", "train_seeds_per_s", "epoch_s")


@dataclass
class TrainState:
    """The early-stopping state carried from epoch to epoch, and where this worker group started."""

    next_epoch: int = 0
    best: float = math.inf  # best validation MSE so far (``ripple.run.SCORE``)
    bad_epochs: int = 0  # epochs since it last improved
    resumed_from: int | None = None  # the checkpoint's epoch, if any
    restarts: int = 0  # worker groups of this fit lost and restarted from a checkpoint
    history: list[dict] = field(default_factory=list)  # every epoch so far, resumed runs included (HISTORY_KEYS)

    def epochs(self, total: int, patience: int):
        """The epochs left to run: up to ``total``, and only while the validation MSE improved within
        ``patience`` epochs (0: no early stopping). Checked before each epoch, after the last one's update."""
        epoch = self.next_epoch
        while epoch < total and not (patience and self.bad_epochs >= patience):
            yield epoch
            epoch += 1

    def update(self, epoch: int, val_mse: float, metrics: dict | None = None) -> None:
        """Record epoch ``epoch``: its validation MSE decides early stopping; ``metrics`` (the epoch's, with every
        ``HISTORY_KEYS`` key) extends the history."""
        improved = val_mse < self.best
        self.best, self.bad_epochs = (val_mse, 0) if improved else (self.best, self.bad_epochs + 1)
        self.next_epoch = epoch + 1
        if metrics is not None:
            self.history.append({k: metrics[k] for k in HISTORY_KEYS})


def load_state(checkpoint, map_location="cpu") -> dict:
    """The training state a ``ray.train.Checkpoint`` holds (model, optimizer, epoch, early-stopping state)."""
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=map_location, weights_only=False)


def check_fits(cfg, checkpoint) -> None:
    """Refuse a checkpoint whose weights do not fit the model ``cfg`` builds (another model section, or a ripple
    whose feature widths changed), naming the first differences. Raises ValueError."""
    from ripple.models.gnn import build_model

    want = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in load_state(checkpoint)["model"].items()}
    diff = [f"{k}: checkpoint {got.get(k, 'missing')}, model {want.get(k, 'missing')}"
            for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    if diff:
        raise ValueError(f"the checkpoint does not fit the model this run's config builds ({len(diff)} tensors "
                         f"differ: {'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); embed with the ripple "
                         "version and config.yaml that trained it")


def rng_state(sampler, device) -> dict:
    """This process's random streams: torch's (dropout, and PyG's samplers draw from it) and the sampler's own
    generator where it has one."""
    state = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    gen = getattr(sampler, "generator", None)
    if gen is not None:
        state["sampler"] = gen.get_state()
    return state


def set_rng_state(sampler, device, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    gen = getattr(sampler, "generator", None)
    if gen is not None and "sampler" in state:
        gen.set_state(state["sampler"])


def resume(checkpoint, model, opt, sampler, ctx: WorkerContext, fit_id: str | None,
           init: dict | None = None) -> TrainState:
    """Load ``checkpoint`` (a ``ray.train.Checkpoint`` or None) into ``model``, ``opt`` and this rank's random
    streams; returns where training goes on. ``init``: the weights a new run starts from (``--init-from``), used
    only when there is no checkpoint of its own yet."""
    if not checkpoint:
        if init is not None:
            model.load_state_dict(init)
            log.info("warm start: the model begins from the given run's best weights")
        return TrainState()
    state = load_state(checkpoint, map_location=ctx.device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    restarted = fit_id is not None and state.get("fit_id") == fit_id
    out = TrainState(next_epoch=state["epoch"] + 1, best=state["best"], bad_epochs=state["bad_epochs"],
                     resumed_from=state["epoch"], restarts=state.get("restarts", 0) + 1 if restarted else 0,
                     history=list(state.get("history", [])))
    rng = state.get("rng") or []
    if len(rng) == ctx.world_size:
        set_rng_state(sampler, ctx.device, rng[ctx.rank])
    else:  # another world size (or an older checkpoint): the run goes on, with other random draws
        log.warning("checkpoint of epoch %d holds random states for %d workers, not %d: not restored",
                    state["epoch"], len(rng), ctx.world_size)
    log.info("%s from the checkpoint of epoch %d (best %s %.4f)",
             f"worker group restarted (restart {out.restarts})" if restarted else "resumed", state["epoch"],
             SCORE, out.best)
    return out


def report(model, opt, cfg: RippleConfig, epoch: int, state: TrainState, rngs: list[dict], fit_id: str | None,
         metrics: dict, ctx: WorkerContext) -> None:
    """Report ``metrics`` to Ray Train, with a checkpoint of this epoch from rank 0 (``rngs``: every rank's
    random streams, rank-gathered)."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if ctx.is_primary:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                        "best": state.best, "bad_epochs": state.bad_epochs, "config": cfg.to_dict(), "rng": rngs,
                        "fit_id": fit_id, "restarts": state.restarts,
                        "history": state.history}, os.path.join(tmp, CHECKPOINT_FILE))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)
