"""Synthetic generator: layout, manifest, determinism, graph invariants, hidden truth, and what training reads."""
from __future__ import annotations

import shutil
from dataclasses import asdict

import numpy as np
import pytest

from ripple.data import schema as S
from ripple.data.dataset import DATASET_MANIFEST, Dataset
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.storage import Store, list_parts
from ripple.data.validate import validate_dataset

USERS = 500
SIMS = 20
SEED = 7


def _cfg(seed: int = SEED, users: int = USERS) -> GeneratorConfig:
    return GeneratorConfig(users=users, label_sims=SIMS, seed=seed)


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("gen") / "data")
    return out, generate(out, _cfg())


@pytest.fixture(scope="module")
def ds(gen) -> Dataset:
    return Dataset(gen[0])


def _np(ds: Dataset, table: str, col: str) -> np.ndarray:
    return ds.read(table, columns=[col])[col].to_numpy()


# ---------------------------------------------------------------- layout and manifest

def test_writes_every_table_and_manifest(gen, ds):
    out, manifest = gen
    store = Store(out)
    assert store.exists(DATASET_MANIFEST)
    # only ripple import writes these: an interaction graph's events, the names of users without integer ids
    written = [n for n in S.TABLES if n not in (S.INTERACTIONS.name, S.USER_NAMES.name)]
    for name in written:
        assert list_parts(store, name), f"no parts for {name}"
        assert ds.read(name).num_rows == manifest["rows"][name], name
        assert ds.read(name).schema.equals(S.TABLES[name].arrow_schema()), name
    assert set(manifest["rows"]) == set(written)
    assert manifest["rows"]["user"] == USERS
    assert manifest["rows"]["labels"] == USERS  # max_labeled > users: everyone is labeled


def test_manifest_records_simulations_and_parameters(gen, ds):
    _, manifest = gen
    on_disk = Store(gen[0]).read_json(DATASET_MANIFEST)
    assert on_disk == manifest
    assert manifest["schema_version"] == S.SCHEMA_VERSION
    assert manifest["label_simulations"] == SIMS
    params = manifest["generator"]
    assert params["users"] == USERS and params["seed"] == SEED and params["label_sims"] == SIMS
    for k, v in asdict(_cfg()).items():
        assert params[k] == v, k
    assert ds.manifest.label_simulations == SIMS


def test_output_validates(gen):
    report = validate_dataset(gen[0])
    assert report.ok, report.text()


# ---------------------------------------------------------------- determinism

def test_deterministic_for_a_seed(gen, ds, tmp_path):
    again = str(tmp_path / "again")
    other = str(tmp_path / "other")
    m_again = generate(again, _cfg())
    generate(other, _cfg(seed=SEED + 1))
    assert m_again == gen[1]
    a, o = Dataset(again), Dataset(other)
    for table in ("user", "follows", "labels", "content", "_truth/ic_edges"):
        assert a.read(table).equals(ds.read(table)), table
    differs = [t for t in ("user", "follows", "labels") if not o.read(t).equals(ds.read(t))]
    assert differs == ["user", "follows", "labels"]


# ---------------------------------------------------------------- values and graph invariants

def test_labels_are_at_least_one(ds):
    labels = ds.read("labels")
    reach = labels["cascade_reach"].to_numpy()
    rep = labels["cascade_reach_replicate"].to_numpy()
    assert (reach >= 1).all() and (rep >= 1).all()
    assert np.isfinite(reach).all() and np.isfinite(rep).all()
    assert reach.max() > 1  # some cascades spread at all
    assert set(labels["split"].to_pylist()) == set(S.SPLITS)
    # the replicate is an independent draw, not a copy
    assert not np.array_equal(reach, rep)
    assert np.corrcoef(reach, rep)[0, 1] > 0.3


def test_follower_count_is_in_degree(ds):
    ids = _np(ds, "user", "id")
    fc = _np(ds, "user", "follower_count")
    dst = _np(ds, "follows", "dst")
    in_deg = dict(zip(*np.unique(dst, return_counts=True)))
    assert [in_deg.get(i, 0) for i in ids.tolist()] == fc.tolist()
    assert fc.sum() == len(dst)


