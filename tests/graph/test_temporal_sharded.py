"""Time-aware sampling of a partitioned graph: the partitioner's edge times and the sharded sampler at a time T.

A 300-user generated dataset, with one follows edge planted at T + 1 (just after the sampling time T), is
partitioned into P = 3 parts and opened in-process. References work on the whole graph (``load_local_graph``, dense
indices, times from ``ripple.data.timeline``): ``TemporalNeighborSampler(disjoint=False)`` and a brute-force
breadth-first walk over the in-edges valid at T. Sharded and whole-graph results are compared through original ids.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from tiny_dataset import tiny_tables, write_tiny_dataset
from torch_geometric.sampler import NodeSamplerInput

from ripple.config import PartitionConfig
from ripple.data import schema as S
from ripple.data.dataset import Dataset
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.graph import LocalGraph, load_local_graph
from ripple.graph.part_io import PartitionMeta
from ripple.graph.partition import part_dir, partition
from ripple.graph.sharded_sampler import DistributedNeighborSampler
from ripple.graph.shards import ShardedGraph
from ripple.sampling.native import CSCGraph
from ripple.sampling.temporal import TemporalNeighborSampler

pytestmark = pytest.mark.timeout(120)

P = 3
USERS = 300
FOL = ("user", "follows", "user")
MEMBER_OF = ("user", "member_of", "community")


@dataclass
class World:
    data: str
    meta: PartitionMeta
    graph: ShardedGraph                    # all P parts in this process
    local: LocalGraph                      # the whole graph, dense indices, edge times in CSC order
    orig: dict[str, np.ndarray]            # type -> [N_t] original id of each sharded global index
    time_of: dict                          # relation -> {(src orig id, dst orig id): time, or None}
    T: int                                 # the sampling time
    planted: tuple[int, int]               # (follower, followee) original ids of the follow planted at T + 1

    def global_of(self, t: str, orig_ids: np.ndarray) -> torch.Tensor:
        order = np.argsort(self.orig[t])
        return torch.from_numpy(order[np.searchsorted(self.orig[t], orig_ids, sorter=order)])

    def dense_of(self, t: str, orig_ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.searchsorted(self.local.ids[t], orig_ids))

    def valid_in(self, et, dst_orig: int) -> list:
        """Times of the in-edges of ``dst_orig`` valid at T (None for a relation without times)."""
        return [t for (s, d), t in self.time_of[et].items() if d == dst_orig and (t is None or t <= self.T)]


def _planted_dataset(src_url: str, url: str) -> tuple[str, int, tuple[int, int]]:
    """The generated dataset with one follow's ``since_date`` moved to T + 1; returns (url, T, the follow)."""
    ds = Dataset(src_url)
    tables = {name: ds.read(name) for name in S.TABLES if ds.has(name)}
    T = int(np.median(tables["created"]["timestamp"].to_numpy()))  # about half the posts exist at T
    fol = tables["follows"]
    dst = fol["dst"].to_numpy()
    # a followee with several followers, so the planted follow is one of many in-edges
    followees, followers = np.unique(dst, return_counts=True)
    target = int(followees[np.argmax(followers)])
    row = int(np.flatnonzero(dst == target)[0])
    since = fol["since_date"].to_numpy().copy()
    since[row] = T + 1
    tables["follows"] = fol.set_column(fol.schema.get_field_index("since_date"), "since_date", pa.array(since))
    return write_tiny_dataset(url, tables), T, (int(fol["src"][row].as_py()), target)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("temporal_sharded")
    generate(str(root / "gen"), GeneratorConfig(users=USERS, users_per_community=100, seed=0))
    data, T, planted = _planted_dataset(str(root / "gen"), str(root / "data"))
    partition(data, str(root / "parts"), PartitionConfig(num_parts=P))
    meta = PartitionMeta.open(str(root / "parts"))
    graph = ShardedGraph.in_process(meta)
    local = load_local_graph(Dataset(data))
    orig = {t: np.concatenate([graph.local[p].ids[t] for p in range(P)]) for t in S.NODE_TYPES}
    time_of = {}
    for et in meta.edge_types:
        colptr, row = local.csc[et]
        dst = np.repeat(np.arange(len(colptr) - 1), np.diff(colptr))
        times = local.edge_time.get(et)
        pairs = zip(local.ids[et[0]][row].tolist(), local.ids[et[2]][dst].tolist())
        time_of[et] = {pair: (None if times is None else int(times[i])) for i, pair in enumerate(pairs)}
        assert len(time_of[et]) == len(row), et  # no multi-edges: an edge is named by its endpoints
    return World(data, meta, graph, local, orig, time_of, T, planted)


