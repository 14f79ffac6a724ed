"""ripple.sampling.loader and backends: NodeLoader over (DictFeatureStore, CSCGraphStore) with the native sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from ripple.config import SamplingConfig
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.graph import LocalGraph, build_csc
from ripple.graph.local import local_stores
from ripple.sampling import backends
from ripple.sampling.loader import EdgeFeatureJoin, make_loader, make_sampler
from ripple.sampling.native import NativeNeighborSampler
from ripple.sampling.prefetch import to_device

FOL = ("user", "follows", "user")
N = {"user": 10, "content": 5, "community": 2}
# (src, dst) per edge table, dense indices
TABLE_EDGES = {
    "follows": [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (0, 1), (2, 1), (4, 3), (5, 4), (7, 6), (8, 6),
                (9, 8), (3, 9), (1, 9)],
    "shared": [(0, 0), (1, 0), (2, 1), (3, 1), (6, 2), (8, 3), (9, 4)],
    "created": [(0, 0), (2, 1), (5, 2), (7, 3), (9, 4)],
    "member_of": [(u, u % 2) for u in range(10)],
    "reply_to": [(1, 0), (2, 0), (3, 1), (4, 2)],
}


def tiny_graph() -> LocalGraph:
    rng = np.random.default_rng(0)
    csc, edge_attr = {}, {}
    for rel in S.relations():
        pairs = np.array(TABLE_EDGES[rel.table], dtype=np.int64)
        src, dst = (pairs[:, 1], pairs[:, 0]) if rel.reverse else (pairs[:, 0], pairs[:, 1])
        colptr, row, perm = build_csc(src, dst, N[rel.edge_type[2]])
        csc[rel.edge_type] = (colptr, row)
        if rel.edge_type in FT.EDGE_DIMS:
            # distinct values per input edge, permuted into CSC order like load_local_graph does
            attr = np.stack([np.arange(len(src), dtype=np.float32),
                             rng.random(len(src)).astype(np.float32)], 1)
            edge_attr[rel.edge_type] = attr[perm]
    x = {t: rng.standard_normal((N[t], FT.NODE_DIMS[t])).astype(np.float32) for t in S.NODE_TYPES}
    ids = {t: np.arange(N[t], dtype=np.int64) * 10 for t in S.NODE_TYPES}
    return LocalGraph(ids=ids, x=x, csc=csc, edge_attr=edge_attr)


def native_loader(g: LocalGraph, seeds, batch_size=3, fanouts=(3, 2), with_y=True, seed=0):
    fs, gs = local_stores(g)
    y = torch.arange(N["user"], dtype=torch.float32) * 1.5
    if with_y:
        fs.put_tensor(y, group_name="user", attr_name="y", index=None)
    cfg = SamplingConfig(fanouts=list(fanouts), batch_size=batch_size, backend="native")
    num_nodes = {t: g.num_nodes(t) for t in S.NODE_TYPES}
    sampler = make_sampler(fs, gs, num_nodes, cfg, list(S.EDGE_TYPES), backend="native", seed=seed)
    assert isinstance(sampler, NativeNeighborSampler)
    loader = make_loader(fs, gs, sampler, seeds, batch_size, edge_attr=g.edge_attr_tensors())
    return loader, y


def test_loader_batches_join_features_labels_and_edge_attr():
    g = tiny_graph()
    seeds = torch.tensor([0, 6, 9, 3, 1, 8, 2])
    loader, y = native_loader(g, seeds)
    got_seeds = []
    n_batches = fol_edges = 0
    for batch in loader:
        n_batches += 1
        assert isinstance(batch, HeteroData)
        bs = batch["user"].batch_size
        assert bs == min(3, len(seeds) - len(got_seeds))
        n_id = batch["user"].n_id
        got_seeds += n_id[:bs].tolist()
        for t in S.NODE_TYPES:
            assert "x" in batch[t], t
            assert batch[t].x.shape == (len(batch[t].n_id), FT.NODE_DIMS[t])
            assert torch.equal(batch[t].x, torch.from_numpy(g.x[t])[batch[t].n_id])
        # labels ride along through the feature store, aligned with n_id
        assert torch.equal(batch["user"].y, y[n_id])
        for et in batch.edge_types:
            src_t, _, dst_t = et
            colptr, row = (torch.from_numpy(a) for a in g.csc[et])
            e_id, ei = batch[et].e_id, batch[et].edge_index
            # local indices point at the right global nodes
            assert torch.equal(batch[src_t].n_id[ei[0]], row[e_id])
            dst = batch[dst_t].n_id[ei[1]]
            assert bool(((e_id >= colptr[dst]) & (e_id < colptr[dst + 1])).all())
        # follows carries edge features, joined by CSC edge id
        assert FOL in batch.edge_types
        fol_edges += batch[FOL].num_edges
        assert torch.equal(batch[FOL].edge_attr, torch.from_numpy(g.edge_attr[FOL])[batch[FOL].e_id])
        assert batch[FOL].edge_attr.shape[1] == FT.EDGE_DIMS[FOL]
        for et in batch.edge_types:
            if et != FOL:
                assert "edge_attr" not in batch[et]
        # to_device hands the model x, edge_index and edge_attr dicts, and the seeds' labels
        inp = to_device(batch, "cpu")
        assert set(inp.x) == set(S.NODE_TYPES) and set(inp.edge_index) == set(batch.edge_types)
        assert set(inp.edge_attr) == {FOL}
        assert inp.batch_size == batch["user"].batch_size and inp.y.shape == (inp.batch_size,)
    assert n_batches == 3
    assert fol_edges > 0
    assert got_seeds == seeds.tolist()


def test_loader_without_labels_and_seeded():
    g = tiny_graph()
    seeds = torch.arange(10)

    def run(seed):
        loader, _ = native_loader(g, seeds, batch_size=4, with_y=False, seed=seed)
        return [b for b in loader]

    a, b = run(5), run(5)
    for ba, bb in zip(a, b):
        assert "y" not in ba["user"]
        for t in S.NODE_TYPES:
            assert torch.equal(ba[t].n_id, bb[t].n_id)
        for et in ba.edge_types:
            assert torch.equal(ba[et].e_id, bb[et].e_id)


def test_loader_all_neighbours_covers_in_edges():
    """fanout -1: a seed's in-edges of every user-destination relation are all in its batch."""
    g = tiny_graph()
    loader, _ = native_loader(g, torch.tensor([0, 9]), batch_size=2, fanouts=[-1])
    (batch,) = list(loader)
    for et in S.EDGE_TYPES:
        if et[2] != "user":
            continue
        colptr, _ = g.csc[et]
        want = sorted(e for u in (0, 9) for e in range(colptr[u], colptr[u + 1]))
        got = sorted(batch[et].e_id.tolist()) if et in batch.edge_types else []
        assert got == want, et


