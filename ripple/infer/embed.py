"""Distributed inference and atomic write-back of embeddings and influence scores.

Layer-wise (default, ``ripple.models.layerwise``): every layer is computed once for every node from its whole
in-neighbourhood. A partitioned graph gets shard actors spread over the nodes and, next to them, warm
``LayerwiseWorker`` actors (as many per node as its CPUs and memory hold), each computing some of its node's
parts: phase 0 projects each part's node features, phase l computes layer l of the part's own nodes, fetching
previous-layer states of neighbours owned by other parts from those parts' shard actors, on *their* nodes: only
the rows it needs travel, and no process ever holds every part's states. States live in Ray's object store
between phases, owned by the driver, and each is released as soon as the next phase no longer needs it. The last
phase applies the head and writes the part. A lost node or process costs a fresh pass (``_embed_shards``).
``inference.mode: sampled`` predicts from sampled mini-batches with the training fanouts instead (one task per
slice or part).

Each part is written by its own worker; the driver commits the manifest once every part is written
(``ripple.data.storage`` commit protocol), so readers see all users or nothing.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from ripple.config import RippleConfig
from ripple.context import WorkerContext, is_lost_process
from ripple.data import schema as S
from ripple.data.storage import PartInfo, PartWriter, begin, commit, read_committed, read_manifest, write_part
from ripple.graph.access import LocalAccess, ShardedAccess, load_graph, open_access
from ripple.graph.part_io import PartitionMeta, release_memory
from ripple.graph.shard import _tensor
from ripple.graph.shards import ShardedGraph, Traffic, alive_nodes, find_shards, group_by_part, start_shard
from ripple.models import layerwise as LW
from ripple.models.gnn import build_model
from ripple.models.layerwise import LayerwiseGraph, infer_local
from ripple.run import embeddings_store, is_partitioned
from ripple.train.checkpoint import load_state
from ripple.train.worker import no_grad_batch, predict

log = logging.getLogger(__name__)


def embeddings_schema(hidden: int) -> pa.Schema:
    return pa.schema([("user_id", pa.int64()), ("embedding", pa.list_(pa.float32(), hidden)),
                      ("influence_score", pa.float32())])


def embeddings_table(user_ids: np.ndarray, emb: np.ndarray, log_reach: np.ndarray) -> pa.Table:
    """Shapes: user_ids [U], emb [U, H], log_reach [U] -> table(user_id, embedding, influence_score)."""
    h = emb.shape[1]
    return pa.table({
        "user_id": pa.array(user_ids, pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(emb, np.float32).reshape(-1)),
                                                       h),
        "influence_score": pa.array(np.expm1(np.clip(log_reach, 0, None)).astype(np.float32)),
    }, schema=embeddings_schema(h))


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
    batch = no_grad_batch(cfg.sampling.batch_size)
    pred, emb, _ = predict(model, access, users, batch, ctx.device, cfg.sampling.prefetch)
    return _write_part(cfg, ids, emb, pred, part)


def write_embeddings(cfg, checkpoint, num_parts: int | None = None,
                     on_layer: Callable[[int, int], None] | None = None, extra: dict | None = None) -> dict:
    """Run inference over all users of ``cfg.data`` on Ray and commit them to ``inference.out`` (default
    ``<run>/embeddings``); returns the manifest (with ``seconds``, ``traffic`` and, for a partitioned graph,
    ``attempts``: passes it took). ``extra``: more manifest fields (what a snapshot's embeddings came from).

    A partitioned graph is embedded part by part, next to shard actors spread over the nodes; the manifest is
    committed once every part is written. ``on_layer(layer, attempt)``: called in the driver when every part has
    finished layer-wise layer ``layer`` (not after the last) of pass ``attempt``."""
    import ray

    state = load_state(checkpoint)
    store = embeddings_store(cfg)
    begin(store)
    t0 = time.perf_counter()
    state_ref = ray.put(state)
    traffic: dict = {}
    attempts = None
    if is_partitioned(cfg.data, cfg.storage):
        parts, traffic, attempts = _embed_shards(cfg, state_ref, on_layer)
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
                                           int(cfg.model.hidden), **(extra or {})})
    log.info("wrote %d embeddings in %d parts to %s (%.1fs)", manifest["rows"], len(parts), store.url,
             time.perf_counter() - t0)
    manifest["seconds"] = time.perf_counter() - t0
    # what the embedding moved between processes (halo rows, feature rows) and over the network
    manifest["traffic"] = Traffic.report(traffic)
    if attempts is not None:
        manifest["attempts"] = attempts
    return manifest


def _embed_shards(cfg: RippleConfig, state_ref, on_layer=None) -> tuple[list[PartInfo], dict, int]:
    """Embed a partitioned graph part by part, next to shard actors started for it round-robin over the nodes
    alive (the parts' memory spread as the trainers' is). A process or node lost on the way (a worker, a shard
    actor, the objects on a lost node) costs a fresh pass, up to ``scaling.shard_max_restarts`` times: the shard
    actors are started again over the nodes left and reload their parts from storage, and every part is computed
    and written again (nothing is committed until every part is).
    Returns the parts written, the traffic of the pass that succeeded and the number of passes."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    meta = PartitionMeta.open(cfg.data, cfg.storage)
    run = uuid.uuid4().hex[:8]
    for attempt in range(cfg.scaling.shard_max_restarts + 1):
        key, hosts = f"embed-{run}-{attempt}", alive_nodes()
        if not hosts:
            raise RuntimeError("no Ray node with CPUs is alive to embed on; add a worker node (or give the head "
                               "CPUs) and rerun")
        actors = [start_shard(meta, key, p, max_restarts=cfg.scaling.shard_max_restarts, node=hosts[p % len(hosts)])
                  for p in range(meta.num_parts)]
        try:
            _, nodes = find_shards(meta, key)
            if cfg.inference.mode == "layerwise":
                hook = (lambda layer, a=attempt: on_layer(layer, a)) if on_layer else None
                return (*_layerwise_phases(cfg, state_ref, key, nodes, hook), attempt + 1)
            task = ray.remote(**_task_resources(cfg))(infer_part)
            return ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[p], soft=False))
                            .remote(cfg, state_ref, p, meta.num_parts, key) for p in range(meta.num_parts)]), \
                {}, attempt + 1
        except Exception as e:  # noqa: BLE001 — only a lost process is retried; anything else is raised
            if not is_lost_process(e) or attempt == cfg.scaling.shard_max_restarts:
                raise
            log.warning("embedding lost a process or node (%s: %s); again from layer 0 on the nodes left "
                        "(attempt %d of %d)", type(e).__name__, str(e).splitlines()[0] if str(e) else "",
                        attempt + 2, cfg.scaling.shard_max_restarts + 1)
        finally:
            for a in actors:
                ray.kill(a)
    raise AssertionError("unreachable")


