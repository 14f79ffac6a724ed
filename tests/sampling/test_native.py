"""ripple.sampling.native: exact without-replacement neighbour sampling over CSC relations."""
from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats
from torch_geometric.sampler import NodeSamplerInput

from ripple.data.graph import build_csc
from ripple.graph.local import CSCGraphStore, DictFeatureStore
from ripple.sampling import backends
from ripple.sampling.native import CSCGraph, NativeNeighborSampler, _NodeSet, sample_csc
from ripple.sampling.segments import sample_segments, sample_segments_many, segment_arange

FOL = ("user", "follows", "user")
SHR = ("user", "shared", "content")
REV = ("content", "rev_shared", "user")




# ----------------------------------------------------------------------------------------------- helpers


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def csc(edges: list[tuple[int, int]], num_dst: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst) pairs -> (colptr, row) tensors."""
    src = np.array([s for s, _ in edges], dtype=np.int64)
    dst = np.array([d for _, d in edges], dtype=np.int64)
    colptr, row, _ = build_csc(src, dst, num_dst)
    return torch.from_numpy(colptr), torch.from_numpy(row)


def dst_of(colptr: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Destination node of CSC edge positions."""
    return torch.searchsorted(colptr, e, right=True) - 1


def check_sample_csc(colptr, frontier, fanout, owner, edge):
    """Every invariant of one ``sample_csc`` result."""
    assert owner.dtype == torch.long and edge.dtype == torch.long
    assert owner.shape == edge.shape
    # grouped by owner, owners are positions into the frontier
    assert bool((owner[1:] >= owner[:-1]).all())
    assert bool(((owner >= 0) & (owner < len(frontier))).all())
    # the edge lies in its destination's CSC range
    start, end = colptr[frontier[owner]], colptr[frontier[owner] + 1]
    assert bool(((edge >= start) & (edge < end)).all())
    deg = colptr[frontier + 1] - colptr[frontier]
    counts = torch.bincount(owner, minlength=len(frontier))
    expect = deg if fanout < 0 else torch.clamp(deg, max=fanout)
    assert torch.equal(counts, expect), (counts, expect)
    # without replacement: no edge twice for one owner
    pairs = set(zip(owner.tolist(), edge.tolist()))
    assert len(pairs) == len(owner)


# Hand-written CSC: node 0 has 3 in-edges, node 1 has 1, node 2 none, node 3 has 6, node 4 has 12.
#   fanout 2: node 0 -> key path (2 < 3 <= 4), node 3 and 4 -> rejection path (> 4), node 1 -> all.
LIT_COLPTR = torch.tensor([0, 3, 4, 4, 10, 22])
LIT_ROW = torch.tensor([7, 8, 9, 5, 0, 1, 2, 3, 4, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21])


# ----------------------------------------------------------------------------------------------- sample_csc


def test_segment_arange():
    assert segment_arange(torch.tensor([3, 0, 2])).tolist() == [0, 1, 2, 0, 1]
    assert segment_arange(torch.tensor([], dtype=torch.long)).tolist() == []


@pytest.mark.parametrize("fanout", [1, 2, 3, 6, 12])
def test_sample_csc_literal_graph_invariants(fanout):
    frontier = torch.tensor([4, 0, 1, 2, 3])
    for s in range(20):
        owner, edge = sample_csc(LIT_COLPTR, frontier, fanout, gen(s))
        check_sample_csc(LIT_COLPTR, frontier, fanout, owner, edge)


def test_sample_csc_small_degree_takes_all_neighbours():
    """Degree <= fanout: every in-edge, whichever path the node takes."""
    frontier = torch.tensor([0, 1, 2, 3])
    owner, edge = sample_csc(LIT_COLPTR, frontier, 6, gen(0))
    got = {o: sorted(edge[owner == o].tolist()) for o in range(4)}
    assert got == {0: [0, 1, 2], 1: [3], 2: [], 3: [4, 5, 6, 7, 8, 9]}


def test_sample_csc_fanout_minus_one_is_every_edge_in_order():
    frontier = torch.tensor([3, 2, 0])
    owner, edge = sample_csc(LIT_COLPTR, frontier, -1, gen(0))
    assert owner.tolist() == [0] * 6 + [2] * 3
    assert edge.tolist() == [4, 5, 6, 7, 8, 9, 0, 1, 2]


def test_sample_csc_empty_frontier_and_empty_graph():
    owner, edge = sample_csc(LIT_COLPTR, torch.tensor([], dtype=torch.long), 3, gen(0))
    assert len(owner) == len(edge) == 0
    owner, edge = sample_csc(torch.zeros(4, dtype=torch.long), torch.tensor([0, 2]), 3, gen(0))
    assert len(owner) == len(edge) == 0


