"""ripple.graph.sharded_sampler: DistributedNeighborSampler over an in-process ShardedGraph (no Ray).

A 1500-user synthetic dataset is generated and partitioned into P = 4 parts once per module. The sampler works in
the sharded *global* index space (partition-ordered); the reference graph (``load_local_graph``) works in *dense*
indices (rank of the sorted original id). The two are compared through original ids: the original id of sharded
global index g of type t is ``concat(ShardData.ids[t] for parts in order)[g]``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import recorded_sample_calls, same_sampler_output
from torch_geometric.data import TensorAttr
from torch_geometric.sampler import NodeSamplerInput

from ripple.config import PartitionConfig, SamplingConfig
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.graph import LocalGraph, load_local_graph
from ripple.data.ids import dense_index
from ripple.graph.local import CSCGraphStore, local_stores
from ripple.graph.partition import partition
from ripple.graph.sharded_sampler import DistributedNeighborSampler
from ripple.graph.part_io import PartitionMeta
from ripple.graph.shards import ShardedFeatureStore, ShardedGraph, ShardedGraphStore, owner_of
from ripple.sampling import backends
from ripple.sampling.loader import make_loader, make_sampler

P = 4
USERS = 1500
FOL = ("user", "follows", "user")
REV_SHARED = ("content", "rev_shared", "user")
MEMBER_OF = ("user", "member_of", "community")
REV_MEMBER_OF = ("community", "rev_member_of", "user")


# ----------------------------------------------------------------------------------------------- fixtures


@dataclass
class World:
    meta: PartitionMeta
    graph: ShardedGraph                       # all P parts in this process
    local: LocalGraph                          # the whole graph, dense (id-ordered) indices
    orig: dict[str, np.ndarray]                # type -> [N_t] original id of each sharded global index
    dense: dict[str, np.ndarray]               # type -> [N_t] dense LocalGraph index of each sharded global index
    g_row: dict                                # relation -> [E] source global index of each global edge id
    g_dst: dict                                # relation -> [E] destination global index of each global edge id
    indeg: dict                                # relation -> [N_dst] in-degree by sharded global index
    pairs: dict                                # relation -> {(src orig id, dst orig id): LocalGraph CSC position}

    def to_global(self, t: str, dense_idx: np.ndarray) -> np.ndarray:
        inv = np.empty(len(self.dense[t]), np.int64)
        inv[self.dense[t]] = np.arange(len(self.dense[t]))
        return inv[dense_idx]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("dist_sampling")
    data, parts = str(root / "data"), str(root / "parts")
    generate(data, GeneratorConfig(users=USERS, seed=0))
    partition(data, parts, PartitionConfig(num_parts=P))
    meta = PartitionMeta.open(parts)
    graph = ShardedGraph.in_process(meta)
    local = load_local_graph(Dataset(data))

    orig = {t: np.concatenate([graph.local[p].ids[t] for p in range(P)]) for t in S.NODE_TYPES}
    dense = {t: dense_index(local.ids[t], orig[t], t) for t in S.NODE_TYPES}
    g_row, g_dst, indeg, pairs = {}, {}, {}, {}
    for et in meta.edge_types:
        rows, dsts = [], []
        for p in range(P):
            shard = graph.local[p]
            colptr = shard.colptr[et].numpy()
            rows.append(shard.row[et].numpy())
            dsts.append(np.repeat(np.arange(len(colptr) - 1), np.diff(colptr)) + shard.node_offset[et[2]])
        g_row[et], g_dst[et] = np.concatenate(rows), np.concatenate(dsts)
        colptr, row = local.csc[et]
        indeg[et] = np.diff(colptr)[dense[et[2]]]
        dst = np.repeat(np.arange(len(colptr) - 1), np.diff(colptr))
        src_id, dst_id = local.ids[et[0]][row], local.ids[et[2]][dst]
        pairs[et] = {(int(s), int(d)): i for i, (s, d) in enumerate(zip(src_id, dst_id))}
    return World(meta, graph, local, orig, dense, g_row, g_dst, indeg, pairs)


def sampler_of(w: World, num_neighbors, seed=0) -> DistributedNeighborSampler:
    """The relations ``num_neighbors`` leaves out get fanout 0 at every hop (PyG's contract: every relation)."""
    hops = max(len(v) for v in num_neighbors.values())
    full = {et: [0] * hops for et in w.meta.edge_types}
    return DistributedNeighborSampler(w.graph, {**full, **num_neighbors}, seed=seed)


def spread_seeds(w: World, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` distinct users in random (unsorted) order, from every part."""
    rng = np.random.default_rng(seed)
    s = torch.from_numpy(rng.choice(w.meta.num_nodes("user"), n, replace=False))
    assert len(torch.unique(owner_of(w.graph.offsets["user"], s))) == P
    return s


# all relations; rev_member_of takes every neighbour (-1), member_of hits a community hub (rejection path)
NN_ALL = {et: ([-1, -1] if et == REV_MEMBER_OF else [4, 3]) for et in S.EDGE_TYPES}


def hop_slices(counts: list[int]) -> list[slice]:
    cum = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    return [slice(int(cum[h]), int(cum[h + 1])) for h in range(len(counts))]


# ----------------------------------------------------------------------------------------------- the partition


def test_sharded_graph_holds_the_same_edges_as_the_local_graph(world):
    """Precondition of everything below: the parts together are the dataset's graph."""
    w = world
    for et in w.meta.edge_types:
        got = set(zip(w.orig[et[0]][w.g_row[et]].tolist(), w.orig[et[2]][w.g_dst[et]].tolist()))
        assert len(got) == len(w.g_row[et]) == len(w.pairs[et]), et
        assert got == set(w.pairs[et]), et


# ----------------------------------------------------------------------------------------------- edges and fanouts


@pytest.fixture(scope="module")
def outputs(world):
    """A few batches over every relation: (seeds, output)."""
    sampler = sampler_of(world, NN_ALL, seed=3)
    res = []
    for i in range(4):
        seeds = spread_seeds(world, 48, seed=100 + i)
        res.append((seeds, sampler.sample("user", seeds)))
    return res


def test_every_sampled_edge_exists_in_the_full_graph(world, outputs):
    w = world
    total = 0
    for _, out in outputs:
        for et in out.row:
            src = out.node[et[0]][out.row[et]].numpy()
            dst = out.node[et[2]][out.col[et]].numpy()
            pairs = set(zip(w.orig[et[0]][src].tolist(), w.orig[et[2]][dst].tolist()))
            missing = pairs - set(w.pairs[et])
            assert not missing, (et, list(missing)[:5])
            # the reported global edge id is that very edge
            e = out.edge[et].numpy()
            assert np.array_equal(w.g_row[et][e], src), et
            assert np.array_equal(w.g_dst[et][e], dst), et
            total += len(e)
    assert total > 1000


def test_per_hop_fanout_is_min_of_fanout_and_in_degree(world, outputs):
    w = world
    checked = 0
    for seeds, out in outputs:
        node_hops = {t: hop_slices(c) for t, c in out.num_sampled_nodes.items()}
        for et, fanouts in NN_ALL.items():
            assert len(out.num_sampled_edges[et]) == len(fanouts)
            e_hops = hop_slices(out.num_sampled_edges[et])
            for h, fanout in enumerate(fanouts):
                es, ns = e_hops[h], node_hops[et[2]][h]
                col = out.col.get(et, torch.empty(0, dtype=torch.long))[es]
                # only this hop's frontier (the nodes new at the previous hop) is sampled
                assert bool(((col >= ns.start) & (col < ns.stop)).all()), (et, h)
                frontier = out.node[et[2]][ns].numpy()
                got = np.bincount((col - ns.start).numpy(), minlength=len(frontier))
                deg = w.indeg[et][frontier]
                want = deg if fanout < 0 else np.minimum(deg, fanout)
                assert np.array_equal(got, want), (et, h)
                assert (got <= (fanout if fanout > 0 else deg)).all()
                checked += int((deg > fanout).sum()) if fanout > 0 else 0
    assert checked > 100  # many destinations had more in-edges than the fanout


def test_without_replacement_within_each_destination(world, outputs):
    for _, out in outputs:
        for et in out.row:
            for es in hop_slices(out.num_sampled_edges[et]):
                col, row, e = out.col[et][es].tolist(), out.row[et][es].tolist(), out.edge[et][es].tolist()
                assert len(set(zip(col, e))) == len(e), et
                assert len(set(zip(col, row))) == len(e), et  # the graph has no multi-edges


# ----------------------------------------------------------------------------------------------- order, determinism


def test_seeds_first_in_given_order(world, outputs):
    for seeds, out in outputs:
        assert torch.equal(out.node["user"][: len(seeds)], seeds)
        assert out.num_sampled_nodes["user"][0] == len(seeds)
        for t, nodes in out.node.items():
            assert len(torch.unique(nodes)) == len(nodes), t


def test_repeated_seeds_keep_every_position_each_sampled_as_pyg_does(world):
    w = world
    first = spread_seeds(w, 8, seed=5)
    seeds = torch.cat([first, first[:3]])  # three users seeded twice
    out = sampler_of(w, {FOL: [3, 2]}, seed=0).sample("user", seeds)
    assert torch.equal(out.node["user"][:len(seeds)], seeds) and out.num_sampled_nodes["user"][0] == len(seeds)
    rest = out.node["user"][len(seeds):].tolist()
    assert len(set(rest)) == len(rest) and not set(rest) & set(seeds.tolist())
    # hop 0: every position, the repeated ones included, has min(3, in-degree) in-edges of its own
    col = out.col[FOL][:out.num_sampled_edges[FOL][0]]
    got = np.bincount(col.numpy(), minlength=len(seeds))
    assert np.array_equal(got, np.minimum(w.indeg[FOL][seeds.numpy()], 3))
    assert got[8:].sum() > 0


def test_every_relation_is_in_the_output_even_with_nothing_to_sample(world):
    """PyG's contract: row/col/edge hold every relation of ``num_neighbors``, empty where nothing was sampled;
    edge features too (``metadata``), [0, D]."""
    into_content = ("user", "shared", "content")
    nn = {FOL: [3], into_content: [2]}  # one hop from users: nothing is ever sampled into content
    out = sampler_of(world, nn, seed=0).sample("user", spread_seeds(world, 16))
    for d in (out.row, out.col, out.edge):
        assert set(d) == set(world.meta.edge_types)  # every relation of the graph, as PyG requires them all
        assert d[into_content].numel() == 0 and d[into_content].dtype == torch.long
    assert out.num_sampled_edges[into_content] == [0] and out.num_sampled_edges[FOL][0] > 0
    dims = world.meta.edge_dims
    assert out.metadata[FOL].shape == (len(out.edge[FOL]), dims[FOL])
    assert set(out.metadata) == set(dims)
    # a relation with edge features and nothing sampled (fanout 0): empty features of the right width
    out = sampler_of(world, {FOL: [0], REV_MEMBER_OF: [2]}, seed=0).sample("user", spread_seeds(world, 16))
    assert out.edge[FOL].numel() == 0 and out.metadata[FOL].shape == (0, dims[FOL])


def test_same_seed_same_batches_different_seed_different(world):
    seeds = [spread_seeds(world, 48, seed=s) for s in (1, 2, 3)]

    def run(seed):
        sampler = sampler_of(world, NN_ALL, seed=seed)
        return [sampler.sample("user", s) for s in seeds]

    a, b, c = run(11), run(11), run(12)
    assert all(same_sampler_output(x, y) for x, y in zip(a, b))
    assert not any(same_sampler_output(x, y) for x, y in zip(a, c))


def test_sample_from_nodes_keeps_metadata(world):
    sampler = sampler_of(world, {FOL: [3]}, seed=0)
    seeds = spread_seeds(world, 8)
    out = sampler.sample_from_nodes(NodeSamplerInput(input_id=torch.arange(8) + 50, node=seeds, input_type="user"))
    assert out.metadata[0].tolist() == list(range(50, 58))
    assert torch.equal(out.node["user"][:8], seeds)
    with pytest.raises(TypeError):
        sampler.sample_from_edges(None)


# ----------------------------------------------------------------------------------------------- calls per hop


def test_one_batched_call_per_part_per_hop(world):
    w = world
    with recorded_sample_calls(w.graph) as calls:
        sampler = sampler_of(w, NN_ALL, seed=0)
        for seeds in (spread_seeds(w, 64, seed=5), torch.arange(int(w.graph.offsets["user"][1]))[:10]):
            calls.clear()
            out = sampler.sample("user", seeds)
            assert len(calls) == sampler.num_hops == len(sampler.last_calls)
            for h, parts in enumerate(calls):
                assert sampler.last_calls[h] == len(parts) <= P
                assert len(set(parts)) == len(parts)
            # hop 0 calls exactly the parts owning the seeds
            assert calls[0] == sorted(set(owner_of(w.graph.offsets["user"], seeds).tolist()))
            assert out.num_sampled_edges[FOL][0] > 0
        assert calls[0] == [0]  # the second batch's seeds all live in part 0
    assert w.graph.remote_calls == 0


# ----------------------------------------------------------------------------------------------- vs PyG, statistics


def _ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its asymptotic two-sided p-value."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                            - np.searchsorted(b, grid, side="right") / len(b))))
    en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    lam = (en + 0.12 + 0.11 / en) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, float(min(max(p, 0.0), 1.0))


def test_ks_helper_agrees_with_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=300), rng.normal(size=300), rng.normal(0.4, size=300)
    for x, y in ((a, b), (a, c)):
        d, p = _ks_2samp(x, y)
        ref = stats.ks_2samp(x, y, method="asymp")
        assert math.isclose(d, ref.statistic) and abs(p - ref.pvalue) < 0.02


def _hop2_users(out, batch: int) -> int:
    """Users new at hop 2 from the node order alone (PyG with torch-sparse reports no per-hop counts): seeds,
    then hop-1 users (sources of user->user edges into seeds), then the rest."""
    hop1 = set()
    for et, row in out.row.items():
        if et[0] == "user" and et[2] == "user":
            hop1 |= set(row[out.col[et] < batch].tolist())
    hop1 = {u for u in hop1 if u >= batch}
    assert hop1 == set(range(batch, batch + len(hop1)))
    return len(out.node["user"]) - batch - len(hop1)


def test_hop2_size_distribution_matches_pyg_neighbor_sampler(world):
    pyg_kernels = [b for b in backends.available() if b in ("pyg-lib", "torch-sparse")]
    if not pyg_kernels:
        pytest.skip(f"PyG's NeighborSampler needs pyg-lib or torch-sparse (available: {backends.available()})")
    w = world
    nn = {FOL: [5, 5], REV_SHARED: [3, 3]}
    ets = list(nn)
    # PyG's sampler wants fanouts for every relation of its graph store: give it just these two relations
    fs, _ = local_stores(w.local)
    gs = CSCGraphStore()
    for et in ets:
        colptr, row = w.local.csc[et]
        gs.put_edge_index((torch.from_numpy(row), torch.from_numpy(colptr)), edge_type=et, layout="csc",
                          size=(w.local.num_nodes(et[0]), w.local.num_nodes(et[2])), is_sorted=True)
    cfg = SamplingConfig(fanouts=[5, 5], per_relation={"rev_shared": [3, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pyg = make_sampler(fs, gs, {t: w.local.num_nodes(t) for t in S.NODE_TYPES}, cfg, ets, backend=pyg_kernels[0])
    assert cfg.num_neighbors(ets) == nn

    batch, reps = 64, 250
    seeds = spread_seeds(w, batch, seed=42)
    seeds_dense = torch.from_numpy(w.dense["user"][seeds.numpy()])
    dist = sampler_of(w, nn, seed=0)
    torch.manual_seed(0)
    ours, theirs = np.empty(reps), np.empty(reps)
    for i in range(reps):
        out = dist.sample("user", seeds)
        ours[i] = out.num_sampled_nodes["user"][2]
        if i < 3:
            assert _hop2_users(out, batch) == ours[i]
        ref = pyg.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds_dense, input_type="user"))
        assert torch.equal(ref.node["user"][:batch], seeds_dense)
        theirs[i] = _hop2_users(ref, batch)
    d, p = _ks_2samp(ours, theirs)
    assert p > 0.001, (d, p, ours.mean(), theirs.mean())
    assert abs(ours.mean() - theirs.mean()) < 0.05 * theirs.mean()
    assert ours.std() > 0  # the hop-2 size really varies, so the test has something to compare


def test_neighbour_inclusion_frequency_is_fanout_over_degree(world):
    w = world
    fanout, draws = 5, 400
    deg = w.indeg[FOL]
    # users whose in-degree is >= 3 * fanout (the sampler's rejection path), small enough for tight counts
    cand = np.nonzero((deg >= 3 * fanout) & (deg <= 40))[0]
    assert len(cand) >= 3
    users = torch.from_numpy(cand[[0, len(cand) // 2, len(cand) - 1]])
    sampler = sampler_of(w, {FOL: [fanout]}, seed=1234)
    counts = {int(u): {} for u in users}
    for _ in range(draws):
        out = sampler.sample("user", users)
        e = out.edge[FOL].numpy()
        dst = users[out.col[FOL]].numpy()
        for u, eid in zip(dst.tolist(), e.tolist()):
            counts[u][eid] = counts[u].get(eid, 0) + 1
    stat, df = 0.0, 0
    for u in users.tolist():
        d = int(deg[u])
        lo = int(w.graph.edge_offsets[FOL][owner_of(w.graph.offsets["user"], torch.tensor([u]))[0]])
        # this user's in-edges are one contiguous range of global edge ids
        mine = np.nonzero(w.g_dst[FOL] == u)[0]
        assert len(mine) == d and mine[0] >= lo and np.array_equal(mine, np.arange(mine[0], mine[0] + d))
        obs = np.array([counts[u].get(int(e), 0) for e in mine], dtype=float)
        assert set(counts[u]) <= set(mine.tolist())
        assert obs.sum() == draws * fanout
        p = fanout / d
        expect = draws * p
        # each neighbour: binomial(draws, fanout / degree), held to 5 standard deviations
        z = np.abs(obs - expect) / math.sqrt(draws * p * (1 - p))
        assert z.max() < 5.0, (u, d, obs, expect)
        stat += float(((obs - expect) ** 2 / expect).sum())
        df += d - 1
    # Pearson chi-square of uniform inclusion (conservative for without-replacement draws):
    # Wilson-Hilferty upper 0.001 quantile of chi2(df)
    q = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3
    assert stat < q, (stat, df, q)


# ----------------------------------------------------------------------------------------------- through make_loader


def test_loader_over_sharded_stores_joins_features_labels_and_edge_attr(world):
    w = world
    fs, gs = ShardedFeatureStore(w.graph), ShardedGraphStore(w.meta)
    sampler = sampler_of(w, SamplingConfig(fanouts=[4, 3]).num_neighbors(w.meta.edge_types), seed=0)
    train = np.concatenate([w.graph.local[p].labelled("train") for p in range(P)])
    rng = np.random.default_rng(0)
    seeds = torch.from_numpy(rng.permutation(train)[:90])
    loader = make_loader(fs, gs, sampler, seeds, batch_size=40)  # edge features come with the sampled edges

    # the store serves training labels only: a validation or test user's label never enters a batch
    reach = {int(u): float(r) for u, r, sp in zip(w.local.label_index, w.local.reach, w.local.split)
             if sp == "train"}
    local_x = {t: torch.from_numpy(w.local.x[t]) for t in S.NODE_TYPES}
    local_ea = torch.from_numpy(w.local.edge_attr[FOL])
    got_seeds, n_batches, fol_edges = [], 0, 0
    for batch in loader:
        n_batches += 1
        bs = batch["user"].batch_size
        n_id = batch["user"].n_id
        got_seeds += n_id[:bs].tolist()
        for t in S.NODE_TYPES:
            dense_t = torch.from_numpy(w.dense[t][batch[t].n_id.numpy()])
            assert torch.equal(batch[t].x, local_x[t][dense_t]), t
        # labels: the seeds' only (the loss reads no other, and no label crosses to another process), each
        # log1p(reach) of a training user (every seed is one)
        dense_u = w.dense["user"][n_id[:bs].numpy()]
        want = torch.tensor([math.log1p(reach[u]) for u in dense_u.tolist()], dtype=torch.float32)
        assert batch["user"].y.shape == (bs,)
        assert torch.allclose(batch["user"].y, want, rtol=1e-6, atol=0)
        for et in batch.edge_types:
            e_id, ei = batch[et].e_id.numpy(), batch[et].edge_index
            assert np.array_equal(batch[et[0]].n_id[ei[0]].numpy(), w.g_row[et][e_id]), et
            assert np.array_equal(batch[et[2]].n_id[ei[1]].numpy(), w.g_dst[et][e_id]), et
        # follows edge features: the LocalGraph's rows for the same (follower, followee) edges
        src_id = w.orig["user"][w.g_row[FOL][batch[FOL].e_id.numpy()]]
        dst_id = w.orig["user"][w.g_dst[FOL][batch[FOL].e_id.numpy()]]
        pos = torch.tensor([w.pairs[FOL][(int(s), int(d))] for s, d in zip(src_id, dst_id)], dtype=torch.long)
        assert torch.equal(batch[FOL].edge_attr, local_ea[pos])
        fol_edges += len(pos)
        for et in batch.edge_types:
            if et != FOL:
                assert "edge_attr" not in batch[et]
    assert n_batches == 3 and fol_edges > 0
    assert got_seeds == seeds.tolist()
    assert w.graph.remote_calls == 0


def test_shards_serve_training_labels_only(world):
    """A shard's ``y`` rows (what the sharded feature store serves) are NaN for val, test and unlabelled users."""
    for p in range(P):
        shard = world.graph.local[p]
        local = np.arange(len(shard.ids["user"]))
        served = shard.fetch({("user", "y"): local})[("user", "y")]
        train = shard.split == S.SPLITS.index("train")
        assert np.isfinite(served[train]).all() and np.isnan(served[~train]).all()
        assert np.array_equal(served[train], shard.y.numpy()[train])
        assert np.isfinite(shard.y.numpy()[shard.split >= 0]).all()  # validation still reads the true labels


def test_sharded_stores_refuse_whole_tensor_reads(world):
    w = world
    fs, gs = ShardedFeatureStore(w.graph), ShardedGraphStore(w.meta)
    with pytest.raises(ValueError, match="sharded over"):
        gs.get_edge_index(edge_type=FOL, layout="csc")
    with pytest.raises(ValueError, match="serves rows by index"):
        fs.get_tensor(group_name="user", attr_name="x", index=None)
    with pytest.raises(ValueError, match="serves rows by index"):
        fs.get_tensor(group_name="user", attr_name="y", index=None)
    idx = torch.tensor([5, 0, 1499, 700])
    with pytest.raises(ValueError, match="serves rows by index"):
        fs.multi_get_tensor([TensorAttr(group_name="user", attr_name="x", index=idx),
                             TensorAttr(group_name="content", attr_name="x", index=None)])
    # by index it serves the right rows, from every part, in request order
    x = fs.get_tensor(group_name="user", attr_name="x", index=idx)
    assert torch.equal(x, torch.from_numpy(w.local.x["user"][w.dense["user"][idx.numpy()]]))
    with pytest.raises(TypeError, match="read-only"):
        fs.put_tensor(torch.zeros(3, 21), group_name="user", attr_name="x", index=None)
    # it describes every relation's shape without holding the edges
    attrs = {tuple(a.edge_type): a for a in gs.get_all_edge_attrs()}
    assert set(attrs) == set(S.EDGE_TYPES)
    assert attrs[FOL].size == (USERS, USERS)


def test_num_neighbors_is_checked_as_pyg_checks_it(world):
    """The sharded sampler refuses what PyG's NumNeighbors refuses: a relation the graph lacks, a missing one,
    uneven hop counts."""
    full = {et: [2] for et in world.meta.edge_types}
    with pytest.raises(ValueError, match="does not have"):
        DistributedNeighborSampler(world.graph, {**full, ("user", "folows", "user"): [2]})
    with pytest.raises(ValueError, match="no fanouts for relation"):
        DistributedNeighborSampler(world.graph, {FOL: [2]})
    with pytest.raises(ValueError, match="same number of hops"):
        DistributedNeighborSampler(world.graph, {**full, FOL: [2, 2]})
