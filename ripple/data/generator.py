"""Synthetic social graph whose cascade-reach labels are earned by simulation, not planted.

What is hidden (``_truth/`` only) and what is observable:

- every user has a community (a few *bridge* users belong to two), a topic profile, a popularity weight
  (Pareto: degree-corrected preferential follows), a persuasiveness and a receptivity;
- *bot hubs* buy popularity (many followers) but persuade nobody; *fake followers* follow many accounts, mostly
  bot hubs, and are never activated; *passive* users rarely react;
- the independent-cascade (IC) probability of followee v activating follower u is
  ``base * persuasiveness[v] * receptivity[u] * topic_match(u, v) * community_affinity(u, v) * tie[u, v]``;
- observable columns are noisy stand-ins: ``follower_count`` (in-degree), ``avg_engagement`` (reshares per
  follower of a user's posts), ``interaction_freq`` (a noisy reading of the tie strength and the follower's
  receptivity);
- the post history: over ``[history.start, history.end)`` every user posts at a heavy-tailed (lognormal) rate;
  each post's cascade is one draw of the same hidden IC process, and the cascade's reshares are the ``shared``
  edges, timestamped round by round after the post (shares after the history's end are not observed). Follows
  get ``since_date``s spread over ``follow_span_days`` ending at the history's end, so a graph cut at a time T
  in the history holds fewer follows than the whole;
- labels: ``cascade_reach`` is the mean reach of ``label_sims`` IC simulations seeded at the user (the seed
  counts), ``cascade_reach_replicate`` an independent set of simulations (the noise ceiling);
  ``_truth/users.expected_reach`` is the same mean: the oracle that ``ripple labels`` datasets, whose labels are
  the observed future cascades of the history, are evaluated against.

Generation streams over chunks of users: follow edges are written as they are drawn, and posts, their cascades and
reshares per chunk of creators, so memory beyond the per-user arrays is one chunk plus the compact int32/float32 IC
graph the simulations need and 4 bytes of post time per post. The history's size is bounded: a user posts at most
``max_posts_per_user`` times (``users * posts_per_user`` posts expected), and reshares per post are bounded by the
IC process (calibrated to ``branching`` < 1 expected children per activated user).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from ripple.data import schema as S
from ripple.data.dataset import DatasetWriter
from ripple.data.history import add_engagement, assign_splits
from ripple.data.history import avg_engagement as avg_engagement_of
from ripple.data.ic import ICGraph, simulate_cascades, simulate_reach
from ripple.data.ids import add_counts
from ripple.data.storage import StorageOptions

log = logging.getLogger(__name__)

USER_ID_OFFSET = 1_000_003      # ids are not dense row numbers, so every reader must map ids
CONTENT_ID_OFFSET = 5_000_000_000
COMMUNITY_ID_OFFSET = 700
T0 = 1_700_000_000              # unix seconds


@dataclass
class GeneratorConfig:
    users: int = 5000
    avg_follows: float = 20.0
    seed: int = 0
    users_per_community: int = 400
    in_community: float = 0.8          # share of a user's follows inside their community
    bridge_fraction: float = 0.04
    bot_hub_fraction: float = 0.03
    fake_follower_fraction: float = 0.06
    passive_fraction: float = 0.25
    popularity_pareto: float = 2.5     # tail index of the popularity weight
    branching: float = 0.9             # mean expected children of an activated ordinary user
    max_p: float = 0.5
    posts_per_user: float = 6.0        # mean posts per user over the history
    posting_sigma: float = 1.0         # lognormal spread of per-user posting rates (heavy-tailed)
    max_posts_per_user: int = 200      # bounds the history at users x this many posts
    history_days: int = 120
    follow_span_days: int = 3 * 365    # since_dates spread over this span, ending at the history's end
    reshare_delay_s: float = 3 * 3600  # mean delay of one cascade round (per-post scale is lognormal)
    reply_fraction: float = 0.3
    label_sims: int = 100
    max_labeled: int = 50000
    chunk_users: int = 100_000
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self):
        if self.users < 20:
            raise ValueError(f"--users must be at least 20 (got {self.users}): the splits need users to hold out")
        if not self.avg_follows > 0:
            raise ValueError(f"--avg-follows must be > 0 (got {self.avg_follows})")
        if self.label_sims < 1:
            raise ValueError(f"label_sims must be >= 1 (got {self.label_sims})")
        if not self.posts_per_user > 0 or self.max_posts_per_user < 1 or self.history_days < 1:
            raise ValueError(f"posts_per_user must be > 0, max_posts_per_user and history_days >= 1 (got "
                             f"{self.posts_per_user}, {self.max_posts_per_user}, {self.history_days})")

    @property
    def history(self) -> dict:
        """The post history's time range in epoch seconds (``manifest.history``)."""
        return {"start": T0, "end": T0 + self.history_days * 86400}


