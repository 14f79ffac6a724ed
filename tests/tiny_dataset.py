"""A literal, valid, tiny dataset (8 users, 4 content items, 2 communities) for tests, demos and examples.

``tiny_tables()`` returns every table of ``schema.TABLES`` (``_truth`` included) as pyarrow tables;
``write_tiny_dataset(url)`` writes them through ``DatasetWriter``. Tests corrupt a copy of the tables (or the files)
to exercise the validator and the CLI.
"""
from __future__ import annotations

import pyarrow as pa

from ripple.data import schema as S
from ripple.data.dataset import DatasetWriter
from ripple.data.storage import StorageOptions

NUM_USERS = 8
NUM_CONTENT = 4
NUM_COMMUNITIES = 2

# follows: (src=follower, dst=followee)
FOLLOWS = [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (0, 2), (6, 3), (7, 3), (3, 4)]
SHARED = [(0, 0), (1, 0), (2, 1), (5, 2), (6, 3)]
CREATED = [(0, 0), (1, 1), (3, 2), (4, 3)]
MEMBER_OF = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 1), (7, 1)]
REPLY_TO = [(1, 0), (2, 0), (3, 1)]
SPLIT = ["train", "train", "train", "train", "val", "val", "test", "test"]
REACH = [4.5, 2.0, 1.5, 3.0, 1.25, 1.0, 1.0, 1.0]
REACH_REPLICATE = [4.25, 2.5, 1.0, 2.75, 1.5, 1.0, 1.25, 1.0]


def _one_hot(i: int, width: int) -> list[float]:
    return [1.0 if j == i % width else 0.0 for j in range(width)]


def _edges(pairs: list[tuple[int, int]], **extra) -> dict:
    return {"src": [s for s, _ in pairs], "dst": [d for _, d in pairs], **extra}


def tiny_tables() -> dict[str, pa.Table]:
    """Every table of the layout, valid and small enough to read in a test failure message."""
    followers = [sum(1 for _, d in FOLLOWS if d == u) for u in range(NUM_USERS)]
    cols = {
        "user": {
            "id": list(range(NUM_USERS)),
            "follower_count": followers,
            "avg_engagement": [0.5, 0.25, 0.1, 0.3, 0.0, 0.05, 0.2, 0.15],
            "topic_vector": [_one_hot(u, S.NUM_TOPICS) for u in range(NUM_USERS)],
        },
        "content": {
            "id": list(range(NUM_CONTENT)),
            "type": [0, 1, 2, 0],
            "topic": [0, 1, 2, 3],
            "timestamp": [1_700_000_000, 1_700_000_100, 1_700_000_200, 1_700_000_300],
            "text_emb": [_one_hot(c + 4, S.TEXT_EMB_DIM) for c in range(NUM_CONTENT)],
        },
        "community": {
            "id": list(range(NUM_COMMUNITIES)),
            "size": [sum(1 for _, c in MEMBER_OF if c == k) for k in range(NUM_COMMUNITIES)],
            "topic_focus": [0, 1],
            "density": [0.4, 0.6],
        },
        "follows": _edges(FOLLOWS, since_date=[1_600_000_000 + 86_400 * i for i in range(len(FOLLOWS))],
                          interaction_freq=[0.1 * (i + 1) for i in range(len(FOLLOWS))]),
        "shared": _edges(SHARED, timestamp=[1_700_001_000 + i for i in range(len(SHARED))]),
        "created": _edges(CREATED, timestamp=[1_700_000_000 + 100 * i for i in range(len(CREATED))]),
        "member_of": _edges(MEMBER_OF),
        "reply_to": _edges(REPLY_TO),
        "labels": {
            "user_id": list(range(NUM_USERS)),
            "cascade_reach": REACH,
            "cascade_reach_replicate": REACH_REPLICATE,
            "split": SPLIT,
        },
        # influence flows followee -> follower: ic_edges are the follows edges reversed
        "_truth/ic_edges": _edges([(d, s) for s, d in FOLLOWS], p=[0.05 * (i + 1) for i in range(len(FOLLOWS))]),
        "_truth/users": {
            "id": list(range(NUM_USERS)),
            "persuasiveness": [0.9, 0.5, 0.4, 0.6, 0.3, 0.2, 0.1, 0.1],
            "receptivity": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            "is_bot": [False, False, False, False, False, False, True, False],
            "community": [m for _, m in MEMBER_OF],
            "is_bridge": [False, False, False, True, False, False, False, False],
            "expected_reach": REACH,
        },
    }
    return {name: S.TABLES[name].from_pydict(c) for name, c in cols.items()}


def write_tiny_dataset(url: str, tables: dict[str, pa.Table] | None = None,
                       options: StorageOptions | None = None) -> str:
    """Write ``tables`` (default: ``tiny_tables()``) as a dataset at ``url``; returns ``url``.

    Non-optional tables left out of ``tables`` are written empty by ``DatasetWriter.close``; optional ones
    (``_truth/*``) are simply absent.
    """
    tables = tiny_tables() if tables is None else tables
    w = DatasetWriter(url, options)
    for name, t in tables.items():
        w.write(name, t)
    w.close(label_simulations=100, generator={"name": "tiny"})
    return url
