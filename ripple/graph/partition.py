"""Streaming, out-of-core graph partitioner: dataset tables -> P shards in object storage.

Memory is bounded by node counts, ``chunk_rows`` and P, never by the number of edges: edge tables are streamed in
record batches, every per-edge quantity is spilled to a local scratch folder, and each shard's CSC is assembled
bucket by bucket (a bucket is a range of destination nodes holding at most ``chunk_rows`` edges).

Assignment (``method``):
  * ``lp`` (default): community-seeded, balanced label propagation. Communities are packed onto parts by member
    count (largest first onto the lightest part), users start on the part of their community, then ``passes``
    streaming passes over ``follows`` count, per user, the neighbours on each part; users move to the part holding
    most of their neighbours, as *pairwise swaps* (moves i->j matched by moves j->i) plus whatever slack the
    ``balance`` bound leaves, so part sizes never exceed ``balance * N / P``.
  * ``hash``: a 64-bit mix of the user id, modulo P.
Content goes with its creator (hash when it has none); a community goes to the part holding most of its members,
so its in-edges (``member_of``) are mostly local.

Ids: per node type, the partitioner numbers nodes part by part (part 0's nodes first, each part's in id order), so
part p owns the contiguous *global index* range ``offsets[p] : offsets[p + 1]``. Ownership is a search in P + 1
offsets, the global<->local map is a subtraction, and each part stores the original ids of its nodes.

Layout under ``PARTS`` (``manifest.json`` is written last; readers refuse a folder without it)::

    part-00000/user.parquet        id, x, in_<rel> (in-degree per relation into user), labels (nullable)
    part-00000/content.parquet     id, x, in_<rel>
    part-00000/community.parquet   id, x, in_<rel>
    part-00000/edges/<rel>.parquet src (global index), [edge_attr], [time]; CSC order (by local destination)

Edge times (``time``, int64, for every relation ``ripple.data.timeline.edge_times`` gives times; the manifest's
``edge_times`` lists them): each destination's in-edges are written in time order (ties in the order the tables
were read), so a shard's CSC segments are time-sorted as stored and time-aware sampling finds the edges valid at
T as a prefix of each segment with no permutation kept beside them. ``reply_to`` takes its times from its posts'
timestamps: read with the content ids in the id pass (one int64 per post held), not by a second pass.

Labels: a part stores one label per user, so a labels table at more than one cut time (``labels.time``, a row per
user per cut) is refused; the one cut time of a table that has one is the manifest's ``label_time``.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ripple.config import PartitionConfig
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data import timeline as TL
from ripple.data.dataset import Dataset
from ripple.data.ids import add_counts, dense_index, is_id_range
from ripple.data.storage import StorageError, StorageOptions, Store, file_sha256, iter_table_batches, join
from ripple.run import PARTITIONS_FORMAT, PARTITIONS_MANIFEST

log = logging.getLogger(__name__)

SPLIT_CODES = {name: i for i, name in enumerate(S.SPLITS)}


def part_dir(p: int) -> str:
    return f"part-{p:05d}"


def hash_ids(ids: np.ndarray, num_parts: int, seed: int = 0) -> np.ndarray:
    """splitmix64 of the ids modulo ``num_parts`` (deterministic across processes and runs)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(num_parts)).astype(np.int32)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- assignment


def _pack_communities(members: np.ndarray, num_parts: int) -> np.ndarray:
    """Largest community first onto the part with fewest members so far. Shapes: members [K] -> part [K]."""
    part = np.zeros(len(members), np.int32)
    load = np.zeros(num_parts, np.int64)
    for k in np.argsort(-members, kind="stable"):
        p = int(np.argmin(load))
        part[k] = p
        load[p] += members[k]
    return part


