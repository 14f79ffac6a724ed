"""ripple.graph.partition: exact reconstruction, out-of-core equivalence, manifest, quality, failures, S3.

Every check reads the written part files back (ids, x, in_<rel>, labels, CSC edges with global source indices)
and maps them to original ids, so it compares the partitioned graph with ``load_local_graph`` of the same dataset
independently of how the partitioner numbered anything.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tiny_dataset import tiny_tables, write_tiny_dataset

from ripple.config import PartitionConfig
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.dataset import Dataset, DatasetWriter
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.graph import load_local_graph
from ripple.data.storage import StorageError, StorageOptions, Store, list_parts
from ripple.graph.partition import part_dir, partition, read_partition_manifest
from ripple.graph.part_io import PartitionMeta
from ripple.graph.shard import ShardData
from ripple.run import PARTITIONS_MANIFEST, is_partitioned

FOL = ("user", "follows", "user")
FORWARD = [r for r in S.relations() if not r.reverse]


# ---------------------------------------------------------------- datasets

def _write_chunked(url: str, tables: dict[str, pa.Table], pieces: int = 3) -> str:
    """Like ``write_tiny_dataset`` but every table is split over ``pieces`` part files (multi-file streaming)."""
    w = DatasetWriter(url)
    for name, t in tables.items():
        step = max(1, math.ceil(t.num_rows / pieces))
        for lo in range(0, t.num_rows, step):
            w.write(name, t.slice(lo, step))
    w.close(label_simulations=100, generator={"name": "tiny-chunked"})
    assert len(list_parts(Store(url), "follows")) == pieces
    return url


def _partly_labelled(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Labels for users 1, 3, 4, 6 only, in scrambled order: the others must come out unlabelled."""
    lab = tables["labels"]
    tables["labels"] = lab.take([6, 3, 1, 4])
    return tables


def _variant(name: str, url: str) -> str:
    if name == "tiny_multi_file":
        return _write_chunked(url, tiny_tables())
    if name == "tiny_partly_labelled":
        return write_tiny_dataset(url, _partly_labelled(tiny_tables()))
    return write_tiny_dataset(url)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    """1500 users, 3 communities (generated once per module)."""
    url = str(tmp_path_factory.mktemp("gen") / "data")
    generate(url, GeneratorConfig(users=1500, seed=0))
    return url


@pytest.fixture(scope="module")
def generated_parts(generated, tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """method -> (out folder, manifest) of the generated dataset in 4 parts (shared, read-only)."""
    root = tmp_path_factory.mktemp("gen_parts")
    return {method: (str(root / method), partition(generated, str(root / method),
                                                   PartitionConfig(num_parts=4, method=method)))
            for method in ("lp", "hash")}


@pytest.fixture(scope="module")
def generated_small(tmp_path_factory) -> str:
    """100 users in 4 communities; some users belong to 2 communities. Small enough for chunk_rows=3."""
    url = str(tmp_path_factory.mktemp("gen_small") / "data")
    generate(url, GeneratorConfig(users=100, users_per_community=25, seed=0))
    members = Dataset(url).read("member_of")["src"].to_numpy()
    assert len(np.unique(members)) < len(members)  # users in 2 communities
    return url


# ---------------------------------------------------------------- reading partitions back

def _read_parts(out: str, manifest: dict) -> dict:
    """Part files -> {"nodes": {t: [table per part]}, "edges": {rel name: [table per part]}}."""
    P = manifest["num_parts"]
    nodes = {t: [pq.read_table(os.path.join(out, part_dir(p), f"{t}.parquet")) for p in range(P)]
             for t in S.NODE_TYPES}
    edges = {et[1]: [pq.read_table(os.path.join(out, part_dir(p), "edges", f"{et[1]}.parquet")) for p in range(P)]
             for et in S.EDGE_TYPES}
    return {"nodes": nodes, "edges": edges}


def _offsets(manifest: dict, t: str) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(manifest["node_counts"][t])]).astype(np.int64)


