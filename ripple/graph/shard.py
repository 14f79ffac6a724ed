"""One partition as tensors in one process (``ShardData``): what a trainer maps zero-copy from its node's
object store, what a shard actor serves from, and what tests and tools load in-process. No PyG here
(``ripple.graph.shards`` holds the client and PyG's stores over the actors).

The arrays come from ``ripple.graph.part_io`` (torch-free); ``ripple.graph.shard_actor`` is the actor.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ripple.data import features as FT
from ripple.data import schema as S
from ripple.graph.part_io import PartitionMeta, labelled_users, read_part, resident_bytes, take_rows
from ripple.sampling.segments import last_segments, sample_segments_many, valid_prefix

EdgeType = tuple[str, str, str]


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
        if isinstance(idx, np.ndarray):  # take: measured 2.7x faster than fancy indexing on rows
            return {"dense": np.take(self.dense, idx, axis=0), "codes": np.take(self.codes, idx, axis=0)}
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
        ids[t] [n_t] original ids; x[t] [n_t, F_t] (a ``PackedRows`` for types with one-hot blocks);
        y [n_user] log1p(reach), NaN when unlabelled (``y_train``: NaN except for training users);
        split [n_user] int8 code (-1 unlabelled); colptr[et] [n_dst + 1]; row[et] [E] global source indices
        (int32 while the source type has < 2^31 nodes, else int64);
        edge_attr[et] [E, D]; time[et] [E] int64 each edge's time, every CSC segment sorted by it (the relations
        the partition stores times for: ``meta.timed_edge_types``).
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
        self.time = {et: _tensor(arrays[f"time/{et[1]}"]) for et in meta.edge_types if f"time/{et[1]}" in arrays}
        self.edge_offset = {et: int(meta.edge_offsets(et)[part]) for et in meta.edge_types}
        self.node_offset = {t: int(meta.offsets(t)[part]) for t in S.NODE_TYPES}

    @classmethod
    def load(cls, meta: PartitionMeta, part: int) -> "ShardData":
        """Read part ``part`` from storage into this process, checking every file against the manifest's checksum
        and rows (tests and single-machine tools; a run's parts come from their actors, ``shard_actor``)."""
        return cls(meta, part, dict(read_part(meta, part)))

    def resident_bytes(self) -> int:
        return resident_bytes(self.arrays)

    def layerwise(self):
        """This part as ``ripple.models.layerwise.LayerwiseGraph``: its own nodes and their in-edges."""
        from ripple.models.layerwise import LayerwiseGraph

        return LayerwiseGraph(node_offset=dict(self.node_offset), x=dict(self.x), colptr=dict(self.colptr),
                              row=dict(self.row), edge_attr=dict(self.edge_attr))

    def array_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(a.shape) for k, a in self.arrays.items()}

    # ------------------------------------------------------------ serving

    def sample(self, requests: dict[EdgeType, tuple[np.ndarray, int]], seed: int, at: int | None = None,
               strategy: str = "uniform") -> dict:
        """Per relation: ``(local destination indices [F], fanout)`` -> ``(owner [S] int32 position in the
        request, source global indices [S] int32 (int64 past 2^31 nodes), local edge positions [S] int32, edge
        features [S, D] or None)``,
        without replacement, grouped by owner. Edge features travel with the edges: no second round trip.
        Global edge id = local edge position + ``edge_offset[et]``.

        ``at``: the batch's time (PyG's temporal semantics, one time for the whole batch): a destination's fanout is
        drawn from its in-edges with time <= ``at`` only, the valid prefix of its time-sorted segment; a relation
        without times is never filtered. ``strategy`` (with ``at``; the sampler checks it): ``uniform`` draws as
        without a time, ``last`` takes the most recent valid in-edges, as the whole-graph sampler does."""
        return sample_parts({self.part: self}, {self.part: (requests, seed)}, at, strategy)[self.part]

    def _segments(self, requests: dict[EdgeType, tuple[np.ndarray, int]], at: int | None) -> _Segments:
        """The in-edge segments a request draws from: every relation's destinations in one flat list."""
        ets = list(requests)
        dst = [torch.as_tensor(requests[et][0]) for et in ets]
        start = torch.cat([self.colptr[et][d] for et, d in zip(ets, dst)])
        end = torch.cat([self.colptr[et][d + 1] for et, d in zip(ets, dst)])
        bounds = torch.tensor([0] + [len(d) for d in dst]).cumsum(0)
        if at is None:
            deg = end - start
        else:  # per relation: the valid prefix of each segment (all of it where the relation has no times)
            b = bounds.tolist()
            deg = torch.cat([valid_prefix(self.time[et], start[lo:hi], end[lo:hi], torch.full((hi - lo,), int(at)))
                             if et in self.time else end[lo:hi] - start[lo:hi]
                             for et, lo, hi in zip(ets, b[:-1], b[1:])])
        fan = torch.cat([torch.full((len(d),), int(requests[et][1]), dtype=torch.long) for et, d in zip(ets, dst)])
        return _Segments(ets, bounds, start, deg, fan)

    def _answer(self, seg: _Segments, owner: Tensor, off: Tensor) -> dict:
        """The drawn segment offsets as ``sample``'s reply, per relation (every relation's positions and edge ids
        computed at once: per-relation work is only what differs, its sources and features)."""
        e = seg.start.index_select(0, owner) + off
        cut = torch.searchsorted(owner, seg.bounds).tolist()
        # int32 positions (a shard's relation holds < 2^31 edges) and sources as stored (int32 while the source
        # type has < 2^31 nodes): 8 of the 12 bytes of indices per edge where int64 would take 24
        own32, e32, bounds = owner.to(torch.int32).numpy(), e.to(torch.int32).numpy(), seg.bounds.tolist()
        out = {}
        for i, et in enumerate(seg.ets):
            a, b = cut[i], cut[i + 1]
            rel = e[a:b]
            attr = self.edge_attr[et].index_select(0, rel).numpy() if et in self.edge_attr else None
            out[et] = (own32[a:b] - np.int32(bounds[i]), self.row[et].index_select(0, rel).numpy(), e32[a:b], attr)
        return out

    def fetch(self, requests: dict[tuple, np.ndarray], wire: bool = False, keep_packed: bool = False) -> dict:
        """``{(node type, attr): local indices}`` -> rows of ``x`` (any type) or ``y`` (users). Edge features
        travel with sampled edges (``sample``), never through here. ``wire``: feature rows packed for another
        process (``features.pack_rows``; rows stored packed are sent as they are). ``keep_packed``: rows stored
        packed are returned packed (the caller unpacks them with other parts' rows), the others as they are."""
        out = {}
        for (group, attr), local in requests.items():
            idx = torch.as_tensor(local)
            x = self.x.get(group) if attr == "x" else None
            if (wire or keep_packed) and isinstance(x, PackedRows):
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
        return take_rows(states, t, local)

    def labelled(self, split: str) -> np.ndarray:
        """Global user indices of this part's users in ``split``."""
        return labelled_users(self.meta, self.part, self.split, split)


