"""Distributed inference and atomic write-back of embeddings and influence scores.

Layer-wise (default, ``ripple.models.layerwise``): every layer is computed once for every node from its whole
in-neighbourhood. A partitioned graph runs one Ray task per part per layer, placed on the node of that part's
``GraphShard`` actor: phase -1 projects each part's node features, phase l computes layer l of the part's own
nodes, fetching previous-layer states of neighbours owned by other parts from those parts' shard actors, on
*their* nodes: only the rows it needs travel, and no process ever holds every part's states. States live in Ray's object
store between phases, owned by the driver, and each is released as soon as the next phase no longer needs it.
The last phase applies the head and writes the part. ``inference.mode: sampled`` predicts from sampled
mini-batches with the training fanouts instead (one task per slice or part).

Each part is written by its own task; the driver commits the manifest once every part is written
(``ripple.data.storage`` commit protocol), so readers see all users or nothing.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import torch

from ripple.config import RippleConfig
from ripple.context import WorkerContext
from ripple.data.dataset import Dataset
from ripple.data.graph import load_local_graph
from ripple.data.storage import PartInfo, begin, commit, write_part
from ripple.graph.access import ShardedAccess, open_access
from ripple.graph.shards import (PartitionMeta, ShardedGraph, _tensor, find_shards, group_by_part, release_memory,
                                 start_shard)
from ripple.models import layerwise as LW
from ripple.models.gnn import build_model
from ripple.models.layerwise import LayerwiseGraph, infer_local
from ripple.run import embeddings_store, is_partitioned
from ripple.train.checkpoint import load_state
from ripple.train.worker import predict

log = logging.getLogger(__name__)


def embeddings_table(user_ids: np.ndarray, emb: np.ndarray, log_reach: np.ndarray) -> pa.Table:
    """Shapes: user_ids [U], emb [U, H], log_reach [U] -> table(user_id, embedding, influence_score)."""
    h = emb.shape[1]
    return pa.table({
        "user_id": pa.array(user_ids, pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1).astype(np.float32)), h),
        "influence_score": pa.array(np.expm1(np.clip(log_reach, 0, None)).astype(np.float32)),
    })


def _task_resources(cfg) -> dict:
    """An inference task takes what a training worker takes: its CPUs and, with ``use_gpu``, one GPU."""
    return {"num_cpus": cfg.scaling.cpus_per_worker, "num_gpus": 1 if cfg.scaling.use_gpu else 0}


def _task_setup(cfg: RippleConfig, state: dict, threads: float | None = None, on_device: bool = True):
    """How every inference task begins: its torch threads (its CPUs), its device, and the trained model there
    in eval mode. ``on_device=False``: the model stays on the CPU (a layer-wise phase computes there)."""
    torch.set_num_threads(max(1, int(threads or cfg.scaling.cpus_per_worker)))
    ctx = WorkerContext.for_task(cfg.scaling.use_gpu) if on_device else WorkerContext()
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return ctx, model.to(ctx.device).eval()


def _write_part(cfg: RippleConfig, ids: np.ndarray, emb: torch.Tensor, pred: torch.Tensor, part: int) -> PartInfo:
    table = embeddings_table(ids, emb.cpu().numpy(), pred.cpu().numpy())
    return write_part(embeddings_store(cfg), table, index=part, writer="w")


def infer_part(cfg: RippleConfig, state: dict, part: int, num_parts: int, key: str | None = None) -> PartInfo:
    """Predict the users of slice ``part`` of ``num_parts`` from sampled mini-batches and write them as one part;
    runs inside a Ray task. ``key``: the shard actors of a partitioned graph, whose parts are the slices (the
    task samples its part in-process, next to the part's actor)."""
    ctx, model = _task_setup(cfg, state)
    rng_seed = cfg.train.seed + 104729 * (part + 1)
    access = (ShardedAccess(cfg, ctx, rng_seed, local_parts=[part], key=key) if key else
              open_access(cfg, ctx, rng_seed))
    users, ids = access.users(part, num_parts)
    pred, emb, _ = predict(model, access, users, cfg.sampling.batch_size * 4, ctx.device, cfg.sampling.prefetch)
    return _write_part(cfg, ids, emb, pred, part)


def write_embeddings(cfg, checkpoint, num_parts: int | None = None) -> dict:
    """Run inference over all users on Ray and commit ``<run>/embeddings``; returns the manifest.

    A partitioned graph is embedded part by part: one task per graph part, placed on the node of that part's
    shard actor, writes that part's users; the manifest is committed once every part is written."""
    import ray

    state = load_state(checkpoint)
    store = embeddings_store(cfg)
    begin(store)
    t0 = time.perf_counter()
    state_ref = ray.put(state)
    if is_partitioned(cfg.data, cfg.storage):
        parts = _embed_shards(cfg, state_ref)
    elif cfg.inference.mode == "layerwise":
        # one process, every layer once over the whole graph: all the CPUs one node can give it
        cpus = min(cfg.scaling.cpus_per_worker * cfg.scaling.num_workers, _largest_node_cpus())
        task = ray.remote(**{**_task_resources(cfg), "num_cpus": cpus})(infer_whole_layerwise)
        parts = [ray.get(task.remote(cfg, state_ref))]
    else:
        num_parts = num_parts or cfg.scaling.num_workers
        task = ray.remote(**_task_resources(cfg))(infer_part)
        parts = ray.get([task.remote(cfg, state_ref, i, num_parts) for i in range(num_parts)])
    manifest = commit(store, parts, extra={"checkpoint_epoch": int(state["epoch"]), "embedding_dim":
                                           int(cfg.model.hidden)})
    log.info("wrote %d embeddings in %d parts to %s (%.1fs)", manifest["rows"], len(parts), store.url,
             time.perf_counter() - t0)
    manifest["seconds"] = time.perf_counter() - t0
    return manifest


def _embed_shards(cfg: RippleConfig, state_ref) -> list[PartInfo]:
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    meta = PartitionMeta.open(cfg.data, cfg.storage)
    key = f"embed-{uuid.uuid4().hex[:8]}"
    actors = [start_shard(meta, key, p, max_restarts=cfg.scaling.shard_max_restarts, here=False)
              for p in range(meta.num_parts)]
    try:
        nodes = [r["node_id"] for r in ray.get([a.ready.remote() for a in actors])]
        if cfg.inference.mode == "layerwise":
            return _layerwise_phases(cfg, state_ref, key, nodes)
        task = ray.remote(**_task_resources(cfg))(infer_part)
        return ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[p], soft=True))
                        .remote(cfg, state_ref, p, meta.num_parts, key) for p in range(meta.num_parts)])
    finally:
        for a in actors:
            ray.kill(a)


