"""Sampled edges/s of the distributed sampler over P = 1, 2, 4 graph shards vs PyG on the whole graph.

Side by side in one run, same graph, same fanouts, same seed batches:
  * ``pyg_whole``: PyG's ``NeighborSampler`` (pyg-lib or torch-sparse kernels) over the whole graph in this
    process: the single-machine reference;
  * ``native_whole``: ripple's native sampler over the whole graph in this process;
  * ``distributed_P``: ``DistributedNeighborSampler`` as a trainer runs it (``ShardedGraph.connect``): P GraphShard
    actors on the local one-node Ray cluster, this process owning part 0 (its seeds are part 0's users) and
    mapping zero-copy every part whose actor is on its node: here all of them, so no sample or feature row
    costs an actor round trip. ``--own-only`` maps part 0 alone and reaches the others through their actors (the
    trainer before co-located parts were mapped; what parts on other nodes cost, less the network).
Each mode also runs whole ``NodeLoader`` batches (sampling + feature and edge-feature joins), the number the
training loop sees. Results: ``benchmarks/results/sharded_sampling.json`` and ``.png``.

    python benchmarks/sharded_sampling.py [--users 20000] [--batches 40] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time

import numpy as np
import torch


def _measure(fn, batches) -> dict:
    edges, t0 = 0, time.perf_counter()
    for b in batches:
        edges += fn(b)
    dt = time.perf_counter() - t0
    return {"edges_per_s": edges / dt, "batches_per_s": len(batches) / dt, "edges": edges, "seconds": dt}


def _median(runs: list[dict]) -> dict:
    best = sorted(runs, key=lambda r: r["edges_per_s"])[len(runs) // 2]
    return {**best, "rounds_edges_per_s": [r["edges_per_s"] for r in runs]}


def count_sampler(sampler):
    from torch_geometric.sampler import NodeSamplerInput

    def run(seeds):
        out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds, input_type="user"))
        return sum(len(v) for v in out.row.values())
    return run


def _loader_edges(loader) -> int:
    return sum(int(b[et].edge_index.size(1)) for b in loader for et in b.edge_types)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--batches", type=int, default=40, help="batches per round (at most part 0's users / batch)")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds, modes interleaved; medians reported")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--parts", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--own-only", action="store_true", help="map part 0 only; the other parts through their actors")
    ap.add_argument("--tag", default="", help="suffix of the results' file names")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    import ray

    from ripple.config import PartitionConfig, SamplingConfig
    from ripple.data import schema as S
    from ripple.data.dataset import Dataset
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.graph import load_local_graph
    from ripple.graph.local import local_stores
    from ripple.graph.partition import partition
    from ripple.graph.sharded_sampler import DistributedNeighborSampler
    from ripple.graph.part_io import PartitionMeta
    from ripple.graph.shards import ShardedFeatureStore, ShardedGraph, ShardedGraphStore, find_shards, start_shard
    from ripple.sampling import backends
    from ripple.sampling.loader import make_loader, make_sampler

    scfg = SamplingConfig()
    tmp = tempfile.mkdtemp(prefix="ripple-bench-")
    data = os.path.join(tmp, "data")
    generate(data, GeneratorConfig(users=args.users, seed=0))
    graph = load_local_graph(Dataset(data))
    fs, gs = local_stores(graph)
    num_nodes = {t: graph.num_nodes(t) for t in S.NODE_TYPES}
    backend = backends.select("auto")
    rng = np.random.default_rng(0)
    results: dict = {"modes": {}, "config": {"own_only": args.own_only, "users": args.users, "edges": int(sum(len(r) for _, r in graph.csc.values())),
                                             "fanouts": scfg.fanouts, "batch_size": args.batch_size,
                                             "batches": args.batches, "pyg_backend": backend,
                                             "cpu": platform.processor() or platform.machine(),
                                             "cores": os.cpu_count(), "torch_threads": 1}}

    own0 = None  # part 0's users (global indices 0..n0-1 of the P=max part) bound the batches of every mode
    modes: dict[str, tuple] = {}  # name -> (sampler fn, loader factory, seed pool)
    pyg = make_sampler(fs, gs, num_nodes, scfg, list(S.EDGE_TYPES), backend if backend != "native" else "auto")
    native = make_sampler(fs, gs, num_nodes, scfg, list(S.EDGE_TYPES), "native", seed=0)
    ea = graph.edge_attr_tensors()
    whole = np.arange(graph.num_nodes("user"))
    modes["pyg_whole"] = (count_sampler(pyg), lambda s, bs: make_loader(fs, gs, pyg, s, bs, ea), whole)
    modes["native_whole"] = (count_sampler(native), lambda s, bs: make_loader(fs, gs, native, s, bs, ea), whole)

    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    keep = []
    extra = {}
    for P in args.parts:
        parts = os.path.join(tmp, f"parts-{P}")
        m = partition(data, parts, PartitionConfig(num_parts=P))
        meta = PartitionMeta.open(parts)
        key = f"bench-{P}"
        keep += [start_shard(meta, key, p) for p in range(P)]
        sg = (ShardedGraph(meta, find_shards(meta, key)[0], local_parts=[0]) if args.own_only else
              ShardedGraph.connect(meta, key, [0]))
        sfs, sgs = ShardedFeatureStore(sg), ShardedGraphStore(meta)
        sampler = DistributedNeighborSampler(sg, scfg.num_neighbors(meta.edge_types), seed=0)
        pool = np.arange(meta.manifest["node_counts"]["user"][0])  # part 0's users: a trainer's own seeds
        own0 = pool if own0 is None or len(pool) < len(own0) else own0
        modes[f"distributed_{P}"] = (count_sampler(sampler),
                                     lambda s, bs, sfs=sfs, sgs=sgs, sampler=sampler:
                                     make_loader(sfs, sgs, sampler, s, bs, sfs), pool)
        extra[f"distributed_{P}"] = {"graph": sg, "edge_cut_follows": m["edge_cut"]["follows"],
                                     "mapped_parts": sorted(sg.local),
                                     "trainer_resident_bytes": sg.local[0].resident_bytes()}

    n_batches = min(args.batches, len(own0) // args.batch_size)
    runs: dict[str, dict[str, list]] = {name: {"sampler": [], "loader": []} for name in modes}
    for rnd in range(args.rounds + 1):  # round 0 warms up every mode and is not counted
        for name, (sampler_fn, make, pool) in modes.items():
            seeds = torch.from_numpy(rng.permutation(pool)[: n_batches * args.batch_size])
            batches = list(seeds.split(args.batch_size))
            calls = (lambda: extra[name]["graph"].remote_calls) if name in extra else (lambda: 0)
            c0 = calls()
            r_s = _measure(sampler_fn, batches)
            c1 = calls()
            t0 = time.perf_counter()
            e = _loader_edges(make(seeds, args.batch_size))
            dt = time.perf_counter() - t0
            c2 = calls()
            if rnd:
                runs[name]["sampler"].append(r_s)
                runs[name]["loader"].append({"edges_per_s": e / dt, "batches_per_s": n_batches / dt, "edges": e,
                                             "seconds": dt})
                if name in extra:  # Ray calls per batch: sampling alone, and sampling + feature joins
                    extra[name]["remote_calls_per_batch"] = {"sampler": (c1 - c0) / n_batches,
                                                             "loader": (c2 - c1) / n_batches}
    for name in modes:
        results["modes"][name] = {"sampler": _median(runs[name]["sampler"]), "loader": _median(runs[name]["loader"]),
                                  **{k: v for k, v in extra.get(name, {}).items() if k != "graph"}}
    results["config"]["batches_per_round"] = n_batches
    results["config"]["rounds"] = args.rounds
    del keep
    ray.shutdown()

    ref = results["modes"]["pyg_whole"]
    for name, r in results["modes"].items():
        r["sampler_ratio_vs_pyg"] = r["sampler"]["edges_per_s"] / ref["sampler"]["edges_per_s"]
        r["loader_ratio_vs_pyg"] = r["loader"]["edges_per_s"] / ref["loader"]["edges_per_s"]
    results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "sharded_sampling" + (f"_{args.tag}" if args.tag else ""))
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
    _plot(results, stem + ".png")
    for name, r in results["modes"].items():
        print(f"{name:16s} sampler {r['sampler']['edges_per_s']:>10.0f} edges/s ({r['sampler_ratio_vs_pyg']:.2f}x pyg)"
              f"  loader {r['loader']['edges_per_s']:>10.0f} edges/s ({r['loader_ratio_vs_pyg']:.2f}x)")


def _plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["modes"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, kind in enumerate(("sampler", "loader")):
        ax.bar(x + (i - 0.5) * 0.38, [results["modes"][n][kind]["edges_per_s"] for n in names], 0.38, label=kind)
    ax.set_xticks(x, names)
    ax.set_ylabel("sampled edges / s")
    c = results["config"]
    ax.set_title(f"{c['users']} users, {c['edges']} edges, fanouts {c['fanouts']}, batch {c['batch_size']} "
                 f"(PyG backend: {c['pyg_backend']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
