"""The end-to-end verbs behind the CLI: train (+ evaluate + write back) and embed.

Order matters for "bad input writes nothing": the dataset is validated before the run folder is touched.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

from ripple.data.dataset import Dataset
from ripple.data.storage import Store, StorageOptions, absolute_url, join, pyarrow_filesystem, read_committed
from ripple.data.validate import require_valid
from ripple.distributed.inference import EMBEDDINGS, write_embeddings
from ripple.distributed.partition import is_partitioned, partition
from ripple.distributed.sharded_access import parts_of_rank
from ripple.distributed.shards import PartitionMeta
from ripple.distributed.stores import load_local_graph
from ripple.distributed.train import SCORE, SCORE_MODE, fit, run_dir
from ripple.launch.config import RippleConfig, from_dict
from ripple.models.evaluate import evaluate, evaluate_from_tables

log = logging.getLogger(__name__)


def init_ray(cfg: RippleConfig | None = None, log_to_driver: bool = True) -> None:
    """Join ``scaling.address`` / ``RAY_ADDRESS``, or start a local cluster sized for the workers."""
    import ray

    if ray.is_initialized():
        return
    # Workers import torch + PyG before they join the group; on a busy small machine that exceeds Ray's
    # 60 s default and the whole group is torn down.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    address = (cfg.scaling.address if cfg else None) or os.environ.get("RAY_ADDRESS")
    # The dashboard stays on: Ray Train's placement-group cleaner watches the controller through the state
    # API, which the dashboard serves (without it, a warning every few seconds).
    kwargs = {"log_to_driver": log_to_driver}
    if address:
        ray.init(address=address, **kwargs)
    else:
        workers = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker if cfg else 2
        # address="local": always a new local cluster, never whatever `ray start` last recorded on this machine
        # (a stale record of a stopped head would otherwise be joined, or refused with num_cpus)
        ray.init(address="local", num_cpus=max(2, int(workers)), **kwargs)


def resolve_paths(cfg: RippleConfig) -> RippleConfig:
    """The config with local paths made absolute (workers do not share the driver's working directory)."""
    return dataclasses.replace(cfg, data=absolute_url(cfg.data), storage_path=absolute_url(cfg.storage_path))


def train(cfg: RippleConfig, stage=lambda name: None) -> dict:
    """Validate -> train on Ray -> write embeddings -> evaluate -> ``metrics.json``. Returns the metrics."""
    cfg = resolve_paths(cfg)
    stage("validate")
    sharded = is_partitioned(cfg.data, cfg.storage)
    if sharded:  # partitioned by `ripple partition`, which validated its source
        meta = PartitionMeta.open(cfg.data, cfg.storage)
        source, num_parts = meta.manifest["source"], meta.num_parts
    else:
        require_valid(cfg.data, cfg.storage)
        source, num_parts = cfg.data, cfg.partition.num_parts
    if num_parts:
        parts_of_rank(num_parts, cfg.scaling.num_workers, 0)  # every worker must own a part: refuse before Ray
    run = Store(run_dir(cfg), cfg.storage)
    if not sharded and cfg.partition.num_parts > 0:
        stage("partition")
        parts_url = join(run_dir(cfg), "partitions")
        if not is_partitioned(parts_url, cfg.storage):  # a resumed run keeps its partitions
            partition(cfg.data, parts_url, cfg.partition, cfg.storage)
        cfg = dataclasses.replace(cfg, data=parts_url)
        sharded = True
    run.write_bytes(cfg.to_yaml().encode(), "config.yaml")
    init_ray(cfg)

    stage("train")
    t0 = time.perf_counter()
    outcome = fit(cfg)
    train_s = time.perf_counter() - t0

    stage("embed")
    manifest = write_embeddings(cfg, outcome.best_checkpoint)

    stage("evaluate")
    emb = read_committed(run.child(EMBEDDINGS), columns=["user_id", "influence_score"])
    ds = Dataset(source, cfg.storage)
    whole_graph_ok = ds.manifest.rows.get("follows", 0) <= cfg.eval.baselines_max_edges
    if sharded and not whole_graph_ok:
        # PageRank and the 2-hop features need the whole graph in one process: report what scales instead
        metrics = evaluate_from_tables(ds.read("labels"), ds.read("user", ["id", "follower_count"]), emb)
        metrics["baselines_skipped"] = (f"{ds.manifest.rows.get('follows')} follows edges > "
                                        f"eval.baselines_max_edges={cfg.eval.baselines_max_edges}")
    else:
        metrics = evaluate(load_local_graph(ds), emb, seed=cfg.train.seed,
                           lightgbm_threads=cfg.eval.lightgbm_threads)
    last = outcome.last_metrics
    metrics["throughput"] = {
        "train_seeds_per_s": last.get("train_seeds_per_s"), "train_edges_per_s": last.get("train_edges_per_s"),
        "train_seeds_per_s_per_rank": last.get("train_seeds_per_s_per_rank"),
        "data_wait_fraction_per_rank": last.get("data_wait_fraction_per_rank"), "device": last.get("device"),
        "train_wall_s": train_s, "embed_users_per_s": manifest["rows"] / max(manifest["seconds"], 1e-9),
        "embedded_users": manifest["rows"],
        "num_workers": cfg.scaling.num_workers,
        "num_parts": num_parts or None,
        "graph_resident_bytes_per_rank": last.get("graph_resident_bytes")}
    metrics["kernel_backend"] = last.get("kernel_backend")
    metrics["epochs"] = {"start": last.get("start_epoch"), "last": last.get("epoch"),
                         "best": outcome.best_metrics.get("epoch")}
    metrics["best_epoch"] = outcome.best_metrics.get("epoch")
    metrics[f"best_{SCORE}"] = outcome.best_metrics.get(SCORE)
    metrics["best_val_spearman"] = outcome.best_metrics.get("val_spearman")
    run.write_json(metrics, "metrics.json")
    return metrics


def load_run_config(run_url: str, options: StorageOptions | None = None) -> RippleConfig:
    import yaml

    store = Store(run_url, options)
    if not store.exists("config.yaml"):
        raise ValueError(f"{run_url} is not a ripple run: no config.yaml; pass <storage-path>/<run-name>")
    raw = yaml.safe_load(store.read_bytes("config.yaml"))
    if options is not None:
        raw["storage"] = {**raw.get("storage", {}), **{k: v for k, v in vars(options).items() if v}}
    cfg = from_dict(raw)
    base = absolute_url(run_url).rstrip("/")
    cfg.storage_path, cfg.run_name = base.rsplit("/", 1)
    return resolve_paths(cfg)


def best_checkpoint(cfg: RippleConfig):
    from ray.train import Result

    path, pafs = pyarrow_filesystem(join(run_dir(cfg), "checkpoints"), cfg.storage)
    result = Result.from_path(path, storage_filesystem=pafs)
    ckpt = result.get_best_checkpoint(SCORE, SCORE_MODE) or result.checkpoint
    if ckpt is None:
        raise ValueError(f"run {run_dir(cfg)} has no checkpoint; train it first with `ripple train`")
    return ckpt


def embed(run_url: str, options: StorageOptions | None = None) -> dict:
    cfg = load_run_config(run_url, options)
    init_ray(cfg)
    return write_embeddings(cfg, best_checkpoint(cfg))