def all_relations(w: World, fanouts: list[int]) -> dict:
    return {et: list(fanouts) for et in w.meta.edge_types}


def seed_users(w: World, n: int, seed: int = 0) -> np.ndarray:
    """``n`` original user ids, the planted follow's followee first."""
    rng = np.random.default_rng(seed)
    others = rng.choice(np.setdiff1d(w.local.ids["user"], [w.planted[1]]), n - 1, replace=False)
    return np.concatenate([[w.planted[1]], others])


def hops_of(out, ids: dict[str, np.ndarray]) -> tuple[list[dict], list[Counter]]:
    """Per hop: {type: set of original ids new at it}, Counter of sampled edges (relation, src id, dst id).
    ``ids[t]``: the original id of each index of type t in the output (sharded global or whole-graph dense)."""
    nodes, edges = [], []
    for h in range(len(next(iter(out.num_sampled_nodes.values())))):
        nodes.append({})
        for t, counts in out.num_sampled_nodes.items():
            lo = sum(counts[:h])
            nodes[h][t] = set(ids[t][out.node[t][lo:lo + counts[h]].numpy()].tolist())
    for et, counts in out.num_sampled_edges.items():
        lo = 0
        for h, c in enumerate(counts):
            while len(edges) <= h:
                edges.append(Counter())
            src = ids[et[0]][out.node[et[0]][out.row[et][lo:lo + c]].numpy()]
            dst = ids[et[2]][out.node[et[2]][out.col[et][lo:lo + c]].numpy()]
            edges[h].update((et[1], int(s), int(d)) for s, d in zip(src, dst))
            lo += c
    return nodes, edges


def brute_force(w: World, seeds: np.ndarray, hops: int, at: int) -> tuple[list[dict], list[Counter]]:
    """Every in-edge valid at ``at`` of every frontier node, hop by hop (fanout -1), over original ids."""
    seen = {t: set() for t in S.NODE_TYPES}
    seen["user"] = set(seeds.tolist())
    frontier = {"user": set(seeds.tolist())}
    nodes, edges = [{t: set(v) for t, v in frontier.items()}], []
    for _ in range(hops):
        hop_edges, nxt = Counter(), {}
        for et, pairs in w.time_of.items():
            for (s, d), t in pairs.items():
                if d in frontier.get(et[2], ()) and (t is None or t <= at):
                    hop_edges[(et[1], s, d)] += 1
                    if s not in seen[et[0]]:
                        nxt.setdefault(et[0], set()).add(s)
        for t, v in nxt.items():
            seen[t] |= v
        edges.append(hop_edges)
        nodes.append(nxt)
        frontier = nxt
    return nodes, edges


def whole_graph_sampler(w: World, num_neighbors: dict, strategy: str = "uniform") -> TemporalNeighborSampler:
    csc = CSCGraph({et: torch.from_numpy(c) for et, (c, _) in w.local.csc.items()},
                   {et: torch.from_numpy(r) for et, (_, r) in w.local.csc.items()},
                   {t: w.local.num_nodes(t) for t in S.NODE_TYPES})
    return TemporalNeighborSampler(csc, num_neighbors, edge_time={et: torch.from_numpy(v)
                                                                  for et, v in w.local.edge_time.items()},
                                   temporal_strategy=strategy, seed=0, disjoint=False)


