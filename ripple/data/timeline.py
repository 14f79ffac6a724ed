"""When each edge came to exist, and the graph as it stood at a time t: what time-aware sampling and the features
of a training row at t read.

Edge times (``edge_times``): ``follows`` at ``since_date``, ``created`` and ``shared`` (and their reverses) at their
``timestamp``, ``reply_to`` when both of its posts exist (the later content timestamp). ``member_of`` has no time:
community membership is taken as the platform exports it, valid at every time.

``snapshot(graph, t)``: the graph as known strictly before t, for a row whose window starts at t. Every edge with a
time >= t is dropped, and the columns that summarize activity are recomputed from what is left, with the same
definitions ``ripple labels`` uses for its past (``ripple.data.history``):

- user: follower count, engagement (reshares before t per follower at t, averaged over the posts before t), and the
  following / shared / created counts;
- content: times shared before t;
- follows: ``interaction_freq`` of an interaction graph (a dataset with ``interactions``) = the pair's events
  before t; on a social graph it is taken as given.

Topics, content types and text embeddings are static. The snapshot at the last cut of a training table is the
dataset's own past, so its features equal the ones ``load_local_graph`` computes from the tables (tested).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ripple.data import features as FT
from ripple.data.history import add_engagement, avg_engagement

EdgeType = tuple[str, str, str]
#: the column that says when an edge table's row came to exist
EDGE_TIME_COLUMN = {"follows": "since_date", "shared": "timestamp", "created": "timestamp"}
FOLLOWS = ("user", "follows", "user")
CREATED = ("user", "created", "content")
SHARED = ("user", "shared", "content")
REPLY_TO = ("content", "reply_to", "content")


def has_times(table: str) -> bool:
    """Whether ``edge_times`` gives the rows of edge table ``table`` times."""
    return table in EDGE_TIME_COLUMN or table == "reply_to"


def edge_times(table: str, columns: dict[str, np.ndarray], content_time: np.ndarray | None = None,
               src: np.ndarray | None = None, dst: np.ndarray | None = None) -> np.ndarray | None:
    """Time of each row of edge table ``table`` (None: a table without times, valid at every time).

    ``columns``: the table's columns; ``reply_to`` needs ``content_time`` (per dense content index) and the rows'
    dense ``src``/``dst``. Shapes: -> [E] int64."""
    col = EDGE_TIME_COLUMN.get(table)
    if col is not None:
        return np.asarray(columns[col], dtype=np.int64)
    if table == "reply_to":
        return np.maximum(content_time[src], content_time[dst]).astype(np.int64)
    return None


def _keep(graph, et: EdgeType, t: int) -> np.ndarray | None:
    times = graph.edge_time.get(et)
    return None if times is None else times < t


def _filtered(colptr: np.ndarray, row: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A CSC without the edges ``keep`` drops (order within each segment kept)."""
    if keep is None or keep.all():
        return colptr, row
    dst = np.repeat(np.arange(len(colptr) - 1), np.diff(colptr))[keep]
    out = np.zeros_like(colptr)
    np.cumsum(np.bincount(dst, minlength=len(colptr) - 1), out=out[1:])
    return out, row[keep]


def pair_counts(src: np.ndarray, dst: np.ndarray, n: int, q_src: np.ndarray, q_dst: np.ndarray) -> np.ndarray:
    """How many (src, dst) events each queried pair has. Shapes: events [I], queries [Q] -> [Q] float32."""
    keys, counts = np.unique(src.astype(np.int64) * n + dst, return_counts=True)
    if not len(keys):
        return np.zeros(len(q_src), np.float32)
    q = q_src.astype(np.int64) * n + q_dst
    pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return np.where(keys[pos] == q, counts[pos], 0).astype(np.float32)


@dataclass
class AsOf:
    """The time-varying feature columns of a graph as known strictly before ``t``, in the whole graph's order.

    Shapes: user [N_user, 5] (``features.user_activity``), content [N_content] (log1p times shared),
    follows [E_follows] (log1p interaction count, CSC order) or None where it is taken as given; keep: relation ->
    [E] bool, the edges that existed before t (absent: a relation without times)."""

    t: int
    user: np.ndarray
    content: np.ndarray
    follows: np.ndarray | None
    keep: dict

    def nbytes(self) -> int:
        return int(self.user.nbytes + self.content.nbytes + (0 if self.follows is None else self.follows.nbytes))


def as_of(graph, t: int) -> AsOf:
    """The activity features of ``graph`` as known strictly before ``t`` (module docstring)."""
    keeps, csc = {}, {}
    for et in (FOLLOWS, CREATED, SHARED):
        colptr, row = graph.csc[et]
        keeps[et] = _keep(graph, et, t)
        csc[et] = _filtered(colptr, row, keeps[et])
    n_user = graph.num_nodes("user")
    fol_ptr, follower = csc[FOLLOWS]
    followers = np.diff(fol_ptr)
    cr_ptr, author_of = csc[CREATED]  # CSC over content: a post's author (at most one)
    sh_ptr, sharer = csc[SHARED]
    shares = np.diff(sh_ptr)
    rate_sum, post_count = np.zeros(n_user), np.zeros(n_user, np.int64)
    add_engagement(rate_sum, post_count, author_of, shares[np.diff(cr_ptr) > 0], followers)
    user = FT.user_activity(followers, avg_engagement(rate_sum, post_count), np.bincount(follower, minlength=n_user),
                            np.bincount(sharer, minlength=n_user), np.bincount(author_of, minlength=n_user))
    follows = None
    if graph.interactions is not None:  # an interaction graph: each tie's strength as of t, for every edge
        i_src, i_dst, i_t = graph.interactions
        past = i_t < t
        colptr, row = graph.csc[FOLLOWS]
        followee = np.repeat(np.arange(n_user), np.diff(colptr))
        follows = np.log1p(pair_counts(i_src[past], i_dst[past], n_user, row, followee))
    keep = {et: _keep(graph, et, t) for et in graph.csc}
    return AsOf(t, user, np.log1p(shares.astype(np.float32)), follows, keep)


def snapshot(graph, t: int):
    """The ``LocalGraph`` as known strictly before ``t``: edges with a time >= t dropped, activity features
    recomputed (``as_of``); labels are not carried (a snapshot is an input, never a target)."""
    a = as_of(graph, t)
    x_user, x_content = graph.x["user"].copy(), graph.x["content"].copy()
    x_user[:, :5] = a.user
    x_content[:, -1] = a.content
    edge_attr = {}
    for et, attr in graph.edge_attr.items():
        if et == FOLLOWS and a.follows is not None:
            attr = attr.copy()
            attr[:, 0] = a.follows
        edge_attr[et] = attr if a.keep[et] is None else attr[a.keep[et]]
    keep = a.keep
    return dataclasses.replace(
        graph, x={**graph.x, "user": x_user, "content": x_content},
        csc={et: _filtered(*c, keep[et]) for et, c in graph.csc.items()}, edge_attr=edge_attr,
        edge_time={et: (v if keep[et] is None else v[keep[et]]) for et, v in graph.edge_time.items()},
        label_index=np.zeros(0, np.int64), reach=np.zeros(0, np.float32), replicate=np.zeros(0, np.float32),
        split=np.zeros(0, str), label_time=None)
