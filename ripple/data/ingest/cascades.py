"""``ripple import cascades FILE [--edges EDGES]``: the cascade-list format of the diffusion-prediction literature
(Inf-VAE, DyHGCN, MS-HGAT, RotDiff).

FILE holds one cascade per line: comma-separated ``user time`` chunks (a trailing comma is fine); the first chunk
may be ``root user time``, where root is the user who started the cascade. Times are numbers, epoch-based or
relative, in ``--time-unit`` (seconds by default), floored to whole seconds. Blank lines are skipped and counted.
Users are integers (kept as the ids) or any other tokens (names, URLs): then every user gets an id 0.. in order of
first appearance, cascades file first, and ``user_names`` maps the ids back to the names.

- **posts**: each cascade is one post, created by its root (or, without one, by its earliest user) at the
  cascade's earliest time; every other user is a ``shared`` row at their own time. A user's second chunk in the
  same cascade, and a chunk of the post's author (the root's own, or the earliest user's again), are dropped and
  counted (the author's reshare of
  their own post is not reach);
- **follows** with ``EDGES`` (one ``u,v`` pair per line): the social graph as given, ``--edge-direction``
  ``follower-followee`` (u follows v; the default) or ``followee-follower``; blank lines and ``#`` comments are skipped and counted. The links carry no time, so each is
  taken as known from the history's start (``since_date`` = start; a static snapshot, as the literature uses it)
  with a neutral ``interaction_freq`` 1. Self-links and repeated links are dropped and counted;
- **follows** without ``EDGES``: the *diffusion graph* the literature infers, an interaction graph: each adopter ->
  the adopter before them (the first after the root -> the root), at the adoption's time; one ``follows`` row per
  pair (``since_date`` = its first adoption, ``interaction_freq`` = how many), every link kept in
  ``interactions`` (kind ``diffusion``) for ``ripple labels`` to recount before its cutoff.
"""
from __future__ import annotations

import time as _time
from array import array

import numpy as np

from ripple.data import schema as S
from ripple.data.ingest.tables import History, interaction_graph, write_history
from ripple.data.ingest.text import TIME_UNITS, Records, UserNames, bad_line, empty_file, timestamp
from ripple.data.storage import StorageOptions, TextSource, redact_url

DIRECTIONS = ("follower-followee", "followee-follower")
DIFFUSION = S.INTERACTION_KINDS.index("diffusion")
_FIX = "a cascade is `user time,user time,...`; its first chunk may be `root user time`"


def _chunks(src: TextSource, lineno: int, line: str, per_unit: float, names: UserNames
            ) -> tuple[int | None, list[tuple[int, int]]]:
    """(root or None, [(user, time)]) of one cascade line, users as ``names`` codes."""
    chunks = line.split(",")
    if not chunks[-1].strip():  # a trailing comma
        chunks.pop()
    root, out = None, []
    for j, chunk in enumerate(chunks):
        tok = chunk.split()
        if j == 0 and len(tok) == 3:
            root = names.code(tok[0])
            tok = tok[1:]
        if len(tok) != 2:
            raise bad_line(src, lineno, line, f"chunk {j + 1} ({chunk.strip()!r}) has {len(tok)} tokens, expected "
                                              f"2 (`user time`){' or 3 (`root user time`)' if j == 0 else ''}", _FIX)
        out.append((names.code(tok[0]), timestamp(tok[1], src, lineno, line, per_unit)))
    return root, out


def read_cascades(src: TextSource, per_unit: float, infer_follows: bool, names: UserNames) -> tuple[dict, dict]:
    """Posts, reshares and diffusion links of every cascade line, as arrays of ``names`` codes; and the line
    counts."""
    arr = {k: array("q") for k in ("author", "created", "r_user", "r_post", "r_time", "d_src", "d_dst", "d_time")}
    users = set()
    duplicate = root_again = 0
    records = Records(src)
    for lineno, line in records:
        root, chunks = _chunks(src, lineno, line, per_unit, names)
        chunks.sort(key=lambda c: c[1])  # stable: equal times keep the line's order
        post = len(arr["author"])
        author = chunks[0][0] if root is None else root
        arr["author"].append(author)
        arr["created"].append(chunks[0][1])
        users.add(author)
        seen, previous = {author}, author
        for user, t in chunks[0 if root is not None else 1:]:  # without a root, the first chunk is the creation
            users.add(user)
            if user in seen:
                if user == author:
                    root_again += 1
                else:
                    duplicate += 1
                continue
            seen.add(user)
            arr["r_user"].append(user)
            arr["r_post"].append(post)
            arr["r_time"].append(t)
            if infer_follows:
                arr["d_src"].append(user)
                arr["d_dst"].append(previous)
                arr["d_time"].append(t)
            previous = user
    if not arr["author"]:
        raise empty_file(src, "cascades")
    out = {k: np.frombuffer(v, np.int64).copy() for k, v in arr.items()}
    out["users"] = np.fromiter(users, np.int64, len(users))
    order = np.lexsort((out["d_src"], out["d_time"]))  # diffusion links in time order, as snap's interactions
    for k in ("d_src", "d_dst", "d_time"):
        out[k] = out[k][order]
    return out, {**records.counts(), "cascades": len(out["author"]),
                 "dropped": {"duplicate_adoptions": duplicate, "author_readoptions": root_again}}


