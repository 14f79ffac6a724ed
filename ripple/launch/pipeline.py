"""The end-to-end verbs behind the CLI: train (+ evaluate + write back) and embed.

Order matters for "bad input writes nothing": the dataset is validated before the run folder is touched.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

from ripple.config import RippleConfig, from_dict, parse_yaml
from ripple.data.dataset import Dataset
from ripple.data.graph import load_local_graph
from ripple.data.storage import StorageOptions, Store, absolute_url, join, read_committed
from ripple.data.validate import require_valid
from ripple.distributed.inference import write_embeddings
from ripple.distributed.partition import check_partition_files, partition
from ripple.distributed.sharded_access import parts_of_rank
from ripple.distributed.shards import PartitionMeta
from ripple.distributed.train import fit
from ripple.models.evaluate import evaluate, evaluate_from_tables
from ripple.run import (CONFIG_FILE, METRICS_FILE, PARTITIONS, SCORE, best_checkpoint, embeddings_store, is_partitioned,
                        run_dir, run_path)

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
        check_partition_files(cfg.data, meta.manifest, cfg.storage)
        source, num_parts = meta.manifest["source"], meta.num_parts
    else:
        require_valid(cfg.data, cfg.storage)
        source, num_parts = cfg.data, cfg.partition.num_parts
    if num_parts:
        parts_of_rank(num_parts, cfg.scaling.num_workers, 0)  # every worker must own a part: refuse before Ray
    run = Store(run_dir(cfg), cfg.storage)
    if not sharded and cfg.partition.num_parts > 0:
        stage("partition")
        parts_url = run_path(cfg, PARTITIONS)
        if not is_partitioned(parts_url, cfg.storage):  # a resumed run keeps its partitions
            partition(cfg.data, parts_url, cfg.partition, cfg.storage)
        cfg = dataclasses.replace(cfg, data=parts_url)
        sharded = True
    run.write_bytes(cfg.to_yaml().encode(), CONFIG_FILE)
    init_ray(cfg)

    stage("train")
    t0 = time.perf_counter()
    outcome = fit(cfg)
    train_s = time.perf_counter() - t0

    stage("embed")
    manifest = write_embeddings(cfg, outcome.best_checkpoint)

    stage("evaluate")
    emb = read_committed(embeddings_store(cfg), columns=["user_id", "influence_score"])
    ds = Dataset(source, cfg.storage)
    whole_graph_ok = ds.manifest.rows.get("follows", 0) <= cfg.eval.baselines_max_edges
    reliability, truth = label_oracles(ds)
    if sharded and not whole_graph_ok:
        # PageRank and the 2-hop features need the whole graph in one process: report what scales instead
        metrics = evaluate_from_tables(ds.read("labels"), ds.read("user", ["id", "follower_count"]), emb,
                                       reliability, truth)
        metrics["baselines_skipped"] = (f"{ds.manifest.rows.get('follows')} follows edges > "
                                        f"eval.baselines_max_edges={cfg.eval.baselines_max_edges}")
    else:
        metrics = evaluate(load_local_graph(ds), emb, seed=cfg.train.seed,
                           lightgbm_threads=cfg.eval.lightgbm_threads, reliability=reliability, truth=truth)
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
    # fault tolerance: the epoch of the checkpoint the last worker group started from (None: from scratch), and
    # how many worker groups of this run were lost and restarted from a checkpoint (``--max-failures``)
    metrics["resumed_from_epoch"] = last.get("resumed_from_epoch")
    metrics["restarts"] = last.get("restarts", 0)
    metrics["best_epoch"] = outcome.best_metrics.get("epoch")
    metrics[f"best_{SCORE}"] = outcome.best_metrics.get(SCORE)
    metrics["best_val_spearman"] = outcome.best_metrics.get("val_spearman")
    run.write_json(metrics, METRICS_FILE)
    return metrics


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


def embed(run_url: str, options: StorageOptions | None = None) -> dict:
    cfg = load_run_config(run_url, options)
    init_ray(cfg)
    return write_embeddings(cfg, best_checkpoint(cfg))


# ------------------------------------------------------------------------------------------ influence maximization

SEEDS_FILE = "seeds.parquet"
SEEDS_EVAL_FILE = "seeds_eval.json"
#: candidates the overlap-aware greedy keeps neighbourhoods for, unless ``--candidates`` says otherwise
DEFAULT_SEED_CANDIDATES = 1000
#: followers per candidate expanded to the second hop (the likeliest to be activated)
SEED_EXPAND_FOLLOWERS = 16
#: the methods ``ripple seeds --evaluate`` compares, in table order
SEED_METHODS = ("ripple", "celf", "degree_discount", "pagerank", "follower_count")
#: DegreeDiscountIC's uniform activation probability: a constant, never fitted to the truth
DEGREE_DISCOUNT_P = 0.01
#: repeats of each (sub-minute) selection in the evaluation; the median wall time is reported
SEED_TIMING_REPEATS = 3


def _source_dataset(cfg: RippleConfig) -> str:
    """The dataset URL behind a run: its ``data``, or the source a partitioned graph's manifest records."""
    if is_partitioned(cfg.data, cfg.storage):
        return PartitionMeta.open(cfg.data, cfg.storage).manifest["source"]
    return cfg.data