def _balanced_moves(part: np.ndarray, counts: np.ndarray, cap: int, rng: np.random.Generator) -> int:
    """One label-propagation step in place. Shapes: part [N], counts [N, P] neighbours per part.

    Every node wants the part holding most of its neighbours. Moves i->j are matched one-for-one with moves j->i
    (sizes unchanged), and extra moves into j use the slack ``cap - size_j``; the highest-gain moves go first.
    """
    n, p_num = counts.shape
    idx = np.arange(n)
    cur_count = counts[idx, part]
    best = np.argmax(counts, axis=1).astype(np.int32)
    gain = counts[idx, best] - cur_count
    cand = np.nonzero((gain > 0) & (best != part))[0]
    if len(cand) == 0:
        return 0
    src, dst, g = part[cand], best[cand], gain[cand]
    pair = src.astype(np.int64) * p_num + dst
    m = np.bincount(pair, minlength=p_num * p_num).reshape(p_num, p_num)
    allowed = np.minimum(m, m.T)
    size = np.bincount(part, minlength=p_num)
    for j in range(p_num):
        slack = max(0, cap - int(size[j]))
        extra = m[:, j] - allowed[:, j]
        if slack and extra.sum():
            share = np.floor(extra * min(1.0, slack / extra.sum())).astype(np.int64)
            allowed[:, j] += share
    order = np.lexsort((rng.random(len(cand)), -g, pair))
    pair_o = pair[order]
    starts = np.searchsorted(pair_o, np.arange(p_num * p_num))
    rank = np.arange(len(order)) - starts[pair_o]
    take = order[rank < allowed.reshape(-1)[pair_o]]
    part[cand[take]] = dst[take]
    return len(take)


# ---------------------------------------------------------------- the partitioner


class _Scan:
    """Streams one edge table as dense (src, dst) index chunks plus the batch itself."""

    def __init__(self, ds: Dataset, ids: dict[str, np.ndarray], chunk_rows: int):
        self.ds, self.ids, self.chunk_rows = ds, ids, chunk_rows
        self.id_range = {t: is_id_range(v) for t, v in ids.items()}  # once, not once per chunk

    def __call__(self, table: str, columns: tuple[str, ...] = ()):
        s_t, d_t = S.EDGE_TABLES[table].endpoints
        for b in iter_table_batches(self.ds.store, table, ["src", "dst", *columns], self.chunk_rows):
            yield (dense_index(self.ids[s_t], b.column("src").to_numpy(), f"{table}.src", self.id_range[s_t]),
                   dense_index(self.ids[d_t], b.column("dst").to_numpy(), f"{table}.dst", self.id_range[d_t]), b)


def _record_dtype(edge_dim: int, timed: bool = False) -> np.dtype:
    fields = [("dst", np.int64), ("src", np.int64)]
    if edge_dim:
        fields.append(("attr", np.float32, (edge_dim,)))
    if timed:
        fields.append(("time", np.int64))
    return np.dtype(fields)


def _time_columns(table: str) -> tuple[str, ...]:
    """The columns of edge table ``table`` that ``timeline.edge_times`` reads (none for a table whose times come
    from elsewhere, ``reply_to``'s from its posts, or that has none)."""
    col = TL.EDGE_TIME_COLUMN.get(table)
    return (col,) if col else ()


def _label_time(ds: Dataset, chunk_rows: int) -> int | None:
    """The one cut time of the labels table (``labels.time``), None where it has none. Checked before anything is
    written: a part stores one label per user, so a training table at several cut times (a row per user per cut)
    cannot be partitioned."""
    found: set[int] = set()
    for b in iter_table_batches(ds.store, "labels", None, chunk_rows):
        if "time" in b.schema.names:  # an optional column: files written before it existed lack it
            found.update(pc.unique(b.column("time").drop_null()).to_pylist())
    if len(found) > 1:
        times = sorted(found)
        raise ValueError(f"labels.time holds {len(times)} distinct cut times ({times[:5]}"
                         f"{' ...' if len(times) > 5 else ''}); a partitioned graph stores one label per user, so it "
                         "takes labels at one time only: train on the whole graph (`ripple train` on the dataset, "
                         "partition.num_parts 0), which samples each row at its own time")
    return found.pop() if found else None