def _global_ids(parts: dict, t: str) -> np.ndarray:
    """Original id of every global index of node type t (parts' id columns, in part order)."""
    return np.concatenate([tab["id"].to_numpy() for tab in parts["nodes"][t]])


def _x(tab: pa.Table, t: str) -> np.ndarray:
    return tab["x"].combine_chunks().flatten().to_numpy().reshape(tab.num_rows, FT.NODE_DIMS[t])


def _part_edges(parts: dict, manifest: dict, et: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src original id, dst original id, src owner part, dst owner part) of every edge of relation et."""
    src_t, name, dst_t = et
    src_ids, dst_ids = _global_ids(parts, src_t), _global_ids(parts, dst_t)
    src_off, dst_off = _offsets(manifest, src_t), _offsets(manifest, dst_t)
    out = [], [], [], []
    for p, etab in enumerate(parts["edges"][name]):
        indeg = parts["nodes"][dst_t][p][f"in_{name}"].to_numpy()
        assert indeg.sum() == etab.num_rows, (name, p)
        local_dst = np.repeat(np.arange(len(indeg)), indeg)  # CSC: colptr = cumsum(in_<rel>)
        src = etab["src"].to_numpy()
        assert ((src >= 0) & (src < src_off[-1])).all(), (name, p)
        out[0].append(src_ids[src])
        out[1].append(dst_ids[dst_off[p] + local_dst])
        out[2].append(np.searchsorted(src_off, src, side="right") - 1)
        out[3].append(np.full(len(src), p))
    return tuple(np.concatenate(a) if a else np.empty(0, np.int64) for a in out)


def _local_edges(g, et) -> tuple[np.ndarray, np.ndarray]:
    colptr, row = g.csc[et]
    dst = np.repeat(np.arange(len(colptr) - 1), np.diff(colptr))
    return g.ids[et[0]][row], g.ids[et[2]][dst]


def _sorted_pairs(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    order = np.lexsort((dst, src))
    return np.stack([src[order], dst[order]], 1)


def _check_reconstruction(data: str, out: str, manifest: dict) -> dict:
    """Asserts the parts hold exactly the dataset's graph; returns the parts."""
    g = load_local_graph(Dataset(data))
    parts = _read_parts(out, manifest)
    P = manifest["num_parts"]
    for t in S.NODE_TYPES:
        counts = [tab.num_rows for tab in parts["nodes"][t]]
        assert counts == manifest["node_counts"][t], t
        for tab in parts["nodes"][t]:  # each part's nodes in increasing original id order
            ids = tab["id"].to_numpy()
            assert (np.diff(ids) > 0).all(), (t, ids)
        # every node owned by exactly one part
        glob = _global_ids(parts, t)
        assert len(glob) == len(g.ids[t]) and np.array_equal(np.sort(glob), g.ids[t]), t
        # features per original id
        dense = np.searchsorted(g.ids[t], glob)
        x = np.concatenate([_x(tab, t) for tab in parts["nodes"][t]])
        assert x.dtype == np.float32 and x.shape == g.x[t].shape, t
        np.testing.assert_array_equal(x, g.x[t][dense], err_msg=t)
        # in-degree columns per original id
        for et in S.EDGE_TYPES:
            if et[2] != t:
                continue
            got = np.concatenate([tab[f"in_{et[1]}"].to_numpy() for tab in parts["nodes"][t]])
            np.testing.assert_array_equal(got, np.diff(g.csc[et][0])[dense], err_msg=str(et))

    for et in S.EDGE_TYPES:
        src, dst, _, _ = _part_edges(parts, manifest, et)
        want_src, want_dst = _local_edges(g, et)
        assert len(src) == len(want_src), et
        np.testing.assert_array_equal(_sorted_pairs(src, dst), _sorted_pairs(want_src, want_dst), err_msg=str(et))
        has_attr = [("edge_attr" in tab.column_names) for tab in parts["edges"][et[1]]]
        assert has_attr == [et in FT.EDGE_DIMS] * P, et

    # follows edge_attr rides with its edge
    src, dst, _, _ = _part_edges(parts, manifest, FOL)
    dim = FT.EDGE_DIMS[FOL]
    attr = np.concatenate([tab["edge_attr"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
                           for tab in parts["edges"]["follows"]])
    want_src, want_dst = _local_edges(g, FOL)
    want_attr = g.edge_attr[FOL]
    got_o = np.lexsort((attr[:, 1], attr[:, 0], dst, src))
    want_o = np.lexsort((want_attr[:, 1], want_attr[:, 0], want_dst, want_src))
    np.testing.assert_array_equal(src[got_o], want_src[want_o])
    np.testing.assert_array_equal(dst[got_o], want_dst[want_o])
    assert attr.shape == want_attr.shape and np.allclose(attr[got_o], want_attr[want_o])

    # labels per original user id: the dataset's labels table, unlabelled users NaN / -1
    users = pa.concat_tables(parts["nodes"]["user"])
    lab = Dataset(data).read("labels")
    by_id = {uid: i for i, uid in enumerate(lab["user_id"].to_pylist())}
    reach, rep = lab["cascade_reach"].to_pylist(), lab["cascade_reach_replicate"].to_pylist()
    split = lab["split"].to_pylist()
    for uid, r, rr, s in zip(users["id"].to_pylist(), users["cascade_reach"].to_numpy(),
                             users["cascade_reach_replicate"].to_numpy(), users["split"].to_pylist()):
        if uid in by_id:
            i = by_id[uid]
            assert (r, rr, s) == (np.float32(reach[i]), np.float32(rep[i]), S.SPLITS.index(split[i])), uid
        else:
            assert np.isnan(r) and np.isnan(rr) and s == -1, uid
    assert users["split"].type == pa.int8()
    for name in S.SPLITS:
        per_part = [int((tab["split"].to_numpy() == S.SPLITS.index(name)).sum()) for tab in parts["nodes"]["user"]]
        assert manifest["labels"][name] == per_part, name
        assert sum(per_part) == split.count(name), name
    return parts


# ---------------------------------------------------------------- 1. exact reconstruction

@pytest.mark.parametrize("method", ["lp", "hash"])
@pytest.mark.parametrize("num_parts", [1, 2, 3])
def test_tiny_partition_reconstructs_the_graph_exactly(tiny_dataset, tmp_path, method, num_parts):
    out = str(tmp_path / "parts")
    m = partition(tiny_dataset, out, PartitionConfig(num_parts=num_parts, method=method))
    assert m == read_partition_manifest(out)
    assert sorted(os.listdir(out)) == [PARTITIONS_MANIFEST, *[part_dir(p) for p in range(num_parts)]]
    _check_reconstruction(tiny_dataset, out, m)


@pytest.mark.parametrize("method", ["lp", "hash"])
@pytest.mark.parametrize("variant,num_parts", [
    ("tiny_multi_file", 3),       # every table spread over 3 part files
    ("tiny_partly_labelled", 3),  # users without labels: NaN reach, split -1
    ("tiny", 10),                 # more parts than users: empty parts
])
def test_tiny_variants_reconstruct_the_graph_exactly(tmp_path, variant, num_parts, method):
    data = _variant(variant, str(tmp_path / variant))
    out = str(tmp_path / "parts")
    m = partition(data, out, PartitionConfig(num_parts=num_parts, method=method))
    _check_reconstruction(data, out, m)
    if num_parts == 10:
        assert 0 in m["node_counts"]["user"]


@pytest.mark.parametrize("method", ["lp", "hash"])
def test_generated_partition_reconstructs_the_graph_exactly(generated, generated_parts, method):
    out, m = generated_parts[method]
    _check_reconstruction(generated, out, m)


# ---------------------------------------------------------------- 2. out-of-core equivalence

def _columns(out: str, manifest: dict) -> dict[str, np.ndarray]:
    """Every column of every part file as a numpy array (list columns flattened)."""
    cols = {}
    for f in sorted(manifest["files"]):
        tab = pq.read_table(os.path.join(out, f))
        for c in tab.column_names:
            col = tab[c].combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                col = col.flatten()
            cols[f"{f}:{c}"] = col.to_numpy(zero_copy_only=False)
    return cols


def _assert_same_output(a_out: str, a: dict, b_out: str, b: dict) -> None:
    for key in ("num_parts", "node_counts", "edge_counts", "edge_cut", "labels", "edge_types"):
        assert a[key] == b[key], key
    assert a["partitioner"]["moved_per_pass"] == b["partitioner"]["moved_per_pass"]
    assert sorted(a["files"]) == sorted(b["files"])
    assert {f: v["rows"] for f, v in a["files"].items()} == {f: v["rows"] for f, v in b["files"].items()}
    ca, cb = _columns(a_out, a), _columns(b_out, b)
    assert sorted(ca) == sorted(cb)
    assert any(k.endswith("follows.parquet:edge_attr") for k in ca)
    for k in ca:
        assert ca[k].dtype == cb[k].dtype and ca[k].shape == cb[k].shape, k
        assert ca[k].tobytes() == cb[k].tobytes(), k


@pytest.mark.parametrize("method", ["lp", "hash"])
def test_tiny_chunk_rows_do_not_change_the_output(tiny_dataset, tmp_path, method):
    ref_out = str(tmp_path / "ref")
    ref = partition(tiny_dataset, ref_out, PartitionConfig(num_parts=3, method=method))
    for chunk_rows in (1, 2):
        out = str(tmp_path / f"c{chunk_rows}")
        m = partition(tiny_dataset, out, PartitionConfig(num_parts=3, method=method, chunk_rows=chunk_rows))
        _assert_same_output(ref_out, ref, out, m)


@pytest.mark.parametrize("method", [
    "lp",
    "hash"])
def test_generated_chunk_rows_3_is_byte_identical_to_default(generated_small, tmp_path, method):
    ref_out, out = str(tmp_path / "ref"), str(tmp_path / "chunked")
    ref = partition(generated_small, ref_out, PartitionConfig(num_parts=4, method=method))
    m = partition(generated_small, out, PartitionConfig(num_parts=4, method=method, chunk_rows=3))
    assert m["partitioner"]["chunk_rows"] == 3
    # buckets really were small: the biggest part has far more than 3 in-edges of follows
    assert max(ref["edge_counts"]["follows"]) > 100
    _assert_same_output(ref_out, ref, out, m)


def test_first_community_does_not_depend_on_chunk_rows(tmp_path):
    # user 0 is in community 0 (row 0) and community 1 (last row): whichever rule picks its community, the
    # choice must not change with the batch size the table is streamed in
    tables = tiny_tables()
    mo = tables["member_of"]
    tables["member_of"] = pa.concat_tables([mo, pa.table({"src": [0], "dst": [1]}, schema=mo.schema)])
    data = write_tiny_dataset(str(tmp_path / "d"), tables)
    a = partition(data, str(tmp_path / "a"), PartitionConfig(num_parts=2, passes=0))
    b = partition(data, str(tmp_path / "b"), PartitionConfig(num_parts=2, passes=0, chunk_rows=1))
    ids_a = [pq.read_table(str(tmp_path / "a" / part_dir(p) / "user.parquet"))["id"].to_pylist() for p in range(2)]
    ids_b = [pq.read_table(str(tmp_path / "b" / part_dir(p) / "user.parquet"))["id"].to_pylist() for p in range(2)]
    assert (a["node_counts"], ids_a) == (b["node_counts"], ids_b)


# ---------------------------------------------------------------- 3. manifest

@pytest.mark.parametrize("method,num_parts", [("lp", 4), ("hash", 4), ("lp", 1)])
def test_manifest_counts_cut_and_files(generated, generated_parts, tmp_path, method, num_parts):
    if num_parts == 4:
        out, m = generated_parts[method]
    else:
        out = str(tmp_path / "parts")
        m = partition(generated, out, PartitionConfig(num_parts=num_parts, method=method))
    rows = Dataset(generated).manifest.rows
    assert m["format"] == "ripple.partitions/1" and m["num_parts"] == num_parts and m["source"] == generated
    assert m["partitioner"]["method"] == method and m["partitioner"]["num_parts"] == num_parts
    for t in S.NODE_TYPES:
        assert len(m["node_counts"][t]) == num_parts and sum(m["node_counts"][t]) == rows[t], t
    assert [tuple(et) for et in m["edge_types"]] == list(S.EDGE_TYPES)
    assert set(m["edge_counts"]) == {et[1] for et in S.EDGE_TYPES}
    for rel in S.relations():
        assert len(m["edge_counts"][rel.edge_type[1]]) == num_parts
        assert sum(m["edge_counts"][rel.edge_type[1]]) == rows[rel.table], rel.edge_type

    # edge cut: recomputed from the written edges (owner of the source vs owner of the destination)
    parts = _read_parts(out, m)
    assert set(m["edge_cut"]) == {r.table for r in FORWARD} | {"all"}
    cut_total = 0
    for rel in FORWARD:
        _, _, src_part, dst_part = _part_edges(parts, m, rel.edge_type)
        n_cut = int((src_part != dst_part).sum())
        cut_total += n_cut
        assert 0.0 <= m["edge_cut"][rel.table] <= 1.0
        assert m["edge_cut"][rel.table] == pytest.approx(n_cut / rows[rel.table]), rel.table
    assert m["edge_cut"]["all"] == pytest.approx(cut_total / sum(rows[r.table] for r in FORWARD))
    assert m["edge_cut"]["created"] == 0.0  # content lives with its creator
    if num_parts == 1:
        assert all(v == 0.0 for v in m["edge_cut"].values()), m["edge_cut"]
    else:
        assert m["edge_cut"]["follows"] > 0.0

    # files: exactly the part files on disk, with their rows, sizes and sha256
    on_disk = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert on_disk == sorted([PARTITIONS_MANIFEST, *m["files"]])
    want = {f"{part_dir(p)}/{t}.parquet" for p in range(num_parts) for t in S.NODE_TYPES}
    want |= {f"{part_dir(p)}/edges/{et[1]}.parquet" for p in range(num_parts) for et in S.EDGE_TYPES}
    assert set(m["files"]) == want
    for f, info in m["files"].items():
        path = os.path.join(out, f)
        data = open(path, "rb").read()
        assert info["sha256"] == hashlib.sha256(data).hexdigest(), f
        assert info["bytes"] == len(data), f
        assert info["rows"] == pq.ParquetFile(path).metadata.num_rows, f
    p0 = part_dir(0)
    assert m["files"][f"{p0}/user.parquet"]["rows"] == m["node_counts"]["user"][0]
    assert m["files"][f"{p0}/edges/follows.parquet"]["rows"] == m["edge_counts"]["follows"][0]


def test_same_seed_gives_identical_files(tiny_dataset, tmp_path):
    a = partition(tiny_dataset, str(tmp_path / "a"), PartitionConfig(num_parts=3, seed=7))
    b = partition(tiny_dataset, str(tmp_path / "b"), PartitionConfig(num_parts=3, seed=7))
    assert {f: v["sha256"] for f, v in a["files"].items()} == {f: v["sha256"] for f, v in b["files"].items()}


# ---------------------------------------------------------------- 4. partition quality

def test_lp_cuts_fewer_follows_edges_than_hash(generated_parts):
    lp_m, hash_m = generated_parts["lp"][1], generated_parts["hash"][1]
    lp, hsh = lp_m["edge_cut"]["follows"], hash_m["edge_cut"]["follows"]
    assert lp < hsh, f"follows edge cut: lp {lp:.4f} vs hash {hsh:.4f}"
    assert lp_m["partitioner"]["moved_per_pass"][0] > 0  # label propagation did move users
    assert hash_m["partitioner"]["moved_per_pass"] == []


@pytest.mark.parametrize("balance", [
    1.0,
    1.3])
def test_lp_respects_the_balance_bound(generated, tmp_path, balance):
    m = partition(generated, str(tmp_path / "p"), PartitionConfig(num_parts=4, method="lp", balance=balance))
    n = sum(m["node_counts"]["user"])
    cap = math.ceil(balance * n / 4)
    assert max(m["node_counts"]["user"]) <= cap, (m["node_counts"]["user"], cap)


def test_lp_default_balance_within_bound(generated_parts):
    counts = generated_parts["lp"][1]["node_counts"]["user"]
    cap = math.ceil(1.05 * sum(counts) / 4)
    assert max(counts) <= cap, (counts, cap)
    assert min(counts) > 0, counts


# ---------------------------------------------------------------- 5. bad input, stale parts

@pytest.mark.parametrize("table,column,value,named", [
    ("follows", "dst", 99, "follows.dst"),            # fails while counting degrees (before anything is written)
    ("member_of", "src", 77, "member_of.src"),
    ("labels", "user_id", 42, "labels.user_id"),      # fails after the edge files were uploaded
    ("labels", "split", "holdout", "'split'"),
])
def test_bad_input_leaves_no_readable_output(tmp_path, tiny_dataset, table, column, value, named):
    out, scratch = str(tmp_path / "parts"), tmp_path / "scratch"
    scratch.mkdir()
    partition(tiny_dataset, out, PartitionConfig(num_parts=2))
    assert is_partitioned(out)

    tables = tiny_tables()
    t = tables[table]
    vals = t[column].to_pylist()
    vals[1] = value
    tables[table] = t.set_column(t.schema.get_field_index(column), column, pa.array(vals, t.schema.field(column).type))
    bad = write_tiny_dataset(str(tmp_path / "bad"), tables)

    with pytest.raises(ValueError) as e:
        partition(bad, out, PartitionConfig(num_parts=2, scratch=str(scratch)))
    assert named in str(e.value) and str(value) in str(e.value)
    assert not os.path.exists(os.path.join(out, PARTITIONS_MANIFEST))
    assert not is_partitioned(out)
    with pytest.raises(StorageError, match=PARTITIONS_MANIFEST):
        read_partition_manifest(out)
    with pytest.raises(StorageError, match=PARTITIONS_MANIFEST):
        PartitionMeta.open(out)
    assert os.listdir(scratch) == []  # spill folder removed on failure too


def test_duplicate_node_ids_are_refused(tmp_path):
    tables = tiny_tables()
    ids = tables["content"]["id"].to_pylist()
    ids[3] = 1
    tables["content"] = tables["content"].set_column(0, "id", pa.array(ids, pa.int64()))
    bad = write_tiny_dataset(str(tmp_path / "bad"), tables)
    with pytest.raises(ValueError, match="'content'.*duplicate"):
        partition(bad, str(tmp_path / "parts"), PartitionConfig(num_parts=2))
    assert not os.path.exists(os.path.join(tmp_path, "parts", PARTITIONS_MANIFEST))


def test_repartition_with_fewer_parts_removes_stale_parts(tiny_dataset, tmp_path):
    out = str(tmp_path / "parts")
    partition(tiny_dataset, out, PartitionConfig(num_parts=3))
    assert os.path.isdir(os.path.join(out, part_dir(2)))
    m = partition(tiny_dataset, out, PartitionConfig(num_parts=2, method="hash"))
    assert sorted(os.listdir(out)) == [PARTITIONS_MANIFEST, part_dir(0), part_dir(1)]
    assert read_partition_manifest(out)["num_parts"] == 2
    _check_reconstruction(tiny_dataset, out, m)


# ---------------------------------------------------------------- 6. S3

def test_partition_to_s3_then_load_shards_and_detect_corruption(tiny_dataset, tmp_path, s3_server, s3_bucket):
    opts = StorageOptions(endpoint_url=s3_server)
    url = f"{s3_bucket}/parts"
    store = Store(url, opts)
    store.write_bytes(b"stale", part_dir(5), "user.parquet")  # left over from an earlier run with more parts
    m = partition(tiny_dataset, url, PartitionConfig(num_parts=2), opts)
    store = Store(url, opts)
    assert store.ls() == [PARTITIONS_MANIFEST, part_dir(0), part_dir(1)]
    assert read_partition_manifest(url, opts) == m

    # the same partitioning written locally is the reference for what the shards hold
    local = str(tmp_path / "local")
    partition(tiny_dataset, local, PartitionConfig(num_parts=2))
    meta, local_meta = PartitionMeta.open(url, opts), PartitionMeta.open(local)
    assert meta.num_parts == 2
    for p in range(2):
        shard, ref = ShardData.load(meta, p), ShardData.load(local_meta, p)
        assert sorted(shard.arrays) == sorted(ref.arrays)
        for k, a in shard.arrays.items():
            np.testing.assert_array_equal(a, ref.arrays[k], err_msg=k)
        assert len(shard.ids["user"]) == m["node_counts"]["user"][p]
        assert int(shard.colptr[FOL][-1]) == m["edge_counts"]["follows"][p]

    victim = f"{part_dir(1)}/edges/follows.parquet"
    fs, path = store.fs, store.path(victim)
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    with fs.open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ValueError) as e:
        ShardData.load(PartitionMeta.open(url, opts), 1)
    assert "checksum" in str(e.value) and victim in str(e.value)