def test_sample_csc_random_graph_with_hubs():
    """Degrees spanning <= fanout, (fanout, 2 fanout] and >> fanout (hubs), repeated and unsorted frontiers."""
    rng = np.random.default_rng(0)
    deg = np.concatenate([rng.integers(0, 30, 300), [0, 1, 500, 2000, 64]])
    rng.shuffle(deg)
    colptr = torch.from_numpy(np.concatenate([[0], np.cumsum(deg)]).astype(np.int64))
    n = len(deg)
    frontier = torch.from_numpy(rng.permutation(n)[:200])
    frontier = torch.cat([frontier, frontier[:10], torch.tensor([int(np.argmax(deg))] * 3)])
    for fanout in (1, 3, 10, 25):
        for s in range(3):
            owner, edge = sample_csc(colptr, frontier, fanout, gen(s))
            check_sample_csc(colptr, frontier, fanout, owner, edge)


def test_sample_csc_hub_rejection_path_distinct():
    """A hub (degree >> fanout) with a fanout close to half its degree: many collisions, still distinct."""
    colptr = torch.tensor([0, 41, 41 + 5000])
    for fanout in (20, 1000):  # degree 41 > 2*20 ; degree 5000 > 2*1000
        for s in range(5):
            owner, edge = sample_csc(colptr, torch.tensor([0, 1]), fanout, gen(s))
            check_sample_csc(colptr, torch.tensor([0, 1]), fanout, owner, edge)