def test_edge_feature_join_skips_absent_relations():
    data = HeteroData()
    data[FOL].edge_index = torch.zeros(2, 0, dtype=torch.long)
    data[FOL].e_id = torch.tensor([2, 0])
    data["user", "x", "content"].edge_index = torch.zeros(2, 0, dtype=torch.long)
    attr = torch.arange(8.0).view(4, 2)
    out = EdgeFeatureJoin({FOL: attr, ("a", "b", "c"): attr})(data)
    assert out[FOL].edge_attr.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert "edge_attr" not in out["user", "x", "content"]


@pytest.mark.parametrize("fanouts", [[], [0], [-2], [5, 0], [3, -5]])
def test_sampling_config_rejects_bad_fanouts(fanouts):
    with pytest.raises(ValueError, match="fanouts"):
        SamplingConfig(fanouts=fanouts)


def test_sampling_config_batch_size_and_per_relation():
    with pytest.raises(ValueError, match="batch_size"):
        SamplingConfig(batch_size=0)
    cfg = SamplingConfig(fanouts=[4, 2], per_relation={"rev_member_of": [1, -1]})
    nn = cfg.num_neighbors(list(S.EDGE_TYPES))
    assert set(nn) == set(S.EDGE_TYPES)
    assert nn[("community", "rev_member_of", "user")] == [1, -1]
    assert nn[FOL] == [4, 2]
    nn[FOL].append(7)
    assert cfg.fanouts == [4, 2], "num_neighbors must hand out copies"
    bad = SamplingConfig(per_relation={"folows": [2]})
    with pytest.raises(ValueError, match="folows"):
        bad.num_neighbors(list(S.EDGE_TYPES))
    g = tiny_graph()
    fs, gs = local_stores(g)
    with pytest.raises(ValueError, match="unknown relations"):
        make_sampler(fs, gs, {t: g.num_nodes(t) for t in S.NODE_TYPES}, bad, list(S.EDGE_TYPES), backend="native")