def read_edges(src: TextSource, names: UserNames) -> tuple[np.ndarray, np.ndarray, dict]:
    """(u, v, counts) of every line of an ``u,v`` link file, as ``names`` codes."""
    u, v = array("q"), array("q")
    records = Records(src)
    for lineno, line in records:
        tok = [t.strip() for t in line.split(",")]
        if len(tok) != 2 or any(len(t.split()) != 1 for t in tok):
            raise bad_line(src, lineno, line, "expected one `u,v` pair of user ids",
                           "write one social link per line, e.g. `674,48`")
        u.append(names.code(tok[0]))
        v.append(names.code(tok[1]))
    if not u:
        raise empty_file(src, "`u,v` links")
    return np.frombuffer(u, np.int64).copy(), np.frombuffer(v, np.int64).copy(), {**records.counts(),
                                                                                  "links": len(u)}


def social_graph(u: np.ndarray, v: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(follower, followee, dropped counts) of ``u,v`` links read as ``direction``, self-links and repeats dropped.
    Shapes: u, v [L] user ids -> ([F], [F])."""
    src, dst = (u, v) if direction == "follower-followee" else (v, u)
    loops = src == dst
    pairs = np.unique(np.stack([src[~loops], dst[~loops]], 1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy(), {"self_links": int(loops.sum()),
                                                    "duplicate_links": int((~loops).sum() - len(pairs))}


def import_cascades(file: str, out: str, options: StorageOptions | None = None, edges: str | None = None,
                    edge_direction: str = "follower-followee", time_unit: str = "s",
                    chunk_rows: int = 1 << 20) -> dict:
    """Import ``file`` (and ``edges``) to the dataset ``out``; returns its manifest as a dict."""
    if edge_direction not in DIRECTIONS:
        raise ValueError(f"--edge-direction must be one of {', '.join(DIRECTIONS)}, got {edge_direction!r}")
    if time_unit not in TIME_UNITS:
        raise ValueError(f"--time-unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    t0 = _time.perf_counter()
    names = UserNames()
    with TextSource(file, options) as src:
        c, counts = read_cascades(src, TIME_UNITS[time_unit], edges is None, names)
        source = {"format": "cascades", "file": redact_url(file), "sha256": src.sha256, "bytes": src.size,
                  "gzip": src.gzip, "time_unit": time_unit, **counts}
    if edges is not None:
        with TextSource(edges, options) as esrc:
            u, v, ecounts = read_edges(esrc, names)
            source["edges"] = {"file": redact_url(edges), "sha256": esrc.sha256, "bytes": esrc.size,
                               "direction": edge_direction, **ecounts}
    ids, user_names = names.resolve()
    for k in ("author", "r_user", "d_src", "d_dst", "users"):  # codes -> the users' ids
        c[k] = ids[c[k]]
    distinct = c["d_src"] != c["d_dst"]  # two spellings of one integer ("7", "07") are one user: no self-link
    for k in ("d_src", "d_dst", "d_time"):
        c[k] = c[k][distinct]
    # ... nor a second adoption of a post, or its author's: dropped and counted, as read_cascades does for one spelling
    again = c["r_user"] == c["author"][c["r_post"]]
    first = np.zeros(len(again), bool)  # reshares are in time order per post: the first of a pair is the earliest
    first[np.unique(np.stack([c["r_post"], c["r_user"]], 1), axis=0, return_index=True)[1]] = True
    if not (first & ~again).all():
        for k in ("r_user", "r_post", "r_time"):
            c[k] = c[k][first & ~again]
        source["dropped"]["author_readoptions"] += int(again.sum())
        source["dropped"]["duplicate_adoptions"] += int((~first & ~again).sum())
    source["user_ids"] = ("as given (integers)" if user_names is None else
                          "0.. in order of first appearance; the source's names are in user_names")
    users = [c["users"]]
    if edges is None:
        fs, fd, since, freq = interaction_graph(c["d_src"], c["d_dst"], c["d_time"])
        interactions = (c["d_src"], c["d_dst"], c["d_time"], np.full(len(c["d_src"]), DIFFUSION, np.int8))
        source["follows"] = {"graph": "interaction graph (diffusion links)",
                             "rule": "each adopter -> the adopter before them in the cascade (the first -> the "
                                     "root), at the adoption's time; since_date = the first, interaction_freq = the "
                                     "count (recounted before the cutoff by ripple labels from interactions)"}
    else:
        u, v = ids[u], ids[v]
        fs, fd, source["edges"]["dropped"] = social_graph(u, v, edge_direction)
        users += [u, v]  # a user of a dropped self-link is still a user, as in snap-activity
        interactions, since, freq = None, None, np.ones(len(fs), np.float32)
        source["follows"] = {"graph": "social graph (given)",
                             "rule": f"{edge_direction} links from the edges file; no times in it, so since_date "
                                     "= the history's start (a static snapshot) and interaction_freq = 1"}
    source["posts"] = {"rule": "one post per cascade, created by its root (else its earliest user) at the earliest "
                               "time; every other user is a reshare at their own time"}
    hist = History(users=np.unique(np.concatenate(users)), post_author=c["author"], post_time=c["created"],
                   reshare_user=c["r_user"], reshare_post=c["r_post"], reshare_time=c["r_time"],
                   follows_src=fs, follows_dst=fd, follows_since=since, follows_freq=freq, interactions=interactions,
                   names=user_names)
    if since is None:
        hist.follows_since = np.full(len(fs), hist.span[0], np.int64)
    m = write_history(out, hist, source, options, chunk_rows)
    m["seconds"] = round(_time.perf_counter() - t0, 3)
    return m
