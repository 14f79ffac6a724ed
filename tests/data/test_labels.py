"""``ripple labels``: a literal history cut at T (exact values), no leakage, and a generated history end to end."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.history import assign_splits, parse_duration, parse_time
from ripple.data.labels import LabelSpec, derive_labels
from ripple.data.storage import Store, table_to_parquet_bytes
from ripple.data.validate import validate_dataset

pytestmark = pytest.mark.timeout(120)

T, H = 1_000_000, 1_000
CONTENT = {  # id: (creator, created at)
    100: (10, 500), 101: (11, 900),                          # the past
    200: (10, T + 10), 201: (10, T + 500), 202: (11, T + 100),  # the window [T, T+H)
    300: (12, T + 1500),                                     # after the window
}
SHARED = [  # (user, post, time)
    (11, 100, 600), (12, 100, 700), (13, 101, 950),          # past reshares: engagement
    (11, 200, T + 20), (12, 200, T + 30), (11, 200, T + 40),  # c200: 11 twice counts once
    (10, 200, T + 50),                                       # the author resharing is not reach
    (13, 200, T + 10 + H),                                   # exactly H after the post: outside
    (12, 201, T + 600),                                      # c201: one resharer
    (14, 100, T + 5),                                        # a future reshare of a past post
    (10, 300, T + 1600), (13, 300, T + 2100),                # after the window; the data ends at T+2100
]
FOLLOWS = [(11, 10, 100), (12, 10, 200), (13, 10, T + 5), (10, 11, 300), (14, 12, 400), (15, 13, 50)]
USERS = [10, 11, 12, 13, 14, 15]


def history_tables(extra_content=None, extra_shared=()) -> dict[str, pa.Table]:
    content = {**CONTENT, **(extra_content or {})}
    shared = [*SHARED, *extra_shared]
    ids = sorted(content)
    cols = {
        "user": {"id": USERS, "follower_count": [99] * 6, "avg_engagement": [9.0] * 6,
                 "topic_vector": [[1.0 / S.NUM_TOPICS] * S.NUM_TOPICS] * 6},
        "content": {"id": ids, "type": [0] * len(ids), "topic": [1] * len(ids),
                    "timestamp": [content[c][1] for c in ids], "text_emb": [[0.5] * S.TEXT_EMB_DIM] * len(ids)},
        "community": {"id": [1], "size": [6], "topic_focus": [1], "density": [0.5]},
        "follows": {"src": [f for f, _, _ in FOLLOWS], "dst": [g for _, g, _ in FOLLOWS],
                    "since_date": [t for _, _, t in FOLLOWS], "interaction_freq": [1.0] * len(FOLLOWS)},
        "created": {"src": [content[c][0] for c in ids], "dst": ids, "timestamp": [content[c][1] for c in ids]},
        "shared": {"src": [u for u, _, _ in shared], "dst": [c for _, c, _ in shared],
                   "timestamp": [t for _, _, t in shared]},
        "member_of": {"src": USERS, "dst": [1] * 6},
        "reply_to": {"src": [101, 202], "dst": [100, 101]},  # the second reply is in the future
    }
    return {n: S.TABLES[n].from_pydict(c) for n, c in cols.items()}


def write_history(url: str, tables: dict[str, pa.Table]) -> str:
    """A platform's export as it comes: parquet parts, no labels table and no manifest."""
    store = Store(url)
    for name, t in tables.items():
        store.write_bytes(table_to_parquet_bytes(t), name, "part-00000.parquet")
    return url


def _seed_with_train_and_test(n: int) -> int:
    return next(s for s in range(100) if {"train", "test"} <= set(
        assign_splits(np.random.default_rng(s).random(n), 0.0, 0.5)))


@pytest.fixture
def cut(tmp_path):
    data = write_history(str(tmp_path / "data"), history_tables())
    spec = LabelSpec(T, H, split_seed=_seed_with_train_and_test(2), val_fraction=0.0, test_fraction=0.5)
    m = derive_labels(data, str(tmp_path / "out"), spec)
    return Dataset(str(tmp_path / "out")), m


def test_labels_are_the_windows_observed_reach(cut):
    ds, m = cut
    lab = ds.read("labels").to_pydict()
    by_user = dict(zip(lab["user_id"], zip(lab["cascade_reach"], lab["cascade_reach_replicate"])))
    # u10: c200 reached {11, 12} -> 3, c201 reached {12} -> 2; halves in time order: A = c200, B = c201
    # u11: c202 reached nobody -> 1; one window post, so no replicate
    assert by_user == {10: (2.5, 2.0), 11: (1.0, None)}
    info = m["labels"]
    assert (info["cutoff"], info["horizon_s"], info["min_posts"]) == (T, H, 1)
    assert info["window_posts"] == 3 and info["labelled_users"] == 2 and info["window_reshares"] == 3
    assert "Spearman-Brown" in info["reliability_method"]
    assert validate_dataset(ds.url).ok


def test_past_holds_only_what_was_known_before_the_cutoff(cut):
    ds, _ = cut
    assert sorted(ds.read("content")["id"].to_pylist()) == [100, 101]
    assert ds.read("created")["dst"].to_pylist() == [100, 101]
    assert sorted(zip(*ds.read("shared").to_pydict().values())) == sorted(
        (u, c, t) for u, c, t in SHARED if t < T)
    assert ds.read("reply_to").to_pydict() == {"src": [101], "dst": [100]}
    assert len(ds.read("follows")) == 5
    users = ds.read("user").to_pydict()
    followers = dict(zip(users["id"], users["follower_count"]))
    assert followers == {10: 2, 11: 1, 12: 1, 13: 1, 14: 0, 15: 0}  # u13 -> u10 is a future follow
    engagement = dict(zip(users["id"], users["avg_engagement"]))
    # c100: 2 past reshares / 2 past followers of u10; c101: 1 / 1; the future reshare of c100 does not count
    assert engagement == {10: 1.0, 11: 1.0, 12: 0.0, 13: 0.0, 14: 0.0, 15: 0.0}


