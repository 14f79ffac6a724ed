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


def infer_slice(raw_cfg: dict, state: dict, part: int, num_parts: int) -> PartInfo:
    """Predict users of slice ``part`` of ``num_parts`` and write one part; runs inside a Ray task."""
    from ripple.distributed.train import GraphAccess, build_model, open_graph, predict
    from ripple.launch.config import from_dict

    cfg = from_dict(raw_cfg)
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    graph = open_graph(cfg)
    access = GraphAccess(graph, cfg, "cpu", seed=cfg.train.seed + 104729 * (part + 1))
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    users = torch.from_numpy(np.array_split(np.arange(graph.num_nodes("user")), num_parts)[part])
    pred, emb = predict(model, access, users, cfg.sampling.batch_size * 4, "cpu")
    table = embeddings_table(graph.ids["user"][users.numpy()], emb.numpy(), pred.numpy())
    store = Store(join(cfg.storage_path, cfg.run_name, EMBEDDINGS), cfg.storage)
    return write_part(store, table, index=part, writer="w")


def write_embeddings(cfg, checkpoint, num_parts: int | None = None) -> dict:
    """Run inference over all users on Ray and commit ``<run>/embeddings``; returns the manifest."""
    import ray

    from ripple.distributed.train import load_state

    state = load_state(checkpoint)
    num_parts = num_parts or cfg.scaling.num_workers
    store = Store(join(cfg.storage_path, cfg.run_name, EMBEDDINGS), cfg.storage)
    begin(store)
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=cfg.scaling.cpus_per_worker)(infer_slice)
    state_ref = ray.put(state)
    raw = cfg.to_dict()
    parts = ray.get([task.remote(raw, state_ref, i, num_parts) for i in range(num_parts)])
    manifest = commit(store, parts, extra={"checkpoint_epoch": int(state["epoch"]), "embedding_dim":
                                           int(cfg.model.hidden)})
    log.info("wrote %d embeddings in %d parts to %s (%.1fs)", manifest["rows"], len(parts), store.url,
             time.perf_counter() - t0)
    manifest["seconds"] = time.perf_counter() - t0
    return manifest
