"""``ripple seeds``: K seed users that maximise expected reach together, picked from a trained run's scores.

The model scores every user's own reach; seeds chosen by score alone overlap (two influencers in one community
reach the same people). ``select_seeds`` streams the run's scores and the ``follows`` table, estimates each
candidate's two-hop footprint, and runs the overlap-aware lazy greedy of ``ripple.influence.greedy``. Memory is
the candidate pool and its two-hop neighbourhood: nothing holds the whole graph.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ripple.config import RippleConfig
from ripple.data.dataset import Dataset
from ripple.data.storage import Store, iter_committed, iter_table_batches
from ripple.influence import greedy as SD
from ripple.run import embeddings_store, source_dataset

log = logging.getLogger(__name__)

#: candidates the overlap-aware greedy keeps neighbourhoods for, unless ``--candidates`` says otherwise
DEFAULT_SEED_CANDIDATES = 1000
#: followers per candidate expanded to the second hop (the likeliest to be activated)
SEED_EXPAND_FOLLOWERS = 16


def _score_parts(emb: Store, verify: bool = True):
    """``(user_ids, influence_score)`` of each part of a committed embeddings folder, one part at a time."""
    for t in iter_committed(emb, ["user_id", "influence_score"], verify):
        ids = t["user_id"].to_numpy().astype(np.int64)
        scores = t["influence_score"].to_numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(f"{emb.url}: influence_score of user {ids[bad[0]]} is {scores[bad[0]]}; re-run "
                             "`ripple embed` on the run")
        yield ids, scores


def _top_scored_users(emb: Store, m: int):
    """The ``m`` highest ``influence_score`` rows of a committed embeddings folder, streamed part by part (only
    ``2 m`` rows are ever kept), plus the total number of users. Returns ``(user_ids, scores, total)``, best first
    (ties by lower user id)."""
    ids, scores, total = np.zeros(0, np.int64), np.zeros(0, np.float64), 0
    for part_ids, part_scores in _score_parts(emb):
        total += part_ids.shape[0]
        ids, scores = np.concatenate([ids, part_ids]), np.concatenate([scores, part_scores])
        if ids.shape[0] > 2 * m:
            keep = np.lexsort((ids, -scores))[:m]
            ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:m]
    return ids[order], scores[order], total


def _scores_of(emb: Store, keys):
    """The ``influence_score`` of each user in ``keys`` (sorted, distinct); users the run did not score get 1 (the
    least possible reach: the user alone). Checksums were verified by the first pass (``_top_scored_users``)."""
    out = np.ones(keys.shape[0])
    for part_ids, part_scores in _score_parts(emb, verify=False):
        hit, pos = _member(keys, part_ids)
        out[pos[hit]] = part_scores[hit]
    return out


def _member(sorted_keys, values):
    """Boolean mask of ``values`` found in ``sorted_keys``, and their positions there (0 where not found).

    ``np.isin`` picks a lookup table when the key range is small (dense-ish user ids: one pass, no sort) and sorting
    otherwise; positions are then looked up for the hits only."""
    hit = np.isin(values, sorted_keys)
    pos = np.zeros(values.shape[0], np.int64)
    pos[hit] = np.searchsorted(sorted_keys, values[hit])
    return hit, pos


def _stream_in_edges(ds: Dataset, targets, batch_rows: int):
    """Every ``follows`` edge whose followee is in ``targets`` (sorted user ids), streamed in batches:
    ``(followee, follower, interaction_freq)`` arrays."""
    out_dst, out_src, out_w = [], [], []
    for b in iter_table_batches(ds.store, "follows", ["src", "dst", "interaction_freq"], batch_rows=batch_rows):
        dst = b.column("dst").to_numpy()
        hit = np.isin(dst, targets)
        if hit.any():
            out_dst.append(dst[hit])
            out_src.append(b.column("src").to_numpy()[hit])
            out_w.append(b.column("interaction_freq").to_numpy()[hit].astype(np.float64))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return cat(out_dst, np.int64), cat(out_src, np.int64), cat(out_w, np.float64)


def _candidate_engagement(ds: Dataset, cand_sorted, batch_rows: int):
    """``avg_engagement`` (observed reshares per follower) of the candidates (sorted user ids)."""
    out = np.zeros(cand_sorted.shape[0])
    for b in iter_table_batches(ds.store, "user", ["id", "avg_engagement"], batch_rows=batch_rows):
        ids = b.column("id").to_numpy()
        hit, pos = _member(cand_sorted, ids)
        out[pos[hit]] = b.column("avg_engagement").to_numpy()[hit]
    return out


def select_seeds(cfg: RippleConfig, k: int, candidates: int | None = None, batch_rows: int = 1 << 20) -> dict:
    """The overlap-aware greedy of ``ripple.influence.greedy`` on a run: K seed users and their marginal gains.

    1. candidates: the top ``candidates`` users by the model's ``influence_score`` (one streamed pass over the
       embeddings, only the running top kept);
    2. their followers (one streamed pass over ``follows``), the followers' scores (a second pass over the
       embeddings, only those users kept) and the candidates' observed ``avg_engagement`` (the user table);
    3. each candidate's reach by one look-ahead step (``seeds.lookahead_reach``);
    4. the followers of each candidate's ``SEED_EXPAND_FOLLOWERS`` likeliest followers (a second pass over
       ``follows``) for the two-hop footprints, then the lazy greedy.

    Memory is the candidate pool and its two-hop neighbourhood; nothing holds the whole graph. Reads the run's
    ``embeddings`` and the dataset's ``user`` and ``follows`` tables only (never ``_truth``). Returns a dict of
    arrays and timings.
    """
    t0 = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"--k must be an integer >= 1, got {k!r}")
    if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int)
                                   or candidates < k):
        raise ValueError(f"--candidates must be an integer >= --k ({k}), got {candidates!r}")
    m = candidates if candidates is not None else max(DEFAULT_SEED_CANDIDATES, 10 * k)
    emb = embeddings_store(cfg)
    cand, score, total = _top_scored_users(emb, m)
    if k > total:
        raise ValueError(f"--k {k} is larger than the number of users the run scored ({total}); ask for at most "
                         f"{total}")
    ds = Dataset(source_dataset(cfg.data, cfg.storage), cfg.storage)
    t_scores = time.perf_counter()

    order = np.argsort(cand)
    sorted_cand = cand[order]
    h1_dst, h1_src, h1_w = _stream_in_edges(ds, sorted_cand, batch_rows)
    _, pos = _member(sorted_cand, h1_dst)
    h1_cand = order[pos]
    followers = np.unique(h1_src)
    follower_score = _scores_of(emb, followers)
    _, fpos = _member(followers, h1_src)
    eng = np.zeros(cand.shape[0])
    eng[order] = _candidate_engagement(ds, sorted_cand, batch_rows)
    reach, p = SD.lookahead_reach(cand.shape[0], h1_cand, h1_w, follower_score[fpos], eng)

    # expand each candidate's likeliest followers to the second hop (bounds memory on celebrity accounts)
    rank = np.lexsort((-p, h1_cand))
    first = np.searchsorted(h1_cand[rank], h1_cand[rank])
    within = np.arange(rank.shape[0]) - first
    mids = np.unique(h1_src[rank[(within < SEED_EXPAND_FOLLOWERS) & (p[rank] > 0)]])
    h2_dst, h2_src, h2_w = _stream_in_edges(ds, mids, batch_rows)
    _, mpos = _member(followers, mids)
    onward = np.maximum(follower_score[mpos], 1.0) - 1.0
    t_edges = time.perf_counter()

    fp = SD.build_footprints(cand, reach, h1_cand, h1_src, p, h2_dst, h2_src, h2_w, mids, onward)
    chosen, gains = SD.overlap_greedy(k, fp)
    t1 = time.perf_counter()
    log.info("seeds: %d of %d candidates (%d users scored); %d hop-1 and %d hop-2 edges; top scores %.2fs, "
             "neighbourhoods %.2fs, footprints + greedy %.2fs", k, cand.shape[0], total, h1_dst.shape[0],
             h2_dst.shape[0], t_scores - t0, t_edges - t_scores, t1 - t_edges)
    return {"user_id": cand[chosen], "score": score[chosen], "estimated_reach": reach[chosen],
            "marginal_gain": gains, "candidates": int(cand.shape[0]), "users": int(total), "seconds": t1 - t0,
            "seconds_read_scores": t_scores - t0, "seconds_neighbourhoods": t_edges - t_scores,
            "seconds_greedy": t1 - t_edges}