def test_no_self_loops_or_duplicate_follows(ds):
    src, dst = _np(ds, "follows", "src"), _np(ds, "follows", "dst")
    assert len(src) > USERS
    assert not (src == dst).any()
    pairs = np.stack([src, dst], 1)
    assert len(np.unique(pairs, axis=0)) == len(pairs)


def test_ids_are_not_dense_row_numbers(ds):
    ids = np.sort(_np(ds, "user", "id"))
    assert len(np.unique(ids)) == USERS
    assert not np.array_equal(ids, np.arange(USERS))
    assert ids.min() > 0
    c_ids = _np(ds, "content", "id")
    assert not np.array_equal(np.sort(c_ids), np.arange(len(c_ids)))
    # every id space is used only through references to it
    uset = set(ids.tolist())
    for table in ("follows", "shared", "created", "member_of"):
        assert set(_np(ds, table, "src").tolist()) <= uset, table
    assert set(_np(ds, "labels", "user_id").tolist()) <= uset


def test_ic_edges_run_followee_to_follower(ds):
    follows = set(zip(_np(ds, "follows", "src").tolist(), _np(ds, "follows", "dst").tolist()))
    ic = ds.read("_truth/ic_edges")
    src, dst, p = ic["src"].to_numpy(), ic["dst"].to_numpy(), ic["p"].to_numpy()
    assert len(src) > 0
    # influencer = followee (a follows dst), influenced = follower (a follows src)
    reversed_ = set(zip(dst.tolist(), src.tolist()))
    assert reversed_ <= follows
    straight = set(zip(src.tolist(), dst.tolist()))
    assert len(straight & follows) < len(straight)  # mostly not the same direction as follows
    assert ((p > 0) & (p <= _cfg().max_p)).all()


def test_bots_have_many_followers_but_little_reach(ds):
    truth = ds.read("_truth/users").to_pandas()
    users = ds.read("user", columns=["id", "follower_count"]).to_pandas()
    labels = ds.read("labels", columns=["user_id", "cascade_reach"]).to_pandas()
    df = users.merge(truth, on="id").merge(labels, left_on="id", right_on="user_id")
    bots, people = df[df.is_bot], df[~df.is_bot]
    assert len(bots) >= 3
    assert bots.follower_count.mean() > 3 * people.follower_count.mean()
    # popular non-bots (top decile by follower count) have fewer followers than bots on average, yet more reach
    popular = people[people.follower_count >= people.follower_count.quantile(0.9)]
    assert popular.follower_count.mean() < bots.follower_count.mean()
    assert bots.cascade_reach.mean() < popular.cascade_reach.mean()
    assert bots.cascade_reach.mean() < people.cascade_reach.mean()


def test_too_few_users_is_value_error():
    with pytest.raises(ValueError, match="users"):
        GeneratorConfig(users=5)
    with pytest.raises(ValueError, match="avg-follows"):
        GeneratorConfig(users=100, avg_follows=0)
    with pytest.raises(ValueError, match="label_sims"):
        GeneratorConfig(users=100, label_sims=0)


# ---------------------------------------------------------------- training never reads _truth

def test_load_local_graph_without_truth(gen, tmp_path, monkeypatch):
    from ripple.data.graph import load_local_graph

    copy = tmp_path / "copy"
    shutil.copytree(gen[0], copy)
    shutil.rmtree(copy / "_truth")
    read = []
    real_read = Dataset.read

    def spy(self, name, columns=None):
        read.append(name)
        return real_read(self, name, columns)

    monkeypatch.setattr(Dataset, "read", spy)
    g = load_local_graph(Dataset(str(copy)))
    assert not [n for n in read if n.startswith("_truth")]
    assert g.num_nodes("user") == USERS
    assert np.array_equal(g.ids["user"], np.sort(_np(Dataset(gen[0]), "user", "id")))
    assert len(g.label_index) == USERS and len(g.reach) == USERS
    assert (g.reach >= 1).all()
    follower, followee = g.follows_coo()
    assert len(follower) == gen[1]["rows"]["follows"]
