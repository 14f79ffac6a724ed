"""``ripple labels``: cut a platform's post history at a time T into a past-only dataset labelled by its future.

A platform has no cascade simulator: its supervision is its own history. A post is a ``created`` edge; its cascade
is the ``shared`` edges into it. Given a cutoff T and a horizon H:

- **the past** (graph and features) is what was known before T: follows with ``since_date < T``; content,
  ``created`` and ``shared`` with timestamps ``< T``; ``reply_to`` between past posts. ``user.follower_count`` and
  ``user.avg_engagement`` are recomputed from that past (``RECOMPUTED``); so is ``follows.interaction_freq`` of
  an interaction graph (a dataset with an ``interactions`` table, ``ripple import``): the count of the pair's
  events before T, and only those events are kept; every other column is taken as given (``AS_GIVEN``);
- **the future** (labels): a user with at least K posts created in ``[T, T + H)`` gets ``cascade_reach`` = the mean
  over those posts of 1 + the distinct users (the author excluded) who reshared the post within H of its creation;
- **reliability**: each labelled user's window posts, in time order, go alternately to halves A and B.
  ``cascade_reach_replicate`` is the mean over half B (null for a user with one window post). The split-half
  reliability is the Spearman correlation of the A and B means over users with >= 2 window posts, stepped up to
  the full number of posts with the Spearman-Brown formula 2r / (1 + r); the manifest records both, overall and
  per split.

**Many cut times** (``--cutoffs T1,T2,...`` or ``--every D``): a training table of (user, time, label) rows, one
set per cut, each labelled from its own window [t, t+H) as above. The past is cut at the last cut; every edge
keeps its time, and training shows each row only what existed before its own time (the sampler hides later edges,
and the activity features are recomputed as of the row's time: ``ripple.data.timeline``). The split is by time
(``temporal_roles``): the last cut is the test window, the one before it validation, the rest training.

Nothing is written until every check has passed (exit 2 and no output on bad input). Tables are streamed in
batches of ``chunk_rows``; what is held is per user (ids and counters), per past post (id, creator, reshares), per
window post and per distinct window reshare: never a whole edge table. ``manifest.json`` is written last.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from scipy import stats

from ripple.data import schema as S
from ripple.data.dataset import DATASET_MANIFEST, DatasetWriter
from ripple.data.history import add_engagement, assign_splits, avg_engagement, iso
from ripple.data.ids import add_counts, is_id_range, lookup
from ripple.data.storage import StorageOptions, Store, iter_table_batches, list_parts, redact_url
from ripple.data.validate import require_valid

log = logging.getLogger(__name__)

#: user columns recomputed from the past; the rest of every table is taken as the platform gives it
RECOMPUTED = {"user": ["follower_count", "avg_engagement"]}
AS_GIVEN = {"user": ["topic_vector"], "follows": ["interaction_freq"], "content": ["type", "topic", "text_emb"],
            "community": ["size", "topic_focus", "density"], "member_of": ["(all rows)"], "user_names": ["(all rows)"]}
RELIABILITY_METHOD = ("split-half: window posts of each user in time order alternate between halves A and B; "
                      "Spearman(mean A, mean B) over users with >= 2 window posts, stepped up with Spearman-Brown "
                      "2r/(1+r); cascade_reach_replicate = mean of half B (null with one window post)")


@dataclass(frozen=True)
class LabelSpec:
    """One cut (``cutoff``: a random user split) or a training table at many (``cutoffs``: a temporal split, the
    past cut at the last one, which is ``cutoff``; see ``temporal_roles``)."""

    cutoff: int          # T, epoch seconds: the past ends here
    horizon: int         # H, seconds
    min_posts: int = 1   # K
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    cutoffs: tuple[int, ...] = ()  # many cuts, ascending, the last == cutoff
    every: int = 0  # many cuts every this many seconds, from the data's end (``every_cutoffs``), once it is read

    @classmethod
    def many(cls, cutoffs, horizon: int, **kw) -> "LabelSpec":
        cuts = tuple(sorted(set(int(c) for c in cutoffs)))
        if len(cuts) < 3:
            raise ValueError(f"--cutoffs needs at least 3 distinct times (train, val, test), got "
                             f"{', '.join(iso(c) for c in cuts) or 'none'}; pass one --cutoff for a single window "
                             "with a random user split")
        return cls(cutoff=cuts[-1], horizon=horizon, cutoffs=cuts, **kw)

    @classmethod
    def every_(cls, every: int, horizon: int, **kw) -> "LabelSpec":
        """Cut times every ``every`` seconds, placed on the data's history by ``derive_labels`` once the tables
        have been validated (``every_cutoffs``)."""
        if every <= 0:
            raise ValueError(f"--every must be > 0, got {every} s; pass e.g. --every 7d")
        return cls(cutoff=0, horizon=horizon, every=every, **kw)

    @property
    def cuts(self) -> tuple[int, ...]:
        return self.cutoffs or (self.cutoff,)

    def __post_init__(self):
        if self.horizon <= 0:
            raise ValueError(f"--horizon must be > 0, got {self.horizon} s: the window [T, T+H) would be empty; "
                             "pass e.g. --horizon 14d")
        if self.min_posts < 1:
            raise ValueError(f"--min-posts must be >= 1, got {self.min_posts}: a label is a mean over a user's "
                             "window posts")


def temporal_roles(cutoffs: tuple[int, ...], horizon: int) -> dict[int, str]:
    """The split of each cut time: ``test`` = the last cut T_test; ``val`` = the latest cut T_val whose window
    [T_val, T_val+H) ends by T_test; ``train`` = every cut whose window ends by T_val. A model trained on the train
    rows has seen no label from the validation or test windows, and is judged on the next window, as a platform
    that retrains weekly would use it. A cut between (its window overlaps val's) is refused, not dropped."""
    H, T_test = horizon, cutoffs[-1]
    val = [c for c in cutoffs if c + H <= T_test]
    if not val:
        raise ValueError(f"--cutoffs: no cut's window [T, T+H) ends by the test cut {iso(T_test)} (H = {H} s); the "
                         f"validation cut must be <= {iso(T_test - H)}")
    T_val = val[-1]
    roles = {T_test: "test", T_val: "val"}
    for c in cutoffs:
        if c in roles:
            continue
        if c + H > T_val:
            raise ValueError(f"--cutoffs: the cut {iso(c)} is a training cut, but its window ends at {iso(c + H)}, "
                             f"after the validation cut {iso(T_val)}: its labels would overlap validation's. Drop it "
                             f"or move it to <= {iso(T_val - H)}")
        roles[c] = "train"
    if "train" not in roles.values():
        raise ValueError(f"--cutoffs: no training cut: a training cut's window must end by the validation cut "
                         f"{iso(T_val)}, so at least one cut <= {iso(T_val - H)} is needed")
    return dict(sorted(roles.items()))


#: the most cut times one training table takes (each is a pass over its window and a snapshot in training)
MAX_CUTS = 1000


def every_cutoffs(start: int, end: int, horizon: int, every: int) -> tuple[int, ...]:
    """``--every D``: the test cut as late as the history allows (T_test = end - 2H, so its window's posts have
    H to be reshared), validation one horizon before (T_val = T_test - H), then training cuts every D from
    T_val - H back to the first that still has H of past behind it."""
    if every <= 0:
        raise ValueError(f"--every must be > 0, got {every} s; pass e.g. --every 7d")
    if horizon <= 0:
        raise ValueError(f"--horizon must be > 0, got {horizon} s; pass e.g. --horizon 14d")
    T_test = end - 2 * horizon
    if (T_test - 2 * horizon - start) // every + 3 > MAX_CUTS:
        raise ValueError(f"--every {every} s over the history [{iso(start)}, {iso(end)}) makes more than {MAX_CUTS} "
                         "cut times; pass a longer --every")
    cuts = [T_test, T_test - horizon]
    c = T_test - 2 * horizon
    while c >= start + horizon:
        cuts.append(c)
        c -= every
    if len(cuts) < 3:
        raise ValueError(f"--every: the history [{iso(start)}, {iso(end)}) is too short for a training, a validation "
                         f"and a test window of H = {horizon} s (5H of history are needed); shorten --horizon")
    return tuple(sorted(cuts))


def _ids(store: Store, table: str, column: str, chunk_rows: int) -> np.ndarray:
    parts = [b.column(0).to_numpy() for b in iter_table_batches(store, table, [column], chunk_rows)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _write(w: DatasetWriter, name: str, table: pa.Table) -> None:
    """Write a non-empty filtered batch: which input batches hold no past rows must not change the output's
    files (``DatasetWriter.close`` gives a table with no rows at all its one empty part)."""
    if table.num_rows:
        w.write(name, table)


def _cat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


class _Index:
    """Positions of ids in a sorted id array (a range maps by subtraction)."""

    def __init__(self, sorted_ids: np.ndarray):
        self.ids, self.range = sorted_ids, is_id_range(sorted_ids)

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, present) of ``values``. Shapes: [K] -> ([K], [K] bool)."""
        pos, absent = lookup(self.ids, values, self.range)
        return pos, ~absent


def _time_range(store: Store, manifest: dict | None, chunk_rows: int) -> tuple[int, int, str]:
    """The history's [start, end): the manifest's ``history`` when it has one, else the created/shared timestamps'
    span (end = last timestamp + 1)."""
    if manifest and isinstance(manifest.get("history"), dict):
        h = manifest["history"]
        return int(h["start"]), int(h["end"]), "manifest.json history"
    lo, hi = None, None
    for table in ("created", "shared"):
        for b in iter_table_batches(store, table, ["timestamp"], chunk_rows):
            ts = b.column(0).to_numpy()
            if len(ts):
                lo = int(ts.min()) if lo is None else min(lo, int(ts.min()))
                hi = int(ts.max()) if hi is None else max(hi, int(ts.max()))
    if lo is None:
        raise ValueError("created.timestamp: the created table has no rows, so there is no post history to cut; "
                         "export the platform's posts (created: src user, dst content, timestamp)")
    return lo, hi + 1, "created/shared.timestamp"


def history_range(data: str, options: StorageOptions | None = None, chunk_rows: int = 1 << 20) -> tuple[int, int]:
    """The history's [start, end) (``_time_range``) of the dataset at ``data``."""
    src = Store(data, options)
    manifest = src.read_json(DATASET_MANIFEST) if src.exists(DATASET_MANIFEST) else None
    return _time_range(src, manifest, chunk_rows)[:2]


def derive_labels(data: str, out: str, spec: LabelSpec, options: StorageOptions | None = None,
                  chunk_rows: int = 1 << 20) -> dict:
    """Write the past-only dataset with future labels to ``out``; returns its manifest as a dict."""
    t0 = time.perf_counter()
    require_valid(data, options, history_source=True)  # nulls, types, dangling ids: named per table and column
    src = Store(data, options)
    manifest = src.read_json(DATASET_MANIFEST) if src.exists(DATASET_MANIFEST) else None
    H = spec.horizon
    start, end, where = _time_range(src, manifest, chunk_rows)
    if spec.every:
        cuts = every_cutoffs(start, end, spec.horizon, spec.every)
        spec = dataclasses.replace(spec, cutoff=cuts[-1], cutoffs=cuts, every=0)
    T = spec.cutoff
    for c in spec.cuts:
        if not start < c < end:
            raise ValueError(f"created.timestamp: --cutoff {iso(c)} ({c}) is outside the data's time range "
                             f"[{iso(start)}, {iso(end)}) ({where}); pick a cutoff inside it")
        if c + 2 * H > end:
            raise ValueError(
                f"created.timestamp / shared.timestamp: the window [{iso(c)}, {iso(c + H)}) plus the horizon H after "
                f"its last post needs history until {iso(c + 2 * H)}, but the data ends at {iso(end)} ({where}); "
                f"reshares of the window's posts would be cut off. Pick a cutoff <= {iso(end - 2 * H)} or a shorter "
                "--horizon")
    roles = temporal_roles(spec.cuts, H) if spec.cutoffs else None
    users = _Index(_ids(src, "user", "id", chunk_rows))
    n = len(users.ids)

    # -- checks that need the windows' posts; nothing is written before they pass
    windows = [_Window(c, H) for c in spec.cuts]
    for b in iter_table_batches(src, "created", ["src", "dst", "timestamp"], chunk_rows):
        ts = b.column(2).to_numpy()
        for win in windows:
            win.add_posts(b, ts, users)
    for win in windows:
        win.close(spec.min_posts, n)
        if roles is None:
            win.split = assign_splits(np.random.default_rng(spec.split_seed).random(len(win.labelled)),
                                      spec.val_fraction, spec.test_fraction)
            missing = [s for s in ("train", "test") if not (win.split == s).any()]
            if missing:
                raise ValueError(f"labels.split: {len(win.labelled)} labelled user(s) leave no "
                                 f"{' and no '.join(missing)} user; lengthen --horizon, lower --min-posts or change "
                                 "--split-seed")
        else:
            win.split = np.full(len(win.labelled), roles[win.cut])

    # -- the past
    w = DatasetWriter(out, options)
    recount = _PairCounts(src, users, T, chunk_rows) if list_parts(src, "interactions") else None
    followers = np.zeros(n, np.int64)
    for b in iter_table_batches(src, "follows", None, chunk_rows):
        t = pa.Table.from_batches([b])
        keep = t["since_date"].to_numpy() < T
        past = t.filter(pa.array(keep))
        dst = users.find(past["dst"].to_numpy())[0]
        add_counts(followers, dst)
        if recount is not None:  # an interaction graph: its strength as of T, not as of the export
            freq = recount.of(users.find(past["src"].to_numpy())[0], dst)
            past = past.set_column(past.schema.get_field_index("interaction_freq"), "interaction_freq", pa.array(freq))
        _write(w, "follows", past)
    if recount is not None:
        for b in iter_table_batches(src, "interactions", None, chunk_rows):
            t = pa.Table.from_batches([b])
            _write(w, "interactions", t.filter(pa.array(t["timestamp"].to_numpy() < T)))
    past_content = []
    for b in iter_table_batches(src, "content", None, chunk_rows):
        t = pa.Table.from_batches([b])
        past = t.filter(pa.array(t["timestamp"].to_numpy() < T))
        past_content.append(past["id"].to_numpy())
        _write(w, "content", past)
    content = _Index(np.sort(_cat(past_content)))
    del past_content
    post_id, post_user, dropped = [], [], 0
    for b in iter_table_batches(src, "created", None, chunk_rows):
        t = pa.Table.from_batches([b])
        keep = (t["timestamp"].to_numpy() < T)
        known = content.find(t["dst"].to_numpy())[1]
        dropped += int((keep & ~known).sum())
        past = t.filter(pa.array(keep & known))
        post_id.append(past["dst"].to_numpy())
        post_user.append(users.find(past["src"].to_numpy())[0])
        _write(w, "created", past)
    post_id, post_user = _cat(post_id), _cat(post_user)
    order = np.argsort(post_id, kind="stable")
    posts = _Index(post_id[order])
    post_user = post_user[order]
    del post_id
    reshares = np.zeros(len(posts.ids), np.int64)
    for b in iter_table_batches(src, "shared", None, chunk_rows):
        t = pa.Table.from_batches([b])
        ts, dst = t["timestamp"].to_numpy(), t["dst"].to_numpy()
        rows = np.flatnonzero(ts < T)
        known = content.find(dst[rows])[1]
        dropped += int((~known).sum())
        past = t.take(rows[known])
        pos, found = posts.find(past["dst"].to_numpy())
        add_counts(reshares, pos[found])
        _write(w, "shared", past)
        for win in windows:
            win.add_reshares(t, ts, dst, users, n)
    for b in iter_table_batches(src, "reply_to", None, chunk_rows):
        t = pa.Table.from_batches([b])
        keep = content.find(t["src"].to_numpy())[1] & content.find(t["dst"].to_numpy())[1]
        _write(w, "reply_to", t.filter(pa.array(keep)))
    if dropped:
        log.warning("dropped %d created/shared rows before the cutoff whose content is not in the past content "
                    "table (content.timestamp >= cutoff or missing): the tables disagree on a post's time", dropped)
    for table in ("member_of", "community", "user_names"):
        for b in iter_table_batches(src, table, None, chunk_rows):
            _write(w, table, pa.Table.from_batches([b]))
    rate_sum, post_count = np.zeros(n), np.zeros(n, np.int64)
    add_engagement(rate_sum, post_count, post_user, reshares, followers)
    engagement = avg_engagement(rate_sum, post_count)
    for b in iter_table_batches(src, "user", None, chunk_rows):
        t = pa.Table.from_batches([b])
        pos = users.find(t["id"].to_numpy())[0]
        t = t.set_column(t.schema.get_field_index("follower_count"), "follower_count", pa.array(followers[pos]))
        t = t.set_column(t.schema.get_field_index("avg_engagement"), "avg_engagement", pa.array(engagement[pos]))
        _write(w, "user", t)

    # -- the future
    tables, halves = [], []
    for win in windows:
        table, half = win.labels(n, users.ids, stamp=roles is not None)
        tables.append(table)
        halves.append(half)
    _write(w, "labels", pa.concat_tables(tables))
    reliability = _reliability(*(np.concatenate(x) for x in zip(*halves)))
    for table in ("_truth/users", "_truth/ic_edges"):  # evaluation oracles only; no timestamps in them
        if list_parts(src, table):
            for b in iter_table_batches(src, table, None, chunk_rows):
                _write(w, table, pa.Table.from_batches([b]))

    recomputed, as_given = dict(RECOMPUTED), dict(AS_GIVEN)
    if recount is not None:  # interaction_freq counted from the interactions before T
        recomputed["follows"] = ["interaction_freq"]
        del as_given["follows"]
    info = {"source": redact_url(data), "cutoff": T, "cutoff_iso": iso(T), "horizon_s": H, "min_posts": spec.min_posts,
            "split_seed": spec.split_seed, "window": [T, T + H],
            "window_posts": sum(len(win.post_id) for win in windows),
            "window_reshares": sum(win.reshare_count for win in windows),
            "labelled_users": sum(len(win.labelled) for win in windows),
            "reach": "mean over the user's window posts of 1 + distinct resharers (author excluded) within H of "
                     "the post", "reliability_method": RELIABILITY_METHOD, "reliability": reliability,
            "recomputed": recomputed, "as_given": as_given,
            "split": "temporal" if roles else "random users",
            "seconds": round(time.perf_counter() - t0, 3)}
    if roles:  # a training table at many cut times: each cut's role, rows and reliability
        info["cutoffs"] = [{"cutoff": win.cut, "cutoff_iso": iso(win.cut), "split": roles[win.cut],
                            "window_posts": len(win.post_id), "labelled_users": len(win.labelled),
                            "reliability": _reliability(*win.half)["all"]} for win in windows]
        info["features_as_of"] = ("each row's cut time: training reads the whole past graph with its edge times and "
                                  "recomputes the activity features of the graph before the row's time "
                                  "(ripple.data.timeline.snapshot)")
    m = w.close(generator=(manifest or {}).get("generator"), history={"start": start, "end": end}, labels=info,
                source=(manifest or {}).get("source"))
    log.info("labels: %d rows at %d cut time(s) from %d window posts; past tables %s; %.1fs",
             info["labelled_users"], len(windows), info["window_posts"], m.rows, time.perf_counter() - t0)
    return asdict(m)


class _PairCounts:
    """How many ``interactions`` rows each (src, dst) pair of users had before T: what ``follows.interaction_freq``
    of an interaction graph (``ripple import``) was as of T. Holds one key and count per distinct past pair."""

    def __init__(self, src: Store, users: _Index, T: int, chunk_rows: int):
        self.n = max(len(users.ids), 1)
        keys = []
        for b in iter_table_batches(src, "interactions", ["src", "dst", "timestamp"], chunk_rows):
            past = b.column(2).to_numpy() < T
            s = users.find(b.column(0).to_numpy()[past])[0].astype(np.int64)
            d = users.find(b.column(1).to_numpy()[past])[0].astype(np.int64)
            keys.append(s * self.n + d)
        self.keys, self.counts = np.unique(_cat(keys), return_counts=True)

    def of(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Shapes: s, d [F] dense user indices -> [F] float32 counts (0 for a pair without a past event)."""
        if len(self.keys) == 0:
            return np.zeros(len(s), np.float32)
        key = s.astype(np.int64) * self.n + d.astype(np.int64)
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return np.where(self.keys[pos] == key, self.counts[pos], 0).astype(np.float32)


def split_half(a: np.ndarray, b: np.ndarray) -> dict:
    """Split-half reliability of per-user means. Shapes: a, b [U] half means of the users with >= 2 posts."""
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return {"users": int(len(a)), "half_spearman": None, "spearman_brown": None}
    r = float(stats.spearmanr(a, b).statistic)
    return {"users": int(len(a)), "half_spearman": r, "spearman_brown": 2 * r / (1 + r) if r > -1 else None}


class _Window:
    """One cut time's label window [cut, cut + H): its posts, the distinct users who reshared each within H of it,
    and the labels of the users with >= K of them."""

    def __init__(self, cut: int, horizon: int):
        self.cut, self.H = cut, horizon
        self._id, self._user, self._t, self._keys = [], [], [], []
        self.split: np.ndarray | None = None

    def add_posts(self, b: pa.RecordBatch, ts: np.ndarray, users: _Index) -> None:
        m = (ts >= self.cut) & (ts < self.cut + self.H)
        if m.any():
            self._id.append(b.column(1).to_numpy()[m])
            self._user.append(users.find(b.column(0).to_numpy()[m])[0])
            self._t.append(ts[m])

    def close(self, min_posts: int, n: int) -> None:
        """Order the window's posts and find the labelled users, or refuse naming the window."""
        if not self._id:
            raise ValueError(f"created.timestamp: no posts in the window [{iso(self.cut)}, {iso(self.cut + self.H)}), "
                             "so no user can be labelled; pick another --cutoff or a longer --horizon")
        post_id, user, t = (np.concatenate(x) for x in (self._id, self._user, self._t))
        order = np.argsort(post_id, kind="stable")
        self.post_id, self.user, self.t = post_id[order], user[order], t[order]
        self.posts = _Index(self.post_id)
        per_user = np.bincount(self.user, minlength=n)
        self.labelled = np.flatnonzero(per_user >= min_posts)
        if len(self.labelled) == 0:
            raise ValueError(f"created: no user created >= {min_posts} posts (--min-posts) in the window "
                             f"[{iso(self.cut)}, {iso(self.cut + self.H)}); the most any user created is "
                             f"{int(per_user.max())}: lower --min-posts or lengthen --horizon")

    def add_reshares(self, t: pa.Table, ts: np.ndarray, dst: np.ndarray, users: _Index, n: int) -> None:
        """The reshares of the window's posts within H of each post; only those rows pay the user lookup."""
        rows = np.flatnonzero(ts >= self.cut)
        pos, found = self.posts.find(dst[rows])
        rows, pos = rows[found], pos[found]
        within = (ts[rows] >= self.t[pos]) & (ts[rows] < self.t[pos] + self.H)
        rows, pos = rows[within], pos[within]
        who = users.find(t["src"].to_numpy()[rows])[0]
        other = who != self.user[pos]
        self._keys.append(np.unique(pos[other].astype(np.int64) * n + who[other]))

    def labels(self, n: int, user_ids: np.ndarray, stamp: bool) -> tuple[pa.Table, tuple]:
        """(the labels rows, the split-half halves of their users) ; ``stamp``: write the cut time on each row."""
        keys = np.unique(_cat(self._keys))
        self.reshare_count = len(keys)
        post_reach = 1.0 + np.bincount(keys // n, minlength=len(self.post_id))
        table, self.half = _labels(self.user, self.t, post_reach, self.labelled, self.split, n)
        table = table.set_column(0, "user_id", pa.array(user_ids[table["user_id"].to_numpy()]))
        time = pa.array(np.full(len(table), self.cut, np.int64)) if stamp else pa.nulls(len(table), pa.int64())
        return table.append_column("time", time), self.half


def _reliability(mean_a: np.ndarray, mean_b: np.ndarray, two: np.ndarray, split: np.ndarray) -> dict:
    """Split-half reliability over all rows and per split (rows with >= 2 window posts)."""
    out = {"all": split_half(mean_a[two], mean_b[two])}
    for s in S.SPLITS:
        m = two & (split == s)
        out[s] = split_half(mean_a[m], mean_b[m])
    return out


def _labels(win_user, win_t, post_reach, labelled, split, n) -> tuple[pa.Table, tuple]:
    """Per labelled user: mean reach of all window posts, of half B, and the halves behind the split-half
    reliability (``_reliability``).

    Shapes: win_user, win_t, post_reach [W] per window post; labelled [L] dense user index; split [L]."""
    is_lab = np.zeros(n, bool)
    is_lab[labelled] = True
    keep = is_lab[win_user]
    u, t, r = win_user[keep], win_t[keep], post_reach[keep]
    order = np.lexsort((t, u))
    u, r = u[order], r[order]
    first = np.searchsorted(u, u, side="left")
    half_b = (np.arange(len(u)) - first) % 2 == 1
    count = np.bincount(u, minlength=n)[labelled]
    total = np.bincount(u, weights=r, minlength=n)[labelled]
    count_b = np.bincount(u[half_b], minlength=n)[labelled]
    total_b = np.bincount(u[half_b], weights=r[half_b], minlength=n)[labelled]
    mean = total / count
    mean_b = np.where(count_b > 0, total_b / np.maximum(count_b, 1), np.nan)
    mean_a = (total - total_b) / (count - count_b)
    table = pa.table({"user_id": labelled.astype(np.int64), "cascade_reach": mean.astype(np.float32),
                      "cascade_reach_replicate": pa.array(mean_b.astype(np.float32), mask=np.isnan(mean_b)),
                      "split": split})
    return table, (mean_a, mean_b, count >= 2, split)
