"""``ripple import snap-activity FILE``: SNAP's activity format, lines ``A B time KIND``.

KIND is ``RT`` (A retweeted B), ``MT`` (A mentioned B) or ``RE`` (A replied to B); time is in epoch seconds (or
``--time-unit``). Blank lines and ``#`` comments (SNAP's headers) are skipped and counted. The data names no posts
and has no follower graph, so:

- **posts** (``content`` + ``created``): B's retweets, in time order, are cut into sessions: a retweet of B that
  comes more than ``post_gap`` (default 1 h) after B's previous retweet opens a new post by B, created at that
  retweet's time; every retweet of the session (the first included) is a ``shared`` row of that post by A at its
  time. ``ripple labels`` then measures what a platform would: per post, the distinct users who reshared it within
  H of its creation;
- **follows** is an *interaction graph*: A -> B (A follows B: B's content reaches A) for every pair with at least
  one event of any kind, ``since_date`` = the first event's time, ``interaction_freq`` = the number of events.
  Every event is kept in ``interactions`` (kind ``reshare``, ``mention`` or ``reply``), from which ``ripple
  labels`` recounts ``interaction_freq`` before its cutoff;
- **replies and mentions** shape the graph: they make and strengthen ``follows`` edges as retweets do, but no
  posts (``reply_to`` stays empty: the line names no post replied to, and a made-up one would enter the labels);
- a line repeated exactly (same A, B, time, KIND) is dropped and counted; so are events of a user with themself
  (their users are kept).
"""
from __future__ import annotations

import time as _time
from array import array

import numpy as np

from ripple.data import schema as S
from ripple.data.ingest.tables import History, interaction_graph, write_history
from ripple.data.ingest.text import TIME_UNITS, Records, bad_line, empty_file, timestamp, user_id
from ripple.data.storage import StorageOptions, TextSource, redact_url

#: KIND -> index into ``S.INTERACTION_KINDS``
KINDS = {"RT": S.INTERACTION_KINDS.index("reshare"), "MT": S.INTERACTION_KINDS.index("mention"),
         "RE": S.INTERACTION_KINDS.index("reply")}
RESHARE = KINDS["RT"]
POST_RULE = ("B's retweets in time order; a retweet more than post_gap after B's previous retweet opens a new post "
             "by B created at its time; every retweet of the session (the first included) is a shared row")


def read_events(src: TextSource, seconds_per_unit: float = 1) -> tuple[np.ndarray, ...]:
    """(a, b, time, kind, counts) of every event line. Shapes: [L] each; kind indexes ``S.INTERACTION_KINDS``."""
    a, b, t, k = array("q"), array("q"), array("q"), array("b")
    records = Records(src)
    for lineno, line in records:
        tok = line.split()
        if len(tok) != 4:
            raise bad_line(src, lineno, line, f"expected 4 tokens `A B time KIND`, found {len(tok)}",
                           "each line is one event, e.g. `223789 213163 1341100972 RT`")
        kind = KINDS.get(tok[3])
        if kind is None:
            raise bad_line(src, lineno, line, f"unknown KIND {tok[3]!r}",
                           f"KIND is one of {', '.join(KINDS)} (retweet, mention, reply)")
        a.append(user_id(tok[0], src, lineno, line, "user A"))
        b.append(user_id(tok[1], src, lineno, line, "user B"))
        t.append(timestamp(tok[2], src, lineno, line, seconds_per_unit))
        k.append(kind)
    if not a:
        raise empty_file(src, "`A B time KIND` events")
    arrays = (np.frombuffer(x, np.int8 if x.typecode == "b" else np.int64).copy() for x in (a, b, t, k))
    return (*arrays, {**records.counts(), "events": len(a)})


def sessions(author: np.ndarray, time: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each author's reshares into posts: a reshare more than ``gap`` seconds after the author's previous one
    opens a post. Returns (post of each reshare, post author, post creation time).

    Shapes: author, time [R] -> ([R] post index, [P], [P])."""
    order = np.lexsort((time, author))
    au, ti = author[order], time[order]
    opens = np.ones(len(au), bool)
    opens[1:] = (au[1:] != au[:-1]) | (ti[1:] - ti[:-1] > gap)
    post_sorted = np.cumsum(opens) - 1
    post = np.empty(len(au), np.int64)
    post[order] = post_sorted
    return post, au[opens], ti[opens]


def import_snap_activity(file: str, out: str, options: StorageOptions | None = None, post_gap: int = 3600,
                         time_unit: str = "s", chunk_rows: int = 1 << 20) -> dict:
    """Import ``file`` to the dataset ``out``; returns its manifest as a dict."""
    if time_unit not in TIME_UNITS:
        raise ValueError(f"--time-unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if post_gap < 0:
        raise ValueError(f"--post-gap must be >= 0 seconds, got {post_gap}")
    t0 = _time.perf_counter()
    with TextSource(file, options) as src:
        a, b, t, k, lines = read_events(src, TIME_UNITS[time_unit])
        sha, size, gz = src.sha256, src.size, src.gzip
    users = np.unique(np.concatenate([a, b]))
    # exact duplicates: one row per distinct (a, b, time, kind)
    order = np.lexsort((k, t, b, a))
    a, b, t, k = a[order], b[order], t[order], k[order]
    keep = np.ones(len(a), bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (t[1:] != t[:-1]) | (k[1:] != k[:-1])
    duplicates = int((~keep).sum())
    self_events = int((keep & (a == b)).sum())
    keep &= a != b
    a, b, t, k = a[keep], b[keep], t[keep], k[keep]
    order = np.lexsort((b, a, t))  # interactions in time order
    a, b, t, k = a[order], b[order], t[order], k[order]

    rt = k == RESHARE
    post, author, created = sessions(b[rt], t[rt], post_gap)
    fs, fd, since, freq = interaction_graph(a, b, t)
    hist = History(users=users, post_author=author, post_time=created, reshare_user=a[rt], reshare_post=post,
                   reshare_time=t[rt], follows_src=fs, follows_dst=fd, follows_since=since, follows_freq=freq,
                   interactions=(a, b, t, k))
    per_kind = {kind: int((k == code).sum()) for kind, code in KINDS.items()}
    source = {
        "format": "snap-activity", "file": redact_url(file), "sha256": sha, "bytes": size, "gzip": gz,
        "time_unit": time_unit, **lines, "events_by_kind": per_kind,
        "dropped": {"duplicate_lines": duplicates, "self_interactions": self_events},
        "follows": {"graph": "interaction graph",
                    "rule": "A -> B for every pair with an RT, MT or RE event; since_date = the first event, "
                            "interaction_freq = the number of events (recounted before the cutoff by ripple labels "
                            "from the interactions table)"},
        "posts": {"rule": POST_RULE, "post_gap_s": int(post_gap)},
        "replies_and_mentions": "interactions: follows edges and interaction_freq; no posts, reply_to empty",
    }
    m = write_history(out, hist, source, options, chunk_rows)
    m["seconds"] = round(_time.perf_counter() - t0, 3)
    return m