#: the most parts a graph is cut into: every part is a folder of files and, in training, a shard actor (and the
#: partitioner's work per part is a Python loop: two billion parts would run for hours)
MAX_PARTS = 1 << 16


def partition(data: str, out: str, cfg: PartitionConfig, options: StorageOptions | None = None) -> dict:
    """Partition dataset ``data`` into ``cfg.num_parts`` shards under ``out``; returns the manifest."""
    if not 1 <= cfg.num_parts <= MAX_PARTS:
        raise ValueError(f"partition.num_parts (--num-parts) must be in [1, {MAX_PARTS}], got {cfg.num_parts}: each "
                         "part is a folder of files and a shard actor")
    t0 = time.perf_counter()
    ds = Dataset(data, options)
    dest = Store(out, options)
    dest.rm(PARTITIONS_MANIFEST)  # unreadable while rewritten
    for stale in dest.ls():
        if stale.startswith("part-"):
            dest.rm(stale, recursive=True)
    P = cfg.num_parts
    rng = np.random.default_rng(cfg.seed)
    stage_s: dict[str, float] = {}
    tick = time.perf_counter()

    def stage(name: str):
        nonlocal tick
        now = time.perf_counter()
        stage_s[name] = round(now - tick, 3)
        tick = now
        log.info("partition: %s done (%.1fs, peak RSS %.0f MiB)", name, stage_s[name], peak_rss_bytes() / 2**20)

    label_time = _label_time(ds, cfg.chunk_rows)

    # 1. node ids (sorted; a node's dense index is its rank), and each post's time (``reply_to``'s edge times)
    ids = {}
    content_time = np.empty(0, np.int64)
    for t in S.NODE_TYPES:
        cols = ["id", "timestamp"] if t == "content" else ["id"]
        batches = list(iter_table_batches(ds.store, t, cols, cfg.chunk_rows))
        raw = np.concatenate([b.column("id").to_numpy() for b in batches]) if batches else np.empty(0, np.int64)
        if t == "content" and batches:
            order = np.argsort(raw, kind="stable")
            ids[t] = raw[order]
            content_time = np.concatenate([b.column("timestamp").to_numpy() for b in batches])[order]
            del order
        else:
            ids[t] = np.sort(raw)
        del batches, raw
        dup = ids[t][1:][ids[t][1:] == ids[t][:-1]]
        if len(dup):
            raise StorageError(f"table {t!r}: column 'id' has duplicate ids (examples: {dup[:5].tolist()}); "
                               "run `ripple validate`")
    n = {t: len(v) for t, v in ids.items()}
    scan = _Scan(ds, ids, cfg.chunk_rows)

    # 2. degree counts (features and CSC sizes), creators, memberships
    outdeg = {name: np.zeros(n[spec.endpoints[0]], np.int64) for name, spec in S.EDGE_TABLES.items()}
    indeg = {name: np.zeros(n[spec.endpoints[1]], np.int64) for name, spec in S.EDGE_TABLES.items()}
    creator = np.full(n["content"], -1, np.int64)
    first_comm = np.full(n["user"], -1, np.int64)
    for name in S.EDGE_TABLES:
        for s, d, _ in scan(name):
            add_counts(outdeg[name], s)
            add_counts(indeg[name], d)
            if name == "created":
                creator[d] = s
            elif name == "member_of":
                fresh = first_comm[s] < 0
                # reversed: numpy keeps the last write, so the first row of the batch wins, as across batches
                first_comm[s[fresh][::-1]] = d[fresh][::-1]
    stage("degrees")

    # 3. users -> parts
    part = {"user": hash_ids(ids["user"], P, cfg.seed)}
    moved_per_pass = []
    if cfg.method == "lp" and P > 1:
        has = first_comm >= 0
        comm_part = _pack_communities(np.bincount(first_comm[has], minlength=n["community"]), P)
        part["user"][has] = comm_part[first_comm[has]]
        cap = int(np.ceil(cfg.balance * n["user"] / P))
        _rebalance(part["user"], cap, P, rng)
        for _ in range(cfg.passes):
            counts = np.zeros((n["user"], P), np.int32)
            flat = counts.reshape(-1)
            for s, d, _ in scan("follows"):
                # undirected locality: a follow ties both ends
                add_counts(flat, s * P + part["user"][d])
                add_counts(flat, d * P + part["user"][s])
            moved_per_pass.append(_balanced_moves(part["user"], counts, cap, rng))
            del counts, flat
            if moved_per_pass[-1] == 0:
                break
    user_part = part["user"]
    part["content"] = np.where(creator >= 0, user_part[np.maximum(creator, 0)],
                               hash_ids(ids["content"], P, cfg.seed))
    part["community"] = hash_ids(ids["community"], P, cfg.seed)
    votes = np.zeros(n["community"] * P, np.int64)
    for s, d, _ in scan("member_of"):
        add_counts(votes, d * P + user_part[s])
    votes = votes.reshape(n["community"], P)
    voted = votes.sum(1) > 0
    part["community"][voted] = np.argmax(votes[voted], 1)
    stage("assign")

    # 4. renumber: part by part, each part's nodes in id order
    new_of_old, offsets = {}, {}
    for t in S.NODE_TYPES:
        order = np.argsort(part[t], kind="stable")
        new_of_old[t] = np.empty(n[t], np.int64)
        new_of_old[t][order] = np.arange(n[t])
        offsets[t] = np.concatenate([[0], np.cumsum(np.bincount(part[t], minlength=P))]).astype(np.int64)

    scratch = tempfile.mkdtemp(prefix="ripple-partition-", dir=cfg.scratch)
    files: dict[str, dict] = {}
    try:
        edge_counts, cut, timed = _write_edges(scan, dest, scratch, cfg, part, new_of_old, offsets, indeg, outdeg,
                                               content_time, files)
        stage("edges")
        label_counts = _write_nodes(ds, dest, scratch, cfg, part, new_of_old, offsets, ids, indeg, outdeg, files)
        stage("nodes")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    total_edges = sum(int(c.sum()) for c in indeg.values())
    manifest = {
        "format": PARTITIONS_FORMAT,
        "num_parts": P,
        "source": data,
        "source_rows": ds.manifest.rows,
        "partitioner": {**asdict(cfg), "scratch": None, "moved_per_pass": moved_per_pass},
        "node_counts": {t: np.diff(offsets[t]).tolist() for t in S.NODE_TYPES},
        "edge_types": [list(et) for et in S.EDGE_TYPES],
        "edge_counts": {rel: c.tolist() for rel, c in edge_counts.items()},
        "edge_cut": cut,
        "feature_dims": dict(FT.NODE_DIMS),
        "edge_dims": {et[1]: d for et, d in FT.EDGE_DIMS.items()},
        # the relations whose edge files hold each edge's time, in-edges time-sorted (absent: written before edge
        # times existed, and refused by time-aware sampling)
        "edge_times": timed,
        "labels": label_counts,
        "label_time": label_time,
        "files": files,
        "stats": {"seconds": round(time.perf_counter() - t0, 3), "stage_seconds": stage_s,
                  "peak_rss_bytes": peak_rss_bytes(), "edges": total_edges,
                  "peak_rss_bytes_per_edge": peak_rss_bytes() / max(total_edges, 1)},
    }
    dest.write_json(manifest, PARTITIONS_MANIFEST)
    log.info("partitioned %s into %d parts (%s, follows edge cut %.3f) in %.1fs", data, P, cfg.method,
             cut["follows"], manifest["stats"]["seconds"])
    return manifest


