"""A partitioned graph's parts as arrays, without torch: the manifest (``PartitionMeta``), a part's files read
and checked one at a time (``read_part``), the node's load slot, and freed heap back to the OS.

Nothing here imports torch or PyG: a ``GraphShard`` actor (``ripple.graph.shard_actor``) loads and publishes its
part with this module alone, and a process that only holds a part for others to map never pays torch's import
(about 145 MB of heap per actor). ``ripple.graph.shard`` turns the arrays into tensors where they are served.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.storage import (StorageError, StorageOptions, Store, join, read_checked, read_parquet_bytes,
                                 verified_bytes)
from ripple.graph.partition import part_dir, read_partition_manifest
from ripple.run import PARTITIONS_MANIFEST

if TYPE_CHECKING:
    import torch

EdgeType = tuple[str, str, str]
EDGE_ATTR = "edge_attr"
EDGE_TIME = "time"


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

    # torch on use: a shard actor's process reads the manifest and never imports torch (see ``shard_actor``)
    def offsets(self, t: str) -> "torch.Tensor":
        import torch

        return torch.tensor(np.concatenate([[0], np.cumsum(self.manifest["node_counts"][t])]), dtype=torch.long)

    def edge_offsets(self, et: EdgeType) -> "torch.Tensor":
        import torch

        return torch.tensor(np.concatenate([[0], np.cumsum(self.manifest["edge_counts"][et[1]])]), dtype=torch.long)

    @property
    def timed_edge_types(self) -> list[EdgeType] | None:
        """The relations whose edges carry times (each destination's in-edges stored in time order); None for a
        partition written before the partitioner stored edge times."""
        names = self.manifest.get("edge_times")
        return None if names is None else [et for et in self.edge_types if et[1] in names]

    def check_edge_times(self) -> None:
        """Refuses time-aware sampling of a partition that holds no edge times: sampled without them every edge,
        future ones included, would be taken, which is the leak time-aware sampling exists to prevent."""
        if self.timed_edge_types is None:
            raise ValueError(f"{self.url} was partitioned before edge times were stored ({PARTITIONS_MANIFEST} has no "
                             "'edge_times'), so it cannot be sampled at a time: re-partition the dataset (`ripple "
                             "partition DATA --num-parts P --out PARTS`)")

    def num_nodes(self, t: str) -> int:
        return int(sum(self.manifest["node_counts"][t]))

    def num_edges(self, et: EdgeType) -> int:
        return int(sum(self.manifest["edge_counts"][et[1]]))

    def label_count(self, split: str, part: int) -> int:
        return int(self.manifest["labels"][split][part])


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


def read_part(meta: PartitionMeta, part: int):
    """Part ``part``'s arrays as (name, array), one file read and decoded at a time (``ShardData.load``,
    ``GraphShard``)."""
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
        if EDGE_TIME in tab.column_names:  # each destination's in-edges in time order (``partition``)
            yield f"time/{et[1]}", tab[EDGE_TIME].to_numpy()
        del tab
        _release_decode()


@contextlib.contextmanager
def node_load_slot():
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


def resident_bytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays.values()))


def labelled_users(meta: PartitionMeta, part: int, split_codes: np.ndarray, split: str) -> np.ndarray:
    """Global user indices of part ``part``'s users in ``split``. Shapes: split_codes [n_user] int8 -> [K]."""
    first = int(sum(meta.manifest["node_counts"]["user"][:part]))
    return np.nonzero(split_codes == S.SPLITS.index(split))[0] + first


def take_rows(states: list, t: str, local: np.ndarray) -> np.ndarray:
    """Rows ``local`` (a part's local indices) of node type ``t`` from the part's states object of layer-wise
    inference (``ripple.infer.embed``), read on the part's node so only the rows travel. ``states`` is
    ``[(users ref, other types ref)]``, wrapped so Ray does not resolve it."""
    import ray

    users_ref, others_ref = states[0]
    arr = ray.get(users_ref) if t == "user" else ray.get(others_ref)[t]
    return arr[local]
