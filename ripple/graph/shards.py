"""The sharded graph: one partition per ``GraphShard`` Ray actor (``ripple.graph.shard``, which also holds
``ShardData``, one partition in one process), and the client and PyG stores that route to them.

* ``ShardedGraph``: the client a trainer holds. Requests are grouped by owning part: one call per part per
  request, all remote calls in flight at once, a local part answered in-process without a remote call.
* ``ShardedFeatureStore`` / ``ShardedGraphStore``: PyG's store interfaces over a ``ShardedGraph``, so batches
  go through ``NodeLoader``'s own feature join.

Global indices: part p owns ``offsets[t][p] : offsets[t][p + 1]`` of node type t and
``edge_offsets[et][p] : edge_offsets[et][p + 1]`` of relation et's edges (``ripple.graph.partition``).
"""
from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import EdgeAttr, FeatureStore, GraphStore, TensorAttr

from ripple.data import features as FT
from ripple.data import schema as S
from ripple.graph.part_io import PartitionMeta
from ripple.graph.shard import ShardData, sample_parts
from ripple.graph.shard_actor import GraphShard

log = logging.getLogger(__name__)

EdgeType = tuple[str, str, str]
NAMESPACE = "ripple"


def owner_of(offsets: Tensor, glob: Tensor) -> Tensor:
    """Shapes: offsets [P + 1], glob [K] global indices -> [K] owning part."""
    return torch.searchsorted(offsets, glob, right=True) - 1


def group_by_part(offsets: Tensor, glob: Tensor) -> list[tuple[int, Tensor, Tensor]]:
    """[(part, positions in ``glob``, local indices)] for each part that owns some of ``glob``. Local indices are
    int32 (a part holds < 2^31 nodes of a type): they are what requests to other processes carry."""
    own = owner_of(offsets, glob)
    if len(glob) and (int(own.min()) < 0 or int(own.max()) >= len(offsets) - 1):
        raise ValueError(f"global indices must lie in [0, {int(offsets[-1])}) (the nodes of every part), got min "
                         f"{int(glob.min())} and max {int(glob.max())}")
    out = []
    for p in torch.nonzero(torch.bincount(own)).view(-1).tolist():  # counting, not sorting: O(len(glob))
        pos = torch.nonzero(own == p).view(-1)
        out.append((p, pos, (glob[pos] - offsets[p]).to(torch.int32)))
    return out


def shard_name(key: str, part: int) -> str:
    return f"ripple-shard-{key}-{part:05d}"


def shard_key(parts_url: str, run: str) -> str:
    """Names a run's shard actors: trainers of one run find each other's shards, other runs do not."""
    return hashlib.sha1(f"{parts_url}|{run}".encode()).hexdigest()[:12]


def start_shard(meta: PartitionMeta, key: str, part: int, max_restarts: int = 3, node: str | None = None):
    """Get or create shard ``part``'s actor on Ray node ``node`` (default: this process's node); returns its
    handle.

    The affinity is *hard*: Ray 2.60 does not honour a soft one for 0-CPU actors, nor spread them (measured on a
    3-node cluster: with a soft affinity 2 of 3 landed elsewhere; with SPREAD all four parts of a run once
    landed on one node). Hard costs nothing where the shard shares its fate with its owner (a trainer's shards:
    a lost node takes both, and the restarted worker group starts them anew next to its new trainers); other
    owners place shards again after a lost node (``ripple.infer.embed``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = node or this_node()
    return ray.remote(GraphShard).options(
        name=shard_name(key, part), namespace=NAMESPACE, get_if_exists=True, num_cpus=0, max_restarts=max_restarts,
        max_task_retries=max_restarts, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(meta.url, meta.options, part)


def this_node() -> str | None:
    """This process's Ray node id (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def alive_nodes() -> list[str]:
    """Ids of the Ray nodes alive with CPUs (where shards and their workers can run), in a stable order."""
    import ray

    return sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0)


