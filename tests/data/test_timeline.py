"""Features and sampling as of each row's time (``ripple.data.timeline``), against a brute force from the raw
tables, and the no-leakage property: events planted after a row's time change none of that row's inputs."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from ripple.config import load_config
from ripple.context import WorkerContext
from ripple.data import schema as S
from ripple.data.dataset import Dataset, DatasetWriter
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.graph import load_local_graph
from ripple.data.labels import LabelSpec, derive_labels, every_cutoffs, history_range
from ripple.data.timeline import as_of, snapshot
from ripple.graph.access import LocalAccess
from ripple.sampling.loader import Seeds

pytestmark = pytest.mark.timeout(300)

DAY = 86400


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> str:
    """A generated history labelled at many cut times (every 14 days, H = 14 days)."""
    root = tmp_path_factory.mktemp("timeline")
    data = str(root / "data")
    generate(data, GeneratorConfig(users=600, seed=4, label_sims=5))
    start, end = history_range(data)
    out = str(root / "many")
    derive_labels(data, out, LabelSpec.many(every_cutoffs(start, end, 14 * DAY, 14 * DAY), 14 * DAY))
    return out


def _brute_user_activity(ds: Dataset, t: int) -> dict[str, np.ndarray]:
    """Per user (sorted ids): follower/following/shared/created counts and engagement from rows before ``t``."""
    ids = np.sort(ds.read("user")["id"].to_numpy())
    n = len(ids)
    at = lambda a: np.searchsorted(ids, a)  # noqa: E731
    f = ds.read("follows")
    past = f["since_date"].to_numpy() < t
    followers = np.bincount(at(f["dst"].to_numpy()[past]), minlength=n)
    following = np.bincount(at(f["src"].to_numpy()[past]), minlength=n)
    c, sh = ds.read("created"), ds.read("shared")
    cp = c["timestamp"].to_numpy() < t
    sp = sh["timestamp"].to_numpy() < t
    created = np.bincount(at(c["src"].to_numpy()[cp]), minlength=n)
    shared = np.bincount(at(sh["src"].to_numpy()[sp]), minlength=n)
    reshares = {}
    for post in sh["dst"].to_numpy()[sp]:
        reshares[post] = reshares.get(post, 0) + 1
    rate = np.zeros(n)
    for u, post in zip(at(c["src"].to_numpy()[cp]), c["dst"].to_numpy()[cp]):
        rate[u] += reshares.get(post, 0) / max(followers[u], 1)
    engagement = rate / np.maximum(created, 1)
    return {"followers": followers, "following": following, "shared": shared, "created": created,
            "engagement": engagement}


def test_features_as_of_each_cut_equal_a_brute_force_count_of_the_rows_before_it(many):
    ds = Dataset(many)
    g = load_local_graph(ds)
    assert g.temporal
    for t in np.unique(g.label_time):
        a = as_of(g, int(t))
        b = _brute_user_activity(ds, int(t))
        np.testing.assert_allclose(np.expm1(a.user[:, 0]), b["followers"], rtol=1e-5)
        np.testing.assert_allclose(np.expm1(a.user[:, 1]) / 10.0, b["engagement"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.expm1(a.user[:, 2]), b["following"], rtol=1e-5)
        np.testing.assert_allclose(np.expm1(a.user[:, 3]), b["shared"], rtol=1e-5)
        np.testing.assert_allclose(np.expm1(a.user[:, 4]), b["created"], rtol=1e-5)
    first = int(g.label_time.min())
    assert (as_of(g, first).user[:, 0] < g.x["user"][:, 0]).any()  # the early graph really is smaller


def test_the_snapshot_at_the_last_cut_is_the_dataset_itself(many):
    """The past tables are cut at the last cut, with follower counts and engagement recomputed by `ripple labels`:
    the timeline's recomputation as of that time gives the same features and graph."""
    g = load_local_graph(Dataset(many))
    snap = snapshot(g, int(g.label_time.max()))
    for t in S.NODE_TYPES:
        np.testing.assert_array_equal(snap.x[t], g.x[t])
    for et, (colptr, row) in g.csc.items():
        np.testing.assert_array_equal(snap.csc[et][0], colptr)
        np.testing.assert_array_equal(snap.csc[et][1], row)
    for et, attr in g.edge_attr.items():
        np.testing.assert_array_equal(snap.edge_attr[et], attr)


