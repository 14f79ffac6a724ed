"""One entry point for ripple's benchmarks: ``python -m benchmarks NAME [options]``.

    python -m benchmarks devices   [--users 1000000] ...  samplers (ripple native CPU/GPU vs PyG), training with
                                                           host/device sampling +- prefetch, layer-wise vs sampled
                                                           inference                       (device_sampling.py)
    python -m benchmarks train     [--users 100000] ...   seeds/s: Ray-DDP workers vs a plain single-process PyG
                                                           loop of the same model          (train_throughput.py)
    python -m benchmarks scale     [--follows 1e6 1e7]    every pipeline stage's time and peak memory at growing
                                                           sizes, growth exponents; --follows 1e8 --append for the
                                                           opt-in 100M-edge run            (pipeline_scale.py)
    python -m benchmarks sharded   [--users 20000] ...    distributed sampler over P shards vs PyG on the whole
                                                           graph                           (sharded_sampling.py)
    python -m benchmarks partition [--users ...]          partitioner memory and edge cut  (partition_memory.py)
    python -m benchmarks seeds     [--users 50000] ...    influence maximization: ripple seeds vs follower count,
                                                           PageRank, DegreeDiscount, CELF by simulated IC spread
                                                                                           (influence_max.py)
    python -m benchmarks history   [--users 40000] ...    labels from a cascade history: every model against the
                                                           future observed reach and the hidden truth, 2 seeds
                                                                                           (history_quality.py)
    python -m benchmarks labels    [--follows 1e6 1e7]    `ripple labels` time and peak PSS by history size and
                                                           chunk size                      (labels_scale.py)
    python -m benchmarks ablation  [--users 20000] ...    GNN variants side by side with the baselines, 2 seeds
                                                                                           (model_ablation.py)
    python -m benchmarks real      [--cutoffs ...] ...    real cascades: import SNAP Higgs (and StackExchange
                                                           Android), labels at several cut points, every model
                                                           against future reach +- bootstrap SE (real_data.py)
    python -m benchmarks temporal  [--users 20000] ...    training tables at many cut times, temporal split: every
                                                           model on the next window, one window against many, 2
                                                           seeds and Higgs +- SE           (temporal_quality.py)
    python -m benchmarks pyg-tests [--ref 2.8.0] [-k ..]  PyG's own NeighborLoader tests with ripple's sampler in
                                                           place of PyG's (needs a fetched PyG git dir; pyg_tests.py)
    python -m benchmarks multinode [--nodes 1 2 4] ...    simulated Ray nodes: per-node peak memory, cross-node
                                                           bytes per epoch and per embed, embed time (multinode.py)

Each writes ``<name>.json`` and ``.png`` under ``--out`` (default ``benchmarks/results``); ``docs/benchmarks.md``
holds the latest tables. ``python -m benchmarks NAME --help`` lists a benchmark's options.
"""
from __future__ import annotations

import os
import runpy
import sys

SCRIPTS = {"devices": "device_sampling", "train": "train_throughput", "scale": "pipeline_scale",
           "sharded": "sharded_sampling", "partition": "partition_memory",
           "seeds": "influence_max", "history": "history_quality", "labels": "labels_scale",
           "ablation": "model_ablation", "multinode": "multinode", "real": "real_data",
           "pyg-tests": "pyg_tests", "temporal": "temporal_quality"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SCRIPTS:
        sys.stderr.write(__doc__)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    name = sys.argv.pop(1)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)  # the scripts import each other's helpers as siblings
    sys.argv[0] = os.path.join(here, SCRIPTS[name] + ".py")
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
