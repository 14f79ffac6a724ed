"""The end-to-end verbs behind the CLI, top to bottom: train (+ evaluate + write back), embed, seeds.

Order matters for "bad input writes nothing": the dataset is validated before the run folder is touched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time

import pyarrow as pa

from ripple.config import RippleConfig, from_dict, parse_yaml
from ripple.data import features as FT
from ripple.data import schema as S
from ripple.data.dataset import DATASET_MANIFEST, Dataset
from ripple.data.graph import load_local_graph
from ripple.data.history import iso
from ripple.data.storage import (StorageOptions, Store, absolute_url, join, read_committed, read_manifest, redact_url,
                                 table_to_parquet_bytes)
from ripple.data.validate import require_valid
from ripple.evaluate import plots
from ripple.evaluate.compare import MODEL_ORDER, Evaluation, evaluate, evaluate_from_tables
from ripple.graph.access import parts_of_rank
from ripple.graph.partition import check_partition_files, partition
from ripple.graph.part_io import PartitionMeta
from ripple.infer.embed import predict_rows, rewrite_scores, write_embeddings
from ripple.influence.evaluate import evaluate_seeds
from ripple.influence.select import select_seeds
from ripple.lease import RunLease
from ripple.run import (CHECKPOINTS, CONFIG_FILE, METRICS_FILE, PARTITIONS, RUN_FILE, SCORE, best_checkpoint,
                        embeddings_store, is_partitioned, run_dir, run_path)
from ripple.runlog import RunLogs
from ripple.train.checkpoint import check_fits, load_state
from ripple.train.driver import fit

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
    out = cfg.inference.out and absolute_url(cfg.inference.out)
    return dataclasses.replace(cfg, data=absolute_url(cfg.data), storage_path=absolute_url(cfg.storage_path),
                               inference=dataclasses.replace(cfg.inference, out=out))


class _Silent:
    """The progress of a run nobody watches (tests, benchmarks, library callers): no per-epoch feed."""

    epoch = None

    def stage(self, name: str) -> None:
        log.info("stage: %s", name)


def train(cfg: RippleConfig, progress=None, verbose: bool = False) -> dict:
    """Validate -> train on Ray -> write embeddings -> evaluate -> ``metrics.json`` and the run's pictures.
    Returns the metrics.

    ``progress``: a ``ripple.console.Console`` (``stage``, ``epoch``), or None; ``verbose``: Ray's and
    the workers' logs on the console as well as in ``<run>/logs/``."""
    progress = progress or _Silent()
    cfg = resolve_paths(cfg)
    progress.stage("validate")
    meta = check_data(cfg.data, cfg.storage)
    sharded = meta is not None
    if sharded:
        source, num_parts = meta.manifest["source"], meta.num_parts
    else:
        source, num_parts = cfg.data, cfg.partition.num_parts
    require_labels(source, cfg.storage)
    if num_parts:
        parts_of_rank(num_parts, cfg.scaling.num_workers, 0)  # every worker must own a part: refuse before Ray
    # one writer per run: nothing is written into the run folder before its lease is held
    with RunLease(run_dir(cfg), cfg.storage, cfg.train.lease_ttl_s, "ripple train"):
        lineage, init = begin_run(cfg, source)
        with RunLogs(run_dir(cfg), cfg.storage, verbose):  # the run folder exists from here on
            metrics = _train_valid(cfg, progress, verbose, sharded, source, num_parts, init, lineage)
    return metrics


