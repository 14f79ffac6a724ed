"""Which neighbour-sampling kernels exist here, and which one ``auto`` picks: the fastest *exact* one installed.

PyG's ``NeighborSampler`` dispatches to pyg-lib when it is importable and to torch-sparse otherwise. ``auto`` takes
pyg-lib when it is there, else ripple's own vectorized sampler (``ripple.sampling.native``): it draws without
replacement exactly and samples faster than torch-sparse on CPU (docs/benchmarks.md), whose draws were measured
non-uniform. torch-sparse is used only when asked for (``sampling.backend: torch-sparse``). The choice is logged
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
        choice = "pyg-lib" if "pyg-lib" in have else "native"
    elif requested not in BACKENDS:
        raise ValueError(f"sampling.backend must be one of auto, {', '.join(BACKENDS)}; got {requested!r}")
    elif requested not in have:
        raise ValueError(f"sampling.backend={requested!r} is not installed here (available: {', '.join(have)}); "
                         "install it or use sampling.backend=auto")
    else:
        choice = requested
    log.info("neighbour sampling kernel: %s (available: %s)", choice, ", ".join(have))
    return choice
