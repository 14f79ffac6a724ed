"""Distributed inference and atomic write-back of embeddings and influence scores.

One Ray task per slice of users predicts and writes its own parquet part; the driver commits the manifest once
every part is written (``ripple.data.storage`` commit protocol), so readers see all users or nothing.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import torch

from ripple.data.storage import PartInfo, Store, begin, commit, join, write_part

log = logging.getLogger(__name__)

EMBEDDINGS = "embeddings"


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


def _worker(cfg):
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))


def infer_slice(raw_cfg: dict, state: dict, part: int, num_parts: int) -> PartInfo:
    """Predict users of slice ``part`` of ``num_parts`` and write one part; runs inside a Ray task."""
    from ripple.distributed.context import WorkerContext
    from ripple.distributed.train import open_access
    from ripple.launch.config import from_dict

    cfg = from_dict(raw_cfg)
    _worker(cfg)
    ctx = WorkerContext.for_task(cfg.scaling.use_gpu)
    access = open_access(cfg, ctx, seed=cfg.train.seed + 104729 * (part + 1))
    users, ids = access.users(part, num_parts)
    return _write(cfg, state, access, users, ids, part, ctx.device)


def infer_shard(raw_cfg: dict, state: dict, part: int, key: str) -> PartInfo:
    """Predict every user of graph part ``part`` (sampling it in-process, next to its shard actor) and write
    them as one part; runs inside a Ray task."""
    from ripple.distributed.context import WorkerContext
    from ripple.distributed.sharded_access import ShardedAccess
    from ripple.launch.config import from_dict

    cfg = from_dict(raw_cfg)
    _worker(cfg)
    ctx = WorkerContext.for_task(cfg.scaling.use_gpu)
    access = ShardedAccess(cfg, ctx, seed=cfg.train.seed + 104729 * (part + 1), local_parts=[part], key=key)
    users, ids = access.users(part)
    return _write(cfg, state, access, users, ids, part, ctx.device)


def _write(cfg, state, access, users, ids, part, device) -> PartInfo:
    from ripple.distributed.train import build_model, predict

    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(device)
    pred, emb, _ = predict(model, access, users, cfg.sampling.batch_size * 4, device, cfg.sampling.prefetch)
    table = embeddings_table(ids, emb.numpy(), pred.numpy())
    store = Store(join(cfg.storage_path, cfg.run_name, EMBEDDINGS), cfg.storage)
    return write_part(store, table, index=part, writer="w")


def write_embeddings(cfg, checkpoint, num_parts: int | None = None) -> dict:
    """Run inference over all users on Ray and commit ``<run>/embeddings``; returns the manifest.

    A partitioned graph is embedded part by part: one task per graph part, placed on the node of that part's
    shard actor, writes that part's users; the manifest is committed once every part is written."""
    import ray

    from ripple.distributed.partition import is_partitioned
    from ripple.distributed.train import load_state

    state = load_state(checkpoint)
    store = Store(join(cfg.storage_path, cfg.run_name, EMBEDDINGS), cfg.storage)
    begin(store)
    t0 = time.perf_counter()
    state_ref = ray.put(state)
    raw = cfg.to_dict()
    if is_partitioned(cfg.data, cfg.storage):
        parts = _embed_shards(cfg, raw, state_ref)
    else:
        num_parts = num_parts or cfg.scaling.num_workers
        task = ray.remote(**_task_resources(cfg))(infer_slice)
        parts = ray.get([task.remote(raw, state_ref, i, num_parts) for i in range(num_parts)])
    manifest = commit(store, parts, extra={"checkpoint_epoch": int(state["epoch"]), "embedding_dim":
                                           int(cfg.model.hidden)})
    log.info("wrote %d embeddings in %d parts to %s (%.1fs)", manifest["rows"], len(parts), store.url,
             time.perf_counter() - t0)
    manifest["seconds"] = time.perf_counter() - t0
    return manifest


def _embed_shards(cfg, raw: dict, state_ref) -> list[PartInfo]:
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ripple.distributed.shards import PartitionMeta, start_shard

    meta = PartitionMeta.open(cfg.data, cfg.storage)
    key = f"embed-{uuid.uuid4().hex[:8]}"
    actors = [start_shard(meta, key, p, max_restarts=cfg.scaling.shard_max_restarts, here=False)
              for p in range(meta.num_parts)]
    try:
        nodes = [r["node_id"] for r in ray.get([a.ready.remote() for a in actors])]
        task = ray.remote(**_task_resources(cfg))(infer_shard)
        return ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[p], soft=True))
                        .remote(raw, state_ref, p, key) for p in range(meta.num_parts)])
    finally:
        for a in actors:
            ray.kill(a)
