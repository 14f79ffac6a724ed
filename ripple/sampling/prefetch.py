"""Sampling off the accelerator's critical path: batches are sampled, joined and copied ahead of the model.

``Prefetcher`` runs a loader in a background thread ``depth`` batches ahead of the consumer. On CUDA each batch's
model inputs are pinned and copied on a side stream with ``non_blocking=True``; the consumer's stream waits on an
event recorded after the copy, so the copy of batch i+1 overlaps the forward/backward of batch i. Torch kernels
and Ray calls release the GIL, so on CPU the thread still overlaps sampling (or remote shard calls) with compute.

Batches come out in loader order whatever ``depth`` is: the sampler is called from one thread, in order, so a run
is reproducible with and without prefetching.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

EdgeType = tuple[str, str, str]


@dataclass
class ModelInputs:
    """What the model and the loss read from one batch, on the worker's device.

    Shapes:
        x: node type -> [N_t, F_t]; edge_index: relation -> [2, E_r] (local ids); edge_attr: relation -> [E_r, D_r]
        y: [B] labels of the seed users (NaN where unlabelled); batch_size: B (the first B users are the seeds)
        num_sampled_nodes: node type -> [hops + 1] nodes per hop; num_sampled_edges: relation -> [hops] edges per
        hop (None where the sampler gave none): with them the model trims each layer to the nodes it must update
    """

    x: dict[str, Tensor]
    edge_index: dict[EdgeType, Tensor]
    edge_attr: dict[EdgeType, Tensor]
    y: Tensor
    batch_size: int
    num_sampled_nodes: dict[str, list[int]] | None = None
    num_sampled_edges: dict[EdgeType, list[int]] | None = None

    def model_args(self) -> tuple:
        """The model's positional arguments (``InfluenceGNN.forward``)."""
        return self.x, self.edge_index, self.edge_attr, self.num_sampled_nodes, self.num_sampled_edges


def to_device(batch: HeteroData, device, pin: bool | None = None) -> ModelInputs:
    """The model's inputs of ``batch`` on ``device``. For CUDA, CPU tensors are pinned first (``pin=None``) so the
    copy is asynchronous with respect to the host; the caller orders it with the stream it runs on."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    pin = cuda if pin is None else pin

    def move(t: Tensor) -> Tensor:
        if t.device == device:
            return t
        if pin and t.device.type == "cpu":
            t = t.pin_memory()
        return t.to(device, non_blocking=cuda)

    bs = int(batch["user"].batch_size)
    return ModelInputs(
        x={t: move(batch[t].x) for t in batch.node_types if "x" in batch[t]},
        edge_index={et: move(batch[et].edge_index) for et in batch.edge_types},
        edge_attr={et: move(batch[et].edge_attr) for et in batch.edge_types if "edge_attr" in batch[et]},
        y=move(batch["user"].y[:bs]) if "y" in batch["user"] else torch.full((bs,), float("nan"), device=device),
        batch_size=bs,
        num_sampled_nodes=_hop_counts(batch, batch.node_types, "num_sampled_nodes"),
        num_sampled_edges=_hop_counts(batch, batch.edge_types, "num_sampled_edges"),
    )


def _hop_counts(batch: HeteroData, keys: list, attr: str) -> dict | None:
    """``batch[k].<attr>`` for every node or edge type (the model checks them); None unless every type has them."""
    counts = {k: batch[k][attr] for k in keys if attr in batch[k]}
    return counts if len(counts) == len(keys) else None


def _tensors(inp: ModelInputs) -> list[Tensor]:
    return [*inp.x.values(), *inp.edge_index.values(), *inp.edge_attr.values(), inp.y]


_DONE = object()
AUTO_DEPTH = 2


def prefetch_depth(requested: int, device, remote_sampling: bool) -> int:
    """``sampling.prefetch`` resolved: ``-1`` (auto) prefetches when the step waits on a GPU or on remote shard
    calls (both leave the CPU free for the sampler thread), and not on a CPU worker sampling in-process, where the
    thread would take cores from the model (measured: 8% slower at 2 threads on 2 cores)."""
    if requested >= 0:
        return requested
    return AUTO_DEPTH if torch.device(device).type == "cuda" or remote_sampling else 0


class Prefetcher:
    """Iterate ``loader``'s batches as ``ModelInputs`` on ``device``, up to ``depth`` batches ahead.

    ``depth=0`` runs everything in the caller's thread (the reference path). ``wait_s`` accumulates the time the
    consumer spent blocked on data: near zero when sampling is hidden behind compute.
    """

    def __init__(self, loader: Iterable[HeteroData], device, depth: int = 2):
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self.loader, self.device, self.depth = loader, torch.device(device), depth
        self.wait_s = 0.0

    def __iter__(self) -> Iterator[ModelInputs]:
        if self.depth == 0:
            it = iter(self.loader)
            while True:
                t0 = time.perf_counter()
                batch = next(it, _DONE)
                if batch is _DONE:
                    return
                inp = to_device(batch, self.device)
                self.wait_s += time.perf_counter() - t0  # sampling and copy both stall the model here
                yield inp
        yield from self._threaded()

    def _threaded(self) -> Iterator[ModelInputs]:
        cuda = self.device.type == "cuda"
        side = torch.cuda.Stream(device=self.device) if cuda else None
        q: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for batch in self.loader:
                    if cuda:
                        with torch.cuda.stream(side):
                            inp = to_device(batch, self.device)
                            event = torch.cuda.Event()
                            event.record(side)
                    else:
                        inp, event = to_device(batch, self.device), None
                    if not put((inp, event)):
                        return
                put(_DONE)
            except BaseException as e:  # handed to the consumer, which re-raises it in its own thread
                put(e)

        thread = threading.Thread(target=produce, name="ripple-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = q.get()
                self.wait_s += time.perf_counter() - t0
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                inp, event = item
                if event is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(event)
                    for t in _tensors(inp):
                        # memory allocated on the side stream is now used on this one: tell the caching
                        # allocator, or it could hand the block out again while this stream still reads it
                        t.record_stream(stream)
                yield inp
        finally:
            stop.set()
            thread.join()