def test_sample_csc_seeded():
    frontier = torch.arange(5)
    a = sample_csc(LIT_COLPTR, frontier, 2, gen(3))
    b = sample_csc(LIT_COLPTR, frontier, 2, gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [sample_csc(LIT_COLPTR, frontier, 2, gen(s))[1] for s in range(4, 10)]
    assert any(not torch.equal(a[1], o) for o in others)


@pytest.mark.parametrize("minus_one", [False, True], ids=["fanouts", "with-fanout--1"])
def test_many_requests_in_one_draw_are_the_draws_of_one_call_each(minus_one):
    """sample_segments_many (one draw for every mapped graph part): bit for bit one call per part, each with its
    own generator, whatever the widths (a part whose relations have smaller fanouts, one with only small
    segments, an empty one)."""
    rng = np.random.default_rng(0)
    degs = [torch.from_numpy(rng.integers(0, 40, n)) for n in (50, 30, 20, 0)]
    fans = [torch.full((50,), 15), torch.from_numpy(rng.choice([3, 10], 30)), torch.full((20,), 40),
            torch.empty(0, dtype=torch.long)]
    if minus_one:
        fans[1][:5] = -1
    want = [sample_segments(d, f, gen(i)) for i, (d, f) in enumerate(zip(degs, fans))]
    got = sample_segments_many(degs, fans, [gen(i) for i in range(len(degs))])
    assert len(got) == len(want)
    for (o1, e1), (o2, e2) in zip(got, want):
        assert torch.equal(o1, o2) and torch.equal(e1, e2)
    assert sum(len(o) for o, _ in got) > 0


def _uniformity(degree: int, fanout: int, draws: int = 4000, seed: int = 0) -> tuple[np.ndarray, float]:
    """Inclusion counts of each of ``degree`` neighbours over ``draws`` independent draws, and the p-value of
    the hypothesis that every neighbour is included with probability fanout / degree.

    The draws are one vectorized call with the node repeated ``draws`` times in the frontier (positions draw
    independently). Inclusion counts of a simple random sample have covariance
    ``n p (1-p) d/(d-1) (I - 11^T/d)``, so ``sum (O - E)^2 / (n p (1-p) d/(d-1))`` is chi-square with d-1 dof.
    """
    colptr = torch.tensor([0, degree])
    frontier = torch.zeros(draws, dtype=torch.long)
    owner, edge = sample_csc(colptr, frontier, fanout, gen(seed))
    check_sample_csc(colptr, frontier, fanout, owner, edge)
    counts = np.bincount(edge.numpy(), minlength=degree)
    p = fanout / degree
    expected = draws * p
    stat = float(((counts - expected) ** 2).sum() / (draws * p * (1 - p) * degree / (degree - 1)))
    return counts, float(stats.chi2.sf(stat, degree - 1))


@pytest.mark.parametrize("degree,fanout", [(20, 5), (8, 5)], ids=["rejection-path", "random-key-path"])
def test_sample_csc_uniform_inclusion(degree, fanout):
    assert (degree > 2 * fanout) == (degree == 20)  # the two parametrizations exercise the two paths
    counts, p = _uniformity(degree, fanout)
    assert counts.sum() == 4000 * fanout
    assert p > 1e-3, (counts / 4000, fanout / degree)
    # and each neighbour's frequency is near fanout / degree
    assert np.abs(counts / 4000 - fanout / degree).max() < 0.05


@pytest.mark.parametrize("degree,fanout", [(7, 2), (5, 3)], ids=["rejection-path", "random-key-path"])
def test_sample_csc_uniform_subsets(degree, fanout):
    """Stronger than per-neighbour inclusion: every fanout-subset is equally likely."""
    draws = 3000
    colptr = torch.tensor([0, degree])
    owner, edge = sample_csc(colptr, torch.zeros(draws, dtype=torch.long), fanout, gen(1))
    subsets = Counter(tuple(sorted(edge[owner == i].tolist())) for i in range(draws))
    allsets = list(itertools.combinations(range(degree), fanout))
    assert set(subsets) <= set(allsets)
    obs = np.array([subsets.get(s, 0) for s in allsets])
    p = stats.chisquare(obs).pvalue
    assert p > 1e-3, obs


def test_sample_csc_uniformity_detects_bias():
    """The uniformity statistic is not vacuous: a sampler that prefers low positions fails it."""
    degree, fanout, draws = 20, 5, 4000
    counts = np.zeros(degree)
    rng = np.random.default_rng(0)
    w = np.linspace(1.0, 1.6, degree)
    for _ in range(draws):
        counts[rng.choice(degree, fanout, replace=False, p=w / w.sum())] += 1
    p = fanout / degree
    stat = ((counts - draws * p) ** 2).sum() / (draws * p * (1 - p) * degree / (degree - 1))
    assert stats.chi2.sf(stat, degree - 1) < 1e-3


# ----------------------------------------------------------------------------------------------- sampler


def tiny_hetero() -> CSCGraph:
    """6 users, 3 content items.

    follows (src -> dst): 1->0 2->0 3->0 4->0 5->0 (user 0: 5 followers), 0->1, 2->1, 4->3, 5->4; user 2 and 5 have
    none. shared: user 0 -> c0, 1 -> c0, 2 -> c1, 3 -> c1, 4 -> c1, 5 -> c2 (rev_shared is the reverse).
    """
    follows = [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (0, 1), (2, 1), (4, 3), (5, 4)]
    shared = [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    f = csc(follows, 6)
    s = csc(shared, 3)
    r = csc([(c, u) for u, c in shared], 6)
    return CSCGraph(colptr={FOL: f[0], SHR: s[0], REV: r[0]}, row={FOL: f[1], SHR: s[1], REV: r[1]},
                    num_nodes={"user": 6, "content": 3})


def random_hetero(seed=0, n_user=300, n_content=120) -> CSCGraph:
    rng = np.random.default_rng(seed)
    # heavy-tailed in-degree for follows: a few hubs
    fol_dst = np.concatenate([rng.integers(0, n_user, 1500), np.full(200, 7), np.full(60, 11)])
    fol_src = rng.integers(0, n_user, len(fol_dst))
    keep = fol_src != fol_dst
    sh_src, sh_dst = rng.integers(0, n_user, 700), rng.integers(0, n_content, 700)
    out = {}
    for et, (s, d, nd) in {FOL: (fol_src[keep], fol_dst[keep], n_user), SHR: (sh_src, sh_dst, n_content),
                           REV: (sh_dst, sh_src, n_user)}.items():
        colptr, row, _ = build_csc(s, d, nd)
        out[et] = (torch.from_numpy(colptr), torch.from_numpy(row))
    return CSCGraph(colptr={k: v[0] for k, v in out.items()}, row={k: v[1] for k, v in out.items()},
                    num_nodes={"user": n_user, "content": n_content})


def hop_slices(counts: list[int]) -> list[slice]:
    ends = np.cumsum([0, *counts])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def check_output(graph: CSCGraph, num_neighbors, seeds: torch.Tensor, out, input_type="user"):
    """All structural invariants of one HeteroSamplerOutput."""
    B = len(seeds)
    # seeds first, at every position of the input (PyG: n_id[:batch_size] is the input, repeats included)
    assert out.node[input_type][:B].tolist() == seeds.tolist()
    for t, nodes in out.node.items():
        rest = nodes[B:] if t == input_type else nodes
        assert len(set(rest.tolist())) == len(rest), f"{t}: a sampled node appears twice"
        if t == input_type:
            assert not set(rest.tolist()) & set(seeds.tolist()), "a seed was added again as a sampled node"
        assert sum(out.num_sampled_nodes[t]) == len(nodes)
    assert out.num_sampled_nodes[input_type][0] == B
    num_hops = max(len(v) for v in num_neighbors.values())
    node_hops = {t: hop_slices(c) for t, c in out.num_sampled_nodes.items()}
    for t, c in out.num_sampled_nodes.items():
        assert len(c) == num_hops + 1
    for et in num_neighbors:
        assert len(out.num_sampled_edges[et]) == num_hops
        n_e = sum(out.num_sampled_edges[et])
        if et not in out.edge:
            assert n_e == 0
            continue
        assert len(out.edge[et]) == len(out.row[et]) == len(out.col[et]) == n_e
    for et, e in out.edge.items():
        src_t, _, dst_t = et
        colptr, row = graph.colptr[et], graph.row[et]
        src_glob = out.node[src_t][out.row[et]]
        dst_glob = out.node[dst_t][out.col[et]]
        # the edge exists: its source is row[e] and e lies in the destination's CSC range
        assert torch.equal(src_glob, row[e])
        assert bool(((e >= colptr[dst_glob]) & (e < colptr[dst_glob + 1])).all())
        # per hop: destinations are exactly that hop's frontier of dst_t (by batch position: a repeated seed is
        # sampled at each of its positions), with min(fanout, deg) distinct edges each
        for hop, sl in enumerate(hop_slices(out.num_sampled_edges[et])):
            e_h, d_h = e[sl], out.col[et][sl]
            positions = node_hops[dst_t][hop]
            frontier = out.node[dst_t][positions]
            fanout = num_neighbors[et][hop] if hop < len(num_neighbors[et]) else 0
            deg = colptr[frontier + 1] - colptr[frontier]
            want = deg if fanout < 0 else torch.clamp(deg, max=fanout)
            got = Counter(d_h.tolist())
            local = range(positions.start, positions.stop)
            assert set(got) <= set(local)
            for pos, w in zip(local, want.tolist()):
                assert got.get(pos, 0) == w, (et, hop, pos, got.get(pos, 0), w)
                drawn = e_h[d_h == pos]
                assert len(set(drawn.tolist())) == len(drawn), "an edge was drawn twice for one destination"
        # sampled sources of hop h that were not seen before are the hop-(h+1) frontier: check they were added
        # to the source type's node list no later than this hop
        src_local = out.row[et]
        for hop, sl in enumerate(hop_slices(out.num_sampled_edges[et])):
            limit = sum(out.num_sampled_nodes[src_t][:hop + 2])
            assert bool((src_local[sl] < limit).all())


def test_sampler_tiny_graph_all_neighbours_is_bfs():
    """fanout -1: the output is exactly the 2-hop in-neighbourhood, layer by layer."""
    g = tiny_hetero()
    nn = {FOL: [-1, -1], SHR: [-1, -1], REV: [-1, -1]}
    sampler = NativeNeighborSampler(g, nn, seed=0)
    seeds = torch.tensor([3, 1])
    out = sampler.sample("user", seeds)
    check_output(g, nn, seeds, out)
    # hop 1 into users 3 and 1: followers 4 (of 3), 0 and 2 (of 1); content c1 (rev_shared of 3) and c0 (of 1)
    assert out.node["user"].tolist()[:2] == [3, 1]
    assert set(out.node["user"][2:2 + out.num_sampled_nodes["user"][1]].tolist()) == {4, 0, 2}
    assert out.node["content"][:out.num_sampled_nodes["content"][1]].tolist() == [1, 0]
    # hop 2: users into {4, 0, 2} via follows and content {1, 0} via shared (sources 2,3,4 and 0,1)
    hop2_users = set(out.node["user"][2 + out.num_sampled_nodes["user"][1]:].tolist())
    assert hop2_users == {5}
    # content frontier at hop 2: rev_shared sources of users {4, 0, 2}: c1, c0 seen; nothing new
    assert out.num_sampled_nodes["content"] == [0, 2, 0]
    # every in-edge of every frontier node is there
    assert out.num_sampled_edges[FOL] == [3, 1 + 5 + 0]      # into 3, 1: 4, 0, 2; into 4, 0, 2: 5; 1..5; none
    assert out.num_sampled_edges[REV] == [2, 3]               # into {3,1}; into {4,0,2}
    assert out.num_sampled_edges[SHR] == [0, 5]               # content frontier only from hop 1: c1 (3) + c0 (2)


def test_sampler_fanout_caps_per_relation():
    g = tiny_hetero()
    nn = {FOL: [2, 1], SHR: [1, 0], REV: [1, 1]}
    for s in range(15):
        seeds = torch.tensor([0, 1])
        out = NativeNeighborSampler(g, nn, seed=s).sample("user", seeds)
        check_output(g, nn, seeds, out)
        assert out.num_sampled_edges[SHR][1] == 0  # no fanout for hop 2 of shared


def test_sampler_keeps_every_seed_position_as_pyg_does():
    g = tiny_hetero()
    nn = {FOL: [-1], SHR: [1], REV: [1]}
    seeds = torch.tensor([4, 0, 4, 5, 0])
    out = NativeNeighborSampler(g, nn, seed=0).sample("user", seeds)
    check_output(g, nn, seeds, out)
    assert out.node["user"][:5].tolist() == [4, 0, 4, 5, 0]
    assert out.num_sampled_nodes["user"][0] == 5
    # each copy of a repeated seed is a destination of its own: user 0's 5 followers twice, user 4's one twice
    assert Counter(out.col[FOL][:out.num_sampled_edges[FOL][0]].tolist()) == {0: 1, 1: 5, 2: 1, 4: 5}


def test_node_loader_with_repeated_input_nodes_keeps_them_all():
    """The issue's repro: PyG's NodeLoader over the native sampler, input nodes [0, 0, 1]: ``n_id[:3]`` is the input."""
    from torch_geometric.data import HeteroData
    from torch_geometric.loader import NodeLoader

    data = HeteroData()
    data["u"].x = torch.arange(4, dtype=torch.float).view(-1, 1)
    data["u", "to", "u"].edge_index = torch.tensor([[1, 2, 3, 0], [0, 0, 1, 2]])
    et = ("u", "to", "u")
    sampler = NativeNeighborSampler(CSCGraph.from_graph_store(data, {"u": 4}), {et: [-1]}, seed=0)
    batch = next(iter(NodeLoader(data, node_sampler=sampler, input_nodes=("u", torch.tensor([0, 0, 1])),
                                 batch_size=3)))
    assert batch["u"].n_id[:3].tolist() == [0, 0, 1] and batch["u"].batch_size == 3
    assert batch["u"].x[:3, 0].tolist() == [0.0, 0.0, 1.0]
    # both copies of user 0 receive its two in-edges (from 1 and 2), the seed 1 its one (from 3)
    src, dst = batch[et].edge_index
    got = sorted(zip(batch["u"].n_id[src].tolist(), dst.tolist()))
    assert got == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 2)]