def _plant(src: str, out: str, t: int) -> dict:
    """A copy of dataset ``src`` with events at or after ``t`` (but before its last cut): a new follows edge into
    the busiest user, a new post by them with 5 reshares, one more reshare of an old post. New ids are above every
    existing one, so every old dense index is unchanged."""
    ds = Dataset(src)
    tables = {name: ds.read(name) for name in S.TABLES if ds.has(name)}
    users = np.sort(tables["user"]["id"].to_numpy())
    star = int(np.bincount(np.searchsorted(users, tables["follows"]["dst"].to_numpy())).argmax())
    star_id = int(users[star])
    others = [int(u) for u in users if u != star_id][:6]
    existing = set(zip(tables["follows"]["src"].to_pylist(), tables["follows"]["dst"].to_pylist()))
    fan = next(u for u in others if (u, star_id) not in existing)
    post = int(tables["content"]["id"].to_numpy().max()) + 1
    old_post = int(tables["created"]["dst"].to_numpy()[0])

    def add(name, rows):
        tables[name] = pa.concat_tables([tables[name], S.TABLES[name].from_pydict(rows)])

    add("follows", {"src": [fan], "dst": [star_id], "since_date": [t], "interaction_freq": [3.0]})
    add("content", {"id": [post], "type": [0], "topic": [0], "timestamp": [t + 10], "text_emb": [[0.0] * 16]})
    add("created", {"src": [star_id], "dst": [post], "timestamp": [t + 10]})
    add("shared", {"src": others[:5] + [fan], "dst": [post] * 5 + [old_post], "timestamp": [t + 20 + i for i in range(6)]})
    w = DatasetWriter(out)
    for name, tab in tables.items():
        w.write(name, tab)
    w.close(history=ds.manifest.history, labels=ds.manifest.labels)
    return {"star": star}


def _subgraphs(graph, t: int, users: np.ndarray) -> list:
    """Every batch's sampled node ids, edge index (as global ids) and inputs at ``t``, with every neighbour taken."""
    cfg = load_config(None, {"data": "unused", "sampling.fanouts": [-1, -1], "sampling.batch_size": 64})
    access = LocalAccess(graph, cfg, WorkerContext(), rng_seed=0)
    out = []
    for batch in access.loader(Seeds(torch.from_numpy(users), torch.full((len(users),), t)), 64):
        nodes = {k: batch[k].n_id.tolist() for k in batch.node_types}
        edges = {et: sorted(zip(batch[et[0]].n_id[batch[et].edge_index[0]].tolist(),
                                batch[et[2]].n_id[batch[et].edge_index[1]].tolist()))
                 for et in batch.edge_types}
        x = {k: batch[k].x.numpy().round(5).tolist() for k in batch.node_types}
        attr = {et: batch[et].edge_attr.numpy().round(5).tolist() for et in batch.edge_types if "edge_attr" in batch[et]}
        out.append((nodes, edges, x, attr, batch["user"].y[:batch["user"].batch_size].tolist()))
    return out


def test_events_planted_after_a_cut_change_no_input_of_that_cuts_rows(many, tmp_path):
    """No leakage at any cut time: a follow, a post with its reshares and a reshare of an old post, all planted
    after the first training cut, change neither the features as of that cut nor a single sampled subgraph of
    its rows (every neighbour taken); at the last cut they are there."""
    g = load_local_graph(Dataset(many))
    cuts = np.unique(g.label_time)
    t = int(cuts[0])
    planted = _plant(many, str(tmp_path / "planted"), t)
    p = load_local_graph(Dataset(str(tmp_path / "planted")))
    for cut in cuts[cuts <= t]:
        a, b = as_of(g, int(cut)), as_of(p, int(cut))
        np.testing.assert_array_equal(a.user, b.user)
        np.testing.assert_array_equal(a.content[:len(a.content)], b.content[:len(a.content)])
    rows = g.label_index[g.label_time == t]
    users = np.unique(np.concatenate([rows, [planted["star"]]]))
    assert _subgraphs(g, t, users) == _subgraphs(p, t, users)
    last = int(cuts[-1])
    assert as_of(p, last).user[planted["star"], 0] > as_of(g, last).user[planted["star"], 0]  # seen later
