"""Feature rows on the wire: one-hot blocks packed as uint8 codes, losslessly."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ripple.data import features as FT
from ripple.data import schema as S


def _content(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = pa.table({"type": rng.integers(0, S.NUM_CONTENT_TYPES, n), "topic": rng.integers(0, S.NUM_TOPICS, n),
                      "text_emb": pa.array(list(rng.normal(size=(n, S.TEXT_EMB_DIM)).astype(np.float32)),
                                           pa.list_(pa.float32())),
                      "timestamp": rng.integers(1_600_000_000, 1_700_000_000, n)})
    return FT.content_features(table, rng.integers(0, 50, n))


def test_packed_rows_unpack_to_the_same_bits_in_half_the_bytes():
    x = _content(500)
    packed = FT.pack_rows("content", x)
    assert isinstance(packed, dict) and packed["codes"].dtype == np.uint8
    nbytes = packed["dense"].nbytes + packed["codes"].nbytes
    assert nbytes == 500 * (4 * (FT.CONTENT_DIM - S.NUM_CONTENT_TYPES - S.NUM_TOPICS) + 2) == x.nbytes / 2
    out = FT.unpack_rows("content", packed)
    assert out.dtype == np.float32 and np.array_equal(out, x)
    comm = np.concatenate([np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32),
                           np.eye(S.NUM_TOPICS, dtype=np.float32)[[3, 0, 15, 2, 2, 9, 1]]], 1)
    assert np.array_equal(FT.unpack_rows("community", FT.pack_rows("community", comm)), comm)


def test_rows_that_are_not_one_hot_or_have_no_blocks_go_as_they_are():
    x = _content(20)
    x[4, 0] = 0.5  # not a one-hot block any more: the rows travel unpacked
    assert FT.pack_rows("content", x) is x and FT.unpack_rows("content", x) is x
    users = np.random.default_rng(0).normal(size=(5, FT.USER_DIM)).astype(np.float32)
    assert FT.pack_rows("user", users) is users
    empty = np.zeros((0, FT.CONTENT_DIM), np.float32)
    assert FT.pack_rows("content", empty) is empty