def test_node_set_numbers_ids_by_first_appearance_across_calls():
    """The one-table dedup against a dict: seeds (repeats kept at their first position), then ids in order of
    first appearance over several calls mixing known ids, new ids and repeats; the table is clean afterwards."""
    rng = np.random.default_rng(0)
    ns = _NodeSet(50, "cpu")
    for _ in range(3):  # reused across batches
        seeds = torch.tensor([7, 3, 7, 9])
        ns.nodes, ns.count = [], 0
        ns.add_seeds(seeds)
        ref = {7: 0, 3: 1, 9: 3}
        count = 4
        for _ in range(4):
            glob = torch.from_numpy(rng.integers(0, 50, 40))
            before = count
            loc, new = ns.add(glob)
            want_new = []
            for g in glob.tolist():
                if g not in ref:
                    ref[g] = count
                    count += 1
                    want_new.append(g)
            assert loc.tolist() == [ref[g] for g in glob.tolist()] and loc.dtype == torch.long
            assert new.tolist() == want_new and ns.count == count == before + len(want_new)
        assert ns.finish().tolist() == [7, 3, 7, 9] + [g for g, i in sorted(ref.items(), key=lambda kv: kv[1])
                                                       if i >= 4]
        assert bool((ns.assoc == torch.iinfo(torch.int32).max).all())