# ---------------------------------------------------------------- 7. config validation

@pytest.mark.parametrize("kwargs,field", [
    ({"method": "metis"}, "method"),
    ({"balance": 0.9}, "balance"),
    ({"num_parts": -1}, "num_parts"),
    ({"passes": -1}, "passes"),
    ({"chunk_rows": 0}, "chunk_rows"),
])
def test_partition_config_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=f"partition.{field}"):
        PartitionConfig(**kwargs)


def test_partition_rejects_zero_parts(tiny_dataset, tmp_path):
    cfg = PartitionConfig(num_parts=0)  # allowed in a run config ("train on the dataset as it is")
    out = tmp_path / "parts"
    with pytest.raises(ValueError, match="num_parts"):
        partition(tiny_dataset, str(out), cfg)
    assert not out.exists()


def test_shards_hold_and_serve_int32_sources(tiny_dataset, tmp_path):
    """Resident source indices are int32 (4 bytes per edge saved), and so are the ones ``sample`` returns (4 bytes
    per sampled edge less to send); the sampler widens them on arrival."""
    out = str(tmp_path / "parts")
    partition(tiny_dataset, out, PartitionConfig(num_parts=2))
    meta = PartitionMeta.open(out)
    shard = ShardData.load(meta, 0)
    for et in meta.edge_types:
        assert shard.row[et].dtype == torch.int32, et
    et = ("user", "follows", "user")
    dst = np.nonzero(np.diff(shard.colptr[et].numpy()) > 0)[0][:3]
    _, src, _, _ = shard.sample({et: (dst, 2)}, seed=0)[et]
    assert src.dtype == np.int32 and len(src) > 0


@pytest.mark.parametrize("ids", [np.arange(100, 10_100), np.sort(np.random.default_rng(0).choice(10**9, 10_000,
                                                                                                   replace=False))])
def test_dense_index_paths_agree_and_name_unknown_ids(ids):
    from ripple.data.ids import dense_index, is_id_range

    values = ids[np.random.default_rng(1).integers(0, len(ids), 20_000)]  # > 4096: the sorted-query path
    assert is_id_range(ids) == (ids[0] == 100)
    assert np.array_equal(dense_index(ids, values, "t.c"), np.searchsorted(ids, values))
    assert np.array_equal(dense_index(ids, values[:10], "t.c"), np.searchsorted(ids, values[:10]))
    bad = values.copy()
    bad[5] = -7
    with pytest.raises(ValueError, match=r"t\.c: 1 ids do not exist \(examples: \[-7\]\)"):
        dense_index(ids, bad, "t.c")


def test_is_id_range_needs_consecutive_distinct_ids():
    from ripple.data.ids import is_id_range

    assert is_id_range(np.array([3, 4, 5]))
    assert not is_id_range(np.array([0, 0, 2]))  # the right span, but a repeat and a gap
    assert not is_id_range(np.array([], np.int64))
