"""The driver of a training run: one Ray Train ``TorchTrainer`` over ``ripple.train.worker``'s loop.

Checkpoints live under ``<storage>/<run>/checkpoints`` (``ripple.run``); Ray Train keeps the two best by validation
MSE. A lost worker process is restarted from the last checkpoint up to ``scaling.max_failures`` times; an error
of the training code itself is raised as it is.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Callable

from ripple.config import RippleConfig
from ripple.context import is_lost_process
from ripple.data.storage import pyarrow_filesystem
from ripple.run import CHECKPOINTS, SCORE, SCORE_MODE, best_of, run_dir, run_path
from ripple.train.checkpoint import FIT_ID, INIT_WEIGHTS, PROGRESS
from ripple.train.worker import train_loop_per_worker


def lost_ranks(error) -> list[int]:
    """Ranks of a ``WorkerGroupError`` whose process was lost (it died, or stopped answering Ray's health checks),
    as opposed to ranks whose training code raised."""
    lost = []
    for rank, err in (getattr(error, "worker_failures", None) or {}).items():
        cause = getattr(err, "health_check_failure", err)  # Ray Train's WorkerHealthCheckFailedError wraps it
        if is_lost_process(cause) or type(err).__name__ == "WorkerHealthCheckTimeoutError":
            lost.append(int(rank))
    return sorted(lost)


@dataclass
class FitOutcome:
    best_checkpoint: object  # ray.train.Checkpoint
    best_metrics: dict
    last_metrics: dict


class _EpochFeed:
    """Rank 0's per-epoch records, from a queue actor to ``on_epoch`` in a driver thread while ``fit`` blocks
    (Ray Train hands the driver only the final result)."""

    def __init__(self, on_epoch: Callable[[dict], None] | None):
        self.on_epoch, self.queue, self._thread = on_epoch, None, None
        if on_epoch is None:
            return
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})  # never competes with the trainers for a CPU
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="ripple-epoch-feed", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                record = self.queue.get(timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            self.on_epoch(record)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self.queue.shutdown()


def fit(cfg: RippleConfig, on_epoch: Callable[[dict], None] | None = None, init: dict | None = None) -> FitOutcome:
    """Run (or resume) the Ray Train job; checkpoints live under ``<storage>/<run>/checkpoints``. ``on_epoch``
    is called in a driver thread with each epoch's record (``checkpoint.HISTORY_KEYS``) as rank 0 reports it.
    ``init``: model weights a new run begins from (``--init-from``)."""
    feed = _EpochFeed(on_epoch)
    try:
        return _fit(cfg, feed.queue, init)
    finally:
        feed.close()


def _fit(cfg: RippleConfig, progress, init: dict | None = None) -> FitOutcome:
    import ray.train
    from ray.train.torch import TorchTrainer

    path, pafs = pyarrow_filesystem(run_dir(cfg), cfg.storage)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, FIT_ID: uuid.uuid4().hex, PROGRESS: progress, INIT_WEIGHTS: init},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker,
                                  **({"GPU": 1} if cfg.scaling.use_gpu else {})},
            placement_strategy=cfg.scaling.placement_strategy),
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