def find_shards(meta: PartitionMeta, key: str, timeout_s: float = 600.0) -> tuple[list, list[str]]:
    """Handles of all parts' actors, waiting for other processes to create theirs and for every part to be
    loaded, and the id of the Ray node each actor runs on."""
    import ray

    handles, deadline = [], time.monotonic() + timeout_s
    for p in range(meta.num_parts):
        while True:
            try:
                handles.append(ray.get_actor(shard_name(key, p), namespace=NAMESPACE))
                break
            except ValueError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"shard actor {shard_name(key, p)} did not appear within {timeout_s:.0f}s; "
                                       "is the trainer that owns it running?") from None
                time.sleep(0.2)
    infos = ray.get([h.ready.remote() for h in handles])
    return handles, [info["node_id"] for info in infos]


def payload_bytes(obj) -> int:
    """Bytes of the arrays in a request or a reply (nested dicts, tuples and lists of numpy arrays): what a call
    moves, less Ray's framing."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 0


class Traffic:
    """What this process moved through shard actors: calls and bytes, by method (``sample``: edges and their
    features; ``fetch``: feature rows; ``take_rows``: layer-wise halo states) and by where the actor runs
    (``cross_node``: another Ray node, over the network; ``same_node``: this node's object store, no network)."""

    FIELDS = ("calls", "request_bytes", "reply_bytes")

    def __init__(self):
        self.counts: dict[tuple[str, str, str], int] = {}

    def add(self, where: str, method: str, calls: int = 0, request_bytes: int = 0, reply_bytes: int = 0) -> None:
        for name, value in zip(self.FIELDS, (calls, request_bytes, reply_bytes)):
            key = (where, method, name)
            self.counts[key] = self.counts.get(key, 0) + int(value)

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        return dict(self.counts)

    @staticmethod
    def since(now: dict, before: dict) -> dict:
        """The counts moved between two snapshots."""
        return {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}

    @staticmethod
    def total(counts: list[dict]) -> dict:
        out: dict = {}
        for c in counts:
            for k, v in c.items():
                out[k] = out.get(k, 0) + v
        return out

    @staticmethod
    def report(counts: dict) -> dict:
        """``{"cross_node_bytes": n, "same_node_bytes": n, where: {method: {field: n}}}`` (JSON-ready)."""
        out: dict = {"cross_node_bytes": 0, "same_node_bytes": 0}
        for (where, method, name), value in sorted(counts.items()):
            out.setdefault(where, {}).setdefault(method, {})[name] = value
            if name != "calls":
                out[f"{where}_bytes"] = out.get(f"{where}_bytes", 0) + value
        return out


class ShardedGraph:
    """A trainer's view of the sharded graph: local parts mapped in-process, the others behind actors."""

    def __init__(self, meta: PartitionMeta, actors: list, local_parts: list[int],
                 local: dict[int, ShardData] | None = None, nodes: list[str] | None = None, here: str | None = None):
        """``nodes``: the Ray node of each part's actor, ``here``: this process's node; calls to actors on
        another node are counted as ``cross_node`` traffic (``Traffic``)."""
        self.meta, self.actors = meta, actors
        self.nodes, self.here = nodes or [None] * meta.num_parts, here
        self.traffic = Traffic()
        self.local: dict[int, ShardData] = dict(local or {})
        if local_parts:
            import ray

            for p in local_parts:  # zero-copy views of the co-located actor's published arrays
                (refs,) = ray.get(actors[p].arrays_ref.remote())
                self.local[p] = ShardData(meta, p, dict(zip(refs, ray.get(list(refs.values())))))
        self.offsets = {t: meta.offsets(t) for t in S.NODE_TYPES}
        self.edge_offsets = {et: meta.edge_offsets(et) for et in meta.edge_types}

    @property
    def remote_calls(self) -> int:
        """Calls made to shard actors so far (on this node or another), from the traffic counts."""
        return sum(v for (_, _, name), v in self.traffic.counts.items() if name == "calls")

    def where(self, part: int) -> str:
        """``cross_node`` when part ``part``'s actor runs on another Ray node than this process, else
        ``same_node``."""
        return "cross_node" if self.nodes[part] != self.here else "same_node"

    @classmethod
    def connect(cls, meta: PartitionMeta, key: str, owned: list[int]) -> "ShardedGraph":
        """A Ray process's view of the shard actors started under ``key``: every part whose actor runs on this
        process's node is mapped zero-copy from the node's object store (mapping costs no copy and no memory,
        and its samples then cost no actor round trip), the others are reached through their actors. ``owned``
        parts are mapped wherever their actors run: a trainer's own users come from them (an actor found on
        another node, one left from before a restart, is copied over, with a warning)."""
        actors, nodes = find_shards(meta, key)
        here = this_node()
        colocated = [p for p in range(meta.num_parts) if nodes[p] == here]
        strays = [p for p in owned if nodes[p] != here]
        if strays:
            log.warning("parts %s run on other nodes (%s): copied into this node's object store",
                        strays, [nodes[p] for p in strays])
        return cls(meta, actors, sorted({*owned, *colocated}), nodes=nodes, here=here)

    @classmethod
    def in_process(cls, meta: PartitionMeta, parts: list[int] | None = None) -> "ShardedGraph":
        """Parts loaded into this process, no Ray (tests, benchmarks, and single-machine tools)."""
        parts = range(meta.num_parts) if parts is None else parts
        return cls(meta, [None] * meta.num_parts, [], {p: ShardData.load(meta, p) for p in parts})

    def resident_bytes(self) -> int:
        return sum(s.resident_bytes() for s in self.local.values())

    def call(self, method: str, by_part: dict[int, tuple], answer_local=None) -> dict[int, object]:
        """One call per part; remote ones all in flight while local ones are answered here (by
        ``answer_local({part: args})`` where given: the mapped parts all at once)."""
        import ray

        futures = {p: getattr(self.actors[p], method).remote(*args) for p, args in by_part.items()
                   if p not in self.local}
        mine = {p: args for p, args in by_part.items() if p in self.local}
        out = (answer_local(mine) if answer_local is not None else
               {p: getattr(self.local[p], method)(*args) for p, args in mine.items()})
        if futures:
            replies = dict(zip(futures, ray.get(list(futures.values()))))
            for p, reply in replies.items():
                self.traffic.add(self.where(p), method, calls=1, request_bytes=payload_bytes(by_part[p]),
                                 reply_bytes=payload_bytes(reply))
            out.update(replies)
        return out

    def sample(self, by_part: dict[int, tuple[dict, int]], at: int | None = None, strategy: str = "uniform"
               ) -> dict[int, dict]:
        """``{part: (requests, seed)}`` -> ``{part: sampled in-edges}`` (``ShardData.sample``). ``at``: the batch's
        time, every part drawing from the in-edges valid at it, by ``strategy``; an untimed batch's call carries
        neither (its requests are what they were before edge times)."""
        if at is not None:
            by_part = {p: (*args, int(at), strategy) for p, args in by_part.items()}
        # the mapped parts in one draw (``sample_parts``), the same replies as one call each
        return self.call("sample", by_part, answer_local=lambda mine: sample_parts(
            self.local, {p: args[:2] for p, args in mine.items()}, at, strategy))

    def fetch(self, by_part: dict[int, dict]) -> dict[int, dict]:
        """``{part: {(node type, attr): local indices}}`` -> ``{part: {(node type, attr): rows}}``."""
        answers = self.call("fetch", {p: (req,) for p, req in by_part.items()})
        return {p: {k: FT.unpack_rows(k[0], v) if k[1] == "x" else v for k, v in a.items()}
                for p, a in answers.items()}

    def gather(self, keys: list[tuple[object, str, Tensor]]) -> list[Tensor]:
        """Rows for each ``(group, attr, global index)``, one ``fetch`` per part covering every key."""
        by_part: dict[int, dict] = {}
        places = []
        for group, attr, glob in keys:
            groups = group_by_part(self.offsets[group], glob.cpu())
            places.append(groups)
            for p, _, local in groups:
                by_part.setdefault(p, {})[(group, attr)] = local.numpy()
        # rows stored packed stay packed until every part's are in batch order: one unpack per key, not per part
        answers = self.call("fetch", {p: (req,) for p, req in by_part.items()}, answer_local=lambda mine: {
            p: self.local[p].fetch(*args, keep_packed=True) for p, args in mine.items()})
        out = []
        for (group, attr, glob), groups in zip(keys, places):
            if not groups:
                out.append(torch.empty((0, *self._trailing(group, attr))))
                continue
            pieces = [(pos.numpy(), answers[p][(group, attr)]) for p, pos, _ in groups]
            if len({isinstance(rows, dict) for _, rows in pieces}) > 1:  # a part whose rows would not pack
                pieces = [(pos, FT.unpack_rows(group, rows)) for pos, rows in pieces]
            out.append(torch.from_numpy(FT.unpack_rows(group, _in_order(len(glob), pieces))))
        return out

    def _trailing(self, group, attr) -> tuple[int, ...]:
        if attr == "x":
            return (int(self.meta.manifest["feature_dims"][group]),)
        return ()


def _in_order(n: int, pieces: list[tuple[np.ndarray, object]]):
    """Rows answered part by part, placed at their positions in the request: a fresh array (or a packed dict of
    them). Shapes: pieces [(positions [k_p], rows [k_p, ...])] covering 0..n-1 -> [n, ...]."""
    first = pieces[0][1]
    if isinstance(first, dict):
        return {k: _in_order(n, [(pos, rows[k]) for pos, rows in pieces]) for k in first}
    res = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for pos, rows in pieces:
        res[pos] = rows
    return res


class ShardedFeatureStore(FeatureStore):
    """PyG ``FeatureStore`` over a ``ShardedGraph``: node ``x`` and ``y`` (users), looked up by global index (edge
    features travel with the sampled edges). Read-only: the partitioner writes the data."""

    def __init__(self, graph: ShardedGraph):
        super().__init__()
        self.graph = graph

    def _put_tensor(self, tensor, attr):
        raise TypeError("ShardedFeatureStore is read-only: features are written by `ripple partition`")

    def _remove_tensor(self, attr):
        raise TypeError("ShardedFeatureStore is read-only: features are written by `ripple partition`")

    def _get_tensor(self, attr: TensorAttr) -> Tensor | None:
        return self._multi_get_tensor([attr])[0]

    def _multi_get_tensor(self, attrs: list[TensorAttr]) -> list[Tensor]:
        for a in attrs:
            if a.index is None:
                raise ValueError(f"{a.group_name}.{a.attr_name}: a sharded feature store serves rows by index; "
                                 "reading a whole tensor would materialise every shard in this process")
        return self.graph.gather([(a.group_name, a.attr_name, torch.as_tensor(a.index)) for a in attrs])

    def _get_tensor_size(self, attr: TensorAttr):
        g = attr.group_name
        if attr.attr_name == "y":
            return (self.graph.meta.num_nodes(g),)
        return (self.graph.meta.num_nodes(g), int(self.graph.meta.manifest["feature_dims"][g]))

    #: attributes a batch needs for its seed nodes only: a batch's labels are its seeds' (the loss reads no other),
    #: and the seeds are this rank's own users, so no label is ever fetched from another process
    #: (``ripple.sampling.loader``'s sharded loader reads these for the seeds)
    seed_attrs = [TensorAttr(group_name="user", attr_name="y")]

    def get_all_tensor_attrs(self) -> list[TensorAttr]:
        """What NodeLoader joins for every sampled node: the features (``seed_attrs`` are joined for the seeds)."""
        return [TensorAttr(group_name=t, attr_name="x") for t in S.NODE_TYPES]


class ShardedGraphStore(GraphStore):
    """PyG ``GraphStore`` describing the sharded relations. Edge indices stay on the shards: samplers reach them
    through ``ShardedGraph.sample``; asking for a whole edge index is refused."""

    def __init__(self, meta: PartitionMeta):
        super().__init__()
        self.meta = meta

    def _put_edge_index(self, edge_index, edge_attr):
        raise TypeError("ShardedGraphStore is read-only: edges are written by `ripple partition`")

    def _remove_edge_index(self, edge_attr):
        raise TypeError("ShardedGraphStore is read-only: edges are written by `ripple partition`")

    def _get_edge_index(self, edge_attr: EdgeAttr):
        raise ValueError(f"{edge_attr.edge_type}: the edge index is sharded over {self.meta.num_parts} GraphShard "
                         "actors; sample through DistributedNeighborSampler instead of reading it whole")

    def get_all_edge_attrs(self) -> list[EdgeAttr]:
        return [EdgeAttr(edge_type=et, layout="csc", is_sorted=True,
                         size=(self.meta.num_nodes(et[0]), self.meta.num_nodes(et[2])))
                for et in self.meta.edge_types]
