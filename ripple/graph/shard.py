"""One partition in one process, and the Ray actor that serves it; no PyG here, so a shard actor's process
imports torch but not PyG (``ripple.graph.shards`` holds the client and PyG's stores over the actors).

* ``PartitionMeta``: what every process knows about a partitioned graph (O(P) numbers from its manifest).
* ``ShardData``: one partition resident in this process (CSC in-edges per relation with *global* source
  indices, node features, labels, original ids). Sampling and lookups take local indices and return global ones.
* ``GraphShard``: a Ray actor that loads one partition from object storage in its constructor (so a restarted
  actor reloads it) and serves batched neighbour sampling and feature lookups. It publishes its arrays in Ray's
  object store as it decodes them; a co-located trainer maps them zero-copy instead of loading a second copy.
* ``release_memory`` / ``HeapTrim``: freed heap back to the OS, once after a load or a phase, or every step.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.storage import (StorageError, StorageOptions, Store, join, read_checked, read_parquet_bytes,
                                 verified_bytes)
from ripple.graph.partition import part_dir, read_partition_manifest
from ripple.run import PARTITIONS_MANIFEST
from ripple.sampling.segments import sample_segments

log = logging.getLogger(__name__)

EdgeType = tuple[str, str, str]
EDGE_ATTR = "edge_attr"


@dataclass
class PartitionMeta:
    """What every process knows about a partitioned graph: O(P) numbers from the manifest, no graph data."""

    url: str
    options: StorageOptions
    manifest: dict

    @classmethod
    def open(cls, url: str, options: StorageOptions | None = None) -> "PartitionMeta":
        return cls(url, options or StorageOptions(), read_partition_manifest(url, options))

    @property
    def num_parts(self) -> int:
        return int(self.manifest["num_parts"])

    @property
    def edge_types(self) -> list[EdgeType]:
        return [tuple(et) for et in self.manifest["edge_types"]]

    @property
    def edge_dims(self) -> dict[EdgeType, int]:
        dims = self.manifest["edge_dims"]
        return {et: int(dims[et[1]]) for et in self.edge_types if et[1] in dims}

    def offsets(self, t: str) -> Tensor:
        return torch.tensor(np.concatenate([[0], np.cumsum(self.manifest["node_counts"][t])]), dtype=torch.long)

    def edge_offsets(self, et: EdgeType) -> Tensor:
        return torch.tensor(np.concatenate([[0], np.cumsum(self.manifest["edge_counts"][et[1]])]), dtype=torch.long)

    def num_nodes(self, t: str) -> int:
        return int(sum(self.manifest["node_counts"][t]))

    def num_edges(self, et: EdgeType) -> int:
        return int(sum(self.manifest["edge_counts"][et[1]]))

    def label_count(self, split: str, part: int) -> int:
        return int(self.manifest["labels"][split][part])


def _tensor(a: np.ndarray) -> Tensor:
    with warnings.catch_warnings():  # arrays mapped from Ray's object store are read-only; nobody writes them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


class PackedRows:
    """A node type's feature rows held packed, in ``features.pack_rows``' layout (the float32 columns, and one
    uint8 code per one-hot block): a post's row takes 74 bytes instead of 148, and posts' rows are the largest
    array of a part (26M posts at 170M edges). Indexed like the float32 [n, F_t] tensor it stands for, unpacking
    only the rows asked for. Shapes: dense [n, F_t - blocks' widths] float32; codes [n, blocks] uint8."""

    def __init__(self, t: str, dense: np.ndarray, codes: np.ndarray):
        self.t, self.dense, self.codes = t, dense, codes
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.codes), FT.NODE_DIMS[self.t]

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def packed(self, idx) -> dict:
        """Rows ``idx`` as ``pack_rows`` sends them, without unpacking."""
        idx = idx.numpy() if isinstance(idx, Tensor) else idx
        return {"dense": self.dense[idx], "codes": self.codes[idx]}

    def __getitem__(self, idx) -> Tensor:
        cols = None
        if isinstance(idx, tuple):
            idx, cols = idx
        rows = torch.from_numpy(FT.unpack_rows(self.t, self.packed(idx)))
        return rows if cols is None else rows[:, cols]

    def index_select(self, dim: int, idx: Tensor) -> Tensor:
        if dim != 0:
            raise ValueError(f"feature rows are selected along dim 0, not {dim}")
        return self[idx]