def run_identity(cfg: RippleConfig, source: str) -> dict:
    """What a run trains on and what shapes its model: the data URL, the sha256 of its dataset's manifest (a
    regenerated or re-exported dataset at the same URL has another), the model section, the fanouts and the
    feature widths; and the run it was warm-started from."""
    manifest = Store(source, cfg.storage).read_bytes(DATASET_MANIFEST)
    return {"data": redact_url(cfg.data), "dataset_manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "shape": {"model": dataclasses.asdict(cfg.model),
                      "sampling": {"fanouts": list(cfg.sampling.fanouts), "per_relation": dict(cfg.sampling.per_relation)},
                      "features": {"node_dims": dict(FT.NODE_DIMS),
                                   "edge_dims": {"/".join(et): d for et, d in FT.EDGE_DIMS.items()},
                                   "schema_version": S.SCHEMA_VERSION}},
            "init_from": redact_url(cfg.train.init_from) if cfg.train.init_from else None}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def begin_run(cfg: RippleConfig, source: str) -> tuple[dict, dict | None]:
    """Record what the run trains on (``run.json``), or refuse to resume it with anything else; returns (its
    lineage, the weights a warm-started run begins from or None). ValueError names every difference."""
    run = Store(run_dir(cfg), cfg.storage)
    ident = run_identity(cfg, source)
    has_checkpoints = bool(run.ls(CHECKPOINTS))
    if run.exists(RUN_FILE):
        old, new = _flat(run.read_json(RUN_FILE)), _flat(ident)
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if k != "init_from_epoch" and old.get(k) != new.get(k)]
        if diff and has_checkpoints:
            raise ValueError(
                f"run {redact_url(run_dir(cfg))} was trained on other data or with another shape, and resuming it "
                f"would mix the two into one model ({len(diff)} difference(s): {'; '.join(diff[:4])}"
                f"{'; ...' if len(diff) > 4 else ''}). Use a new --run-name; to start from this run's weights, pass "
                f"--init-from {redact_url(run_dir(cfg))}")
    elif has_checkpoints and cfg.train.init_from:
        raise ValueError(f"--init-from starts a new run, but {redact_url(run_dir(cfg))} already has checkpoints; use a "
                         "new --run-name")
    init = None
    if cfg.train.init_from and not has_checkpoints:
        parent = load_run_config(absolute_url(cfg.train.init_from), cfg.storage)
        checkpoint = best_checkpoint(parent)
        try:
            check_fits(cfg, checkpoint)
        except ValueError as e:
            raise ValueError(f"--init-from {redact_url(cfg.train.init_from)}: {e}") from None
        state = load_state(checkpoint)
        init = state["model"]
        ident["init_from_epoch"] = int(state["epoch"])
        log.info("warm start from %s (its best checkpoint, epoch %d)", redact_url(cfg.train.init_from), state["epoch"])
    elif run.exists(RUN_FILE):
        ident["init_from_epoch"] = run.read_json(RUN_FILE).get("init_from_epoch")
    run.write_json(ident, RUN_FILE)
    return ident, init


def check_data(url: str, options: StorageOptions | None = None) -> PartitionMeta | None:
    """Refuse data a run cannot read (ValueError naming table, column and value); returns the partition metadata of
    a partitioned graph (``ripple partition`` validated its source; its files are checked here), else None."""
    if is_partitioned(url, options):
        meta = PartitionMeta.open(url, options)
        check_partition_files(url, meta.manifest, options)
        return meta
    require_valid(url, options)
    return None


def require_labels(data: str, options: StorageOptions | None = None) -> None:
    """Refuse to train on a dataset without labels (a cascade history ``ripple import`` wrote), saying how to
    derive them."""
    ds = Dataset(data, options)
    if ds.manifest.rows.get("labels", 0) == 0:
        hint = ""
        if ds.manifest.history:
            h = ds.manifest.history
            hint = f" (its history runs from {iso(h['start'])} to {iso(h['end'])})"
        raise ValueError(f"labels: dataset {redact_url(data)} has no labels: it is a cascade history{hint}; derive "
                         f"them with `ripple labels {redact_url(data)} --cutoff T --horizon H --out OUT` and train "
                         "on OUT")


