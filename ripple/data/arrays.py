"""Streaming array kernels shared by the generator and the partitioner.

Both count things (degrees, neighbours per part) over edge tables read in chunks. ``acc += np.bincount(idx,
minlength=len(acc))`` allocates and adds a table-sized array for every chunk: O(chunks x nodes), which grows as
edges x nodes when the chunk size is fixed (quadratic in the graph's size: the partitioner's degree pass took 39x
longer for 10x the edges). ``add_counts`` scatters into the accumulator in O(chunk) instead.
"""
from __future__ import annotations

import numpy as np
import torch


def add_counts(acc: np.ndarray, idx: np.ndarray, weights: np.ndarray | None = None) -> None:
    """``acc[idx[k]] += weights[k]`` (default 1) for every k, duplicates accumulated, in place.

    Shapes: acc [N] (int32, int64, float32 or float64; C-contiguous), idx [K] integer in [0, N), weights [K].
    """
    if idx.size == 0:
        return
    if not acc.flags.c_contiguous or acc.ndim != 1:
        raise ValueError(f"add_counts needs a 1-d C-contiguous accumulator, got shape {acc.shape}")
    target = torch.from_numpy(acc)  # shares acc's memory: index_add_ writes through
    index = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))
    if weights is None:
        source = torch.ones(1, dtype=target.dtype).expand(len(index))
    else:
        source = torch.from_numpy(np.ascontiguousarray(weights, dtype=acc.dtype))
    target.index_add_(0, index, source)
