"""Model ablation (issue I): each change to the GNN against the same graphs, side by side, next to the baselines.

For each generator seed: one graph of ``--users`` users (simulated labels), the baselines (follower count,
PageRank, LightGBM flat / 2-hop / engineered) and every variant trained in this process with the worker loop's own
steps (``ripple.train.local.fit_in_process``: same sampler, loss, early stopping), then test Spearman of the
best epoch's model scored layer-wise, as a run scores its users (``<variant>_sampled``: the same model on sampled
neighbourhoods). Variants are config overrides of the default model, so a row says exactly what changed.

    python -m benchmarks ablation --users 20000 --seeds 0 1 --jobs 2 --threads 1
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

#: name -> config overrides (dotted keys), applied to the default RippleConfig
VARIANTS = {
    # GATv2 attention alone (the model before issue I)
    "attention": {"model.sum_channel": False, "model.degree_scaler": False},
    "sum_channel": {"model.degree_scaler": False},
    # the default: sum channel with the degree scaler
    "sum_channel+degree_scaler": {},
    # the training budget: 4x the optimizer steps per epoch
    "+batch_64": {"sampling.batch_size": 64},
    # the product's own budget (ripple/config.py: 30 epochs, patience 8) rather than the ablation's 10 epochs
    "+budget_30": {"train.epochs": 30, "train.patience": 8},
    # a third hop: at branching 0.9 a cascade runs deeper than two hops, and reach is recursive (a follower's
    # reshare reaches its own followers with its own persuasiveness)
    "+3_layers": {"model.num_layers": 3, "sampling.fanouts": [15, 10, 5]},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=2, help="torch and LightGBM threads per seed's process")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run side by side in this many processes")
    ap.add_argument("--backend", default="native", help="sampling.backend of every variant (native: exact draws)")
    ap.add_argument("--work", default="/tmp/ripple-ablation")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--tag", default="", help="results go to model_ablation[_TAG].json|png (keeps earlier tables)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(run_seed, args.seeds, [args] * len(args.seeds)))
    else:
        rows = [run_seed(seed, args) for seed in args.seeds]
    os.makedirs(args.out, exist_ok=True)
    result = {"args": vars(args), "variants": {k: VARIANTS[k] for k in args.variants}, "rows": rows}
    stem = os.path.join(args.out, "model_ablation" + (f"_{args.tag}" if args.tag else ""))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    _plot(rows, args, stem + ".png")


def run_seed(seed: int, args) -> dict:
    """One generator seed's row: the baselines, then every variant trained and scored on the same graph."""
    import torch

    from ripple.config import from_dict
    from ripple.data.dataset import Dataset
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.graph import load_local_graph
    from ripple.evaluate.baselines import run_baselines
    from ripple.evaluate.compare import engineered_of
    from ripple.evaluate.metrics import spearman
    from ripple.train.local import fit_in_process

    torch.set_num_threads(args.threads)
    data = os.path.join(args.work, f"data-{args.users}-s{seed}")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        generate(data, GeneratorConfig(users=args.users, seed=seed))
    g = load_local_graph(Dataset(data))
    y = g.reach[g.split == "test"].astype(np.float64)
    src, dst = g.follows_coo()
    fc = np.rint(np.expm1(g.x["user"][:, 0].astype(np.float64)))
    t0 = time.perf_counter()
    base = run_baselines(g.x["user"], fc, src, dst, g.label_index, g.reach, g.split, seed=seed,
                         num_threads=args.threads, x_engineered=engineered_of(g))
    row = {"seed": seed, "users": args.users, "test_users": int(len(y)), "baselines_s": time.perf_counter() - t0,
           **{k: spearman(y, v) for k, v in base.items()},
           "label_reliability": spearman(y, g.replicate[g.split == "test"].astype(np.float64))}
    for name in args.variants:
        raw = {"train": {"epochs": args.epochs, "patience": args.patience}, "sampling": {"backend": args.backend}}
        for key, value in VARIANTS[name].items():
            section, field = key.split(".")
            raw.setdefault(section, {})[field] = value
        cfg = from_dict(raw, f"variant {name}")
        t0 = time.perf_counter()
        out = fit_in_process(g, cfg)
        row[name] = spearman(y, out["test_pred"])  # layer-wise, as a run scores its users
        row[f"{name}_sampled"] = spearman(y, out["test_pred_sampled"])
        row[f"{name}_s"] = time.perf_counter() - t0
        row[f"{name}_epochs"] = out["epochs"]
        print(f"seed {seed} {name}: {row[name]:.3f} (sampled {row[f'{name}_sampled']:.3f}; "
              f"{row[f'{name}_s']:.0f} s, {out['epochs']} epochs)", flush=True)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


def _plot(rows, args, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["follower_count", "lightgbm_flat", "lightgbm_2hop", "lightgbm_engineered", *args.variants]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        ax.bar(np.arange(len(names)) + i * width, [row[n] for n in names], width, label=f"seed {row['seed']}")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylabel("test Spearman")
    ax.set_ylim(0.2, 0.9)
    ax.set_title(f"model ablation: {args.users} users, {rows[0]['test_users']} test users per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