def test_node_set_refuses_a_type_beyond_int32():
    with pytest.raises(ValueError, match="int32"):
        _NodeSet(2**31, "meta")


def test_sampler_reused_across_batches():
    """The global->local table is reused between calls; a second batch must not see the first one's ids."""
    g = random_hetero()
    nn = {FOL: [4, 3], SHR: [2, 2], REV: [3, 2]}
    sampler = NativeNeighborSampler(g, nn, seed=1)
    for b in range(4):
        seeds = torch.arange(b * 13, b * 13 + 13).flip(0)
        out = sampler.sample("user", seeds)
        check_output(g, nn, seeds, out)


def test_sampler_random_graph_invariants():
    g = random_hetero(seed=3)
    for nn in ({FOL: [10, 5], SHR: [3, 2], REV: [2, 4]},          # hubs 7 and 11 -> rejection path
               {FOL: [1, 1, 1], SHR: [-1, 0, 0], REV: [5, -1, 2]},  # three hops, fanout 0, -1
               {FOL: [40], SHR: [40], REV: [40]}):               # mostly degree <= fanout
        for s in range(3):
            seeds = torch.tensor([7, 11, 0, 299, 150, 7])
            out = NativeNeighborSampler(g, nn, seed=s).sample("user", seeds)
            check_output(g, nn, seeds, out)


