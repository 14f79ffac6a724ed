"""ripple.graph.shards on a real local Ray cluster: one GraphShard actor per part, a trainer-side
ShardedGraph holding its own part zero-copy and reaching the others remotely, and actor restarts.

One local cluster (``ray.init(num_cpus=2)``) and one partitioned 1500-user graph (P = 3) serve the whole module.
"""
from __future__ import annotations

import os
import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import torch
from conftest import recorded_sample_calls, same_sampler_output

from ripple.config import PartitionConfig
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.generator import GeneratorConfig, generate
from ripple.graph.partition import partition
from ripple.graph.sharded_sampler import DistributedNeighborSampler
from ripple.graph.partition import part_dir
from ripple.graph.part_io import PartitionMeta
from ripple.graph.shard import PackedRows, ShardData
from ripple.graph.shards import ShardedFeatureStore, ShardedGraph, find_shards, owner_of, shard_key, start_shard


P = 3
NN = {et: [4, 3] for et in S.EDGE_TYPES}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    data, parts = str(root / "data"), str(root / "parts")
    generate(data, GeneratorConfig(users=1500, seed=0))
    partition(data, parts, PartitionConfig(num_parts=P))
    meta = PartitionMeta.open(parts)
    key = shard_key(parts, f"test-{uuid.uuid4().hex[:8]}")
    # the creating handles stay referenced for the module: an unreferenced actor is destroyed, even a named one
    owned = [start_shard(meta, key, p) for p in range(P)]
    actors, _ = find_shards(meta, key, timeout_s=120)
    graph = ShardedGraph(meta, actors, local_parts=[0])
    reference = ShardedGraph.in_process(meta)  # every part loaded here, no Ray
    yield SimpleNamespace(meta=meta, key=key, owned=owned, actors=actors, graph=graph, ref=reference)
    for h in owned:
        ray.kill(h, no_restart=True)


def expected_shapes(meta: PartitionMeta, p: int) -> dict[str, tuple[int, ...]]:
    """A part's array shapes from the manifest's counts alone."""
    m = meta.manifest
    n = {t: m["node_counts"][t][p] for t in S.NODE_TYPES}
    out = {}
    for t in S.NODE_TYPES:
        out[f"ids/{t}"] = (n[t],)
        blocks = FT.ONEHOT_BLOCKS.get(t)
        if blocks:  # stored packed: the float32 columns, and one uint8 code per one-hot block
            out[f"x/{t}/dense"] = (n[t], int(m["feature_dims"][t]) - sum(w for _, w in blocks))
            out[f"x/{t}/codes"] = (n[t], len(blocks))
        else:
            out[f"x/{t}"] = (n[t], int(m["feature_dims"][t]))
    for k in ("y", "replicate", "split"):
        out[k] = (n["user"],)
    for et in meta.edge_types:
        e = m["edge_counts"][et[1]][p]
        out[f"colptr/{et[1]}"] = (n[et[2]] + 1,)
        out[f"row/{et[1]}"] = (e,)
        if et in FT.EDGE_DIMS:
            out[f"edge_attr/{et[1]}"] = (e, FT.EDGE_DIMS[et])
        if et in meta.timed_edge_types:  # each edge's time, for time-aware sampling
            out[f"time/{et[1]}"] = (e,)
    return out