def _largest_node_cpus() -> float:
    import ray

    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0) or 1.0


def predict_rows(cfg: RippleConfig, checkpoint, graph, splits: tuple[str, ...]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The model's predicted reach and embedding of the label rows of each of ``splits`` of a training table at
    many cut times, each row sampled and featured as of its own time (as validation saw them in training), in
    label order; runs in this process on the CPU. Shapes: -> {split: ([L_split], [L_split, H])}."""
    ctx, model = _task_setup(cfg, load_state(checkpoint), on_device=False)
    access = LocalAccess(graph, cfg, ctx, rng_seed=cfg.train.seed + 15485863)
    out = {}
    for split in splits:
        rows = np.flatnonzero(graph.split == split)
        order = np.argsort(graph.label_time[rows], kind="stable")  # one time per batch: predictions in seed order
        pred, emb, _ = predict(model, access, access.rows(rows[order]), no_grad_batch(cfg.sampling.batch_size),
                               ctx.device, cfg.sampling.prefetch)
        reach, vectors = np.empty(len(rows)), np.empty((len(rows), emb.shape[1]), np.float32)
        reach[order] = np.expm1(np.clip(pred.numpy().astype(np.float64), 0, None))
        vectors[order] = emb.numpy()
        out[split] = (reach, vectors)
    return out


def rewrite_scores(store, user_ids: np.ndarray, scores: np.ndarray, chosen: dict) -> dict:
    """Replace the ``influence_score`` of committed embeddings with ``scores`` (a model other than the GNN won
    on validation), as a new commit: parts, then the manifest naming the model. Shapes: user_ids [N] sorted,
    scores [N] predicted reach."""
    manifest = read_manifest(store)
    table = read_committed(store)
    pos = np.searchsorted(user_ids, table["user_id"].to_numpy())
    table = table.set_column(table.schema.get_field_index("influence_score"), "influence_score",
                             pa.array(np.clip(scores[pos], 0, None).astype(np.float32)))
    extra = {k: v for k, v in manifest.items() if k not in ("format", "rows", "parts")}
    begin(store)
    part = write_part(store, table, index=0, writer="score")
    return commit(store, [part], extra={**extra, "influence_score": chosen})


def infer_whole_layerwise(cfg: RippleConfig, state: dict) -> PartInfo:
    """Layer-wise inference of every user of a graph held whole in this process; writes one part."""
    import ray

    ctx, model = _task_setup(cfg, state, threads=ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    graph = load_graph(cfg)
    pred, emb = infer_local(model, LayerwiseGraph.from_local(graph).to(ctx.device), cfg.inference.chunk_edges)
    return _write_part(cfg, graph.ids["user"], emb, pred, 0)


class LayerwiseWorker:
    """A warm process of layer-wise inference (a Ray actor, ``ray.remote(LayerwiseWorker)``), on the node of the
    parts it computes: it builds the model and maps those parts' arrays from their shard actors once, then runs
    every layer's phase of them. Phases used to be one Ray task each; each paid a worker process's start, the
    imports, the model and the shard lookups, and that fixed cost dominated small and medium graphs.

    A phase of part p (``phase``) computes conv layer ``layer`` for p's own nodes. Layer 0 reads input
    projections, recomputed from node features (cheaper to fetch and project than to keep ``hidden``-wide states
    of every node): the part's own, and other parts' feature rows from their shard actors. Layer l > 0 reads the
    previous layer's states (``prev``: per part, (users ref, other types ref)); other parts' rows are served by
    their shard actors (``GraphShard.take_rows``) on *their* nodes, so only the rows it needs travel, and no
    process ever holds every part's states."""

    def __init__(self, cfg: RippleConfig, state: dict, key: str, parts: list[int]):
        self.cfg = cfg
        _, self.model = _task_setup(cfg, state, on_device=False)
        self.meta = PartitionMeta.open(cfg.data, cfg.storage)
        # its parts, and any other on this node, mapped zero-copy: halo rows of co-located parts cost no call
        self.graph = ShardedGraph.connect(self.meta, key, parts)
        self.lw = {p: self.graph.local[p].layerwise() for p in parts}
        self.offsets = {t: self.meta.offsets(t) for t in S.NODE_TYPES}

    def traffic(self) -> dict:
        return self.graph.traffic.snapshot()

    def phase(self, part: int, layer: int, refs: list):
        """Layer ``layer`` of part ``part``. ``refs[0]``: {"prev": per part (users ref, other types ref) of layer
        ``layer - 1``, "users": this part's user-state refs of the middle layers}, wrapped so Ray does not resolve
        it. Returns (user states [n_user, h], {other type: states}) as two objects, except after the last layer,
        where it applies the head to the user states of every layer, writes the part and returns its
        ``PartInfo``. Shapes: states are [n_t, hidden] float32 rows of own nodes."""
        import ray

        model, lw, prev = self.model, self.lw[part], refs[0]["prev"]
        last = layer == len(model.convs) - 1

        def gather(t: str, glob: torch.Tensor) -> torch.Tensor:
            groups = [(q, pos, local.numpy()) for q, pos, local in group_by_part(self.offsets[t], glob) if q != part]
            if layer == 0:  # feature rows, projected here
                got = self.graph.fetch({q: {(t, "x"): loc} for q, _, loc in groups})
                rows = {q: LW.InputStates(model, t, _tensor(np.ascontiguousarray(g[(t, "x")])))[:]
                        for q, g in got.items()}
            else:
                got = self.graph.call("take_rows", {q: ([prev[q]], t, loc) for q, _, loc in groups})
                rows = {q: _tensor(np.ascontiguousarray(g)) for q, g in got.items()}
            out = torch.empty(len(glob), self.cfg.model.hidden)
            for q, pos, _ in groups:
                out[pos] = rows[q].float()
            return out

        if layer == 0:  # input projections, computed for the rows each chunk reads
            h_prev = {t: LW.InputStates(model, t, x) for t, x in lw.x.items()}
        else:
            users_ref, others_ref = prev[part]
            h_prev = {"user": _tensor(ray.get(users_ref)), **{t: _tensor(v) for t, v in ray.get(others_ref).items()}}
        if last:
            return self._write_last(part, layer, h_prev, gather, [_tensor(ray.get(r)) for r in refs[0]["users"]])
        # states kept between phases as inference.state_dtype (float16 halves the object store's largest tenant)
        h = LW.layer_states(model, lw, layer, h_prev, gather, self.cfg.inference.chunk_edges,
                            getattr(torch, self.cfg.inference.state_dtype))
        del h_prev
        out = h.pop("user").numpy(), {t: v.numpy() for t, v in h.items()}
        del h
        release_memory()  # the next phase's peak should not sit on this one's
        return out

    def _write_last(self, part: int, layer: int, h_prev: dict, gather, middle: list[torch.Tensor]) -> PartInfo:
        """The last layer, chunk by chunk of users: its float32 states are the embeddings; the head reads every
        layer's state of the chunk (layer 0's computed here, the middle layers' from the object store), and the
        chunk goes to the part's writer. Nothing user-count sized is held: the part's embeddings and their
        parquet bytes, whole, had been this phase's peak."""
        model, lw = self.model, self.lw[part]
        ids = self.graph.local[part].ids["user"]
        h0_user = LW.InputStates(model, "user", lw.x["user"])
        with PartWriter(embeddings_store(self.cfg), embeddings_schema(self.cfg.model.hidden), part, writer="w") as w:
            for t, a, b, h in LW.layer_chunks(model, lw, layer, h_prev, gather, self.cfg.inference.chunk_edges):
                if t == "user":
                    pred = LW.head(model, [h0_user[a:b]] + [u[a:b] for u in middle] + [h])
                    w.write(embeddings_table(ids[a:b], h.numpy(), pred.numpy()))
            return w.close()


def phase_memory_bytes(node_counts: dict[str, list[int]], part: int, hidden: int, chunk_edges: int,
                       node_memory: float | None = None, state_bytes: int = 2) -> int:
    """Heap one phase of part ``part`` needs: its ``LayerwiseWorker`` requests it from Ray as ``memory``, so a node
    runs only as many workers as fit (Ray's memory monitor kills the processes of an oversubscribed node).

    The layer's output for every own node (``state_bytes`` per float: inference.state_dtype; the last layer's
    embeddings go to the part's writer a chunk at a time, a row group of 64Ki rows buffered); per chunk, about 12
    per-edge [chunk_edges, hidden] float32 temporaries; plus the interpreter, torch and the model (300 MiB). The
    part's graph arrays and the previous layer's states are not counted: they are zero-copy views of objects in
    the object store. Capped at ``node_memory`` so a huge part is never unschedulable.
    """
    n = {t: int(c[part]) for t, c in node_counts.items()}
    need = hidden * (state_bytes * sum(n.values()) + 48 * chunk_edges + 8 * (1 << 16)) + (300 << 20)
    return int(min(need, node_memory)) if node_memory else int(need)


def _layerwise_workers(cfg: RippleConfig, state_ref, key: str, nodes: list[str]) -> tuple[list, list[int]]:
    """Start the ``LayerwiseWorker`` actors: on each node, as many as its CPUs and memory hold at once (at
    least one), each taking some of that node's parts. Returns (workers, the worker of each part).

    Every worker of a node must be able to run at the same time: a worker waiting for resources that its
    node's other workers hold until the end would never compute its parts, and layer 0 would never finish."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    meta = PartitionMeta.open(cfg.data, cfg.storage)
    alive = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
    res = _task_resources(cfg)
    by_node: dict[str, list[int]] = {}
    for p, node in enumerate(nodes):
        by_node.setdefault(node, []).append(p)
    workers, worker_of = [], [0] * len(nodes)
    for node, parts in by_node.items():
        have = alive.get(node, {})
        mem = max(phase_memory_bytes(meta.manifest["node_counts"], p, cfg.model.hidden, cfg.inference.chunk_edges,
                                     have.get("memory") or None,
                                     torch.finfo(getattr(torch, cfg.inference.state_dtype)).bits // 8) for p in parts)
        fit = [len(parts), int(have.get("CPU", 0) // max(res["num_cpus"], 1e-9)), int(have.get("memory", 0) // mem)]
        if res["num_gpus"]:
            fit.append(int(have.get("GPU", 0) // res["num_gpus"]))
        count = max(1, min(fit))
        for i in range(count):
            mine = parts[i::count]
            for p in mine:
                worker_of[p] = len(workers)
            workers.append(ray.remote(LayerwiseWorker).options(
                **res, memory=mem, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                .remote(cfg, state_ref, key, mine))
    return workers, worker_of


def _layerwise_phases(cfg: RippleConfig, state_ref, key: str, nodes: list[str],
                      on_layer: Callable[[int], None] | None = None) -> tuple[list[PartInfo], dict]:
    """Drive the workers' phases over every part, layer by layer (a barrier between layers). The driver holds
    refs, never states: each layer's states are released once the next layer has read them, and only the user
    states of middle layers (for the head) live longer. Returns the parts written and the traffic counts."""
    import ray

    P, L = len(nodes), cfg.model.num_layers
    workers, worker_of = _layerwise_workers(cfg, state_ref, key, nodes)
    try:
        t0 = time.perf_counter()
        prev: list = [None] * P
        users: list[list] = [[] for _ in range(P)]  # per part: user-state refs of the middle layers (the head's)
        for layer in range(L):
            last = layer == L - 1
            if layer:
                # ray.wait without fetching: a barrier that never pulls a part's states into the driver (a lost
                # worker's or node's error surfaces with the last layer's results)
                ray.wait([r for pr in prev for r in pr], num_returns=2 * P, fetch_local=False)
                log.info("layer-wise inference: layer %d of %d parts done (%.1fs)", layer - 1, P,
                         time.perf_counter() - t0)
                if on_layer is not None:
                    on_layer(layer - 1)
            out = [workers[worker_of[p]].phase.options(num_returns=1 if last else 2)
                   .remote(p, layer, [{"prev": prev, "users": list(users[p])}]) for p in range(P)]
            if last:
                parts = ray.get(out)
                traffic = Traffic.total(ray.get([w.traffic.remote() for w in workers]))
                return parts, traffic
            prev = [tuple(o) for o in out]  # the previous layer's states are released here
            for p in range(P):
                users[p].append(prev[p][0])
        raise AssertionError("unreachable: model.num_layers >= 1")
    finally:
        for w in workers:
            ray.kill(w)

