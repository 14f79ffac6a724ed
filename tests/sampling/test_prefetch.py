"""ripple.sampling.prefetch: background sampling gives the same batches, in order, and cleans up after itself."""
from __future__ import annotations

import threading

import pytest
import torch
from test_loader import native_loader, tiny_graph

from ripple.config import SamplingConfig
from ripple.sampling.prefetch import AUTO_DEPTH, Prefetcher, prefetch_depth


def _batches(depth: int, seed: int = 3):
    loader, _ = native_loader(tiny_graph(), torch.arange(10), batch_size=3, seed=seed)
    return list(Prefetcher(loader, "cpu", depth))


def _prefetch_threads() -> int:
    return sum(t.name == "ripple-prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_prefetch_yields_the_synchronous_batches_in_order(depth):
    ref, got = _batches(0), _batches(depth)
    assert len(ref) == len(got) == 4  # 10 seeds, batch 3
    for a, b in zip(ref, got):
        assert a.batch_size == b.batch_size
        assert torch.equal(a.y, b.y)
        assert a.x.keys() == b.x.keys() and all(torch.equal(a.x[t], b.x[t]) for t in a.x)
        assert a.edge_index.keys() == b.edge_index.keys()
        assert all(torch.equal(a.edge_index[et], b.edge_index[et]) for et in a.edge_index)
        assert all(torch.equal(a.edge_attr[et], b.edge_attr[et]) for et in a.edge_attr)
    # the seeds' labels are the seeds' y (y = 1.5 * index in native_loader), seeds first
    assert torch.equal(torch.cat([b.y for b in got]), torch.arange(10, dtype=torch.float32) * 1.5)


def test_prefetch_thread_stops_when_the_consumer_stops_early():
    before = _prefetch_threads()
    loader, _ = native_loader(tiny_graph(), torch.arange(10), batch_size=1)
    it = iter(Prefetcher(loader, "cpu", depth=2))
    next(it)
    it.close()  # what a `break` out of the training loop does
    assert _prefetch_threads() == before


class _Boom:
    def __init__(self, loader, after: int):
        self.loader, self.after = loader, after

    def __iter__(self):
        for i, b in enumerate(self.loader):
            if i == self.after:
                raise RuntimeError("shard 3 unreachable")
            yield b


def test_prefetch_reraises_a_sampling_error_in_the_consumer():
    loader, _ = native_loader(tiny_graph(), torch.arange(10), batch_size=3)
    got = []
    with pytest.raises(RuntimeError, match="shard 3 unreachable"):
        for inp in Prefetcher(_Boom(loader, after=2), "cpu", depth=2):
            got.append(inp)
    assert len(got) == 2
    assert _prefetch_threads() == 0


def test_prefetch_counts_time_waiting_for_data():
    loader, _ = native_loader(tiny_graph(), torch.arange(10), batch_size=3)
    p = Prefetcher(loader, "cpu", depth=1)
    assert len(list(p)) == 4 and p.wait_s >= 0.0


def test_prefetch_settings_are_validated():
    with pytest.raises(ValueError, match="prefetch depth must be >= 0"):
        Prefetcher([], "cpu", depth=-1)
    with pytest.raises(ValueError, match="sampling.prefetch must be >= 0"):
        SamplingConfig(prefetch=-2)
    with pytest.raises(ValueError, match="on_device .*backend='torch-sparse'"):
        SamplingConfig(on_device=True, backend="torch-sparse")


def test_auto_prefetch_depth():
    """-1 prefetches where the step waits on something that frees the CPU (a GPU, remote shards), not on a CPU
    worker sampling its own graph; explicit depths are kept."""
    assert prefetch_depth(-1, "cpu", remote_sampling=False) == 0
    assert prefetch_depth(-1, "cpu", remote_sampling=True) == AUTO_DEPTH
    assert prefetch_depth(-1, "cuda", remote_sampling=False) == AUTO_DEPTH
    assert prefetch_depth(3, "cpu", remote_sampling=False) == 3
    assert prefetch_depth(0, "cuda", remote_sampling=True) == 0
    assert SamplingConfig().prefetch == -1