def test_sampler_hub_gets_exactly_fanout_distinct_followers():
    g = random_hetero(seed=5)
    deg7 = int(g.colptr[FOL][8] - g.colptr[FOL][7])
    assert deg7 > 2 * 10  # the hub takes the rejection path
    out = NativeNeighborSampler(g, {FOL: [10], SHR: [0], REV: [0]}, seed=0).sample("user", torch.tensor([7]))
    e = out.edge[FOL]
    assert len(e) == 10 and len(set(e.tolist())) == 10
    assert torch.equal(out.node["user"][out.row[FOL]], g.row[FOL][e])
    assert (out.node["user"][out.col[FOL]] == 7).all()


def test_sampler_multihop_frontier_is_new_nodes_of_previous_hop():
    g = random_hetero(seed=2)
    nn = {FOL: [3, 3], SHR: [2, 2], REV: [2, 2]}
    seeds = torch.tensor([5, 6, 7])
    out = NativeNeighborSampler(g, nn, seed=0).sample("user", seeds)
    check_output(g, nn, seeds, out)
    hop1_user = set(out.node["user"][3:3 + out.num_sampled_nodes["user"][1]].tolist())
    hop1_content = set(out.node["content"][:out.num_sampled_nodes["content"][1]].tolist())
    # hop-1 new users are exactly the unseen sources of hop-1 user edges
    src1 = set(g.row[FOL][out.edge[FOL][:out.num_sampled_edges[FOL][0]]].tolist())
    assert hop1_user == src1 - {5, 6, 7}
    assert hop1_content == set(g.row[REV][out.edge[REV][:out.num_sampled_edges[REV][0]]].tolist())
    # hop-2 destinations are exactly the hop-1 new nodes (those with in-edges)
    d2 = out.node["user"][out.col[FOL][out.num_sampled_edges[FOL][0]:]]
    assert set(d2.tolist()) <= hop1_user
    d2c = out.node["content"][out.col[SHR][out.num_sampled_edges[SHR][0]:]]
    assert set(d2c.tolist()) <= hop1_content
    assert out.num_sampled_edges[SHR][0] == 0  # no content frontier at hop 0


def test_sampler_deterministic_given_seed():
    g = random_hetero(seed=4)
    nn = {FOL: [5, 3], SHR: [2, 2], REV: [2, 2]}
    seeds = torch.arange(20)

    def run(s):
        out = NativeNeighborSampler(g, nn, seed=s).sample("user", seeds)
        return out

    a, b, c = run(11), run(11), run(12)
    for t in a.node:
        assert torch.equal(a.node[t], b.node[t])
    for et in a.edge:
        assert torch.equal(a.edge[et], b.edge[et])
        assert torch.equal(a.row[et], b.row[et]) and torch.equal(a.col[et], b.col[et])
    assert a.num_sampled_nodes == b.num_sampled_nodes and a.num_sampled_edges == b.num_sampled_edges
    assert any(not torch.equal(a.edge[et], c.edge[et]) for et in a.edge)


def test_sampler_empty_frontier_and_unsampled_relations():
    g = tiny_hetero()
    # seeds with no in-edges at all, and a relation with fanout 0
    nn = {FOL: [2, 2], SHR: [0, 0], REV: [1, 1]}
    seeds = torch.tensor([2, 5])  # users 2 and 5 have no followers; rev_shared gives content c1, c2
    out = NativeNeighborSampler(g, nn, seed=0).sample("user", seeds)
    assert out.num_sampled_edges[SHR] == [0, 0]
    assert out.num_sampled_edges[FOL] == [0, 0]
    assert out.num_sampled_edges[REV] == [2, 0]
    assert out.node["user"].tolist() == [2, 5]
    assert out.node["content"].tolist() == [1, 2]
    # PyG's contract: every relation is in row/col/edge, with empty tensors where nothing was sampled
    for d in (out.row, out.col, out.edge):
        assert set(d) == set(nn)
        assert d[SHR].numel() == 0 and d[FOL].numel() == 0 and d[SHR].dtype == torch.long