def _score_parts(emb: Store, verify: bool = True):
    """``(user_ids, influence_score)`` of each part of a committed embeddings folder, one part at a time."""
    import hashlib

    import numpy as np

    from ripple.data.storage import MANIFEST, StorageError, read_manifest, read_parquet_bytes

    for p in read_manifest(emb)["parts"]:
        data = emb.read_bytes(p["path"])
        where = join(emb.url, p["path"])
        if verify and hashlib.sha256(data).hexdigest() != p["sha256"]:
            raise StorageError(f"{where}: checksum does not match {MANIFEST}; the part was modified or truncated")
        t = read_parquet_bytes(data, where, ["user_id", "influence_score"])
        if t.num_rows != p["rows"]:
            raise StorageError(f"{where}: {t.num_rows} rows, {MANIFEST} says {p['rows']}")
        ids = t["user_id"].to_numpy().astype(np.int64)
        scores = t["influence_score"].to_numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(f"{where}: influence_score of user {ids[bad[0]]} is {scores[bad[0]]}; re-run `ripple "
                             "embed` on the run")
        yield ids, scores


def _top_scored_users(emb: Store, m: int):
    """The ``m`` highest ``influence_score`` rows of a committed embeddings folder, streamed part by part (only
    ``2 m`` rows are ever kept), plus the total number of users. Returns ``(user_ids, scores, total)``, best first
    (ties by lower user id)."""
    import numpy as np

    ids, scores, total = np.zeros(0, np.int64), np.zeros(0, np.float64), 0
    for part_ids, part_scores in _score_parts(emb):
        total += part_ids.shape[0]
        ids, scores = np.concatenate([ids, part_ids]), np.concatenate([scores, part_scores])
        if ids.shape[0] > 2 * m:
            keep = np.lexsort((ids, -scores))[:m]
            ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:m]
    return ids[order], scores[order], total


def _scores_of(emb: Store, keys):
    """The ``influence_score`` of each user in ``keys`` (sorted, distinct); users the run did not score get 1 (the
    least possible reach: the user alone). Checksums were verified by the first pass (``_top_scored_users``)."""
    import numpy as np

    out = np.ones(keys.shape[0])
    for part_ids, part_scores in _score_parts(emb, verify=False):
        hit, pos = _member(keys, part_ids)
        out[pos[hit]] = part_scores[hit]
    return out


def _member(sorted_keys, values):
    """Boolean mask of ``values`` found in ``sorted_keys``, and their positions there (0 where not found).

    ``np.isin`` picks a lookup table when the key range is small (dense-ish user ids: one pass, no sort) and sorting
    otherwise; positions are then looked up for the hits only."""
    import numpy as np

    hit = np.isin(values, sorted_keys)
    pos = np.zeros(values.shape[0], np.int64)
    pos[hit] = np.searchsorted(sorted_keys, values[hit])
    return hit, pos


