"""A run's layout in storage, its best-checkpoint rule, and the one answer to "is this data partitioned?".

    <storage_path>/<run_name>/config.yaml      the resolved config
                              checkpoints/     Ray Train checkpoints (the best by ``SCORE``)
                              partitions/      shards, when the run partitions its data (``partition.num_parts``)
                              embeddings/      committed parts + ``_manifest.json``
                              metrics.json     evaluation, throughput, epochs, the per-epoch history
                              run.json         what the run trains on: data, its manifest's sha256, the shape
                                               of model and inputs, the run it was warm-started from
                              _lease.json      the one writer that holds the run (``ripple.lease``)
                              *.png            the run's pictures (``ripple.evaluate.plots``)
                              logs/            ripple's and Ray's logs (``ripple.runlog``)

Everything that builds one of these paths, or picks a checkpoint, asks this module. It sits at the bottom with
``ripple.config``: it imports only the storage module.
"""
from __future__ import annotations

from ripple.data.storage import StorageOptions, Store, join, pyarrow_filesystem

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
PARTITIONS = "partitions"
EMBEDDINGS = "embeddings"
#: checkpoint selection and early stopping: validation MSE of log1p(reach). Validation Spearman is reported too,
#: but on a few hundred users it plateaus and jitters while the fit still improves, stopping runs early.
SCORE, SCORE_MODE = "val_mse", "min"
#: a partitioned graph (``ripple partition``) is a folder with this manifest
PARTITIONS_FORMAT = "ripple.partitions/1"
PARTITIONS_MANIFEST = "manifest.json"


def run_dir(cfg) -> str:
    """``<storage_path>/<run_name>``."""
    return join(cfg.storage_path, cfg.run_name)


def run_path(cfg, *parts: str) -> str:
    return join(run_dir(cfg), *parts)


def embeddings_store(cfg) -> Store:
    """``inference.out``, or ``<run>/embeddings``."""
    return Store(cfg.inference.out or run_path(cfg, EMBEDDINGS), cfg.storage)


def is_partitioned(url: str, options: StorageOptions | None = None) -> bool:
    """Whether ``url`` holds a partitioned graph (its manifest) rather than a dataset."""
    store = Store(url, options)
    if not store.exists(PARTITIONS_MANIFEST):
        return False
    return store.read_json(PARTITIONS_MANIFEST).get("format") == PARTITIONS_FORMAT


def source_dataset(url: str, options: StorageOptions | None = None) -> str:
    """The dataset behind ``url``: itself, or the source a partitioned graph's manifest records."""
    if is_partitioned(url, options):
        return Store(url, options).read_json(PARTITIONS_MANIFEST)["source"]
    return url


def best_of(result):
    """The best checkpoint of a Ray Train ``Result`` by ``SCORE``; the latest when none was scored."""
    return result.get_best_checkpoint(SCORE, SCORE_MODE) or result.checkpoint


def best_checkpoint(cfg):
    """The best checkpoint of the run ``cfg`` names, read back from its storage."""
    from ray.train import Result

    path, pafs = pyarrow_filesystem(run_path(cfg, CHECKPOINTS), cfg.storage)
    ckpt = best_of(Result.from_path(path, storage_filesystem=pafs))
    if ckpt is None:
        raise ValueError(f"run {run_dir(cfg)} has no checkpoint; train it first with `ripple train`")
    return ckpt