def _rebalance(part: np.ndarray, cap: int, num_parts: int, rng: np.random.Generator) -> None:
    """Move random users off parts above ``cap`` onto parts with room (community packing can overshoot)."""
    size = np.bincount(part, minlength=num_parts)
    for p in np.nonzero(size > cap)[0]:
        victims = rng.permutation(np.nonzero(part == p)[0])[: int(size[p] - cap)]
        start = 0
        for q in np.argsort(size, kind="stable"):
            room = int(cap - size[q])
            if q == p or room <= 0 or start >= len(victims):
                continue
            moved = victims[start:start + room]
            part[moved] = q
            size[q] += len(moved)
            size[p] -= len(moved)
            start += len(moved)


def _upload(dest: Store, local: str, rel_path: str, rows: int, files: dict) -> None:
    sha = file_sha256(local)
    dest.put_file(local, rel_path)
    files[rel_path] = {"rows": rows, "sha256": sha, "bytes": os.path.getsize(local)}
    os.remove(local)


def _write_edges(scan, dest, scratch, cfg, part, new_of_old, offsets, indeg, outdeg, content_time, files):
    """Spill every relation's edges to (part, bucket) files, then write each part's CSC bucket by bucket (each
    destination's in-edges in time order where the relation has times). Returns (edge counts per part, edge cut,
    names of the relations written with times)."""
    P = cfg.num_parts
    edge_counts, cut_edges, all_edges = {}, {}, 0
    cut_total = 0
    timed_names = []
    for rel in S.relations():
        src_t, name, dst_t = rel.edge_type
        edge_dim = FT.EDGE_DIMS.get(rel.edge_type, 0)
        timed = TL.has_times(rel.table)
        if timed:
            timed_names.append(name)
        rec = _record_dtype(edge_dim, timed)
        deg_new = np.zeros(len(new_of_old[dst_t]), np.int64)  # in-degree by new dst index
        deg_new[new_of_old[dst_t]] = outdeg[rel.table] if rel.reverse else indeg[rel.table]
        # buckets: consecutive local destinations holding <= chunk_rows edges (a hub may exceed it alone)
        bounds = []
        for p in range(P):
            lo, hi = offsets[dst_t][p], offsets[dst_t][p + 1]
            cum = np.cumsum(deg_new[lo:hi])
            bounds.append(np.unique(np.searchsorted(cum, np.arange(cfg.chunk_rows, int(cum[-1]) if len(cum) else 0,
                                                                   cfg.chunk_rows), side="right")))
        time_cols = _time_columns(rel.table) if timed else ()
        columns = tuple(dict.fromkeys((*(("interaction_freq", "since_date") if edge_dim else ()), *time_cols)))
        n_cut = 0
        for s, d, b in scan(rel.table, columns):
            if timed:  # the table's own src/dst: a reverse relation's edge has its forward edge's time
                e_time = TL.edge_times(rel.table, {c: b.column(c).to_numpy() for c in time_cols}, content_time, s, d)
            if rel.reverse:
                s, d = d, s
            if not rel.reverse:
                n_cut += int((part[src_t][s] != part[dst_t][d]).sum())
            owner = part[dst_t][d]
            recs = np.empty(len(s), rec)
            recs["src"] = new_of_old[src_t][s]
            recs["dst"] = new_of_old[dst_t][d] - offsets[dst_t][owner]
            if edge_dim:
                recs["attr"] = FT.follows_edge_features(b.column("interaction_freq").to_numpy(),
                                                        b.column("since_date").to_numpy())
            if timed:
                recs["time"] = e_time
            for p in np.unique(owner):
                mine = recs[owner == p]
                bucket = np.searchsorted(bounds[p], mine["dst"], side="right")
                for k in np.unique(bucket):
                    with open(os.path.join(scratch, f"{name}-{p}-{k}.bin"), "ab") as f:
                        mine[bucket == k].tofile(f)
        if not rel.reverse:
            cut_edges[name] = n_cut
            cut_total += n_cut
            all_edges += int(indeg[rel.table].sum())
        counts = np.zeros(P, np.int64)
        schema = [pa.field("src", pa.int64())]
        if edge_dim:
            schema.append(pa.field("edge_attr", pa.list_(pa.float32(), edge_dim)))
        if timed:
            schema.append(pa.field("time", pa.int64()))
        for p in range(P):
            local = os.path.join(scratch, f"out-{name}-{p}.parquet")
            with pq.ParquetWriter(local, pa.schema(schema), compression="zstd") as w:
                for k in range(len(bounds[p]) + 1):
                    path = os.path.join(scratch, f"{name}-{p}-{k}.bin")
                    if not os.path.exists(path):
                        continue
                    recs = np.fromfile(path, rec)
                    os.remove(path)
                    # by destination, then (timed relations) by time; ties keep the order the tables were read in,
                    # whatever chunk_rows cut them into (lexsort is stable)
                    recs = recs[np.lexsort((recs["time"], recs["dst"])) if timed
                                else np.argsort(recs["dst"], kind="stable")]
                    cols = [pa.array(recs["src"])]
                    if edge_dim:
                        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(recs["attr"].reshape(-1)), edge_dim))
                    if timed:
                        cols.append(pa.array(recs["time"]))
                    w.write_table(pa.Table.from_arrays(cols, schema=pa.schema(schema)))
                    counts[p] += len(recs)
            expected = int(deg_new[offsets[dst_t][p]:offsets[dst_t][p + 1]].sum())
            if counts[p] != expected:  # the edge tables changed while being read
                raise StorageError(f"relation {name!r}: part {p} got {counts[p]} edges, the degree pass counted "
                                   f"{expected}; was the dataset modified during partitioning?")
            _upload(dest, local, f"{part_dir(p)}/edges/{name}.parquet", int(counts[p]), files)
        edge_counts[name] = counts
    cut = {name: c / max(int(indeg[name].sum()), 1) for name, c in cut_edges.items()}
    cut["all"] = cut_total / max(all_edges, 1)
    return edge_counts, cut, timed_names