def _largest_node_cpus() -> float:
    import ray

    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0) or 1.0


def infer_whole_layerwise(cfg: RippleConfig, state: dict) -> PartInfo:
    """Layer-wise inference of every user of a graph held whole in this process; writes one part."""
    import ray

    ctx, model = _task_setup(cfg, state, threads=ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    graph = load_local_graph(Dataset(cfg.data, cfg.storage))
    pred, emb = infer_local(model, LayerwiseGraph.from_local(graph).to(ctx.device), cfg.inference.chunk_edges)
    return _write_part(cfg, graph.ids["user"], emb, pred, 0)


def layerwise_phase(cfg: RippleConfig, state: dict, part: int, key: str, layer: int, refs: list):
    """One part's share of conv layer ``layer`` of layer-wise inference (runs next to the part's shard actor).

    Layer 0 reads input projections, recomputed from node features (cheaper to fetch and project than to keep
    ``hidden``-wide states of every node): the part's own, and other parts' feature rows from their shard actors.
    Layer l > 0 reads the previous layer's states (``refs[0]["prev"]``: per part, (users ref, other types ref));
    other parts' rows come from their shard actors (``GraphShard.take_rows``). Returns (user states [n_user, h],
    {other type: states}) as two objects, except after the last layer, where it applies the head to the user
    states of every layer (the input projection again, then ``refs[0]["users"]``: this part's middle layers),
    writes the part and returns its ``PartInfo``. Shapes: states are [n_t, hidden] float32 rows of own nodes."""
    import ray

    _, model = _task_setup(cfg, state, on_device=False)
    meta = PartitionMeta.open(cfg.data, cfg.storage)
    actors = find_shards(meta, key)
    shard = ShardedGraph(meta, actors, local_parts=[part]).local[part]
    lw = shard.layerwise()
    spec = refs[0]
    prev = spec["prev"]
    offsets = {t: meta.offsets(t) for t in lw.x}

    def gather(t: str, glob: torch.Tensor) -> torch.Tensor:
        # each part's shard actor serves its rows: no new worker processes, and only the rows travel
        groups = [(q, pos, local.numpy()) for q, pos, local in group_by_part(offsets[t], glob) if q != part]
        if layer == 0:  # feature rows, projected here
            got = ray.get([actors[q].fetch.remote({(t, "x"): loc}) for q, _, loc in groups])
            got = [LW.input_states(model, _features(lw, t, _tensor(np.ascontiguousarray(g[(t, "x")]))))[t]
                   for g in got]
        else:
            got = [_tensor(np.ascontiguousarray(g))
                   for g in ray.get([actors[q].take_rows.remote([prev[q]], t, loc) for q, _, loc in groups])]
        rows = torch.empty(len(glob), cfg.model.hidden)
        for (_, pos, _), r in zip(groups, got):
            rows[pos] = r
        return rows

    h0 = LW.input_states(model, lw) if layer == 0 else None
    if layer == 0:
        h_prev = h0
    else:
        users_ref, others_ref = prev[part]
        h_prev = {"user": _tensor(ray.get(users_ref)), **{t: _tensor(v) for t, v in ray.get(others_ref).items()}}
    h = LW.layer_states(model, lw, layer, h_prev, gather, cfg.inference.chunk_edges)
    del h_prev
    if layer < len(model.convs) - 1:
        out = h.pop("user").numpy(), {t: v.numpy() for t, v in h.items()}
        del h, h0
        release_memory()  # Ray reuses this worker process for the next phase: do not keep this one's peak
        return out
    h0_user = h0["user"] if h0 is not None else LW.input_states(model, _features(lw, "user"))["user"]
    pred = LW.head(model, [h0_user] + [_tensor(ray.get(r)) for r in spec["users"]] + [h["user"]])
    return _write_part(cfg, shard.ids["user"], h["user"], pred, part)


def _features(lw, t: str, x=None):
    """A ``LayerwiseGraph`` holding only features ``x`` of type ``t`` (default: the part's own): what
    ``input_states`` reads."""
    from ripple.models.layerwise import LayerwiseGraph

    return LayerwiseGraph({t: 0}, {t: lw.x[t] if x is None else x}, {}, {}, {})


def phase_memory_bytes(node_counts: dict[str, list[int]], part: int, hidden: int, chunk_edges: int,
                       node_memory: float | None = None) -> int:
    """Heap one ``layerwise_phase`` task of part ``part`` needs, requested from Ray as its ``memory`` so a node
    runs only as many phases at once as fit (Ray's memory monitor kills tasks of an oversubscribed node).

    Per own node of every type: previous states, this layer's output, and one relation's source projection
    (4 x hidden floats); per chunk: about 8 per-edge [chunk_edges, hidden] temporaries; plus the interpreter,
    torch and the model (300 MiB). The part's graph arrays are not counted: they are zero-copy views of the
    shard actor's object in the object store. Capped at ``node_memory`` so a huge part is never unschedulable.
    """
    n = {t: int(c[part]) for t, c in node_counts.items()}
    need = 4 * hidden * (2 * sum(n.values()) + 2 * max(n.values(), default=0) + 8 * chunk_edges) + (300 << 20)
    return int(min(need, node_memory)) if node_memory else int(need)


def _layerwise_phases(cfg: RippleConfig, state_ref, key: str, nodes: list[str]) -> list[PartInfo]:
    """Drive ``layerwise_phase`` over every part, layer by layer (a barrier between layers). The driver holds
    refs, never states: each layer's states are released once the next layer has read them, and only the user
    states of middle layers (for the head) live longer."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    P, L = len(nodes), cfg.model.num_layers
    meta = PartitionMeta.open(cfg.data, cfg.storage)
    node_memory = min(n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")) or None
    mem = [phase_memory_bytes(meta.manifest["node_counts"], p, cfg.model.hidden, cfg.inference.chunk_edges,
                              node_memory) for p in range(P)]
    phase = ray.remote(**_task_resources(cfg))(layerwise_phase)
    here = lambda p: NodeAffinitySchedulingStrategy(nodes[p], soft=True)  # noqa: E731
    t0 = time.perf_counter()
    prev: list = [None] * P
    users: list[list] = [[] for _ in range(P)]  # per part: user-state refs of the middle layers (the head's)
    for layer in range(L):
        last = layer == L - 1
        if layer:
            # ray.wait without fetching: a barrier that never pulls a part's states into the driver
            ray.wait([r for pr in prev for r in pr], num_returns=2 * P, fetch_local=False)
            log.info("layer-wise inference: layer %d of %d parts done (%.1fs)", layer - 1, P, time.perf_counter() - t0)
        out = [phase.options(num_returns=1 if last else 2, scheduling_strategy=here(p), memory=mem[p])
               .remote(cfg, state_ref, p, key, layer, [{"prev": prev, "users": list(users[p])}]) for p in range(P)]
        if last:
            return ray.get(out)
        prev = [tuple(o) for o in out]  # the previous layer's states are released here
        for p in range(P):
            users[p].append(prev[p][0])
    raise AssertionError("unreachable: model.num_layers >= 1")
