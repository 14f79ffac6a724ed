"""The tables every importer writes, from a cascade history held as flat arrays.

An importer turns its lines into a ``History``: users, posts (author, creation time), reshares (user, post, time),
``follows`` and, for an interaction graph, the user -> user events it came from. ``write_history`` writes them in
the dataset layout of DESIGN.md:

- ``user``: every id seen. ``follower_count`` = distinct followers in ``follows``; ``avg_engagement`` = the mean
  over the user's posts of reshares per follower (``ripple.data.history.add_engagement``, the generator's and
  ``ripple labels``' definition). Both cover the whole history here; ``ripple labels`` recomputes them from the
  past of its cutoff. ``topic_vector`` is **neutral**: uniform 1/NUM_TOPICS (public cascade data has no topics);
- ``content``: one row per post, ids 0.. in order of creation time; ``type`` 0 (post), ``topic`` 0 and a zero
  ``text_emb``: neutral, the same for every post (no text in the data), so only structure and time inform the model;
- ``created``: author -> post at its creation time; ``shared``: resharer -> post at the reshare's time;
- ``follows``: as the importer derived it (an interaction graph, or a social graph given with the data);
- ``interactions``: the user -> user events behind an interaction graph (``ripple labels`` recounts
  ``follows.interaction_freq`` from those before its cutoff);
- ``community``, ``member_of``, ``reply_to``: empty. Communities detected on the whole history's graph would be
  read by ``ripple labels`` as given and leak the future into the past graph; the data names no posts replied to.
- ``user_names``: the source's user tokens, when they are not integers (ids are then 0.. in order of appearance);
- no ``labels``: ``ripple labels DATA --cutoff T --horizon H`` derives them from the history.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ripple.data import schema as S
from ripple.data.dataset import DatasetWriter
from ripple.data.history import add_engagement, avg_engagement
from ripple.data.ids import add_counts, dense_index
from ripple.data.storage import StorageOptions

log = logging.getLogger(__name__)

NEUTRAL = {"user.topic_vector": f"uniform 1/{S.NUM_TOPICS} (no topics in the data)",
           "content.type": "0 (post)", "content.topic": "0", "content.text_emb": "zeros (no text in the data)",
           "community, member_of": "empty (see the manifest's 'communities')"}
COMMUNITIES = ("none: communities detected on the whole history's graph would reach the past graph that `ripple "
               "labels` cuts (it takes member_of as given) and leak the future")


@dataclass
class History:
    """A cascade history as flat arrays.

    Shapes: users [N] sorted unique ids; post_author, post_time [P]; reshare_user, reshare_post (index into the
    posts), reshare_time [R]; follows_src, follows_dst, follows_since [F], follows_freq [F] float;
    interactions: (src [I], dst [I], time [I], kind [I] index into ``S.INTERACTION_KINDS``) or None."""

    users: np.ndarray
    post_author: np.ndarray
    post_time: np.ndarray
    reshare_user: np.ndarray
    reshare_post: np.ndarray
    reshare_time: np.ndarray
    follows_src: np.ndarray
    follows_dst: np.ndarray
    follows_since: np.ndarray
    follows_freq: np.ndarray
    interactions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    #: the source's user names, by id (``ids == arange``), when it gave no integer ids
    names: list[str] | None = None

    @property
    def span(self) -> tuple[int, int]:
        """[start, end) of every timestamp in the history (end = the last one + 1)."""
        times = [x for x in (self.post_time, self.reshare_time) if len(x)]
        if self.interactions is not None and len(self.interactions[2]):
            times.append(self.interactions[2])
        lo = min(int(x.min()) for x in times)
        hi = max(int(x.max()) for x in times)
        return lo, hi + 1


def interaction_graph(src: np.ndarray, dst: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, ...]:
    """``follows`` of an interaction graph: one row per (src, dst) pair, ``since_date`` = its first event,
    ``interaction_freq`` = its number of events. Shapes: [I] each -> (src, dst, since, freq) [F] each."""
    if len(src) == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(0, np.float32)
    order = np.lexsort((time, dst, src))
    s, d, t = src[order], dst[order], time[order]
    first = np.ones(len(s), bool)
    first[1:] = (s[1:] != s[:-1]) | (d[1:] != d[:-1])
    starts = np.flatnonzero(first)
    freq = np.diff(np.append(starts, len(s))).astype(np.float32)
    return s[starts], d[starts], t[starts], freq


def posts_in_time_order(h: History) -> History:
    """Posts renumbered by (creation time, author, import order), so content ids follow time: an event added after
    a time T renumbers no post created before T."""
    order = np.lexsort((np.arange(len(h.post_time)), h.post_author, h.post_time))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    h.post_author, h.post_time = h.post_author[order], h.post_time[order]
    h.reshare_post = rank[h.reshare_post]
    return h


def _chunks(n: int, rows: int):
    for lo in range(0, n, rows):
        yield slice(lo, min(n, lo + rows))


def write_history(out: str, h: History, source: dict, options: StorageOptions | None = None,
                  chunk_rows: int = 1 << 20) -> dict:
    """Write ``h`` as a dataset at ``out`` (``manifest.json`` last, with ``history`` and ``source``); returns
    the manifest as a dict."""
    from dataclasses import asdict

    if len(h.follows_src) == 0:  # `ripple validate` refuses a dataset without follows: refuse before writing it
        files = " + ".join(f for f in (source.get("file"), source.get("edges", {}).get("file")) if f)
        dropped = {**source.get("dropped", {}), **source.get("edges", {}).get("dropped", {})}
        raise ValueError(f"{files}: no follows edge comes out of the data ({source['follows']['graph']}; dropped: "
                         f"{dropped}): a dataset needs at least one; check the file(s)")
    h = posts_in_time_order(h)
    n, p = len(h.users), len(h.post_author)
    follower_pos = dense_index(h.users, h.follows_dst, "follows.dst")
    followers = np.zeros(n, np.int64)
    add_counts(followers, follower_pos)
    reshares = np.bincount(h.reshare_post, minlength=p)
    rate_sum, post_count = np.zeros(n), np.zeros(n, np.int64)
    add_engagement(rate_sum, post_count, dense_index(h.users, h.post_author, "created.src"), reshares, followers)
    engagement = avg_engagement(rate_sum, post_count)
    start, end = h.span

    w = DatasetWriter(out, options)
    topic = np.full(S.NUM_TOPICS, 1.0 / S.NUM_TOPICS, np.float32)
    for sl in _chunks(n, chunk_rows):
        k = sl.stop - sl.start
        w.write("user", pa.table({
            "id": h.users[sl], "follower_count": followers[sl], "avg_engagement": engagement[sl],
            "topic_vector": pa.FixedSizeListArray.from_arrays(np.tile(topic, k), S.NUM_TOPICS).cast(
                pa.list_(pa.float32()))}))
    for sl in _chunks(p, chunk_rows):
        k = sl.stop - sl.start
        ids = np.arange(sl.start, sl.stop, dtype=np.int64)
        w.write("content", pa.table({
            "id": ids, "type": np.zeros(k, np.int8), "topic": np.zeros(k, np.int32), "timestamp": h.post_time[sl],
            "text_emb": pa.FixedSizeListArray.from_arrays(np.zeros(k * S.TEXT_EMB_DIM, np.float32),
                                                          S.TEXT_EMB_DIM).cast(pa.list_(pa.float32()))}))
        w.write("created", pa.table({"src": h.post_author[sl], "dst": ids, "timestamp": h.post_time[sl]}))
    order = np.lexsort((h.reshare_user, h.reshare_time))  # in time order, as a platform's log would be
    for sl in _chunks(len(order), chunk_rows):
        o = order[sl]
        w.write("shared", pa.table({"src": h.reshare_user[o], "dst": h.reshare_post[o],
                                    "timestamp": h.reshare_time[o]}))
    for sl in _chunks(len(h.follows_src), chunk_rows):
        w.write("follows", pa.table({"src": h.follows_src[sl], "dst": h.follows_dst[sl],
                                     "since_date": h.follows_since[sl], "interaction_freq": h.follows_freq[sl]}))
    if h.names is not None:
        for sl in _chunks(n, chunk_rows):
            w.write("user_names", pa.table({"id": h.users[sl], "name": pa.array(h.names[sl.start:sl.stop],
                                                                                 pa.string())}))
    if h.interactions is not None:
        src, dst, time, kind = h.interactions
        kinds = pa.array(S.INTERACTION_KINDS, pa.string())
        for sl in _chunks(len(src), chunk_rows):
            w.write("interactions", pa.table({
                "src": src[sl], "dst": dst[sl], "timestamp": time[sl],
                "kind": pa.DictionaryArray.from_arrays(pa.array(kind[sl], pa.int8()), kinds).cast(pa.string())}))
    m = w.close(absent=("labels",), history={"start": start, "end": end},
                source={**source, "neutral_columns": NEUTRAL, "communities": COMMUNITIES})
    log.info("import: %s -> %s: %s", source.get("file"), out, m.rows)
    return asdict(m)