def _features(arrays: dict[str, np.ndarray], t: str):
    """Node type ``t``'s feature rows in a part's arrays: packed where the part stores them packed."""
    if f"x/{t}/codes" in arrays:
        return PackedRows(t, arrays[f"x/{t}/dense"], arrays[f"x/{t}/codes"])
    return _tensor(arrays[f"x/{t}"])


class ShardData:
    """One partition resident in this process.

    Shapes (n_t = nodes of type t in the part, E = in-edges of relation et into the part's nodes):
        ids[t] [n_t] original ids; x[t] [n_t, F_t] (a ``PackedRows`` for types with one-hot blocks); y [n_user] log1p(reach), NaN when unlabelled (``y_train``:
        NaN except for training users);
        split [n_user] int8 code (-1 unlabelled); colptr[et] [n_dst + 1]; row[et] [E] global source indices
        (int32 while the source type has < 2^31 nodes, else int64);
        edge_attr[et] [E, D].
    """

    def __init__(self, meta: PartitionMeta, part: int, arrays: dict[str, np.ndarray]):
        self.meta, self.part, self.arrays = meta, part, arrays
        self.ids = {t: arrays[f"ids/{t}"] for t in S.NODE_TYPES}
        self.x = {t: _features(arrays, t) for t in S.NODE_TYPES}
        self.y = _tensor(arrays["y"])
        self.split = arrays["split"]
        # what the feature store serves: training labels only, so no batch carries a validation or test label
        self.y_train = torch.where(torch.from_numpy(self.split == S.SPLITS.index("train")), self.y,
                                   torch.tensor(float("nan")))
        self.replicate = arrays["replicate"]
        self.colptr = {et: _tensor(arrays[f"colptr/{et[1]}"]) for et in meta.edge_types}
        self.row = {et: _tensor(arrays[f"row/{et[1]}"]) for et in meta.edge_types}
        self.edge_attr = {et: _tensor(arrays[f"edge_attr/{et[1]}"]) for et in meta.edge_types
                          if f"edge_attr/{et[1]}" in arrays}
        self.edge_offset = {et: int(meta.edge_offsets(et)[part]) for et in meta.edge_types}
        self.node_offset = {t: int(meta.offsets(t)[part]) for t in S.NODE_TYPES}

    @classmethod
    def load(cls, meta: PartitionMeta, part: int, keep=None) -> "ShardData":
        """Read part ``part`` from storage, checking every file against the manifest's checksum and rows.
        ``keep(array)``: what to hold in an array's place as soon as it is built (a shard actor publishes each
        to the object store and keeps the shared view), so that a loading process holds one file's decode at a
        time rather than the whole part, decoded, next to its published copy."""
        return cls(meta, part, {name: keep(a) if keep else a for name, a in _read_part(meta, part)})

    def resident_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def layerwise(self):
        """This part as ``ripple.models.layerwise.LayerwiseGraph``: its own nodes and their in-edges."""
        from ripple.models.layerwise import LayerwiseGraph

        return LayerwiseGraph(node_offset=dict(self.node_offset), x=dict(self.x), colptr=dict(self.colptr),
                              row=dict(self.row), edge_attr=dict(self.edge_attr))

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(a.shape) for k, a in self.arrays.items()}

    # ------------------------------------------------------------ serving

    def sample(self, requests: dict[EdgeType, tuple[np.ndarray, int]], seed: int) -> dict:
        """Per relation: ``(local destination indices [F], fanout)`` -> ``(owner [S] int32 position in the
        request, source global indices [S] int32 (int64 past 2^31 nodes), local edge positions [S] int32, edge
        features [S, D] or None)``,
        without replacement, grouped by owner. Edge features travel with the edges: no second round trip.
        Global edge id = local edge position + ``edge_offset[et]``."""
        gen = torch.Generator().manual_seed(int(seed))
        ets = list(requests)
        dst = [torch.as_tensor(requests[et][0]) for et in ets]
        start = torch.cat([self.colptr[et][d] for et, d in zip(ets, dst)])
        deg = torch.cat([self.colptr[et][d + 1] for et, d in zip(ets, dst)]) - start
        fan = torch.cat([torch.full((len(d),), int(requests[et][1]), dtype=torch.long) for et, d in zip(ets, dst)])
        # one draw for every relation of the hop: per-call overhead paid once, not once per relation
        owner, off = sample_segments(deg, fan, gen)
        bounds = torch.tensor([0] + [len(d) for d in dst]).cumsum(0)
        cut = torch.searchsorted(owner, bounds)
        out = {}
        for i, et in enumerate(ets):
            own = owner[cut[i]:cut[i + 1]]
            e = start[own] + off[cut[i]:cut[i + 1]]
            attr = self.edge_attr[et].index_select(0, e).numpy() if et in self.edge_attr else None
            # int32 positions (a shard's relation holds < 2^31 edges) and sources as stored (int32 while the source
            # type has < 2^31 nodes): 8 of the 12 bytes of indices per edge where int64 would take 24
            out[et] = ((own - bounds[i]).to(torch.int32).numpy(), self.row[et][e].numpy(),
                       e.to(torch.int32).numpy(), attr)
        return out

    def fetch(self, requests: dict[tuple, np.ndarray], wire: bool = False) -> dict:
        """``{(node type, attr): local indices}`` -> rows of ``x`` (any type) or ``y`` (users). Edge features
        travel with sampled edges (``sample``), never through here. ``wire``: feature rows packed for another
        process (``features.pack_rows``; rows stored packed are sent as they are)."""
        out = {}
        for (group, attr), local in requests.items():
            idx = torch.as_tensor(local)
            x = self.x.get(group) if attr == "x" else None
            if wire and isinstance(x, PackedRows):
                out[(group, attr)] = x.packed(idx)
            elif attr == "x":
                rows = x.index_select(0, idx).numpy()
                out[(group, attr)] = FT.pack_rows(group, rows) if wire else rows
            elif attr == "y":
                out[(group, attr)] = self.y_train.index_select(0, idx).numpy()
            else:
                raise KeyError(f"shard {self.part} has no attribute {attr!r} for {group!r}")
        return out

    def take_rows(self, states: list, t: str, local: np.ndarray) -> np.ndarray:
        """Rows ``local`` (this part's local indices) of node type ``t`` from this part's states object of
        layer-wise inference (``ripple.infer.embed``): served by the part's actor, on the part's node, so only
        the rows travel. ``states`` is ``[(users ref, other types ref)]``, wrapped so Ray does not resolve it."""
        import ray

        users_ref, others_ref = states[0]
        arr = ray.get(users_ref) if t == "user" else ray.get(others_ref)[t]
        return arr[local]

    def labelled(self, split: str) -> np.ndarray:
        """Global user indices of this part's users in ``split``."""
        code = S.SPLITS.index(split)
        return np.nonzero(self.split == code)[0] + self.node_offset["user"]