def non_empty(hops: list[dict]) -> list[dict]:
    return [{t: v for t, v in h.items() if v} for h in hops]


# ----------------------------------------------------------------------------------------------- the partition


def test_the_partition_stores_every_edges_time_sorted_within_each_destination(world):
    w = world
    assert sorted(w.meta.manifest["edge_times"]) == sorted(et[1] for et in w.local.edge_time)
    assert MEMBER_OF not in w.meta.timed_edge_types and FOL in w.meta.timed_edge_types
    assert w.meta.manifest["label_time"] is None  # the generator's labels have no time
    for p, shard in w.graph.local.items():
        assert set(shard.time) == set(w.meta.timed_edge_types)
        for et, time in shard.time.items():
            colptr = shard.colptr[et]
            seg = torch.repeat_interleave(torch.arange(len(colptr) - 1), colptr.diff())
            assert bool(((time.diff() >= 0) | (seg.diff() != 0)).all()), (p, et)  # each segment time-sorted
            # each edge's time is the one the timeline gives it on the whole graph (reply_to, reverses included)
            src = w.orig[et[0]][shard.row[et].long().numpy()]
            dst = w.orig[et[2]][seg.numpy() + shard.node_offset[et[2]]]
            want = [w.time_of[et][(int(s), int(d))] for s, d in zip(src, dst)]
            assert time.tolist() == want, (p, et)


def test_ties_keep_the_table_order_and_chunk_rows_change_no_byte(tmp_path):
    """Followee 0's followers 3, 2 (both at 10, in that table order) then 1 (at 30): time order, ties as read."""
    tables = tiny_tables()
    fol = tables["follows"]
    order = [2, 1, 0, *range(3, fol.num_rows)]  # rows (3,0), (2,0), (1,0), ...
    since = [10, 10, 30, *([20] * (fol.num_rows - 3))]
    fol = fol.take(order)
    tables["follows"] = fol.set_column(fol.schema.get_field_index("since_date"), "since_date",
                                       pa.array(since, pa.int64()))
    data = write_tiny_dataset(str(tmp_path / "data"), tables)
    outs = {}
    for rows in (1 << 20, 1):
        out = str(tmp_path / f"parts{rows}")
        partition(data, out, PartitionConfig(num_parts=1, chunk_rows=rows))
        outs[rows] = pq.read_table(f"{out}/{part_dir(0)}/edges/follows.parquet")
        ids = pq.read_table(f"{out}/{part_dir(0)}/user.parquet")["id"].to_numpy()
    assert outs[1].equals(outs[1 << 20])
    src, time = ids[outs[1]["src"].to_numpy()], outs[1]["time"].to_numpy()
    assert src[:3].tolist() == [3, 2, 1] and time[:3].tolist() == [10, 10, 30]  # user 0's in-edges come first


# ----------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("hops", [1, 2])
def test_every_neighbour_at_T_matches_the_whole_graph_sampler_and_brute_force(world, hops):
    """Fanout -1: the sharded sampler at T returns exactly the edges valid at T around the seeds, hop by hop."""
    w = world
    seeds = seed_users(w, 12)
    nn = all_relations(w, [-1] * hops)
    out = DistributedNeighborSampler(w.graph, nn, seed=0).sample("user", w.global_of("user", seeds), at=w.T)
    got_nodes, got_edges = hops_of(out, w.orig)
    ref = whole_graph_sampler(w, nn).sample("user", w.dense_of("user", seeds),
                                            torch.full((len(seeds),), w.T, dtype=torch.long))
    ref_nodes, ref_edges = hops_of(ref, w.local.ids)
    bf_nodes, bf_edges = brute_force(w, seeds, hops, w.T)
    assert non_empty(got_nodes) == non_empty(ref_nodes) == non_empty(bf_nodes)
    assert got_edges == ref_edges == bf_edges
    # not trivial: edges of timed relations were left out at T, every relation sampled something
    untimed = brute_force(w, seeds, hops, np.iinfo(np.int64).max)[1]
    assert sum(untimed[0].values()) > sum(bf_edges[0].values())
    want = {"follows", "rev_created", "rev_member_of"} | ({"created", "member_of"} if hops == 2 else set())
    assert {r for hop in got_edges for r, _, _ in hop} >= want
    # the global edge id of each sampled edge is that very edge
    for et, e in out.edge.items():
        if len(e):
            part = torch.searchsorted(w.graph.edge_offsets[et], e, right=True) - 1
            for p in torch.unique(part).tolist():
                shard, mine = w.graph.local[p], e[part == p] - w.graph.edge_offsets[et][p]
                assert torch.equal(shard.row[et][mine].long(), out.node[et[0]][out.row[et][part == p]]), et


