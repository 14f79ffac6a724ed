"""Checks that bytes are a real picture: a PNG that decodes to a non-empty image."""
from __future__ import annotations

import io

import numpy as np


def assert_png(data: bytes, min_side: int = 100) -> np.ndarray:
    """Decode ``data`` as a PNG (matplotlib's reader, which refuses anything else) and return its pixels."""
    from matplotlib import image

    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: starts with {data[:8]!r}"
    pixels = image.imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= min_side, pixels.shape
    assert np.ptp(pixels) > 0, "a blank image"
    return pixels