def test_sample_from_nodes_metadata_and_edges_refused():
    g = tiny_hetero()
    sampler = NativeNeighborSampler(g, {FOL: [2], SHR: [0], REV: [1]}, seed=0)
    inp = NodeSamplerInput(input_id=torch.tensor([10, 11]), node=torch.tensor([0, 3]), input_type="user")
    out = sampler.sample_from_nodes(inp)
    assert out.node["user"][:2].tolist() == [0, 3]
    assert out.metadata[0].tolist() == [10, 11]
    with pytest.raises(TypeError):
        sampler.sample_from_edges(None)


def test_cscgraph_from_graph_store():
    gs = CSCGraphStore()
    colptr, row = csc([(1, 0), (2, 0), (0, 1)], 3)
    gs.put_edge_index((row, colptr), edge_type=FOL, layout="csc", size=(3, 3), is_sorted=True)
    g = CSCGraph.from_graph_store(gs, {"user": 3})
    assert torch.equal(g.colptr[FOL], colptr) and torch.equal(g.row[FOL], row)
    assert g.num_nodes == {"user": 3}
    assert g.perm == {}  # already sorted by destination: no permutation


def test_edge_features_follow_their_edges_when_the_store_is_not_sorted_by_destination():
    """The issue's repro: a COO store whose edges are not in destination order. ``GraphStore.csc()`` sorts them and
    returns the permutation; the sampler hands it to NodeLoader (``edge_permutation``), so ``e_id`` and the edge
    features are the store's, not CSC positions."""
    from torch_geometric.data import HeteroData
    from torch_geometric.loader import NodeLoader

    et = ("u", "to", "u")
    data = HeteroData()
    data["u"].x = torch.zeros(4, 1)
    data[et].edge_index = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    data[et].edge_attr = torch.tensor([[10.0], [11.0], [12.0], [13.0]])
    sampler = NativeNeighborSampler(CSCGraph.from_graph_store(data, {"u": 4}), {et: [-1]}, seed=0)
    assert sampler.edge_permutation is not None
    batch = next(iter(NodeLoader(data, node_sampler=sampler, input_nodes=("u", torch.tensor([3])), batch_size=1)))
    src, dst = batch[et].edge_index
    assert batch["u"].n_id[src].tolist() == [0] and batch["u"].n_id[dst].tolist() == [3]
    assert batch[et].e_id.tolist() == [0] and batch[et].edge_attr.view(-1).tolist() == [10.0]  # 0->3 is edge 0


# ----------------------------------------------------------------------------------------------- vs PyG


def _inclusion(out_edge: torch.Tensor, colptr: torch.Tensor, degree: int) -> np.ndarray:
    """Per-position inclusion counts, all destinations pooled (each has ``degree`` in-edges)."""
    pos = out_edge - colptr[dst_of(colptr, out_edge)]
    return np.bincount(pos.numpy(), minlength=degree)