def spread_seeds(meta: PartitionMeta, n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    s = torch.from_numpy(rng.choice(meta.num_nodes("user"), n, replace=False))
    assert len(torch.unique(owner_of(meta.offsets("user"), s))) == P
    return s


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


# ----------------------------------------------------------------------------------------------- placement


def test_each_process_holds_exactly_one_part(cluster):
    c = cluster
    # the trainer process: part 0, and nothing else
    assert set(c.graph.local) == {0}
    assert c.graph.local[0].array_shapes() == expected_shapes(c.meta, 0)
    assert c.graph.resident_bytes() == c.ref.local[0].resident_bytes()
    for p in range(P):
        assert c.ref.local[p].array_shapes() == expected_shapes(c.meta, p)
    # the actors: one part each, on this node (here=True)
    here = ray.get_runtime_context().get_node_id()
    infos = ray.get([a.ready.remote() for a in c.actors])
    for p, info in enumerate(infos):
        assert info["part"] == p
        assert info["shapes"] == expected_shapes(c.meta, p)
        assert info["resident_bytes"] == c.ref.local[p].resident_bytes()
        assert info["node_id"] == here
    assert sum(i["resident_bytes"] for i in infos) == c.ref.resident_bytes()
    assert len({pid_of(a) for a in c.actors} | {os.getpid()}) == P + 1
    # the local part's contents are the part's
    for k, a in c.graph.local[0].arrays.items():
        assert np.array_equal(a, c.ref.local[0].arrays[k], equal_nan=a.dtype.kind == "f"), k


def test_an_actor_imports_torch_only_once_asked_for_samples(cluster):
    """Loading and publishing a part takes numpy and pyarrow alone. Part 0 is mapped by this process and never
    asked for anything: its actor's process never imports torch (about 145 MB of heap). The actors asked for
    samples build their part's tensors then."""
    c = cluster
    assert [i["imports_torch"] for i in ray.get([a.ready.remote() for a in c.actors])] == [False] * P
    DistributedNeighborSampler(c.graph, NN, seed=1).sample("user", spread_seeds(c.meta, 48, 11))
    assert [i["imports_torch"] for i in ray.get([a.ready.remote() for a in c.actors])] == [False] + [True] * (P - 1)


def test_post_features_are_held_packed_and_read_back_exactly(cluster):
    """A part holds posts' and communities' one-hot blocks as uint8 codes; indexing gives the float32 rows the
    partition wrote, bit for bit, and sends them packed (no unpack and repack) to another process."""
    import pyarrow.parquet as pq

    shard = ShardData.load(cluster.meta, 0)
    for t in ("content", "community"):
        x = shard.x[t]
        assert isinstance(x, PackedRows), t
        want = FT.list_matrix(pq.read_table(os.path.join(cluster.meta.url, part_dir(0), f"{t}.parquet"))["x"],
                              FT.NODE_DIMS[t])
        assert x.shape == want.shape and len(x) == len(want)
        idx = torch.tensor([len(want) - 1, 0, min(2, len(want) - 1), 0])
        assert torch.equal(x[idx], torch.from_numpy(want[idx.numpy()]))
        assert torch.equal(x[:], torch.from_numpy(want))
        assert x.dense.nbytes + x.codes.nbytes < 0.65 * want.nbytes
        wire = shard.fetch({(t, "x"): idx.numpy()}, wire=True)[(t, "x")]
        assert np.array_equal(FT.unpack_rows(t, wire), want[idx.numpy()])
    assert isinstance(shard.x["user"], torch.Tensor)  # no one-hot block: float32 as it is


def test_local_part_is_mapped_zero_copy_from_the_object_store(cluster):
    shard = cluster.graph.local[0]
    for k, a in shard.arrays.items():
        assert not a.flags.writeable, f"{k} is a private (writeable) copy, not a view of Ray's object store"
        assert not a.flags.owndata, k
    # the torch tensors the sampler reads are views of the same memory
    assert shard.x["user"].data_ptr() == shard.arrays["x/user"].ctypes.data
    assert shard.row[("user", "follows", "user")].data_ptr() == shard.arrays["row/follows"].ctypes.data
    # whereas a part loaded in-process owns its arrays
    assert cluster.ref.local[0].arrays["x/user"].flags.writeable


# ----------------------------------------------------------------------------------------------- sampling


def test_mixed_local_remote_sampling_matches_in_process(cluster):
    c = cluster
    with recorded_sample_calls(c.graph) as calls:
        mixed = DistributedNeighborSampler(c.graph, NN, seed=5)
        alone = DistributedNeighborSampler(c.ref, NN, seed=5)
        local_first = torch.arange(int(c.meta.offsets("user")[1]))[:16]  # seeds all in the local part
        for seeds in (spread_seeds(c.meta, 48, 0), spread_seeds(c.meta, 48, 1), local_first):
            calls.clear()
            before = c.graph.remote_calls
            got = mixed.sample("user", seeds)
            want = alone.sample("user", seeds)
            assert same_sampler_output(got, want)
            assert len(calls) == mixed.num_hops
            remote = [len(set(parts) - {0}) for parts in calls]
            assert all(r <= P - 1 for r in remote)
            assert c.graph.remote_calls - before == sum(remote) <= (P - 1) * mixed.num_hops
        assert remote[0] == 0  # the last batch's first hop never left the process
        assert c.ref.remote_calls == 0


def test_feature_rows_from_remote_parts(cluster):
    c = cluster
    idx = spread_seeds(c.meta, 40, 7)
    fs, ref_fs = ShardedFeatureStore(c.graph), ShardedFeatureStore(c.ref)
    before = c.graph.remote_calls
    for attr in ("x", "y"):
        got = fs.get_tensor(group_name="user", attr_name=attr, index=idx)
        want = ref_fs.get_tensor(group_name="user", attr_name=attr, index=idx)
        assert torch.equal(torch.nan_to_num(got, nan=-1.0), torch.nan_to_num(want, nan=-1.0)), attr
    assert c.graph.remote_calls - before == 2 * (P - 1)


# ----------------------------------------------------------------------------------------------- restarts


def test_killed_shard_actor_restarts_and_reloads_its_part(cluster):
    c = cluster
    victim = 1
    seeds = spread_seeds(c.meta, 48, 3)
    before = DistributedNeighborSampler(c.graph, NN, seed=9).sample("user", seeds)
    pid = pid_of(c.actors[victim])

    ray.kill(c.actors[victim], no_restart=False)
    # sampling right away: calls to the dead actor are retried on its restarted incarnation
    after = DistributedNeighborSampler(c.graph, NN, seed=9).sample("user", seeds)
    assert same_sampler_output(after, before)

    deadline = time.monotonic() + 60
    while pid_of(c.actors[victim]) == pid:  # the kill is asynchronous
        assert time.monotonic() < deadline, "the shard actor was not restarted"
        time.sleep(0.2)
    info = ray.get(c.actors[victim].ready.remote())
    assert info["part"] == victim and info["shapes"] == expected_shapes(c.meta, victim)
    again = DistributedNeighborSampler(c.graph, NN, seed=9).sample("user", seeds)
    assert same_sampler_output(again, before)
    # the name still resolves to the restarted actor
    assert len(find_shards(c.meta, c.key, timeout_s=30)[0]) == P
