"""WorkerContext: the one place that knows rank, world size and device.

Models and samplers receive a device; they never ask for ranks or process groups.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_ray(cls) -> "WorkerContext":
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return cls(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank(), device)

    @classmethod
    def for_task(cls, use_gpu: bool) -> "WorkerContext":
        """A single-process context for a Ray task (inference): the GPU Ray assigned it when ``use_gpu``
        (Ray sets CUDA_VISIBLE_DEVICES, so it is ``cuda:0`` here), else the CPU."""
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("scaling.use_gpu is set but this Ray task sees no CUDA device "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                               "check the cluster's GPU resources or drop --use-gpu")
        device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        if use_gpu:
            torch.cuda.set_device(device)
        return cls(device=device)

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (small Python objects: metrics, prediction arrays of a split)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class RankFilter(logging.Filter):
    """Prefix records with the rank; let only rank 0 through below WARNING (no N-fold duplicate logs)."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"[rank {self.rank}] {record.msg}"
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_worker_logging(rank: int, level: int = logging.INFO) -> None:
    root = logging.getLogger("ripple")
    root.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.addFilter(RankFilter(rank))
        root.addHandler(h)
        root.propagate = False  # Ray's worker root handler would print every record a second time


def is_lost_process(error: BaseException | None) -> bool:
    """Whether a Ray error says that a process or a node was lost (a dead actor or worker, an object whose copy
    went with its node), so that the work can be redone elsewhere, as opposed to an error the code raised."""
    from ray import exceptions as rx

    lost = (rx.RayActorError, rx.ObjectLostError, rx.WorkerCrashedError, rx.NodeDiedError)
    return isinstance(error, lost) or isinstance(getattr(error, "cause", None), lost)