def _feature_arrays(t: str, data: bytes, where: str, n: int, width: int, batch_rows: int = 1 << 18):
    """The ``x`` column of a part's node file (its verified bytes), decoded a batch of rows at a time into the
    part's arrays: packed (``features.pack_rows``) where every row's one-hot blocks are exact, else float32. A
    post file decoded whole would take twice its packed size again, for every shard loading at once."""
    import pyarrow.parquet as pq

    dense = codes = plain = None
    a = 0
    # zero-copy over the bytes, no pre-buffering, one thread: decoding holds a batch, not the column (measured
    # on a 6.5M-post file: 0.38 GiB over its bytes, against 0.68 GiB with pyarrow's defaults on a BytesIO)
    pf = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    if pf.metadata.num_rows != n:
        raise StorageError(f"{where}: {pf.metadata.num_rows} rows, {PARTITIONS_MANIFEST} says {n} — re-run "
                           "`ripple partition`")
    for batch in pf.iter_batches(batch_size=batch_rows, columns=["x"], use_threads=False):
        x = batch.column(0).flatten().to_numpy().astype(np.float32, copy=False).reshape(batch.num_rows, width)
        rows = FT.pack_rows(t, x) if plain is None else x
        if isinstance(rows, dict) and dense is None and a == 0:
            dense = np.empty((n, rows["dense"].shape[1]), np.float32)
            codes = np.empty((n, rows["codes"].shape[1]), np.uint8)
        if isinstance(rows, dict):
            dense[a:a + len(x)], codes[a:a + len(x)] = rows["dense"], rows["codes"]
        else:
            if plain is None:  # a row that is not exactly one-hot: this type is kept as it is
                plain = np.empty((n, width), np.float32)
                if dense is not None:
                    plain[:a] = FT.unpack_rows(t, {"dense": dense[:a], "codes": codes[:a]})
                    dense = codes = None
            plain[a:a + len(x)] = x
        a += len(x)
    if plain is not None or n == 0:
        yield f"x/{t}", plain if plain is not None else np.zeros((0, width), np.float32)
    else:
        yield f"x/{t}/dense", dense
        yield f"x/{t}/codes", codes