def _node_columns(t: str, b: pa.RecordBatch, rows: np.ndarray, outdeg, indeg) -> np.ndarray:
    """Feature rows of one node batch (``rows`` = their dense indices)."""
    tab = pa.Table.from_batches([b])
    if t == "user":
        return FT.user_features(tab, outdeg["follows"][rows], outdeg["shared"][rows], outdeg["created"][rows])
    if t == "content":
        return FT.content_features(tab, indeg["shared"][rows])
    return FT.community_features(tab)


def _write_nodes(ds, dest, scratch, cfg, part, new_of_old, offsets, ids, indeg, outdeg, files) -> dict:
    """Per part and node type: original ids, features, in-degrees per relation, and (users) labels."""
    P = cfg.num_parts
    reach = np.full(len(ids["user"]), np.nan, np.float32)
    replicate = np.full(len(ids["user"]), np.nan, np.float32)
    split = np.full(len(ids["user"]), -1, np.int8)
    id_range = {t: is_id_range(v) for t, v in ids.items()}
    for b in iter_table_batches(ds.store, "labels", None, cfg.chunk_rows):
        u = dense_index(ids["user"], b.column("user_id").to_numpy(), "labels.user_id", id_range["user"])
        reach[u] = b.column("cascade_reach").to_numpy()
        replicate[u] = b.column("cascade_reach_replicate").to_numpy(zero_copy_only=False)  # null: no replicate
        names = b.column("split").to_numpy(zero_copy_only=False).astype(str)
        unknown = sorted(set(np.unique(names).tolist()) - set(SPLIT_CODES))
        if unknown:
            raise StorageError(f"table 'labels': column 'split' has values {unknown[:5]}, allowed {list(S.SPLITS)}; "
                               "run `ripple validate`")
        for name, code in SPLIT_CODES.items():
            split[u[names == name]] = code
    label_counts = {s: [0] * P for s in S.SPLITS}
    into = {t: [r for r in S.relations() if r.edge_type[2] == t] for t in S.NODE_TYPES}
    for t in S.NODE_TYPES:
        dim = FT.NODE_DIMS[t]
        rec = np.dtype([("new", np.int64), ("x", np.float32, (dim,))])
        cols = [c for c in S.NODE_TABLES[t].column_names]
        for b in iter_table_batches(ds.store, t, cols, cfg.chunk_rows):
            rows = dense_index(ids[t], b.column("id").to_numpy(), f"{t}.id", id_range[t])
            recs = np.empty(len(rows), rec)
            recs["new"] = new_of_old[t][rows]
            recs["x"] = _node_columns(t, b, rows, outdeg, indeg)
            owner = part[t][rows]
            for p in np.unique(owner):
                with open(os.path.join(scratch, f"node-{t}-{p}.bin"), "ab") as f:
                    recs[owner == p].tofile(f)
        old_of_new = np.empty(len(ids[t]), np.int64)
        old_of_new[new_of_old[t]] = np.arange(len(ids[t]))
        for p in range(P):
            lo, hi = int(offsets[t][p]), int(offsets[t][p + 1])
            path = os.path.join(scratch, f"node-{t}-{p}.bin")
            recs = np.fromfile(path, rec) if os.path.exists(path) else np.empty(0, rec)
            if os.path.exists(path):
                os.remove(path)
            recs = recs[np.argsort(recs["new"])]
            if not np.array_equal(recs["new"], np.arange(lo, hi)):
                raise StorageError(f"table {t!r}: part {p} expected {hi - lo} nodes, read {len(recs)}; was the "
                                   "dataset modified during partitioning?")
            old = old_of_new[lo:hi]
            table = {"id": pa.array(ids[t][old]),
                     "x": pa.FixedSizeListArray.from_arrays(pa.array(recs["x"].reshape(-1)), dim)}
            for r in into[t]:
                deg = outdeg[r.table] if r.reverse else indeg[r.table]
                table[f"in_{r.edge_type[1]}"] = pa.array(deg[old])
            if t == "user":
                table["cascade_reach"] = pa.array(reach[old])
                table["cascade_reach_replicate"] = pa.array(replicate[old])
                table["split"] = pa.array(split[old])
                for s, code in SPLIT_CODES.items():
                    label_counts[s][p] = int((split[old] == code).sum())
            local = os.path.join(scratch, f"out-{t}-{p}.parquet")
            pq.write_table(pa.table(table), local, compression="zstd")
            _upload(dest, local, f"{part_dir(p)}/{t}.parquet", hi - lo, files)
    return label_counts