def _stream_in_edges(ds: Dataset, targets, batch_rows: int):
    """Every ``follows`` edge whose followee is in ``targets`` (sorted user ids), streamed in batches:
    ``(followee, follower, interaction_freq)`` arrays."""
    import numpy as np

    from ripple.data.storage import iter_table_batches

    out_dst, out_src, out_w = [], [], []
    for b in iter_table_batches(ds.store, "follows", ["src", "dst", "interaction_freq"], batch_rows=batch_rows):
        dst = b.column("dst").to_numpy()
        hit = np.isin(dst, targets)
        if hit.any():
            out_dst.append(dst[hit])
            out_src.append(b.column("src").to_numpy()[hit])
            out_w.append(b.column("interaction_freq").to_numpy()[hit].astype(np.float64))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return cat(out_dst, np.int64), cat(out_src, np.int64), cat(out_w, np.float64)


def _candidate_engagement(ds: Dataset, cand_sorted, batch_rows: int):
    """``avg_engagement`` (observed reshares per follower) of the candidates (sorted user ids)."""
    import numpy as np

    from ripple.data.storage import iter_table_batches

    out = np.zeros(cand_sorted.shape[0])
    for b in iter_table_batches(ds.store, "user", ["id", "avg_engagement"], batch_rows=batch_rows):
        ids = b.column("id").to_numpy()
        hit, pos = _member(cand_sorted, ids)
        out[pos[hit]] = b.column("avg_engagement").to_numpy()[hit]
    return out


def select_seeds(cfg: RippleConfig, k: int, candidates: int | None = None, batch_rows: int = 1 << 20) -> dict:
    """The overlap-aware greedy of ``ripple.models.seeds`` on a run: K seed users and their marginal gains.

    1. candidates: the top ``candidates`` users by the model's ``influence_score`` (one streamed pass over the
       embeddings, only the running top kept);
    2. their followers (one streamed pass over ``follows``), the followers' scores (a second pass over the
       embeddings, only those users kept) and the candidates' observed ``avg_engagement`` (the user table);
    3. each candidate's reach by one look-ahead step (``seeds.lookahead_reach``);
    4. the followers of each candidate's ``SEED_EXPAND_FOLLOWERS`` likeliest followers (a second pass over
       ``follows``) for the two-hop footprints, then the lazy greedy.

    Memory is the candidate pool and its two-hop neighbourhood; nothing holds the whole graph. Reads the run's
    ``embeddings`` and the dataset's ``user`` and ``follows`` tables only (never ``_truth``). Returns a dict of
    arrays and timings.
    """
    import numpy as np

    from ripple.models import seeds as SD

    t0 = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"--k must be an integer >= 1, got {k!r}")
    if candidates is not None and (isinstance(candidates, bool) or not isinstance(candidates, int)
                                   or candidates < k):
        raise ValueError(f"--candidates must be an integer >= --k ({k}), got {candidates!r}")
    m = candidates if candidates is not None else max(DEFAULT_SEED_CANDIDATES, 10 * k)
    emb = embeddings_store(cfg)
    cand, score, total = _top_scored_users(emb, m)
    if k > total:
        raise ValueError(f"--k {k} is larger than the number of users the run scored ({total}); ask for at most "
                         f"{total}")
    ds = Dataset(_source_dataset(cfg), cfg.storage)
    t_scores = time.perf_counter()

    order = np.argsort(cand)
    sorted_cand = cand[order]
    h1_dst, h1_src, h1_w = _stream_in_edges(ds, sorted_cand, batch_rows)
    _, pos = _member(sorted_cand, h1_dst)
    h1_cand = order[pos]
    followers = np.unique(h1_src)
    follower_score = _scores_of(emb, followers)
    _, fpos = _member(followers, h1_src)
    eng = np.zeros(cand.shape[0])
    eng[order] = _candidate_engagement(ds, sorted_cand, batch_rows)
    reach, p = SD.lookahead_reach(cand.shape[0], h1_cand, h1_w, follower_score[fpos], eng)

    # expand each candidate's likeliest followers to the second hop (bounds memory on celebrity accounts)
    rank = np.lexsort((-p, h1_cand))
    first = np.searchsorted(h1_cand[rank], h1_cand[rank])
    within = np.arange(rank.shape[0]) - first
    mids = np.unique(h1_src[rank[(within < SEED_EXPAND_FOLLOWERS) & (p[rank] > 0)]])
    h2_dst, h2_src, h2_w = _stream_in_edges(ds, mids, batch_rows)
    _, mpos = _member(followers, mids)
    onward = np.maximum(follower_score[mpos], 1.0) - 1.0
    t_edges = time.perf_counter()

    fp = SD.build_footprints(cand, reach, h1_cand, h1_src, p, h2_dst, h2_src, h2_w, mids, onward)
    chosen, gains = SD.overlap_greedy(k, fp)
    t1 = time.perf_counter()
    log.info("seeds: %d of %d candidates (%d users scored); %d hop-1 and %d hop-2 edges; top scores %.2fs, "
             "neighbourhoods %.2fs, footprints + greedy %.2fs", k, cand.shape[0], total, h1_dst.shape[0],
             h2_dst.shape[0], t_scores - t0, t_edges - t_scores, t1 - t_edges)
    return {"user_id": cand[chosen], "score": score[chosen], "estimated_reach": reach[chosen],
            "marginal_gain": gains, "candidates": int(cand.shape[0]), "users": int(total), "seconds": t1 - t0,
            "seconds_read_scores": t_scores - t0, "seconds_neighbourhoods": t_edges - t_scores,
            "seconds_greedy": t1 - t_edges}