def test_native_matches_pyg_neighbor_sampler_inclusion():
    have = backends.available()
    if not any(b in have for b in ("pyg-lib", "torch-sparse")):
        pytest.skip("neither pyg-lib nor torch-sparse is installed, so PyG's NeighborSampler cannot sample here "
                    f"(available backends: {have})")
    from torch_geometric.sampler import NeighborSampler

    # 600 destination users 0..599, each with 20 distinct followers among users 600..: position j of every
    # destination's CSC range plays the role of "neighbour j" of one fixed seed, so one batch gives 600 draws.
    n_dst, degree, fanout = 600, 20, 5
    rng = np.random.default_rng(0)
    src = np.concatenate([n_dst + rng.permutation(2000)[:degree] for _ in range(n_dst)])
    dst = np.repeat(np.arange(n_dst), degree)
    n = n_dst + 2000
    colptr, row, _ = build_csc(src, dst, n)
    colptr_t, row_t = torch.from_numpy(colptr), torch.from_numpy(row)
    fs, gs = DictFeatureStore(), CSCGraphStore()
    fs.put_tensor(torch.zeros(n, 1), group_name="user", attr_name="x", index=None)
    gs.put_edge_index((row_t, colptr_t), edge_type=FOL, layout="csc", size=(n, n), is_sorted=True)
    seeds = torch.arange(n_dst)

    native = NativeNeighborSampler(CSCGraph({FOL: colptr_t}, {FOL: row_t}, {"user": n}), {FOL: [fanout]}, seed=0)
    pyg = NeighborSampler((fs, gs), num_neighbors={FOL: [fanout]})
    torch.manual_seed(0)
    counts = {}
    for name, sampler in (("native", native), ("pyg", pyg)):
        tot = np.zeros(degree)
        for rep in range(4):  # 2400 draws
            out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds, input_type="user"))
            e = out.edge[FOL].long()
            assert len(e) == n_dst * fanout
            # PyG samples without replacement too: no destination has a repeated edge
            d = dst_of(colptr_t, e)
            assert len(set(zip(d.tolist(), e.tolist()))) == len(e)
            tot += _inclusion(e, colptr_t, degree)
        counts[name] = tot / (4 * n_dst)
    # native is exactly uniform (each frequency has sd ~ 0.009)
    assert np.abs(counts["native"] - fanout / degree).max() < 0.04, counts["native"]
    # PyG + torch-sparse is measurably biased: the last `fanout` CSC positions of a node come out ~0.21 instead
    # of 0.25 here (its Floyd-style draw never picks position j directly), so it is held to a looser bound.
    assert np.abs(counts["pyg"] - fanout / degree).max() < 0.08, counts["pyg"]
    assert np.abs(counts["native"] - counts["pyg"]).max() < 0.08
    assert math.isclose(counts["native"].sum(), fanout) and math.isclose(counts["pyg"].sum(), fanout)


# ------------------------------------------------------------------ robustness (issue N: three defects)

def _all_neighbours() -> dict:
    return {FOL: [-1, -1], SHR: [-1, -1], REV: [-1, -1]}  # no draws: every batch is exactly determined


def test_a_batch_that_fails_part_way_leaves_the_next_batch_right(monkeypatch):
    """A batch that raises in hop 2 (out of memory, say) had left hop 1's nodes in the id tables, and every later
    batch lost them (24 nodes instead of 37 in the issue's repro)."""
    import ripple.sampling.native as native

    g = random_hetero(seed=3)
    seeds = torch.tensor([7, 11, 0, 299, 150])
    expected = NativeNeighborSampler(g, _all_neighbours()).sample("user", seeds)
    sampler = NativeNeighborSampler(g, _all_neighbours())
    real, calls = native.sample_segments, []

    def fail_in_hop_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated) in hop 2")
        return real(*a, **k)

    monkeypatch.setattr(native, "sample_segments", fail_in_hop_2)
    with pytest.raises(RuntimeError, match="hop 2"):
        sampler.sample("user", seeds)
    monkeypatch.setattr(native, "sample_segments", real)
    with pytest.raises((IndexError, RuntimeError)):  # a bad id fails the batch too
        sampler.sample("user", torch.tensor([1, 2, 10**6]))
    out = sampler.sample("user", seeds)
    for t in expected.node:
        assert out.node[t].tolist() == expected.node[t].tolist(), t
    for et in expected.row:
        assert out.row[et].tolist() == expected.row[et].tolist() and out.col[et].tolist() == expected.col[et].tolist()


def test_threads_sharing_a_sampler_get_the_batches_they_asked_for():
    """Two threads sharing one sampler used to corrupt each other's batches (one id table per type)."""
    import threading

    g = random_hetero(seed=3)
    sampler = NativeNeighborSampler(g, _all_neighbours())
    batches = [torch.tensor([7, 11, 0]), torch.tensor([299, 150, 42, 8])]
    expected = [NativeNeighborSampler(g, _all_neighbours()).sample("user", b).node["user"].tolist() for b in batches]
    wrong = []

    def work(i):
        for _ in range(150):
            if sampler.sample("user", batches[i]).node["user"].tolist() != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} corrupted batches"


@pytest.mark.parametrize("nn, message", [
    ({FOL: [2, 2], SHR: [1, 1], ("content", "rev_shard", "user"): [1, 1]}, "does not have"),  # misspelt
    ({FOL: [2, 2], SHR: [1, 1]}, "no fanouts for relation"),                                # one missing
    ({FOL: [2, 2], SHR: [1], REV: [1, 1]}, "same number of hops"),                          # uneven hops
])
def test_num_neighbors_is_checked_as_pyg_checks_it(nn, message):
    """A misspelt relation was ignored (the real one got 0 edges and an empty, spurious relation appeared);
    missing relations and uneven hop counts were accepted. PyG raises ValueError for each."""
    with pytest.raises(ValueError, match=message):
        NativeNeighborSampler(tiny_hetero(), nn)
