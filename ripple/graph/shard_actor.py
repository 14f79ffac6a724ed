"""``GraphShard``: the Ray actor that holds one partition for a run, and serves it.

It loads its part from object storage in its constructor (so a restarted actor reloads it), one file at a time,
and publishes each array in Ray's object store as soon as it is decoded: every process on its node (the trainers,
the layer-wise workers) maps the part zero-copy from there instead of loading a copy. Processes on other nodes
send it batched sampling and feature requests.

Loading, publishing and ``take_rows`` need only numpy and pyarrow (``ripple.graph.part_io``). Serving samples and
features builds the part's tensors (``ripple.graph.shard.ShardData``) on the first request: on one machine every
trainer maps every part and no request comes, so the actor's process never imports torch (measured: about 145 MB
of heap per actor, four actors per node in ``benchmarks scale``).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ripple.data.storage import StorageOptions
from ripple.graph.part_io import (PartitionMeta, labelled_users, node_load_slot, read_part, release_memory,
                                  resident_bytes, take_rows)

log = logging.getLogger(__name__)


class GraphShard:
    """Ray actor body (``ripple.graph.shards.start_shard`` wraps it): owns one partition, serves sample/fetch."""

    def __init__(self, url: str, options: StorageOptions, part: int):
        import ray

        t0 = time.perf_counter()
        self.meta, self.part = PartitionMeta.open(url, options), part
        # Each array published as soon as it is decoded, and served from the shared copy: the node holds one copy
        # for the actor and its trainers, and a loading actor holds one file's decode at a time, not the part.
        self._refs: dict = {}
        self.arrays: dict[str, np.ndarray] = {}
        with node_load_slot():
            waited = time.perf_counter() - t0
            for name, a in read_part(self.meta, part):
                self._refs[name] = ray.put(a)
                del a
                self.arrays[name] = ray.get(self._refs[name])
        release_memory()  # what is left of the decode, held for the actor's life otherwise
        self._data = None
        self.load_seconds = time.perf_counter() - t0
        log.info("shard %d loaded from %s: %.1f MiB in %.1fs (%.1fs waiting for the node's load slot)", part, url,
                 resident_bytes(self.arrays) / 2**20, self.load_seconds, waited)

    @property
    def data(self):
        """The part's tensors (``ShardData``), built on the first sample or fetch request."""
        if self._data is None:
            import torch

            from ripple.graph.shard import ShardData

            # requests are small and many actors share a node with trainers: intra-op threads only oversubscribe
            torch.set_num_threads(1)
            self._data = ShardData(self.meta, self.part, self.arrays)
        return self._data

    def ready(self) -> dict:
        import sys

        import ray

        return {"part": self.part, "node_id": ray.get_runtime_context().get_node_id(),
                "resident_bytes": resident_bytes(self.arrays),
                "shapes": {k: tuple(a.shape) for k, a in self.arrays.items()}, "load_seconds": self.load_seconds,
                "imports_torch": "torch" in sys.modules}

    def arrays_ref(self) -> list:
        """``[{array name: ObjectRef}]``: the refs wrapped, or the caller's ``ray.get`` would resolve them."""
        return [self._refs]

    def sample(self, requests, seed, at=None, strategy="uniform"):
        return self.data.sample(requests, seed, at, strategy)

    def fetch(self, requests):
        # feature rows leave the process packed (one-hot blocks as uint8 codes); ShardedGraph.fetch unpacks them
        return self.data.fetch(requests, wire=True)

    def labelled(self, split: str) -> np.ndarray:
        return labelled_users(self.meta, self.part, self.arrays["split"], split)

    def take_rows(self, states: list, t: str, local: np.ndarray) -> np.ndarray:
        return take_rows(states, t, local)