class _Segments(NamedTuple):
    """A sample request as flat segments. Shapes: bounds [R + 1] (relation i's segments are
    bounds[i]:bounds[i+1]); start, deg, fan [F]: first CSC position, edges to draw from, fanout."""
    ets: list
    bounds: Tensor
    start: Tensor
    deg: Tensor
    fan: Tensor


def sample_parts(shards: dict[int, ShardData], by_part: dict[int, tuple[dict, int]], at: int | None = None,
                 strategy: str = "uniform") -> dict[int, dict]:
    """``ShardData.sample`` of the parts this process holds, ``{part: (requests, seed)}``, with one draw for
    all of them (``sample_segments_many``): the replies of one call per part, bit for bit, with the draw's
    per-call cost paid once per hop rather than once per part."""
    if not by_part:
        return {}
    if at is not None:
        next(iter(shards.values())).meta.check_edge_times()
    seg = {p: shards[p]._segments(req, at) for p, (req, _) in by_part.items()}
    parts = list(seg)
    if at is not None and strategy == "last":
        draws = [last_segments(seg[p].deg, seg[p].fan) for p in parts]
    else:
        draws = sample_segments_many([seg[p].deg for p in parts], [seg[p].fan for p in parts],
                                     [torch.Generator().manual_seed(int(by_part[p][1])) for p in parts])
    return {p: shards[p]._answer(seg[p], *d) for p, d in zip(parts, draws)}
