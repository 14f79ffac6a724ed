"""Sampling and training throughput by device: ripple's native sampler on the CPU and on a GPU-resident graph,
PyG's NeighborSampler where its kernels are installed, and the training loop with sampling on the host (with and
without prefetching) or on the device. All modes in one run, on one generated graph, same fanouts and batches.

    python benchmarks/device_sampling.py [--users 1000000] [--batches 30] [--train-batches 40] [--out DIR]

Writes ``device_sampling.json`` and ``.png`` to ``--out``. Sampling numbers are sampled edges/s and seeds/s of
``sample_from_nodes`` alone and of whole ``NodeLoader`` batches (features joined); training numbers are seeds/s
of forward + backward + step of the default InfluenceGNN, timed with the device synchronised.
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
from sharded_sampling import count_sampler


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gather_limit(table_size: int, n: int, device: torch.device, rounds: int = 5) -> dict:
    """Random gathers per second from a graph-sized int64 array (``table_size``: the graph's edges, like the CSC
    ``row`` array every sampled edge is read from): the floor of a sampler's cost per edge, one random read.
    Measured both ways torch gathers: ``index_select`` and advanced indexing (``t[i]``, the issue's 71M/s)."""
    g = torch.Generator(device=device).manual_seed(0)
    table = torch.arange(table_size, device=device)
    idx = torch.randint(0, table_size, (n,), device=device, generator=g)
    out = {}
    for name, fn in (("index_select", lambda: table.index_select(0, idx)), ("advanced_index", lambda: table[idx])):
        fn()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        _sync(device)
        out[f"{name}_per_s"] = n * rounds / (time.perf_counter() - t0)
    return out


def _timed(fn, batches, device) -> dict:
    fn(batches[0])  # warm-up: allocator, kernels' first launch
    _sync(device)
    edges, t0 = 0, time.perf_counter()
    for b in batches:
        edges += fn(b)
    _sync(device)
    dt = time.perf_counter() - t0
    seeds = sum(len(b) for b in batches)
    return {"edges_per_s": edges / dt, "seeds_per_s": seeds / dt, "edges": edges, "seconds": dt}


def temporal_vs_plain(plain, batches, device: torch.device) -> dict:
    """The native sampler's temporal mode (``ripple.sampling.temporal``) against the plain sampler on the same
    graph and batches: time per batch, side by side. Every edge gets a time uniform in [0, 1000); seeds are
    sampled at t = 1000 (every edge valid: the cost of the mode itself) and t = 500 (half the edges in the
    future); ``uniform`` and ``last``; ``disjoint`` (per-seed subgraphs, PyG's semantics: more edges than the plain
    sampler's shared subgraph) and ``shared`` (a batch of one time as one subgraph: ripple's training path)."""
    from torch_geometric.sampler import NodeSamplerInput

    from ripple.sampling.temporal import TemporalNeighborSampler

    g = plain.graph
    gen = torch.Generator().manual_seed(1)
    edge_time = {et: torch.randint(0, 1000, (len(r),), generator=gen).to(device) for et, r in g.row.items()}
    t0 = time.perf_counter()
    temporal = {f"{s}_{mode}": TemporalNeighborSampler(g, plain.num_neighbors, edge_time=edge_time,
                                                       temporal_strategy=s, seed=0, disjoint=mode == "disjoint")
                for s in ("uniform", "last") for mode in ("disjoint", "shared")}
    build_s = (time.perf_counter() - t0) / len(temporal)
    edges = sum(len(r) for r in g.row.values())

    def run(sampler, at=None):
        def fn(seeds):
            t = None if at is None else torch.full((len(seeds),), at, device=seeds.device)
            out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds.to(device), time=t,
                                                             input_type="user"))
            return sum(len(v) for v in out.row.values())
        return fn

    out = {"plain": _timed(run(plain), batches, device), "build_s_per_sampler": build_s,
           # the temporal mode keeps, per edge, its time (int64) and its store edge id (the segments are re-sorted)
           "extra_bytes_per_edge": 16, "graph_edges": edges}
    for strategy, sampler in temporal.items():
        for at in (1000, 500):
            r = _timed(run(sampler, at), batches, device)
            r["time_ratio_vs_plain"] = r["seconds"] / out["plain"]["seconds"]
            out[f"{strategy}_t{at}"] = r
            print(f"temporal {device.type} {strategy:16s} t={at:4d}: {r['edges_per_s'] / 1e6:6.2f} M edges/s, "
                  f"{r['time_ratio_vs_plain']:.2f}x the plain sampler's time per batch "
                  f"({r['edges'] / out['plain']['edges']:.2f}x its edges)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--avg-follows", type=float, default=20.0)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=30, help="batches per sampling mode")
    ap.add_argument("--train-batches", type=int, default=40, help="batches per training mode (0: skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--inference", type=int, default=1, help="1: also time layer-wise vs sampled inference")
    ap.add_argument("--inference-sampled-users", type=int, default=50_000)
    ap.add_argument("--sweep-batch-sizes", type=int, nargs="*", default=[],
                    help="the native sampler on every device over these batch sizes (e.g. 1024 4096 16384 65536)")
    ap.add_argument("--sweep-fanouts", nargs="+", default=["15,10", "20,15,10"],
                    help="fanouts of the sweep, comma-separated per hop")
    ap.add_argument("--sweep-seeds", type=int, default=65536, help="seeds per sweep point (at least one batch)")
    ap.add_argument("--temporal", type=int, default=1,
                    help="1: also time the native sampler's temporal mode against the plain one (same batches)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ripple.config import RippleConfig, SamplingConfig
    from ripple.context import WorkerContext
    from ripple.data import schema as S
    from ripple.data.dataset import Dataset
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.graph import load_local_graph
    from ripple.graph.access import LocalAccess
    from ripple.graph.local import local_stores
    from ripple.models.gnn import build_model
    from ripple.sampling import backends
    from ripple.sampling.loader import make_loader, make_sampler
    from ripple.sampling.prefetch import Prefetcher

    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if torch.cuda.is_available() else [])
    data = os.path.join(tempfile.mkdtemp(prefix="ripple-bench-"), "data")
    t0 = time.perf_counter()
    # labels do not change the graph: few label simulations keep generation short at 1M users
    generate(data, GeneratorConfig(users=args.users, avg_follows=args.avg_follows, seed=0, label_sims=5,
                                   max_labeled=max(20, min(200_000, args.users // 2))))
    gen_s = time.perf_counter() - t0
    graph = load_local_graph(Dataset(data))
    num_nodes = {t: graph.num_nodes(t) for t in S.NODE_TYPES}
    scfg = SamplingConfig(fanouts=[15, 10], batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    seeds = torch.from_numpy(rng.permutation(graph.num_nodes("user"))[: args.batches * args.batch_size])
    batches = list(seeds.split(args.batch_size))
    cfg_info = {"users": args.users, "edges": int(sum(len(r) for _, r in graph.csc.values())),
                "follows_edges": int(len(graph.csc[("user", "follows", "user")][1])), "generate_s": gen_s,
                "fanouts": scfg.fanouts, "batch_size": args.batch_size, "batches": len(batches),
                "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "torch_threads": args.threads, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "kernels_available": list(backends.available())}
    results: dict = {"config": cfg_info, "sampling": {}, "training": {}}

    samplers = {}
    host_fs, host_gs = local_stores(graph)
    if backends.available()[0] != "native":
        pyg = make_sampler(host_fs, host_gs, num_nodes, scfg, list(S.EDGE_TYPES), backends.available()[0])
        samplers[f"pyg_{backends.available()[0]}_cpu"] = (pyg, host_fs, host_gs, graph.edge_attr_tensors(),
                                                          torch.device("cpu"))
    for dev in devices:
        fs, gs = (host_fs, host_gs) if dev.type == "cpu" else local_stores(graph, dev)
        nat = make_sampler(fs, gs, num_nodes, scfg, list(S.EDGE_TYPES), "native", seed=0, device=dev)
        samplers[f"native_{dev.type}"] = (nat, fs, gs, graph.edge_attr_tensors(dev), dev)
    for name, (sampler, fs, gs, ea, dev) in samplers.items():
        s = _timed(count_sampler(sampler), batches, dev)
        ld = _timed(lambda b: sum(int(x[et].edge_index.size(1)) for x in make_loader(fs, gs, sampler, b, len(b), ea)
                                  for et in x.edge_types), batches, dev)
        results["sampling"][name] = {"sampler": s, "loader": ld}
        print(f"{name:24s} sampler {s['edges_per_s'] / 1e6:8.2f} M edges/s {s['seeds_per_s']:10.0f} seeds/s | "
              f"loader {ld['edges_per_s'] / 1e6:8.2f} M edges/s", flush=True)
    ref = next(iter(results["sampling"].values()))
    for r in results["sampling"].values():
        r["sampler_ratio_vs_first"] = r["sampler"]["edges_per_s"] / ref["sampler"]["edges_per_s"]
        r["loader_ratio_vs_first"] = r["loader"]["edges_per_s"] / ref["loader"]["edges_per_s"]
    results["reference_mode"] = next(iter(results["sampling"]))
    # the floor: one random read of a graph-sized array per sampled edge
    results["gather_limit"] = {dev.type: gather_limit(cfg_info["edges"], 1 << 20, dev) for dev in devices}
    for name, r in results["sampling"].items():
        lim = results["gather_limit"][name.rsplit("_", 1)[1]]
        r["fraction_of_gather_limit"] = {k.removesuffix("_per_s"): r["sampler"]["edges_per_s"] / v
                                         for k, v in lim.items()}
        print(f"{name:24s} sampler at {r['fraction_of_gather_limit']['index_select']:.1%} of the gather limit "
              f"({lim['index_select_per_s'] / 1e6:.0f}M random index_select reads/s; "
              f"{lim['advanced_index_per_s'] / 1e6:.0f}M/s with t[i])", flush=True)

    if args.temporal:
        results["temporal"] = {d.type: temporal_vs_plain(samplers[f"native_{d.type}"][0], batches, d)
                               for d in devices}

    # the sweep: sampled edges/s and seeds/s of the native sampler by batch size and depth, graph on the device
    results["sweep"] = []
    for dev in devices if args.sweep_batch_sizes else []:
        fs, gs = (host_fs, host_gs) if dev.type == "cpu" else local_stores(graph, dev)
        for fan in args.sweep_fanouts:
            fanouts = [int(f) for f in fan.split(",")]
            nat = make_sampler(fs, gs, num_nodes, SamplingConfig(fanouts=fanouts), list(S.EDGE_TYPES), "native",
                               seed=0, device=dev)
            for bs in args.sweep_batch_sizes:
                n = min(graph.num_nodes("user"), max(bs, args.sweep_seeds))
                sweep_batches = list(torch.from_numpy(rng.permutation(graph.num_nodes("user"))[:n]).split(bs))
                r = _timed(count_sampler(nat), sweep_batches, dev)
                results["sweep"].append({"device": dev.type, "fanouts": fanouts, "batch_size": bs,
                                         "batches": len(sweep_batches), **r})
                print(f"sweep {dev.type} {fan:>9s} batch {bs:6d}: {r['edges_per_s'] / 1e6:8.2f} M edges/s "
                      f"{r['seeds_per_s']:10.0f} seeds/s", flush=True)
            del nat

    # training: where sampling runs and whether it overlaps the model (the worker's device is the last one)
    dev = devices[-1]
    train_seeds = torch.from_numpy(graph.split_index("train"))[: args.train_batches * args.batch_size]
    modes = [("host_sampling", False, 0), ("host_sampling_prefetch", False, 2)]
    if dev.type == "cuda":
        modes += [("device_sampling", True, 0), ("device_sampling_prefetch", True, 2)]
    for name, on_device, depth in modes if args.train_batches else []:
        cfg = RippleConfig()
        cfg.sampling = SamplingConfig(fanouts=[15, 10], batch_size=args.batch_size, on_device=on_device,
                                      prefetch=depth, backend="auto")
        access = LocalAccess(graph, cfg, WorkerContext(device=torch.device(dev)), rng_seed=0)
        torch.manual_seed(0)
        model = build_model(cfg).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def epoch(seeds):
            batches_ = Prefetcher(access.loader(seeds, args.batch_size), dev, depth)
            n = 0
            for inp in batches_:
                pred, _ = model(inp.x, inp.edge_index, inp.edge_attr)
                loss = torch.nn.functional.mse_loss(pred[:inp.batch_size], inp.y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n += inp.batch_size
            return n, batches_.wait_s

        epoch(train_seeds[: 2 * args.batch_size])  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        n, wait = epoch(train_seeds)
        _sync(dev)
        dt = time.perf_counter() - t0
        results["training"][name] = {"seeds_per_s": n / dt, "seconds": dt, "seeds": n, "data_wait_s": wait,
                                     "device": str(dev), "kernel_backend": access.backend}
        print(f"train {name:26s} {n / dt:10.0f} seeds/s  waiting on data {wait / dt:5.1%}  ({access.backend})",
              flush=True)
    # inference: layer-wise over every user (every layer once over every edge) vs sampled mini-batches
    from ripple.models.layerwise import LayerwiseGraph, infer_local
    from ripple.train.worker import predict

    results["inference"] = {}
    cfg = RippleConfig()
    cfg.sampling = SamplingConfig(fanouts=[15, 10], batch_size=args.batch_size, backend="native")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    n_users = graph.num_nodes("user")
    for dev in devices if args.inference else []:
        lw = LayerwiseGraph.from_local(graph).to(dev)
        model.to(dev)
        _sync(dev)
        t0 = time.perf_counter()
        infer_local(model, lw)
        _sync(dev)
        lw_s = time.perf_counter() - t0
        cfg.sampling.on_device = dev.type == "cuda"
        sampled = LocalAccess(graph, cfg, WorkerContext(device=torch.device(dev)), rng_seed=0)
        some = torch.arange(min(n_users, args.inference_sampled_users))
        _sync(dev)
        t0 = time.perf_counter()
        predict(model, sampled, some, 4 * args.batch_size, dev)
        _sync(dev)
        sp_s = time.perf_counter() - t0
        results["inference"][dev.type] = {"layerwise_users_per_s": n_users / lw_s, "layerwise_seconds": lw_s,
                                          "sampled_users_per_s": len(some) / sp_s, "sampled_users": len(some)}
        print(f"inference {dev.type}: layer-wise {n_users / lw_s:10.0f} users/s ({lw_s:.1f}s for {n_users:,}) | "
              f"sampled {len(some) / sp_s:10.0f} users/s", flush=True)
        del lw, sampled
    results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available():
        results["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "device_sampling.json"), "w") as f:
        json.dump(results, f, indent=2)
    _plot(results, os.path.join(args.out, "device_sampling.png"))


def _plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = results["config"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(results["sampling"])
    x = np.arange(len(names))
    for i, kind in enumerate(("sampler", "loader")):
        axes[0].bar(x + (i - 0.5) * 0.38, [results["sampling"][n][kind]["edges_per_s"] / 1e6 for n in names], 0.38,
                    label=kind)
    axes[0].set_xticks(x, names, rotation=15, fontsize=8)
    axes[0].set_ylabel("M sampled edges / s")
    axes[0].legend()
    axes[0].set_title(f"{c['users']:,} users, {c['edges']:,} edges, fanouts {c['fanouts']}, batch {c['batch_size']}",
                      fontsize=9)
    t = results["training"]
    axes[1].bar(list(t), [v["seeds_per_s"] for v in t.values()])
    axes[1].set_ylabel("training seeds / s")
    axes[1].tick_params(axis="x", rotation=15, labelsize=8)
    axes[1].set_title(f"{c['gpu'] or c['cpu']} ({c['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