def test_min_posts(tmp_path):
    data = write_history(str(tmp_path / "data"), history_tables())
    with pytest.raises(ValueError, match=r"no user created >= 3 posts .* the most any user created is 2"):
        derive_labels(data, str(tmp_path / "out"), LabelSpec(T, H, min_posts=3))
    assert not os.path.exists(tmp_path / "out")


def _no_timestamp_at_or_after(url: str, cutoff: int) -> None:
    ds = Dataset(url)
    for name, spec in S.TABLES.items():
        for col in ("timestamp", "since_date"):
            if col in spec.column_names and ds.has(name):
                values = ds.read(name, [col])[col].to_numpy()
                assert len(values) == 0 or values.max() < cutoff, f"{name}.{col} holds {values.max()} >= {cutoff}"


def test_planted_future_cascade_changes_labels_not_one_byte_of_the_past(tmp_path):
    """A post after T (by u13, who had no window post) with a huge cascade: OUT's labels change, nothing else."""
    spec = LabelSpec(T, H, split_seed=_seed_with_train_and_test(3), val_fraction=0.0, test_fraction=0.5)
    a = write_history(str(tmp_path / "a"), history_tables())
    planted = [(u, 999, T + 60 + u) for u in (10, 11, 12, 14, 15)]
    b = write_history(str(tmp_path / "b"), history_tables({999: (13, T + 50)}, planted))
    derive_labels(a, str(tmp_path / "out-a"), spec)
    derive_labels(b, str(tmp_path / "out-b"), spec)
    _no_timestamp_at_or_after(str(tmp_path / "out-b"), T)

    def files(root):
        out = {}
        for d, _, names in os.walk(root):
            for n in names:
                rel = os.path.relpath(os.path.join(d, n), root)
                if not rel.startswith("labels") and rel != "manifest.json":
                    with open(os.path.join(d, n), "rb") as f:  # a digest: a failure names the file
                        out[rel] = hashlib.sha256(f.read()).hexdigest()
        return out

    assert files(tmp_path / "out-a") == files(tmp_path / "out-b")
    la, lb = (Dataset(str(tmp_path / f"out-{x}")).read("labels").to_pydict() for x in "ab")
    assert 13 not in la["user_id"]
    assert dict(zip(lb["user_id"], lb["cascade_reach"]))[13] == 6.0  # 1 + five resharers


def test_generated_history_end_to_end(tmp_path):
    """A generated history: the manifest's range, since_dates spread over time, expected_reach = the simulated
    label, heavy-tailed posting; cut at mid-history it gives a valid, leak-free, labelled dataset."""
    cfg = GeneratorConfig(users=1500, seed=2, label_sims=30)
    m = generate(str(tmp_path / "g"), cfg)
    start, end = m["history"]["start"], m["history"]["end"]
    g = Dataset(str(tmp_path / "g"))
    since = g.read("follows")["since_date"].to_numpy()
    assert since.max() < end and (since >= start).mean() > 0.05  # the graph grows during the history
    created = g.read("created")
    ts = created["timestamp"].to_numpy()
    assert ts.min() >= start and ts.max() < end
    posts = np.bincount(np.unique(created["src"].to_numpy(), return_inverse=True)[1])
    assert posts.max() > 5 * posts.mean()  # heavy-tailed posting rates
    shared = g.read("shared")
    post_time = dict(zip(created["dst"].to_pylist(), ts.tolist()))
    st = shared["timestamp"].to_numpy()
    assert (st > np.array([post_time[c] for c in shared["dst"].to_pylist()])).all() and st.max() < end
    truth = dict(zip(*g.read("_truth/users", ["id", "expected_reach"]).to_pydict().values()))
    lab = g.read("labels")
    np.testing.assert_allclose([truth[u] for u in lab["user_id"].to_pylist()], lab["cascade_reach"].to_numpy())

    horizon = (end - start) // 4
    out = str(tmp_path / "out")
    mo = derive_labels(str(tmp_path / "g"), out, LabelSpec(end - 2 * horizon, horizon, min_posts=1))
    assert validate_dataset(out).ok
    _no_timestamp_at_or_after(out, end - 2 * horizon)
    info = mo["labels"]
    assert info["labelled_users"] > 300 and 0.2 < info["reliability"]["all"]["spearman_brown"] < 1
    assert mo["rows"]["follows"] < m["rows"]["follows"] and mo["rows"]["_truth/users"] == cfg.users
    lab = Dataset(out).read("labels")
    assert (lab["cascade_reach"].to_numpy() >= 1).all()
    assert len(pq.read_schema(os.path.join(out, "user", "part-00000.parquet")).names) == 4


@pytest.mark.parametrize("text, seconds", [("14d", 14 * 86400), ("36h", 129600), ("90m", 5400), ("3600", 3600),
                                           ("2w", 1209600), ("1.5d", 129600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, epoch", [("1715000000", 1715000000), ("2024-05-06T00:00:00Z", 1714953600),
                                         ("2024-05-06", 1714953600), ("2024-05-06T02:00:00+02:00", 1714953600)])
def test_parse_time(text, epoch):
    assert parse_time(text) == epoch


def test_parse_errors_name_the_flag():
    with pytest.raises(ValueError, match="--cutoff 'yesterday'"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="--horizon 'two weeks'"):
        parse_duration("two weeks")