def _per_destination(w: World, out, et, hop: int) -> dict[int, list]:
    """Hop ``hop``'s sampled in-edges of relation et: destination original id -> their times."""
    counts = out.num_sampled_edges[et]
    lo = sum(counts[:hop])
    src = w.orig[et[0]][out.node[et[0]][out.row[et][lo:lo + counts[hop]]].numpy()]
    dst = w.orig[et[2]][out.node[et[2]][out.col[et][lo:lo + counts[hop]]].numpy()]
    got: dict[int, list] = {}
    for s, d in zip(src.tolist(), dst.tolist()):
        got.setdefault(d, []).append(w.time_of[et][(s, d)])
    return got


@pytest.mark.parametrize("strategy", ["uniform", "last"])
def test_finite_fanout_draws_min_of_fanout_and_valid_degree_never_after_T(world, strategy):
    w = world
    fanout = 2
    nn = all_relations(w, [fanout, fanout])
    sampler = DistributedNeighborSampler(w.graph, nn, seed=1, temporal_strategy=strategy)
    checked = capped = 0
    for b in range(3):
        out = sampler.sample("user", w.global_of("user", seed_users(w, 24, seed=b)), at=w.T)
        for et in w.meta.edge_types:
            for hop in range(2):
                counts = out.num_sampled_nodes[et[2]]
                lo = sum(counts[:hop])
                frontier = w.orig[et[2]][out.node[et[2]][lo:lo + counts[hop]].numpy()]
                got = _per_destination(w, out, et, hop)
                assert set(got) <= set(frontier.tolist()), (et, hop)
                for d in frontier.tolist():
                    valid = w.valid_in(et, d)
                    times = got.get(d, [])
                    assert len(times) == min(fanout, len(valid)), (et, hop, d)
                    assert all(t is None or t <= w.T for t in times), (et, hop, d)
                    if strategy == "last" and et in w.meta.timed_edge_types:
                        # exactly the most recent valid ones (as times: ties may be broken either way)
                        assert sorted(times) == sorted(valid)[len(valid) - len(times):], (et, hop, d)
                    checked += 1
                    capped += len(valid) > fanout and et in w.meta.timed_edge_types
    assert checked > 200 and capped > 20


def test_same_seed_same_batches_and_sample_from_nodes_samples_at_the_seeds_time(world):
    w = world
    nn = all_relations(w, [3, 2])
    seeds = w.global_of("user", seed_users(w, 16))
    a = DistributedNeighborSampler(w.graph, nn, seed=5).sample("user", seeds, at=w.T)
    b = DistributedNeighborSampler(w.graph, nn, seed=5).sample_from_nodes(
        NodeSamplerInput(input_id=torch.arange(16), node=seeds, time=torch.full((16,), w.T), input_type="user"))
    assert hops_of(a, w.orig) == hops_of(b, w.orig)
    assert torch.equal(b.metadata[1], torch.full((16,), w.T))
    for et in a.edge:
        assert torch.equal(a.edge[et], b.edge[et]), et


# ----------------------------------------------------------------------------------------------- leakage