def _read_part(meta: PartitionMeta, part: int):
    """Part ``part``'s arrays as (name, array), one file read and decoded at a time (``ShardData.load``)."""
    if not 0 <= part < meta.num_parts:
        raise ValueError(f"part {part} does not exist: {meta.url} has {meta.num_parts} parts")
    store = Store(meta.url, meta.options)
    files = meta.manifest["files"]

    def entry(rel_path: str) -> dict:
        want = files.get(rel_path)
        if want is None:
            raise StorageError(f"{join(meta.url, rel_path)} is not listed in {PARTITIONS_MANIFEST}; re-run "
                               "`ripple partition`")
        return {**want, "path": rel_path}

    def read(rel_path: str, columns=None):
        return read_checked(store, entry(rel_path), PARTITIONS_MANIFEST, columns, fix="re-run `ripple partition`")

    dims = meta.manifest["feature_dims"]
    indeg = {}
    for t in S.NODE_TYPES:
        rel = f"{part_dir(part)}/{t}.parquet"
        data = verified_bytes(store, entry(rel), PARTITIONS_MANIFEST, fix="re-run `ripple partition`")
        columns = ["id", *(f"in_{et[1]}" for et in meta.edge_types if et[2] == t)]
        if t == "user":
            columns += ["cascade_reach", "cascade_reach_replicate", "split"]
        # the features first, decoded and published batch by batch, before the other columns are decoded
        yield from _feature_arrays(t, data, join(meta.url, rel), files[rel]["rows"], int(dims[t]))
        tab = read_parquet_bytes(data, join(meta.url, rel), columns)
        del data
        if tab.num_rows != files[rel]["rows"]:
            raise StorageError(f"{join(meta.url, rel)}: {tab.num_rows} rows, {PARTITIONS_MANIFEST} says "
                               f"{files[rel]['rows']} — re-run `ripple partition`")
        yield f"ids/{t}", tab["id"].to_numpy()
        for et in meta.edge_types:
            if et[2] == t:
                indeg[et] = tab[f"in_{et[1]}"].to_numpy()
        if t == "user":
            reach = tab["cascade_reach"].to_numpy(zero_copy_only=False).astype(np.float32)
            yield "y", np.log1p(reach)
            yield "replicate", tab["cascade_reach_replicate"].to_numpy(zero_copy_only=False).astype(np.float32)
            yield "split", tab["split"].to_numpy().astype(np.int8)
        del tab
        _release_decode()
    for et in meta.edge_types:
        tab = read(f"{part_dir(part)}/edges/{et[1]}.parquet")
        colptr = np.zeros(len(indeg[et]) + 1, np.int64)
        np.cumsum(indeg[et], out=colptr[1:])
        if colptr[-1] != tab.num_rows:
            raise StorageError(f"{join(meta.url, part_dir(part), 'edges', et[1] + '.parquet')}: {tab.num_rows} "
                               f"edges, in-degrees of {et[2]} sum to {colptr[-1]}; re-run `ripple partition`")
        yield f"colptr/{et[1]}", colptr
        del colptr
        src = tab["src"].to_numpy()
        # int32 global source indices while a type has < 2^31 nodes: 4 bytes per resident edge saved
        yield f"row/{et[1]}", src.astype(np.int32) if meta.num_nodes(et[0]) < 2**31 else src
        del src
        if EDGE_ATTR in tab.column_names:
            d = meta.edge_dims[et]
            yield f"edge_attr/{et[1]}", (tab[EDGE_ATTR].combine_chunks().flatten().to_numpy()
                                         .astype(np.float32, copy=False).reshape(tab.num_rows, d))
        del tab
        _release_decode()