def test_backends_select():
    have = backends.available()
    assert have[-1] == "native" and set(have) <= set(backends.BACKENDS)
    # auto: the fastest exact kernel installed; torch-sparse only when asked for
    assert backends.select("auto") == ("pyg-lib" if "pyg-lib" in have else "native")
    assert backends.select() == backends.select("auto")
    assert backends.select("native") == "native"
    with pytest.raises(ValueError, match="must be one of"):
        backends.select("nonexistent")
    for b in backends.BACKENDS:
        if b not in have:
            with pytest.raises(ValueError, match="not installed"):
                backends.select(b)


def test_make_loader_rejects_duplicate_seeds():
    from ripple.sampling.loader import make_loader

    with pytest.raises(ValueError, match="distinct"):
        make_loader(None, None, None, torch.tensor([3, 1, 3]), batch_size=2)


def test_seeds_with_times_come_in_batches_of_one_time_and_keep_their_order():
    """Rows at many cut times: every batch holds one time, sampled at the last second before it, with the inputs
    of that time; rows grouped by time come back in their order; the same user at two times is two seeds."""
    from ripple.sampling.loader import AsOfTensors, Seeds

    g = tiny_graph()
    fs, gs = local_stores(g)
    times = {et: torch.zeros(len(g.csc[et][1]), dtype=torch.long) for et in g.csc}
    times[FOL] = torch.arange(len(g.csc[FOL][1]))  # follows edge k exists from time k
    sampler = make_sampler(fs, gs, N, SamplingConfig(fanouts=[-1]), list(S.EDGE_TYPES), "native", seed=0,
                           edge_time=times)
    as_of = {t: AsOfTensors(torch.full((N["user"], 5), float(t)), torch.zeros(N["content"]), None,
                            torch.full((N["user"],), float(t) / 10)) for t in (5, 9)}
    seeds = Seeds(torch.tensor([0, 1, 6, 0, 1]), torch.tensor([5, 5, 5, 9, 9]))
    loader = make_loader(fs, gs, sampler, seeds, 2, g.edge_attr_tensors(), as_of=as_of)
    got = []
    for batch in loader:
        t = int(batch["user"].seed_time[0]) + 1
        assert (batch["user"].seed_time + 1 == t).all()
        assert (batch["user"].x[:, :5] == t).all() and (batch["user"].y == t / 10).all()
        e = batch[FOL].e_id
        assert (times[FOL][e] <= t - 1).all()  # nothing from the row's time or after it
        got += batch["user"].n_id[:batch["user"].batch_size].tolist()
    assert got == seeds.users.tolist()
    with pytest.raises(ValueError, match="distinct"):
        make_loader(fs, gs, sampler, Seeds(torch.tensor([0, 0]), torch.tensor([5, 5])), 2, as_of=as_of)
    with pytest.raises(ValueError, match="as of each time"):
        make_loader(fs, gs, sampler, Seeds(torch.tensor([0]), torch.tensor([7])), 2, as_of=as_of)