def test_an_edge_after_T_is_never_sampled_at_T_and_is_at_its_own_time(world):
    w = world
    planted = ("follows", *w.planted)
    assert w.time_of[FOL][w.planted] == w.T + 1
    seeds = w.global_of("user", seed_users(w, 8))
    for strategy in ("uniform", "last"):
        every = DistributedNeighborSampler(w.graph, all_relations(w, [-1]), seed=0, temporal_strategy=strategy)
        one = DistributedNeighborSampler(w.graph, all_relations(w, [1]), seed=0, temporal_strategy=strategy)
        for sampler, batches in ((every, 1), (one, 20)):
            for _ in range(batches):
                _, edges = hops_of(sampler.sample("user", seeds, at=w.T), w.orig)
                assert planted not in edges[0], strategy
        _, later = hops_of(every.sample("user", seeds, at=w.T + 1), w.orig)
        assert later[0][planted] == 1, strategy
    _, untimed = hops_of(DistributedNeighborSampler(w.graph, all_relations(w, [-1])).sample("user", seeds), w.orig)
    assert untimed[0][planted] == 1  # without a time, every edge


# ----------------------------------------------------------------------------------------------- refusals


def test_mixed_seed_times_are_refused(world):
    w = world
    sampler = DistributedNeighborSampler(w.graph, all_relations(w, [2]), seed=0)
    seeds = w.global_of("user", seed_users(w, 4))
    with pytest.raises(ValueError, match="batches of one time"):
        sampler.sample_from_nodes(NodeSamplerInput(input_id=torch.arange(4), node=seeds,
                                                   time=torch.tensor([w.T, w.T, w.T + 5, w.T]), input_type="user"))
    with pytest.raises(ValueError, match="temporal_strategy"):
        DistributedNeighborSampler(w.graph, all_relations(w, [2]), temporal_strategy="first")


def test_a_partition_without_edge_times_refuses_a_time_and_names_the_fix(world):
    w = world
    old = PartitionMeta(w.meta.url, w.meta.options, {k: v for k, v in w.meta.manifest.items() if k != "edge_times"})
    assert old.timed_edge_types is None
    graph = ShardedGraph.in_process(old, parts=[0, 1, 2])
    sampler = DistributedNeighborSampler(graph, all_relations(w, [2]), seed=0)
    seeds = w.global_of("user", seed_users(w, 4))
    with pytest.raises(ValueError, match="re-partition"):
        sampler.sample("user", seeds, at=w.T)
    with pytest.raises(ValueError, match="re-partition"):
        graph.local[0].sample({FOL: (np.array([0], np.int32), 2)}, seed=0, at=w.T)
    assert sampler.sample("user", seeds).num_sampled_edges[FOL][0] > 0  # untimed sampling as before


def _labels_at(times: list) -> dict[str, pa.Table]:
    tables = tiny_tables()
    lab = tables["labels"]
    col = pa.array((times * lab.num_rows)[:lab.num_rows], pa.int64())
    tables["labels"] = lab.set_column(lab.schema.get_field_index("time"), "time", col)
    return tables


def test_labels_at_two_times_are_refused_by_the_partitioner(tmp_path):
    data = write_tiny_dataset(str(tmp_path / "data"), _labels_at([1_700_000_000, 1_700_086_400, None]))
    assert len(pc.unique(Dataset(data).read("labels")["time"].drop_null())) == 2
    with pytest.raises(ValueError, match=r"labels\.time.*\[1700000000, 1700086400\].*whole graph"):
        partition(data, str(tmp_path / "parts"), PartitionConfig(num_parts=2))


def test_labels_at_one_time_are_partitioned_and_the_time_recorded(tmp_path):
    data = write_tiny_dataset(str(tmp_path / "data"), _labels_at([1_700_000_000, None]))
    m = partition(data, str(tmp_path / "parts"), PartitionConfig(num_parts=2))
    assert m["label_time"] == 1_700_000_000