def _user_ids(idx: np.ndarray) -> np.ndarray:
    return idx.astype(np.int64) * 3 + USER_ID_OFFSET


@dataclass
class _Users:
    community: np.ndarray       # [N] int64 primary community
    second: np.ndarray          # [N] int64 second community or -1
    topic: np.ndarray           # [N, T] float32, rows sum to 1
    popularity: np.ndarray      # [N] float64
    persuasiveness: np.ndarray  # [N] float64
    receptivity: np.ndarray     # [N] float64
    bot: np.ndarray             # [N] bool
    fake: np.ndarray            # [N] bool
    passive: np.ndarray         # [N] bool
    out_degree: np.ndarray      # [N] int64 number of follow draws
    focus: np.ndarray           # [C] int64 topic focus per community


def _draw_users(cfg: GeneratorConfig, rng: np.random.Generator) -> _Users:
    n, T = cfg.users, S.NUM_TOPICS
    C = max(2, n // cfg.users_per_community)
    comm_w = 1.0 / np.arange(1, C + 1) ** 0.7
    community = rng.choice(C, size=n, p=comm_w / comm_w.sum())
    focus = rng.integers(0, T, size=C)
    bridge = rng.random(n) < cfg.bridge_fraction
    second = np.where(bridge, (community + rng.integers(1, C, size=n)) % C, -1)

    base = rng.dirichlet(np.full(T, 0.3), size=n)
    topic = 0.55 * np.eye(T)[focus[community]] + 0.45 * base
    topic[bridge] += 0.4 * np.eye(T)[focus[second[bridge]]]
    topic = (topic / topic.sum(1, keepdims=True)).astype(np.float32)

    popularity = rng.pareto(cfg.popularity_pareto, size=n) + 1.0
    bot = rng.random(n) < cfg.bot_hub_fraction
    fake = (~bot) & (rng.random(n) < cfg.fake_follower_fraction)
    popularity[bot] *= 15.0  # bought followers
    popularity[fake] *= 0.2
    popularity[bridge] *= 3.0  # bridges are followed from two communities

    # Persuasiveness is mostly independent of popularity: big accounts are not necessarily convincing ones.
    persuasiveness = rng.lognormal(0.0, 1.4, size=n)
    persuasiveness /= persuasiveness.mean()
    persuasiveness[bot] = 0.02
    # Receptivity clusters by community (some audiences reshare, some only read) and varies within it.
    comm_receptivity = rng.lognormal(0.0, 0.8, size=C)
    receptivity = rng.beta(1.5, 3.0, size=n) * comm_receptivity[community]
    receptivity /= receptivity.mean()
    passive = rng.random(n) < cfg.passive_fraction
    receptivity[passive] *= 0.05
    receptivity[fake] = 0.0
    receptivity[bot] = 0.0

    deg = rng.lognormal(np.log(cfg.avg_follows) - 0.5, 1.0, size=n)
    deg[fake] *= 4.0
    out_degree = np.maximum(1, np.round(deg * cfg.avg_follows / deg.mean())).astype(np.int64)
    return _Users(community, second, topic, popularity, persuasiveness, receptivity, bot, fake, passive, out_degree,
                  focus)


class _FolloweeSampler:
    """Degree-corrected draws: within a community (members and bridges), globally, or among bot hubs."""

    def __init__(self, u: _Users, rng: np.random.Generator):
        self.rng = rng
        n = len(u.popularity)
        member = np.concatenate([np.arange(n), np.flatnonzero(u.second >= 0)])
        comm = np.concatenate([u.community, u.second[u.second >= 0]])
        order = np.lexsort((member, comm))
        self.members, comm = member[order], comm[order]
        C = len(u.focus)
        self.ptr = np.searchsorted(comm, np.arange(C + 1))
        w = u.popularity[self.members]
        self.cum = np.cumsum(w)  # one cumsum; per-community ranges are slices of it
        self.global_cum = np.cumsum(u.popularity)
        self.celebrity_cum = np.cumsum(u.popularity ** 2)
        self.bots = np.flatnonzero(u.bot)

    def within(self, comm: np.ndarray) -> np.ndarray:
        lo, hi = self.ptr[comm], self.ptr[comm + 1]
        base = np.where(lo > 0, self.cum[np.maximum(lo - 1, 0)], 0.0)
        total = self.cum[hi - 1] - base
        r = base + self.rng.random(len(comm)) * total
        pos = np.clip(np.searchsorted(self.cum, r, side="right"), lo, hi - 1)
        return self.members[pos]

    def anywhere(self, k: int, cum: np.ndarray | None = None) -> np.ndarray:
        cum = self.global_cum if cum is None else cum
        r = self.rng.random(k) * cum[-1]
        return np.minimum(np.searchsorted(cum, r, side="right"), len(cum) - 1)

    def celebrity(self, k: int) -> np.ndarray:
        """Draws concentrated on the most popular accounts (weight popularity^2)."""
        return self.anywhere(k, self.celebrity_cum)

    def bot_hub(self, k: int) -> np.ndarray:
        if len(self.bots) == 0:
            return self.anywhere(k)
        return self.bots[self.rng.integers(0, len(self.bots), size=k)]


def _follow_chunk(cfg, u: _Users, sampler: _FolloweeSampler, lo: int, hi: int, rng: np.random.Generator):
    """Draw the follows of users [lo, hi). Returns (follower, followee, tie, interaction_freq, p).

    Shapes:
        all outputs: [E_chunk]; follower/followee are dense user indices (int64).
    """
    follower = np.repeat(np.arange(lo, hi), u.out_degree[lo:hi])
    k = len(follower)
    comm = np.where((u.second[follower] >= 0) & (rng.random(k) < 0.5), u.second[follower], u.community[follower])
    inside = rng.random(k) < cfg.in_community
    followee = np.empty(k, dtype=np.int64)
    followee[inside] = sampler.within(comm[inside])
    followee[~inside] = sampler.anywhere(int((~inside).sum()))
    to_celebrity = u.passive[follower] & (rng.random(k) < 0.5)  # passive audiences gather on big accounts
    followee[to_celebrity] = sampler.celebrity(int(to_celebrity.sum()))
    to_bot = u.fake[follower] & (rng.random(k) < 0.7)
    followee[to_bot] = sampler.bot_hub(int(to_bot.sum()))
    keep = follower != followee
    key = np.unique(follower[keep] * cfg.users + followee[keep])
    follower, followee = key // cfg.users, key % cfg.users

    e = len(follower)
    tie = rng.gamma(2.0, 0.5, size=e)  # hidden tie strength, mean 1
    match = (u.topic[follower] * u.topic[followee]).sum(1) / np.sqrt(
        (u.topic[follower] ** 2).sum(1) * (u.topic[followee] ** 2).sum(1))
    same = (u.community[follower] == u.community[followee]) | (u.second[follower] == u.community[followee]) | (
        (u.second[followee] >= 0) & (u.second[followee] == u.community[follower]))
    affinity = np.where(same, 1.0, 0.5)
    topic_factor = 0.25 + 0.75 * match
    # unscaled: ``generate`` calibrates one global factor once every edge is drawn
    p = u.persuasiveness[followee] * u.receptivity[follower] * topic_factor * affinity * tie
    freq = rng.gamma(3.0, tie * (0.3 + u.receptivity[follower]) / 3.0)
    return follower, followee, freq.astype(np.float32), p.astype(np.float32)


def _calibrate(src, dst, p, receptivity, n: int, branching: float) -> float:
    """The factor that makes an activated user's expected number of activations ``branching`` on average.

    Users are weighted by how they get activated (receptivity), not uniformly: most cascades travel
    through receptive users.
    """
    children = np.bincount(src, weights=p, minlength=n)
    realized = float((receptivity * children).sum() / max(receptivity.sum(), 1e-12))
    return branching / max(realized, 1e-12)


def _posting_counts(cfg: GeneratorConfig, u: _Users, rng: np.random.Generator) -> np.ndarray:
    """Posts per user over the history: Poisson around a heavy-tailed (lognormal, mean 1) personal rate, capped.

    Shapes: -> [N] int64."""
    sigma = cfg.posting_sigma
    rate = cfg.posts_per_user * rng.lognormal(-0.5 * sigma ** 2, sigma, size=cfg.users)
    rate[u.bot] *= 3.0      # spam accounts post a lot and persuade nobody
    rate[u.passive] *= 0.3
    return np.minimum(rng.poisson(rate), cfg.max_posts_per_user).astype(np.int64)


def _write_posts(w: DatasetWriter, cfg: GeneratorConfig, graph: ICGraph, u: _Users, posts, first_post, post_t,
                 topic_emb, followers, rate_sum, post_count, lo: int, hi: int, rng: np.random.Generator) -> None:
    """Content, created and shared rows of the posts of users [lo, hi): one IC cascade per post.

    A cascade's round r activations reshare r rounds after the post; a round takes an exponential time whose
    mean is a per-post lognormal scale around ``reshare_delay_s`` (some posts travel in minutes, some over days).
    Reshares at or after the history's end are not observed, as in any export.
    """
    start, end = cfg.history["start"], cfg.history["end"]
    p0, p1 = int(first_post[lo]), int(first_post[hi - 1] + posts[hi - 1])
    creator = np.repeat(np.arange(lo, hi), posts[lo:hi])
    k = len(creator)
    c_ids = np.arange(p0, p1, dtype=np.int64) + CONTENT_ID_OFFSET
    c_time = start + post_t[p0:p1].astype(np.int64)
    # a vectorized categorical draw per post from its creator's topic profile
    cdf = np.cumsum(u.topic[creator], axis=1)
    c_topic = np.minimum((cdf < rng.random((k, 1)) * cdf[:, -1:]).sum(1), S.NUM_TOPICS - 1).astype(np.int32)
    text_emb = topic_emb[c_topic] + rng.normal(0, 0.7, size=(k, S.TEXT_EMB_DIM)).astype(np.float32)
    w.write("created", pa.table({"src": _user_ids(creator), "dst": c_ids, "timestamp": c_time}))
    w.write("content", pa.table({
        "id": c_ids, "type": rng.choice(S.NUM_CONTENT_TYPES, size=k, p=[0.6, 0.25, 0.15]).astype(np.int8),
        "topic": c_topic, "timestamp": c_time,
        "text_emb": pa.FixedSizeListArray.from_arrays(text_emb.reshape(-1), S.TEXT_EMB_DIM).cast(S.CONTENT.column(
            "text_emb").type)}))

    cas, node, rnd = simulate_cascades(graph, creator, rng)
    sharer = rnd > 0
    cas, node, rnd = cas[sharer], node[sharer], rnd[sharer]
    scale = cfg.reshare_delay_s * rng.lognormal(-0.5, 1.0, size=k)
    share_t = c_time[cas] + np.ceil(rng.gamma(rnd, scale[cas])).astype(np.int64)
    seen = share_t < end
    cas, node, share_t = cas[seen], node[seen], share_t[seen]
    w.write("shared", pa.table({"src": _user_ids(node), "dst": c_ids[cas], "timestamp": share_t}))
    add_engagement(rate_sum, post_count, creator, np.bincount(cas, minlength=k), followers)
    log.info("history: users %d-%d, %d posts, %d reshares", lo, hi, k, len(cas))


def _write_replies(w: DatasetWriter, cfg: GeneratorConfig, posts, first_post, post_t, following, follower_of,
                   followee_of, rng: np.random.Generator) -> None:
    """reply_to rows: a post answers an earlier post of someone its author follows."""
    n = cfg.users
    fptr = np.searchsorted(follower_of, np.arange(n + 1))
    total = int(posts.sum())
    step_posts = cfg.chunk_users * 10
    for p0 in range(0, total, step_posts):
        p1 = min(total, p0 + step_posts)
        src_c = p0 + np.flatnonzero(rng.random(p1 - p0) < cfg.reply_fraction)
        author = np.searchsorted(first_post, src_c, side="right") - 1
        src_c, author = src_c[following[author] > 0], author[following[author] > 0]
        tgt_user = followee_of[fptr[author] + rng.integers(0, following[author])].astype(np.int64)
        ok = posts[tgt_user] > 0
        src_c, tgt_user = src_c[ok], tgt_user[ok]
        tgt_c = first_post[tgt_user] + rng.integers(0, posts[tgt_user])
        ok = (tgt_c != src_c) & (post_t[tgt_c] < post_t[src_c])
        w.write("reply_to", pa.table({"src": src_c[ok] + CONTENT_ID_OFFSET, "dst": tgt_c[ok] + CONTENT_ID_OFFSET}))


def generate(out: str, cfg: GeneratorConfig | None = None, options: StorageOptions | None = None,
             progress=None) -> dict:
    """Write a synthetic dataset to ``out`` (any fsspec URL); returns the manifest as a dict.

    ``progress`` is an optional callable(stage: str) used by the CLI for progress bars.
    """
    cfg = cfg or GeneratorConfig()
    rng = np.random.default_rng(cfg.seed)
    step = progress or (lambda stage: None)
    t0 = time.perf_counter()
    n = cfg.users
    w = DatasetWriter(out, options)

    step("users")
    u = _draw_users(cfg, rng)
    sampler = _FolloweeSampler(u, rng)

    step("follows")
    followers = np.zeros(n, dtype=np.int64)
    following = np.zeros(n, dtype=np.int64)
    ic_src, ic_dst, ic_p, fol, fee = [], [], [], [], []
    for lo in range(0, n, cfg.chunk_users):
        hi = min(n, lo + cfg.chunk_users)
        f, g, freq, p = _follow_chunk(cfg, u, sampler, lo, hi, rng)
        add_counts(followers, g)
        add_counts(following, f)
        since = cfg.history["end"] - 1 - rng.integers(0, cfg.follow_span_days * 86400, size=len(f))
        w.write("follows", pa.table({"src": _user_ids(f), "dst": _user_ids(g), "since_date": since,
                                     "interaction_freq": freq}))
        live = p > 0
        ic_src.append(g[live].astype(np.int32))  # influence flows followee -> follower
        ic_dst.append(f[live].astype(np.int32))
        ic_p.append(p[live])
        fol.append(f.astype(np.int32))
        fee.append(g.astype(np.int32))
        log.info("follows: users %d-%d, %d edges", lo, hi, len(f))
    src, dst, p = np.concatenate(ic_src), np.concatenate(ic_dst), np.concatenate(ic_p)
    del ic_src, ic_dst, ic_p
    scale = _calibrate(src, dst, p, u.receptivity, n, cfg.branching)
    np.minimum(p * scale, cfg.max_p, out=p)
    for lo in range(0, len(p), cfg.chunk_users * 20):
        sl = slice(lo, lo + cfg.chunk_users * 20)
        w.write("_truth/ic_edges", pa.table({"src": _user_ids(src[sl]), "dst": _user_ids(dst[sl]), "p": p[sl]}))
    graph = ICGraph(src, dst, p, n)
    del src, dst, p
    follower_of, followee_of = np.concatenate(fol), np.concatenate(fee)  # sorted by follower (chunks in order)
    del fol, fee

    step("content")
    hist = cfg.history
    span = hist["end"] - hist["start"]
    posts = _posting_counts(cfg, u, rng)
    first_post = np.concatenate([[0], np.cumsum(posts)[:-1]])
    # post times as int32 offsets into the history: the one per-post array the whole run keeps (replies look up
    # their target's time)
    post_t = rng.integers(0, span, size=int(posts.sum())).astype(np.int32)
    topic_emb = rng.normal(0, 1, size=(S.NUM_TOPICS, S.TEXT_EMB_DIM)).astype(np.float32)
    rate_sum, post_count = np.zeros(n), np.zeros(n, dtype=np.int64)

    step("history")
    for lo in range(0, n, cfg.chunk_users):
        hi = min(n, lo + cfg.chunk_users)
        _write_posts(w, cfg, graph, u, posts, first_post, post_t, topic_emb, followers, rate_sum, post_count,
                     lo, hi, rng)
    avg_engagement = avg_engagement_of(rate_sum, post_count)
    _write_replies(w, cfg, posts, first_post, post_t, following, follower_of, followee_of, rng)
    del post_t

    step("communities")
    comm_members = np.concatenate([u.community, u.second[u.second >= 0]])
    member_user = np.concatenate([np.arange(n), np.flatnonzero(u.second >= 0)])
    C = len(u.focus)
    size = np.bincount(comm_members, minlength=C)
    w.write("member_of", pa.table({"src": _user_ids(member_user), "dst": comm_members + COMMUNITY_ID_OFFSET}))
    same = u.community[follower_of] == u.community[followee_of]
    internal = np.bincount(u.community[follower_of[same]], minlength=C)
    density = internal / np.maximum(size * (size - 1), 1)
    w.write("community", pa.table({"id": np.arange(C, dtype=np.int64) + COMMUNITY_ID_OFFSET, "size": size,
                                   "topic_focus": u.focus.astype(np.int32), "density": density.astype(np.float32)}))

    for lo in range(0, n, cfg.chunk_users):
        hi = min(n, lo + cfg.chunk_users)
        w.write("user", pa.table({
            "id": _user_ids(np.arange(lo, hi)), "follower_count": followers[lo:hi],
            "avg_engagement": avg_engagement[lo:hi],
            "topic_vector": pa.FixedSizeListArray.from_arrays(u.topic[lo:hi].reshape(-1), S.NUM_TOPICS).cast(
                S.USER.column("topic_vector").type)}))
    step("labels")
    labeled = np.sort(rng.choice(n, size=min(n, cfg.max_labeled), replace=False))
    reach = simulate_reach(graph, labeled, cfg.label_sims, rng)
    replicate = simulate_reach(graph, labeled, cfg.label_sims, rng)
    split = assign_splits(rng.random(len(labeled)), cfg.val_fraction, cfg.test_fraction)
    w.write("labels", pa.table({"user_id": _user_ids(labeled), "cascade_reach": reach.astype(np.float32),
                                "cascade_reach_replicate": replicate.astype(np.float32), "split": split}))
    expected = np.full(n, np.nan, dtype=np.float32)
    expected[labeled] = reach
    for lo in range(0, n, cfg.chunk_users):
        hi = min(n, lo + cfg.chunk_users)
        w.write("_truth/users", pa.table({
            "id": _user_ids(np.arange(lo, hi)), "persuasiveness": u.persuasiveness[lo:hi].astype(np.float32),
            "receptivity": u.receptivity[lo:hi].astype(np.float32), "is_bot": u.bot[lo:hi],
            "community": u.community[lo:hi] + COMMUNITY_ID_OFFSET, "is_bridge": u.second[lo:hi] >= 0,
            "expected_reach": pa.array(expected[lo:hi], mask=np.isnan(expected[lo:hi]))}))
    manifest = w.close(label_simulations=cfg.label_sims, generator={"name": "ripple.synthetic/2", **asdict(cfg)},
                       history=cfg.history)
    log.info("generated %d users, %d follows in %.1fs", n, manifest.rows["follows"], time.perf_counter() - t0)
    return asdict(manifest)