def read_partition_manifest(url: str, options: StorageOptions | None = None) -> dict:
    """The manifest of a partitioned graph; a clear error when ``url`` is not one (or not complete)."""
    store = Store(url, options)
    if not store.exists(PARTITIONS_MANIFEST):
        raise StorageError(f"{url} has no {PARTITIONS_MANIFEST}: not a partitioned graph, or its partitioning did "
                           "not finish; run `ripple partition DATA --num-parts P --out PARTS`")
    m = store.read_json(PARTITIONS_MANIFEST)
    if m.get("format") != PARTITIONS_FORMAT:
        raise StorageError(f"{join(url, PARTITIONS_MANIFEST)}: format {m.get('format')!r}, expected "
                           f"{PARTITIONS_FORMAT!r}")
    return m


def check_partition_files(url: str, manifest: dict, options: StorageOptions | None = None) -> None:
    """Every file ``manifest`` lists exists with the size it records: one listing, no reads, so a partitioned graph
    that lost or truncated a file is refused before a run starts (checksums are checked when a part is loaded)."""
    store = Store(url, options)
    root = store.path().rstrip("/") + "/"
    found = {p[len(root):]: info.get("size") for p, info in store.fs.find(store.path(), detail=True).items()
             if p.startswith(root)}
    listed = manifest.get("files") or {}
    missing = sorted(rel for rel in listed if rel not in found)
    if missing:
        raise StorageError(f"{join(url, missing[0])} is listed in {PARTITIONS_MANIFEST} but missing ({len(missing)} "
                           f"of its {len(listed)} files are gone); the partitioned graph lost files: re-run `ripple "
                           "partition`")
    for rel, want in sorted(listed.items()):
        if want.get("bytes") is not None and found[rel] != want["bytes"]:
            raise StorageError(f"{join(url, rel)}: {found[rel]} bytes, {PARTITIONS_MANIFEST} says {want['bytes']}; "
                               "the file was truncated or replaced: re-run `ripple partition`")
