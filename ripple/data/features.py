"""Model inputs from table columns: one definition used by the GNN loaders, the partitioner and the baselines.

Counts and heavy-tailed rates enter as log1p, categorical columns as one-hot; list columns are taken as they are.
Degree-like columns (how many accounts a user follows, how often they shared or posted) are computed by whoever
scans the edge tables and passed in, so a shard can compute them for the nodes it owns.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ripple.data import schema as S

USER_DIM = 5 + S.NUM_TOPICS
CONTENT_DIM = S.NUM_CONTENT_TYPES + S.NUM_TOPICS + S.TEXT_EMB_DIM + 2
COMMUNITY_DIM = 2 + S.NUM_TOPICS
NODE_DIMS = {"user": USER_DIM, "content": CONTENT_DIM, "community": COMMUNITY_DIM}
#: follows carries (log1p interaction_freq, account age of the tie in years)
EDGE_DIMS = {("user", "follows", "user"): 2}
#: where a relation's true in-degree stands in its destination's features, as log1p: (user, follows, user) ends at
#: the followee, whose ``log_follower_count`` counts its followers; the reverse content relations end at the user
#: whose ``log_shared``/``log_created`` count them. A sampled batch holds at most ``fanout`` of a node's in-edges;
#: these columns still hold how many it has (the model's degree scaler, ``model.degree_scaler``, reads them).
IN_DEGREE_COLUMNS = {("user", "follows", "user"): 0, ("content", "rev_shared", "user"): 3,
                     ("content", "rev_created", "user"): 4}
_EPOCH_2020 = 1_577_836_800
USER_FLAT_NAMES = ["log_follower_count", "avg_engagement", "log_following", "log_shared", "log_created",
                   *[f"topic_{i}" for i in range(S.NUM_TOPICS)]]


#: the user columns that count past activity (followers, follows, reshares, posts): a user whose row has none of
#: them is new to the graph at the time the features describe (cold start), and every model sees it as a constant
ACTIVITY_COLUMNS = ("log_follower_count", "log_following", "log_shared", "log_created")


def has_activity(x_user: np.ndarray) -> np.ndarray:
    """Whether each user row has any past activity. Shapes: [N, USER_DIM] -> [N] bool."""
    cols = [USER_FLAT_NAMES.index(c) for c in ACTIVITY_COLUMNS]
    return (x_user[:, cols] != 0).any(1)


def list_matrix(col: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A list<float32> column as a [rows, width] float32 matrix (widths are checked by validation)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(col), width)


def _years(ts: np.ndarray) -> np.ndarray:
    """Unix seconds -> years since 2020-01-01: a fixed origin, so every shard computes the same value."""
    return ((ts.astype(np.float64) - _EPOCH_2020) / (365.25 * 86400)).astype(np.float32)


def _onehot(codes: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(codes), k), dtype=np.float32)
    out[np.arange(len(codes)), codes.astype(np.int64)] = 1.0
    return out


def user_activity(follower_count: np.ndarray, avg_engagement: np.ndarray, following: np.ndarray, shared: np.ndarray,
                  created: np.ndarray) -> np.ndarray:
    """The user feature columns that summarize past activity (``USER_FLAT_NAMES[:5]``), from per-user counts and
    rates as of some time. Shapes: [N] each -> [N, 5] float32."""
    return np.stack([np.log1p(np.asarray(follower_count).astype(np.float32)),
                     # reshares per follower: ~0.1 typically, but tens for a user with few followers and one viral
                     # post; log1p keeps typical values where they were (x10) and those outliers from dominating
                     np.log1p(np.asarray(avg_engagement).astype(np.float32) * 10.0),
                     np.log1p(following.astype(np.float32)), np.log1p(shared.astype(np.float32)),
                     np.log1p(created.astype(np.float32))], 1)


def user_features(user: pa.Table, following: np.ndarray, shared: np.ndarray, created: np.ndarray) -> np.ndarray:
    """Shapes: user rows N -> [N, USER_DIM]; following/shared/created are per-row counts [N]."""
    activity = user_activity(user["follower_count"].to_numpy(), user["avg_engagement"].to_numpy(), following, shared,
                             created)
    return np.concatenate([activity, list_matrix(user["topic_vector"], S.NUM_TOPICS)], 1)


def content_features(content: pa.Table, shares: np.ndarray) -> np.ndarray:
    """Shapes: content rows M -> [M, CONTENT_DIM]; shares [M] = times each post was shared."""
    age = _years(content["timestamp"].to_numpy())
    return np.concatenate([
        _onehot(content["type"].to_numpy(), S.NUM_CONTENT_TYPES), _onehot(content["topic"].to_numpy(), S.NUM_TOPICS),
        list_matrix(content["text_emb"], S.TEXT_EMB_DIM), age[:, None],
        np.log1p(shares.astype(np.float32))[:, None]], 1)


def community_features(community: pa.Table) -> np.ndarray:
    """Shapes: community rows K -> [K, COMMUNITY_DIM]."""
    return np.concatenate([
        np.log1p(community["size"].to_numpy().astype(np.float32))[:, None],
        community["density"].to_numpy().astype(np.float32)[:, None] * 10.0,
        _onehot(community["topic_focus"].to_numpy(), S.NUM_TOPICS)], 1)


def follows_edge_features(interaction_freq: np.ndarray, since_date: np.ndarray) -> np.ndarray:
    """Shapes: [E] each -> [E, 2]."""
    return np.stack([np.log1p(interaction_freq.astype(np.float32)), _years(since_date)], 1)


#: the one-hot blocks of a node type's feature rows, (first column, width): ``pack_rows`` sends each block as one
#: uint8 code instead of ``width`` float32 columns, so a content row crosses the network in 74 bytes, not 148
ONEHOT_BLOCKS = {"content": [(0, S.NUM_CONTENT_TYPES), (S.NUM_CONTENT_TYPES, S.NUM_TOPICS)],
                 "community": [(2, S.NUM_TOPICS)]}


def pack_rows(t: str, x: np.ndarray):
    """Feature rows of node type ``t`` for the wire, losslessly: each one-hot block as a uint8 code
    (``{"dense": [n, F - blocks' widths] float32, "codes": [n, blocks] uint8}``); rows with a block that is not
    exactly one-hot are sent as they are. ``unpack_rows`` inverts it."""
    blocks = ONEHOT_BLOCKS.get(t)
    if not blocks or x.ndim != 2 or len(x) == 0:
        return x
    keep, codes, rows = np.ones(x.shape[1], bool), [], np.arange(len(x))
    for a, w in blocks:
        block = x[:, a:a + w]
        code = block.argmax(1)
        if not ((np.count_nonzero(block, axis=1) == 1).all() and (block[rows, code] == 1.0).all()):
            return x
        codes.append(code.astype(np.uint8))
        keep[a:a + w] = False
    return {"dense": np.ascontiguousarray(x[:, keep]), "codes": np.stack(codes, 1)}


def unpack_rows(t: str, packed) -> np.ndarray:
    """The float32 feature rows ``pack_rows`` packed (an array is returned as it is). Shapes: -> [n, F_t]."""
    if not isinstance(packed, dict):
        return packed
    codes, width = packed["codes"], NODE_DIMS[t]
    x = np.zeros((len(codes), width), np.float32)
    keep, rows = np.ones(width, bool), np.arange(len(codes))
    for i, (a, w) in enumerate(ONEHOT_BLOCKS[t]):
        x[rows, a + codes[:, i].astype(np.int64)] = 1.0
        keep[a:a + w] = False
    x[:, keep] = packed["dense"]
    return x