def _train_valid(cfg: RippleConfig, progress, verbose: bool, sharded: bool, source: str, num_parts: int,
                 init: dict | None, lineage: dict) -> dict:
    run = Store(run_dir(cfg), cfg.storage)
    if not sharded and cfg.partition.num_parts > 0:
        progress.stage("partition")
        parts_url = run_path(cfg, PARTITIONS)
        if not is_partitioned(parts_url, cfg.storage):  # a resumed run keeps its partitions
            partition(cfg.data, parts_url, cfg.partition, cfg.storage)
        cfg = dataclasses.replace(cfg, data=parts_url)
        sharded = True
    run.write_bytes(cfg.to_yaml().encode(), CONFIG_FILE)
    init_ray(cfg, log_to_driver=verbose)

    progress.stage("train")
    t0 = time.perf_counter()
    outcome = fit(cfg, on_epoch=progress.epoch, init=init)
    train_s = time.perf_counter() - t0

    progress.stage("embed")
    manifest = write_embeddings(cfg, outcome.best_checkpoint)

    progress.stage("evaluate")
    result = evaluate_run(cfg, source, outcome.best_checkpoint, sharded)
    metrics = result.metrics
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
    metrics["history"] = last.get("history", [])  # every epoch, resumed ones included: the training curve
    # where the graph lived (per rank: its node, the parts it mapped, the parts it called) and what a training
    # epoch and the embedding moved between processes and across nodes
    metrics["placement"] = last.get("placement")
    metrics["traffic"] = {"train_epoch": last.get("traffic"), "embed": manifest.get("traffic")}
    # fault tolerance: the epoch of the checkpoint the last worker group started from (None: from scratch), and
    # how many worker groups of this run were lost and restarted from a checkpoint (``--max-failures``)
    metrics["resumed_from_epoch"] = last.get("resumed_from_epoch")
    metrics["restarts"] = last.get("restarts", 0)
    metrics["best_epoch"] = outcome.best_metrics.get("epoch")
    metrics[f"best_{SCORE}"] = outcome.best_metrics.get(SCORE)
    metrics["best_val_spearman"] = outcome.best_metrics.get("val_spearman")
    metrics["run"] = lineage  # what it trained on, and the run it was warm-started from
    metrics["pictures"] = write_pictures(run, result)
    run.write_json(metrics, METRICS_FILE)
    return metrics


def evaluate_run(cfg: RippleConfig, source: str, checkpoint, sharded: bool) -> Evaluation:
    """A trained run's evaluation: every model on the test rows of ``source`` (the dataset it trained on), and,
    where another model than the GNN wins on validation, its predictions written as the ``influence_score`` of the
    committed embeddings. Deterministic for a given checkpoint: evaluating a finished run again (after the
    baselines changed), with its embeddings written again from the checkpoint, gives what training would have
    reported. Embeddings whose ``influence_score`` another model's predictions replaced are refused: they would be
    scored as the GNN's."""
    chosen = read_manifest(embeddings_store(cfg)).get("influence_score")
    if chosen and chosen.get("model") not in (None, "gnn"):
        raise ValueError(f"{redact_url(run_dir(cfg))}: the embeddings' influence_score holds {chosen['model']}'s "
                         "predictions, not the GNN's; write them again from the checkpoint first (`ripple embed RUN`)")
    columns = ["user_id", "influence_score"]
    ds = Dataset(source, cfg.storage)
    whole_graph_ok = ds.manifest.rows.get("follows", 0) <= cfg.eval.baselines_max_edges
    reliability, truth = label_oracles(ds)
    if sharded and not whole_graph_ok:
        # PageRank and the 2-hop features need the whole graph in one process: report what scales instead
        result = evaluate_from_tables(ds.read("labels"), ds.read("user", ["id", "follower_count"]),
                                      read_committed(embeddings_store(cfg), columns=columns), reliability, truth)
        result.metrics["baselines_skipped"] = (f"{ds.manifest.rows.get('follows')} follows edges > "
                                               f"eval.baselines_max_edges={cfg.eval.baselines_max_edges}")
        return result
    graph = load_local_graph(ds)
    emb = read_committed(embeddings_store(cfg), columns=[*columns, "embedding"])  # the stacked model reads them
    # rows at many cut times: the GNN's training and validation rows are scored as of their own time, not from
    # the embeddings of the graph as it is
    rows = predict_rows(cfg, checkpoint, graph, ("train", "val")) if graph.temporal else None
    result = evaluate(graph, emb, seed=cfg.train.seed, lightgbm_threads=cfg.eval.lightgbm_threads,
                      reliability=reliability, truth=truth, gnn_rows=rows)
    if result.scores is not None:  # another model won on validation: its predictions are the influence_score
        rewrite_scores(embeddings_store(cfg), graph.ids["user"], result.scores, result.metrics["influence_score"])
    return result