def seeds(run_url: str, k: int, options: StorageOptions | None = None, candidates: int | None = None,
          evaluate: bool = False, sims: int = 1000, eval_ks: tuple[int, ...] = (10, 50, 100)) -> dict:
    """``ripple seeds``: write ``<run>/seeds.parquet`` (rank, user_id, score, marginal_gain) for K seeds, and with
    ``evaluate`` the comparison table (``seeds_eval.json``, merged into ``metrics.json``)."""
    import pyarrow as pa

    from ripple.data.storage import table_to_parquet_bytes

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
    return out


def evaluate_seeds(cfg: RippleConfig, ks: tuple[int, ...], sims: int = 1000, candidates: int | None = None,
                   celf_sims: int = 200) -> dict:
    """Expected IC spread (cynetdiff, ``sims`` simulations, on ``<data>/_truth/ic_edges``) of ripple's seeds next
    to follower-count top-K, PageRank top-K, DegreeDiscountIC (p = 0.01) and CELF greedy (``celf_sims`` per gain
    estimate, every user a candidate), at every K in ``ks``, with each method's selection wall time.

    Writes ``<run>/seeds_eval.json`` and the same table under ``influence_maximization`` in ``metrics.json``.
    ``_truth`` is read here only, after every non-CELF selection is made.
    """
    import numpy as np

    from ripple.data.arrays import dense_index
    from ripple.models import seeds as SD
    from ripple.models.baselines import pagerank
    from ripple.models.spread import SpreadOracle, celf

    source = _source_dataset(cfg)
    ds = Dataset(source, cfg.storage)
    if not ds.has("_truth/ic_edges"):
        raise ValueError(f"dataset {source} has no _truth/ic_edges: the evaluation needs the true IC probabilities "
                         "of a synthetic dataset (`ripple generate`); run `ripple seeds` without --evaluate")
    users = ds.read("user", ["id", "follower_count"])
    uorder = np.argsort(users["id"].to_numpy(), kind="stable")
    ids = users["id"].to_numpy()[uorder]
    n = ids.shape[0]
    followers = users["follower_count"].to_numpy()[uorder].astype(np.float64)
    f = ds.read("follows", ["src", "dst"])
    fsrc = dense_index(ids, f["src"].to_numpy(), "follows.src")  # follower
    fdst = dense_index(ids, f["dst"].to_numpy(), "follows.dst")  # followee
    del f

    def timed(select):
        """The selection's result and its median wall time over ``SEED_TIMING_REPEATS`` runs (short timings on a
        shared machine are noisy; CELF, minutes long, runs once)."""
        seconds = []
        for _ in range(SEED_TIMING_REPEATS):
            t0 = time.perf_counter()
            out = select()
            seconds.append(time.perf_counter() - t0)
        return out, float(np.median(seconds))

    def degree_discount():  # influence CSR: a followee's out-edges go to its followers
        order = np.argsort(fdst, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(fdst, minlength=n))])
        return SD.degree_discount(indptr, fsrc[order], k, p=DEGREE_DISCOUNT_P)

    picks: dict[str, dict[int, tuple[np.ndarray, float]]] = {m: {} for m in SEED_METHODS}
    ripple_stages = {}
    for k in ks:
        pool = candidates if candidates is not None and candidates >= k else None  # too small a pool: default
        sel, seconds = timed(lambda: select_seeds(cfg, k, pool))
        picks["ripple"][k] = (dense_index(ids, sel["user_id"], "seeds.user_id"), seconds)
        ripple_stages[str(k)] = {"candidates": sel["candidates"], **{s: sel[s] for s in (
            "seconds_read_scores", "seconds_neighbourhoods", "seconds_greedy")}}
        picks["follower_count"][k] = timed(lambda: SD.top_k(followers, k))
        picks["pagerank"][k] = timed(lambda: SD.top_k(pagerank(fsrc, fdst, n), k))
        picks["degree_discount"][k] = timed(degree_discount)

    truth = ds.read("_truth/ic_edges")
    oracle = SpreadOracle(dense_index(ids, truth["src"].to_numpy(), "_truth/ic_edges.src"),
                          dense_index(ids, truth["dst"].to_numpy(), "_truth/ic_edges.dst"),
                          truth["p"].to_numpy(), n, seed=cfg.train.seed)
    del truth
    celf_seeds, _, at = celf(oracle, max(ks), None, celf_sims, checkpoints=ks)
    for k in ks:
        picks["celf"][k] = (celf_seeds[:k], at[k])

    rows = []
    for method, by_k in picks.items():
        for k, (chosen, seconds) in by_k.items():
            if np.unique(chosen).shape[0] != k:
                raise RuntimeError(f"{method} returned {np.unique(chosen).shape[0]} distinct seeds for k={k}")
            mean, se = oracle.spread(chosen, sims)
            rows.append({"method": method, "k": int(k), "spread_mean": mean, "spread_se": se,
                         "selection_s": float(seconds)})
            log.info("influence maximization: %-16s k=%-4d spread %.1f +- %.1f, selection %.3fs", method, k, mean,
                     se, seconds)
    result = {"table": rows, "simulations": int(sims), "simulator": "cynetdiff IndependentCascadeModel",
              "probabilities": "_truth/ic_edges", "celf": {"sims_per_gain": int(celf_sims), "candidates": "all users"},
              "degree_discount_p": DEGREE_DISCOUNT_P, "timing": f"median of {SEED_TIMING_REPEATS} runs (CELF: one run, "
              "its prefix times); ripple's includes reading the scores and streaming the follows from storage, the "
              "others start from arrays in memory",
              "ripple_stages": ripple_stages, "users": int(n)}
    run = Store(run_dir(cfg), cfg.storage)
    run.write_json(result, SEEDS_EVAL_FILE)
    metrics = run.read_json(METRICS_FILE) if run.exists(METRICS_FILE) else {}
    metrics["influence_maximization"] = result
    run.write_json(metrics, METRICS_FILE)
    return result
