"""Which neighbour-sampling kernels exist here, in PyG's order of preference: pyg-lib, torch-sparse, native.

PyG's ``NeighborSampler`` dispatches to pyg-lib when it is importable and to torch-sparse otherwise; with neither
it cannot sample, and ripple's own vectorized sampler (``ripple.sampling.native``) takes over. The choice is logged
once and recorded in ``metrics.json`` as ``kernel_backend``.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

BACKENDS = ("pyg-lib", "torch-sparse", "native")


@functools.lru_cache(maxsize=None)
def available() -> tuple[str, ...]:
    import torch_geometric.typing as pyg_typing

    found = []
    if pyg_typing.WITH_PYG_LIB:
        found.append("pyg-lib")
    if pyg_typing.WITH_TORCH_SPARSE:
        found.append("torch-sparse")
    found.append("native")
    return tuple(found)


def select(requested: str = "auto") -> str:
    """Resolve ``auto`` (the best available) or check that a named backend exists."""
    have = available()
    if requested == "auto":
        choice = have[0]
    elif requested not in BACKENDS:
        raise ValueError(f"sampling.backend must be one of auto, {', '.join(BACKENDS)}; got {requested!r}")
    elif requested not in have:
        raise ValueError(f"sampling.backend={requested!r} is not installed here (available: {', '.join(have)}); "
                         "install it or use sampling.backend=auto")
    else:
        choice = requested
    log.info("neighbour sampling kernel: %s (available: %s)", choice, ", ".join(have))
    return choice
