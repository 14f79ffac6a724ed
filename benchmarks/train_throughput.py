"""Training seeds/s: ripple on Ray Train (DDP) against a plain single-process PyG loop of the same model.

All modes in one run, on one generated graph, with the same model (default ``ModelConfig``), loss, optimizer,
fanouts, global batch size and number of seeds per epoch (the training users, ``W * (len(train) // W)`` of them):
  * ``plain_pyg``: the whole graph as one ``HeteroData`` in this process, PyG's own ``NeighborLoader`` (pyg-lib or
    torch-sparse kernels, sampling in the training thread), ``torch.set_num_threads(T)``; one full epoch timed
    after a few warm-up batches;
  * ``ripple_ddp_auto`` / ``ripple_ddp_native``: ``ripple.train.driver.fit`` with W Ray Train workers of
    T / W CPUs each (gloo DDP), ``sampling.backend`` auto (PyG's kernels through ripple's ``NodeLoader`` path) or
    native (ripple's sampler), two epochs; the second epoch's ``train_seeds_per_s`` is reported (the first is
    warm-up);
  * ``ripple_1worker_auto``: the same with one worker of T CPUs (no DDP), to show the DDP overhead on its own.
``ratio_vs_plain_pyg`` is each mode's seeds/s over plain PyG's; the bar for 2 Ray-DDP workers is >= 1.0.

    python benchmarks/train_throughput.py [--users 100000] [--batch-size 256] [--workers 2] [--threads 2]
                                          [--data DIR] [--out benchmarks/results]

Writes ``train_throughput.json`` and ``.png`` to ``--out`` and prints one line per mode. Ray is started locally
with T CPUs (``ripple.pipeline.init_ray``) and shut down at the end; runs go to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

FANOUTS = [15, 10]


def _hetero_data(graph):
    """The whole ``LocalGraph`` as a PyG ``HeteroData``: x per node type, COO edge_index (row = src, col = dst)
    and edge_attr per relation (both in CSC order), y = log1p(reach) for labelled users (NaN otherwise)."""
    from torch_geometric.data import HeteroData

    data = HeteroData()
    for t, x in graph.x.items():
        data[t].x = torch.from_numpy(x)
    for et, (colptr, row) in graph.csc.items():
        colptr = torch.from_numpy(colptr)
        col = torch.repeat_interleave(torch.arange(len(colptr) - 1), colptr.diff())
        data[et].edge_index = torch.stack([torch.from_numpy(row), col])
        if et in graph.edge_attr:
            data[et].edge_attr = torch.from_numpy(graph.edge_attr[et])
    y = torch.full((graph.num_nodes("user"),), float("nan"))
    y[torch.from_numpy(graph.label_index)] = torch.from_numpy(np.log1p(graph.reach))
    data["user"].y = y
    return data


def plain_pyg(graph, cfg, seeds: torch.Tensor, threads: int, warmup_batches: int) -> dict:
    """One epoch of PyG's NeighborLoader + the model + AdamW in this process, after ``warmup_batches``."""
    from torch_geometric.loader import NeighborLoader

    from ripple.data import schema as S
    from ripple.models.gnn import build_model

    torch.set_num_threads(threads)
    data = _hetero_data(graph)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def loader(nodes):
        return NeighborLoader(data, num_neighbors={et: list(FANOUTS) for et in S.EDGE_TYPES},
                              batch_size=cfg.sampling.batch_size, input_nodes=("user", nodes), shuffle=True)

    def run(batches) -> tuple[int, int]:
        n_seen = n_edges = 0
        for batch in batches:
            bs = batch["user"].batch_size
            pred, _ = model(batch.x_dict, batch.edge_index_dict, batch.edge_attr_dict)
            loss = F.mse_loss(pred[:bs], batch["user"].y[:bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n_seen += bs
            n_edges += sum(int(v.size(1)) for v in batch.edge_index_dict.values())
        return n_seen, n_edges

    run(loader(seeds[: warmup_batches * cfg.sampling.batch_size]))  # warm-up: allocator, first kernel calls
    t0, cpu0 = time.perf_counter(), _cpu_s()
    n_seen, n_edges = run(loader(seeds))
    dt = time.perf_counter() - t0
    # cpu_s / seconds well below ``threads`` means other processes took the cores (intra-op threads then wait
    # on each other at every op: a loaded machine slows a T-thread loop far more than its lost CPU share)
    return {"seeds_per_s": n_seen / dt, "edges_per_s": n_edges / dt, "seconds": dt, "seeds": n_seen,
            "edges": n_edges, "threads": threads, "cpu_s": _cpu_s() - cpu0}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ripple_fit(base, name: str, workers: int, threads: int, backend: str, root: str, train_users: int) -> dict:
    """``fit`` with ``workers`` Ray Train workers of ``threads / workers`` CPUs, two epochs; the second's
    throughput. ``train_users``: the training split's size (each worker gets ``train_users // workers``)."""
    import dataclasses

    from ripple.config import SamplingConfig, ScalingConfig, TrainConfig
    from ripple.pipeline import init_ray
    from ripple.train.driver import fit

    cfg = dataclasses.replace(
        base, run_name=name, storage_path=os.path.join(root, "runs"),
        sampling=SamplingConfig(fanouts=list(FANOUTS), batch_size=base.sampling.batch_size, backend=backend),
        train=TrainConfig(epochs=2, patience=0, lr=base.train.lr, weight_decay=base.train.weight_decay,
                          seed=base.train.seed),
        scaling=ScalingConfig(num_workers=workers, cpus_per_worker=threads / workers))
    init_ray(cfg, log_to_driver=False)  # a local cluster of workers * cpus_per_worker = T CPUs (first call only)
    t0 = time.perf_counter()
    m = fit(cfg).last_metrics
    wall = time.perf_counter() - t0
    seeds_per_s, seeds = m["train_seeds_per_s"], workers * (train_users // workers)
    return {"seeds_per_s": seeds_per_s, "edges_per_s": m.get("train_edges_per_s"),
            # mean per-rank time of the measured (second) epoch: ripple's seeds/s = all ranks' seeds / that time
            "seconds": seeds / seeds_per_s, "seeds": seeds,
            "seeds_per_s_per_rank": m.get("train_seeds_per_s_per_rank"),
            "data_wait_fraction_per_rank": m.get("data_wait_fraction_per_rank"),
            "kernel_backend": m.get("kernel_backend"), "workers": workers, "cpus_per_worker": threads / workers,
            "torch_threads_per_worker": max(1, int(threads / workers)), "epoch": m.get("epoch"),
            "fit_wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=256, help="global batch (split over the Ray workers)")
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers of the DDP modes")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads of plain PyG = CPUs of the Ray cluster (threads / workers per worker)")
    ap.add_argument("--warmup-batches", type=int, default=3, help="plain PyG batches before the timed epoch")
    ap.add_argument("--skip-single-worker", action="store_true", help="skip the 1-worker ripple mode")
    ap.add_argument("--data", default=None, help="an existing dataset folder (default: generate --users)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    wall0 = time.perf_counter()

    import ray
    import torch_geometric

    from ripple.config import RippleConfig, SamplingConfig
    from ripple.data.dataset import Dataset
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.graph import load_local_graph
    from ripple.sampling import backends

    root = tempfile.mkdtemp(prefix="ripple-train-bench-")
    try:
        gen_s = None
        data = os.path.abspath(args.data) if args.data else os.path.join(root, "data")
        if not args.data:
            t0 = time.perf_counter()
            generate(data, GeneratorConfig(users=args.users, seed=0))
            gen_s = time.perf_counter() - t0
        graph = load_local_graph(Dataset(data))
        train = graph.split_index("train")
        per = len(train) // args.workers  # DDP: each worker gets len(train) // W seeds per epoch
        seeds = torch.from_numpy(train[: per * args.workers])
        cfg = RippleConfig(data=data, sampling=SamplingConfig(fanouts=list(FANOUTS), batch_size=args.batch_size))
        results: dict = {"config": {
            "users": graph.num_nodes("user"), "edges": int(sum(len(r) for _, r in graph.csc.values())),
            "follows_edges": int(len(graph.csc[("user", "follows", "user")][1])),
            "edges_per_relation": {et[1]: int(len(r)) for et, (_, r) in graph.csc.items()},
            "train_seeds_per_epoch": int(len(seeds)), "threads": args.threads, "workers": args.workers,
            "batch_size": args.batch_size, "fanouts": FANOUTS, "model": {"hidden": cfg.model.hidden,
                                                                         "heads": cfg.model.heads},
            "kernels_available": list(backends.available()), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "ray": ray.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "generate_s": gen_s, "data": args.data}, "modes": {}}

        def report(name: str, r: dict, load_before: float) -> None:
            # 1-minute load average around the mode: above ``threads`` the cores were shared with other work
            r["loadavg_1min_before_after"] = [load_before, os.getloadavg()[0]]
            results["modes"][name] = r
            ref = results["modes"]["plain_pyg"]["seeds_per_s"]
            r["ratio_vs_plain_pyg"] = r["seeds_per_s"] / ref
            extra = ""
            if "seeds_per_s_per_rank" in r:
                extra = (f"  per rank {[round(v) for v in r['seeds_per_s_per_rank']]} seeds/s, waiting on data "
                         f"{[f'{v:.0%}' for v in r['data_wait_fraction_per_rank']]} ({r['kernel_backend']}, "
                         f"fit {r['fit_wall_s']:.0f} s)")
            edges = f"{r['edges_per_s']:9.0f} edges/s" if r.get("edges_per_s") else ""
            if "cpu_s" in r:
                extra = f"  {r['threads']} threads, {r['cpu_s'] / r['seconds']:.2f} CPUs busy"
            print(f"{name:22s} {r['seeds_per_s']:8.1f} seeds/s {edges}  {r['ratio_vs_plain_pyg']:5.2f}x plain PyG"
                  f"{extra}  (load {r['loadavg_1min_before_after'][0]:.1f} -> {r['loadavg_1min_before_after'][1]:.1f})",
                  flush=True)

        load = os.getloadavg()[0]
        report("plain_pyg", plain_pyg(graph, cfg, seeds, args.threads, args.warmup_batches), load)
        del graph  # the Ray workers load their own copy
        modes = [(f"ripple_ddp{args.workers}_auto", args.workers, "auto"),
                 (f"ripple_ddp{args.workers}_native", args.workers, "native")]
        if not args.skip_single_worker and args.workers != 1:
            modes.append(("ripple_1worker_auto", 1, "auto"))
        try:
            for name, workers, backend in modes:
                load = os.getloadavg()[0]
                report(name, ripple_fit(cfg, name, workers, args.threads, backend, root, len(train)), load)
        finally:
            ray.shutdown()
        results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        results["wall_s"] = time.perf_counter() - wall0
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "train_throughput.json"), "w") as f:
            json.dump(results, f, indent=2)
        _plot(results, os.path.join(args.out, "train_throughput.png"))
        print(f"wrote {args.out}/train_throughput.json and .png ({results['wall_s']:.0f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, modes = results["config"], results["modes"]
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(modes)
    bars = ax.bar(names, [m["seeds_per_s"] for m in modes.values()],
                  color=["tab:gray"] + ["tab:blue"] * (len(names) - 1))
    for bar, m in zip(bars, modes.values()):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{m['ratio_vs_plain_pyg']:.2f}x",
                ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("training seeds / s")
    ax.tick_params(axis="x", rotation=12, labelsize=8)
    ax.set_title(f"{c['users']:,} users, {c['edges']:,} edges, batch {c['batch_size']}, fanouts {c['fanouts']}, "
                 f"{c['threads']} threads ({c['cpu_count']} cores, {c['kernels_available'][0]})", fontsize=9)
    ax.margins(y=0.12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