def write_pictures(run: Store, result: Evaluation) -> list[str]:
    """The run's PNGs next to ``metrics.json``: the training curve and predicted vs observed reach on the test
    users (every model's test Spearman in its legend). Returns their file names."""
    m = result.metrics
    pictures = {plots.PREDICTED_VS_OBSERVED: plots.predicted_vs_observed(result.observed, result.predicted,
                                                                         _model_spearman(m["spearman"]))}
    if m.get("history"):
        pictures[plots.TRAINING_CURVE] = plots.training_curve(m["history"])
    for name, png in pictures.items():
        run.write_bytes(png, name)
    return sorted(pictures)


def _model_spearman(spearman: dict) -> dict:
    """The models' and the oracle's test Spearman (the labels' own reliability left out), in table order."""
    return {k: spearman[k] for k in MODEL_ORDER if k in spearman and k not in ("label_reliability", "label")}


def label_oracles(ds: Dataset):
    """(split-half reliability of the test labels, ``_truth/users`` id + expected_reach) of a dataset whose labels
    ``ripple labels`` derived from a history; (None, None) for simulated labels, whose replicate is the ceiling."""
    info = ds.manifest.labels
    if not info:
        return None, None
    rel = ((info.get("reliability") or {}).get("test") or {}).get("spearman_brown")
    truth = None
    if ds.has("_truth/users"):  # synthetic data: the oracle, for evaluation only
        t = ds.read("_truth/users")
        if "expected_reach" in t.column_names:
            truth = t.select(["id", "expected_reach"])
    return (float("nan") if rel is None else float(rel)), truth


def load_run_config(run_url: str, options: StorageOptions | None = None) -> RippleConfig:
    store = Store(run_url, options)
    if not store.exists(CONFIG_FILE):
        raise ValueError(f"{run_url} is not a ripple run: no {CONFIG_FILE}; pass <storage-path>/<run-name>")
    where = join(run_url, CONFIG_FILE)
    raw = parse_yaml(store.read_bytes(CONFIG_FILE), where)
    if options is not None and isinstance(raw.get("storage") or {}, dict):
        raw["storage"] = {**(raw.get("storage") or {}), **{k: v for k, v in vars(options).items() if v}}
    cfg = from_dict(raw, where)
    base = absolute_url(run_url).rstrip("/")
    cfg.storage_path, cfg.run_name = base.rsplit("/", 1)
    return resolve_paths(cfg)