@contextlib.contextmanager
def _node_load_slot():
    """One shard load at a time on a node. Loading holds a file's decode next to the part's growing published
    copy (about 1.3 GB at 170M edges, on top of the actor's process); the actors of a node's parts start together,
    and four of them loading at once were the training stage's peak. Serial loads cost little here (decode is
    CPU-bound, on 2 cores); the lock is an ``flock`` on a file in the node's temp dir, which the kernel releases
    if the process dies."""
    import fcntl
    import tempfile

    with open(os.path.join(tempfile.gettempdir(), "ripple-shard-load.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def release_memory() -> None:
    """Give freed heap back to the OS: Arrow's memory pool and glibc keep freed buffers for reuse, so a
    long-lived process (a shard actor after loading its part, a reused Ray worker after a big task) would
    otherwise hold its peak. Measured on a 10M-edge graph's part: 200 MiB of a 300 MiB peak returned."""
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    trim_heap()


def _release_decode() -> None:
    """After each file of a load: Arrow's pool and glibc's free pages back to the OS (refcounts freed the
    buffers; a ``gc.collect``, 0.2 s in a process that imported torch, is left to the end of the load)."""
    pa.default_memory_pool().release_unused()
    trim_heap()


def trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: every arena's free pages back to the OS (a no-op where libc is not glibc)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
        except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to trim
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


class HeapTrim:
    """Call once per training step: trims the heap (``trim_heap``) at most every ``every_s`` seconds.

    A trainer's steps allocate and free batch-sized tensors from several threads (the step, the prefetcher,
    torch's pool), and glibc keeps what they freed in fragmented arenas: at 170M edges a CPU trainer held 1.33 GB
    of heap of which ``malloc_trim`` returned 0.62 GB. On a CPU a step takes seconds, so it trims every step; a
    GPU's steps take milliseconds, so the cost (a walk over the arenas) is paid every ``every_s``."""

    def __init__(self, every_s: float = 1.0):
        self.every_s, self.last = every_s, time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            trim_heap()
            self.last = now


class GraphShard:
    """Ray actor body (``shard_actor_class`` wraps it): owns one partition, serves sample/fetch."""

    def __init__(self, url: str, options: StorageOptions, part: int):
        import ray

        t0 = time.perf_counter()
        # requests are small and many actors share a node with trainers: intra-op threads only oversubscribe
        torch.set_num_threads(1)
        meta = PartitionMeta.open(url, options)
        # Each array published as soon as it is decoded, and served from the shared copy: the node holds one copy
        # for the actor and its trainers, and a loading actor holds one file's decode at a time, not the part.
        refs = []

        def publish(a: np.ndarray) -> np.ndarray:
            refs.append(ray.put(a))
            return ray.get(refs[-1])

        with _node_load_slot():
            waited = time.perf_counter() - t0
            self.data = ShardData.load(meta, part, keep=publish)
        self._refs = dict(zip(self.data.arrays, refs))  # the arrays in the order they were published
        release_memory()  # what is left of the decode, held for the actor's life otherwise
        self.load_seconds = time.perf_counter() - t0
        log.info("shard %d loaded from %s: %.1f MiB in %.1fs (%.1fs waiting for the node's load slot)", part, url,
                 self.data.resident_bytes() / 2**20, self.load_seconds, waited)

    def ready(self) -> dict:
        import ray

        return {"part": self.data.part, "node_id": ray.get_runtime_context().get_node_id(),
                "resident_bytes": self.data.resident_bytes(), "shapes": self.data.array_shapes(),
                "load_seconds": self.load_seconds}

    def arrays_ref(self) -> list:
        """``[{array name: ObjectRef}]``: the refs wrapped, or the caller's ``ray.get`` would resolve them."""
        return [self._refs]

    def sample(self, requests, seed):
        return self.data.sample(requests, seed)

    def fetch(self, requests):
        # feature rows leave the process packed (one-hot blocks as uint8 codes); ShardedGraph.fetch unpacks them
        return self.data.fetch(requests, wire=True)

    def labelled(self, split: str):
        return self.data.labelled(split)

    def take_rows(self, states: list, t: str, local: np.ndarray) -> np.ndarray:
        return self.data.take_rows(states, t, local)
