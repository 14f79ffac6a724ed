"""ripple.sampling.temporal: the native sampler's time-aware mode against a brute-force reference of PyG's temporal
semantics (disjoint per-seed subgraphs; an in-edge is valid when its time, or its source node's, is <= the seed's
time; ``uniform`` and ``last``)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch_geometric.sampler import NodeSamplerInput

from ripple.data.graph import build_csc
from ripple.sampling.native import CSCGraph
from ripple.sampling.segments import sort_segments_by_time, valid_prefix
from ripple.sampling.temporal import TemporalNeighborSampler

pytestmark = pytest.mark.timeout(120)

FOL = ("user", "follows", "user")
SHR = ("user", "shared", "content")
REV = ("content", "rev_shared", "user")


def make_graph(seed=0, n_user=40, n_content=15):
    """A random hetero graph as CSC (with the store's edge ids shuffled through ``perm``), its edge lists in the
    store's order, and a time per edge and per node."""
    rng = np.random.default_rng(seed)
    edges = {FOL: (rng.integers(0, n_user, 200), rng.integers(0, n_user, 200), n_user),
             SHR: (rng.integers(0, n_user, 80), rng.integers(0, n_content, 80), n_content)}
    edges[REV] = (edges[SHR][1], edges[SHR][0], n_user)
    colptr, row, perm, store = {}, {}, {}, {}
    for et, (s, d, nd) in edges.items():
        keep = s != d if et == FOL else np.ones(len(s), bool)
        s, d = s[keep], d[keep]
        store[et] = (s, d)
        c, r, p = build_csc(s, d, nd)
        colptr[et], row[et] = torch.from_numpy(c), torch.from_numpy(r)
        perm[et] = torch.from_numpy(np.argsort(d, kind="stable"))  # CSC position -> store edge id
        assert torch.equal(row[et], torch.from_numpy(s)[perm[et]])
    graph = CSCGraph(colptr, row, {"user": n_user, "content": n_content}, perm)
    edge_time = {et: torch.from_numpy(rng.integers(0, 100, len(s))) for et, (s, _) in store.items()}
    node_time = {"user": torch.from_numpy(rng.integers(0, 100, n_user)),
                 "content": torch.from_numpy(rng.integers(0, 100, n_content))}
    return graph, store, edge_time, node_time


def reference(store, num_hops, seeds, seed_time, valid):
    """Per seed, the nodes (type, id) and store edges (relation, edge id) of its subgraph with every valid
    in-edge taken (fanout -1): breadth first, a node entering a seed's subgraph once."""
    out = []
    for s, t in zip(seeds.tolist(), seed_time.tolist()):
        nodes, edges, frontier = {("user", s)}, set(), {("user", s)}
        for _ in range(num_hops):
            nxt = set()
            for et, (src, dst) in store.items():
                for e in range(len(src)):
                    if (et[2], int(dst[e])) in frontier and valid(et, e, int(src[e]), t):
                        edges.add((et, e))
                        if (et[0], int(src[e])) not in nodes:
                            nodes.add((et[0], int(src[e])))
                            nxt.add((et[0], int(src[e])))
            frontier = nxt
        out.append((nodes, edges))
    return out


def subgraphs(out, perm, seeds):
    """The sampler's output as the reference's per-seed (nodes, store edges); ``perm``: the sampler's
    ``edge_permutation`` (CSC position -> store edge id)."""
    got = [(set(), set()) for _ in seeds]
    for t, ids in out.node.items():
        for n, b in zip(ids.tolist(), out.batch[t].tolist()):
            assert (t, n) not in got[b][0], "a node twice in one seed's subgraph"
            got[b][0].add((t, n))
    for et, e in out.edge.items():
        src_b = out.batch[et[0]][out.row[et]]
        dst_b = out.batch[et[2]][out.col[et]]
        assert torch.equal(src_b, dst_b), "an edge joins two seeds' subgraphs"
        store_id = perm[et][e]
        for b, i in zip(dst_b.tolist(), store_id.tolist()):
            got[b][1].add((et, i))
    return got


@pytest.mark.parametrize("level", ["edge", "node"])
def test_all_valid_neighbours_are_exactly_the_reference(level):
    graph, store, edge_time, node_time = make_graph(seed=1)
    nn = {et: [-1, -1] for et in store}
    kw = {"edge_time": edge_time} if level == "edge" else {"node_time": node_time}
    sampler = TemporalNeighborSampler(graph, nn, **kw)
    seeds = torch.tensor([3, 7, 3, 19, 0])  # a repeated seed gets a subgraph of its own
    seed_time = torch.tensor([50, 90, 10, 0, 99])
    out = sampler.sample("user", seeds, seed_time)
    assert out.node["user"][:5].tolist() == seeds.tolist() and out.batch["user"][:5].tolist() == [0, 1, 2, 3, 4]

    def valid(et, e, src, t):
        return int(edge_time[et][e]) <= t if level == "edge" else int(node_time[et[0]][src]) <= t

    want = reference(store, 2, seeds, seed_time, valid)
    assert subgraphs(out, sampler.edge_permutation, seeds) == want
    for t, c in out.num_sampled_nodes.items():
        assert sum(c) == len(out.node[t])


def test_relations_and_node_types_without_times_are_not_filtered():
    graph, store, edge_time, node_time = make_graph(seed=2)
    nn = {et: [-1] for et in store}
    out = TemporalNeighborSampler(graph, nn, node_time={"content": node_time["content"]}).sample(
        "user", torch.tensor([5]), torch.tensor([-1]))
    # users have no times: every follower of user 5 is valid even at time -1; content is filtered out
    followers = {int(s) for s, d in zip(*store[FOL]) if d == 5}
    assert set(out.node["user"][1:].tolist()) == followers
    assert out.node["content"].numel() == 0


def test_last_takes_the_most_recent_valid_edges():
    graph, store, edge_time, _ = make_graph(seed=3)
    dst = int(np.bincount(store[FOL][1]).argmax())  # the user with the most followers
    nn = {FOL: [3], SHR: [0], REV: [0]}
    t = 60
    sampler = TemporalNeighborSampler(graph, nn, edge_time=edge_time, temporal_strategy="last")
    out = sampler.sample("user", torch.tensor([dst]), torch.tensor([t]))
    times = sorted(int(edge_time[FOL][e]) for e in range(len(store[FOL][0]))
                   if store[FOL][1][e] == dst and edge_time[FOL][e] <= t)
    got = sorted(edge_time[FOL][sampler.edge_permutation[FOL][out.edge[FOL]]].tolist())
    assert got == times[-3:]


def test_uniform_draws_are_uniform_over_the_valid_edges():
    """Each valid in-edge of a node is drawn with probability fanout / valid; future ones never."""
    colptr = torch.tensor([0, 10])
    row = torch.arange(10)
    graph = CSCGraph({FOL: colptr}, {FOL: row}, {"user": 10})
    times = torch.tensor([5, 1, 9, 3, 7, 2, 8, 4, 6, 0])
    sampler = TemporalNeighborSampler(graph, {FOL: [2]}, edge_time={FOL: times}, seed=0)
    counts = Counter()
    runs = 3000
    for _ in range(runs):
        out = sampler.sample("user", torch.tensor([0]), torch.tensor([4]))  # valid: times 0..4 = 5 edges
        counts.update(sampler.edge_permutation[FOL][out.edge[FOL]].tolist())
    valid = {i for i in range(10) if times[i] <= 4}
    assert set(counts) == valid
    for i in valid:
        assert abs(counts[i] / runs - 2 / 5) < 0.04, (i, counts[i] / runs)


def test_sort_segments_and_valid_prefix():
    colptr = torch.tensor([0, 3, 3, 7])
    row = torch.tensor([10, 11, 12, 20, 21, 22, 23])
    time = torch.tensor([5, 1, 5, 9, 0, 3, 3])
    r, t, perm = sort_segments_by_time(colptr, row, time, None)
    assert t.tolist() == [1, 5, 5, 0, 3, 3, 9] and r.tolist() == [11, 10, 12, 21, 22, 23, 20]
    assert perm.tolist() == [1, 0, 2, 4, 5, 6, 3]
    start, end = colptr[:-1], colptr[1:]
    assert valid_prefix(t, start, end, torch.tensor([5, 5, 3])).tolist() == [3, 0, 3]
    assert valid_prefix(t, start, end, torch.tensor([0, 0, -1])).tolist() == [0, 0, 0]


def test_seed_time_defaults_to_the_seed_node_time_and_metadata_passes():
    graph, store, _, node_time = make_graph(seed=4)
    sampler = TemporalNeighborSampler(graph, {et: [-1] for et in store}, node_time=node_time)
    inp = NodeSamplerInput(input_id=torch.tensor([0, 1]), node=torch.tensor([2, 9]), input_type="user")
    out = sampler.sample_from_nodes(inp)
    direct = sampler.sample("user", torch.tensor([2, 9]), node_time["user"][[2, 9]])
    assert out.node["user"].tolist() == direct.node["user"].tolist()
    assert out.metadata[0].tolist() == [0, 1]
    edge_only = TemporalNeighborSampler(graph, {et: [-1] for et in store},
                                        edge_time={et: torch.zeros(len(s), dtype=torch.long)
                                                   for et, (s, _) in store.items()})
    with pytest.raises(ValueError, match="input_time"):
        edge_only.sample_from_nodes(inp)


def test_bad_arguments_are_refused():
    graph, store, edge_time, node_time = make_graph(seed=5)
    nn = {et: [2] for et in store}
    with pytest.raises(ValueError, match="node_time or edge_time"):
        TemporalNeighborSampler(graph, nn)
    with pytest.raises(ValueError, match="temporal_strategy"):
        TemporalNeighborSampler(graph, nn, edge_time=edge_time, temporal_strategy="newest")
    with pytest.raises(ValueError, match="does not have"):
        TemporalNeighborSampler(graph, {**nn, ("user", "folows", "user"): [2]}, edge_time=edge_time)


@pytest.mark.parametrize("level", ["edge", "node"])
def test_shared_time_batches_are_one_subgraph_of_exactly_the_valid_edges(level):
    """``disjoint=False``: seeds at one time share a subgraph (the plain sampler's path on the valid prefixes);
    it holds exactly the union of what each seed may see. A batch of mixed times goes disjoint."""
    graph, store, edge_time, node_time = make_graph(seed=6)
    nn = {et: [-1, -1] for et in store}
    kw = {"edge_time": edge_time} if level == "edge" else {"node_time": node_time}
    sampler = TemporalNeighborSampler(graph, nn, disjoint=False, **kw)
    seeds = torch.tensor([3, 7, 19, 0])
    out = sampler.sample("user", seeds, torch.full((4,), 60))
    assert out.batch is None and out.node["user"][:4].tolist() == seeds.tolist()

    def valid(et, e, src, t):
        return int(edge_time[et][e]) <= t if level == "edge" else int(node_time[et[0]][src]) <= t

    want = reference(store, 2, seeds, torch.full((4,), 60), valid)
    nodes = {(t, n) for t, ids in out.node.items() for n in ids.tolist()}
    assert nodes == set().union(*(w[0] for w in want))
    edges = {(et, i) for et, e in out.edge.items() for i in sampler.edge_permutation[et][e].tolist()}
    assert edges == set().union(*(w[1] for w in want))
    mixed = sampler.sample("user", seeds, torch.tensor([60, 60, 10, 60]))
    assert mixed.batch is not None and mixed.batch["user"][:4].tolist() == [0, 1, 2, 3]


def test_shared_time_last_takes_the_most_recent_valid_edges():
    graph, store, edge_time, _ = make_graph(seed=3)
    dst = int(np.bincount(store[FOL][1]).argmax())
    nn = {FOL: [3], SHR: [0], REV: [0]}
    sampler = TemporalNeighborSampler(graph, nn, edge_time=edge_time, temporal_strategy="last", disjoint=False)
    out = sampler.sample("user", torch.tensor([dst]), torch.tensor([60]))
    times = sorted(int(edge_time[FOL][e]) for e in range(len(store[FOL][0]))
                   if store[FOL][1][e] == dst and edge_time[FOL][e] <= 60)
    assert sorted(edge_time[FOL][sampler.edge_permutation[FOL][out.edge[FOL]]].tolist()) == times[-3:]


def test_valid_prefix_matches_counting_on_random_segments():
    g = torch.Generator().manual_seed(0)
    deg = torch.randint(0, 40, (300,), generator=g)
    colptr = torch.cat([torch.zeros(1, dtype=torch.long), deg.cumsum(0)])
    time = torch.randint(0, 50, (int(deg.sum()),), generator=g)
    _, time, _ = sort_segments_by_time(colptr, torch.arange(len(time)), time, None)
    limit = torch.randint(-5, 55, (300,), generator=g)
    got = valid_prefix(time, colptr[:-1], colptr[1:], limit)
    want = [int((time[colptr[i]:colptr[i + 1]] <= limit[i]).sum()) for i in range(300)]
    assert got.tolist() == want