def embed(run_url: str, options: StorageOptions | None = None, data: str | None = None, out: str | None = None,
          as_of: int | None = None) -> dict:
    """``ripple embed RUN``: rewrite the run's embeddings from its best checkpoint. With ``data`` (and ``out``): score
    another snapshot of the platform (a newer export, the same tables later) with the trained model, as a platform
    does between retrainings, into ``out``; the run itself is not touched. The snapshot is validated and the
    checkpoint must fit the model its run's config builds; either refusal is a ValueError naming the difference,
    before anything is written. ``as_of``: score the snapshot as it stood strictly before that time (the model
    trained before T scores the graph as of T)."""
    cfg = load_run_config(run_url, options)
    if as_of is not None and data is None:
        raise ValueError("--as-of needs --data and --out: it scores a snapshot of a dataset as of a time, into a "
                         "folder of its own")
    if data is None:
        if out is not None:
            raise ValueError("--out needs --data: without it `ripple embed` rewrites the run's own embeddings")
        with RunLease(run_dir(cfg), cfg.storage, cfg.train.lease_ttl_s, "ripple embed"):
            init_ray(cfg)
            return write_embeddings(cfg, best_checkpoint(cfg))
    if out is None:
        raise ValueError("--data needs --out: the snapshot's embeddings go to a folder of their own, not over the "
                         "run's")
    data, out = absolute_url(data), absolute_url(out)
    check_data(data, cfg.storage)
    checkpoint = best_checkpoint(cfg)
    check_fits(cfg, checkpoint)
    if as_of is not None:
        check_as_of(data, as_of, cfg.storage)
    snapshot = dataclasses.replace(cfg, data=data, inference=dataclasses.replace(cfg.inference, out=out, as_of=as_of))
    with RunLease(out, cfg.storage, cfg.train.lease_ttl_s, "ripple embed --out"):  # one writer per output too
        init_ray(snapshot)
        return write_embeddings(snapshot, checkpoint, extra={"run": redact_url(run_dir(cfg)), "data": redact_url(data),
                                                             "as_of": None if as_of is None else iso(as_of)})


def check_as_of(data: str, as_of: int, options: StorageOptions | None = None) -> None:
    """``--as-of T`` must fall inside the snapshot's history, where one is recorded: before its start nothing
    existed, and at or after its end the cut changes nothing (say so rather than score silently)."""
    if is_partitioned(data, options):
        raise ValueError(f"--as-of cuts a dataset's tables, but {redact_url(data)} is a partitioned graph; pass the "
                         "dataset it was partitioned from")
    h = Dataset(data, options).manifest.history
    if h and not h["start"] < as_of <= h["end"]:
        raise ValueError(f"--as-of {iso(as_of)} is outside {redact_url(data)}'s history [{iso(h['start'])}, "
                         f"{iso(h['end'])}] (manifest.json history); pick a time inside it")


# ------------------------------------------------------------------------------------------ influence maximization

SEEDS_FILE = "seeds.parquet"


def seeds(run_url: str, k: int, options: StorageOptions | None = None, candidates: int | None = None,
          evaluate: bool = False, sims: int = 1000, eval_ks: tuple[int, ...] = (10, 50, 100)) -> dict:
    """``ripple seeds``: write ``<run>/seeds.parquet`` (rank, user_id, score, marginal_gain) for K seeds, and with
    ``evaluate`` the comparison table (``seeds_eval.json``, merged into ``metrics.json``)."""
    cfg = load_run_config(run_url, options)
    sel = select_seeds(cfg, k, candidates)
    t = pa.table({"rank": pa.array(range(1, k + 1), pa.int32()), "user_id": pa.array(sel["user_id"], pa.int64()),
                  "score": pa.array(sel["score"], pa.float32()),
                  "marginal_gain": pa.array(sel["marginal_gain"], pa.float32())})
    run = Store(run_dir(cfg), cfg.storage)
    run.write_bytes(table_to_parquet_bytes(t), SEEDS_FILE)
    out = {"seeds": t, "path": join(run_dir(cfg), SEEDS_FILE), "selection_s": sel["seconds"],
           "candidates": sel["candidates"], "users": sel["users"]}
    if evaluate:
        ks = tuple(sorted({x for x in (*eval_ks, k) if x <= sel["users"]}))
        out["evaluation"] = evaluate_seeds(cfg, ks, sims, candidates)
        run.write_bytes(plots.spread_vs_k(out["evaluation"]["table"]), plots.SPREAD_VS_K)
        out["picture"] = join(run_dir(cfg), plots.SPREAD_VS_K)
    return out
