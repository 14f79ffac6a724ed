"""Influence maximization end to end: does ``ripple seeds`` pick seed sets that actually spread?

Generates a synthetic graph (``ripple generate``, >= 50k users by default), trains a run on it (``ripple train``, a
few epochs), then runs ``ripple seeds RUN --k K --evaluate``: ripple's overlap-aware greedy next to follower-count
top-K, PageRank top-K, DegreeDiscountIC (p = 0.01) and CELF greedy (Monte-Carlo on the truth probabilities, every
user a candidate), each seed set's expected independent-cascade spread measured with cynetdiff over ``--sims``
simulations on ``<data>/_truth/ic_edges``, at K = 10, 50, 100, with selection wall times.

The bar (issue F): at K = 50 ripple reaches >= 1.2x follower-count top-K and >= 90% of CELF, selecting >= 100x
faster than CELF. ``checks`` in the JSON says whether each holds on this run. The dataset and the run are cached
under ``--work`` (re-running skips what exists; ``--fresh`` starts over).

    python -m benchmarks seeds [--users 50000] [--epochs 6] [--num-workers 2] [--k 100] [--sims 1000]
                               [--work /tmp/ripple-bench-im] [--out benchmarks/results]

Writes ``influence_max.json`` and ``.png`` (spread vs K per method; selection time per method) under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

METHODS = ["ripple", "celf", "degree_discount", "pagerank", "follower_count"]
LABELS = {"ripple": "ripple (GNN reach + overlap greedy)", "celf": "CELF greedy (MC on truth)",
          "degree_discount": "DegreeDiscountIC (p=0.01)", "pagerank": "PageRank top-K",
          "follower_count": "follower count top-K"}


def _ripple(*args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "ripple.cli", *args]
    print("$ ripple " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        raise SystemExit(f"ripple {args[0]} failed with exit code {out.returncode}")
    return time.perf_counter() - t0, out.stdout


def checks(table: list[dict], k: int = 50) -> dict:
    """The issue's bar at ``k``: spread ratios to follower count and CELF, and CELF's selection time over ripple's."""
    at = {r["method"]: r for r in table if r["k"] == k}
    if not {"ripple", "follower_count", "celf"} <= set(at):
        return {}
    r, fc, cf = at["ripple"], at["follower_count"], at["celf"]
    out = {"k": k, "ripple_over_follower_count": r["spread_mean"] / fc["spread_mean"],
           "ripple_over_celf": r["spread_mean"] / cf["spread_mean"],
           "celf_time_over_ripple_time": cf["selection_s"] / max(r["selection_s"], 1e-9)}
    out["pass"] = {"spread >= 1.2x follower count": out["ripple_over_follower_count"] >= 1.2,
                   "spread >= 90% of CELF": out["ripple_over_celf"] >= 0.9,
                   "selection >= 100x faster than CELF": out["celf_time_over_ripple_time"] >= 100}
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["evaluation"]["table"]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for m in METHODS:
        rows = sorted((r for r in table if r["method"] == m), key=lambda r: r["k"])
        if not rows:
            continue
        ks = [r["k"] for r in rows]
        ax[0].errorbar(ks, [r["spread_mean"] for r in rows], yerr=[2 * r["spread_se"] for r in rows], marker="o",
                       capsize=3, label=LABELS[m])
        ax[1].plot(ks, [max(r["selection_s"], 1e-4) for r in rows], marker="o", label=LABELS[m])
    ax[0].set_xlabel("K (seeds)")
    ax[0].set_ylabel(f"expected IC spread (cynetdiff, {result['evaluation']['simulations']} sims, ±2 se)")
    ax[0].legend(fontsize=8, loc="center right")  # one legend: both panels use the same colours
    ax[1].set_xlabel("K (seeds)")
    ax[1].set_ylabel("selection wall time (s)")
    ax[1].set_yscale("log")
    c = result.get("checks") or {}
    title = f"influence maximization, {result['config']['users']} users, {result['config']['follows']} follows"
    if c:
        title += (f" — K={c['k']}: ripple {c['ripple_over_follower_count']:.2f}x follower count, "
                  f"{100 * c['ripple_over_celf']:.0f}% of CELF, {c['celf_time_over_ripple_time']:.0f}x faster")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0, help="generator seed")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=None)
    ap.add_argument("--run", default=None,
                    help="an existing trained run on a synthetic dataset: skip generate and train")
    ap.add_argument("--work", default="/tmp/ripple-bench-im")
    ap.add_argument("--fresh", action="store_true", help="regenerate the dataset and retrain")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()

    data = os.path.join(args.work, f"data-{args.users}-s{args.seed}")
    runs = os.path.join(args.work, "runs")
    name = f"im-{args.users}-s{args.seed}-e{args.epochs}"
    run = os.path.join(runs, name)
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    commands, timings = [], {}
    if args.run:
        from ripple.pipeline import load_run_config
        from ripple.run import source_dataset

        run = os.path.abspath(args.run)
        cfg = load_run_config(run)
        data = source_dataset(cfg.data, cfg.storage)
        commands.append(f"(existing run {run} on {data}, epochs {cfg.train.epochs}, workers "
                        f"{cfg.scaling.num_workers})")
    if not args.run and not os.path.exists(os.path.join(data, "manifest.json")):
        a = ["generate", data, "--users", str(args.users), "--seed", str(args.seed)]
        timings["generate_s"], _ = _ripple(*a)
        commands.append("ripple " + " ".join(a))
    if not args.run and not os.path.exists(os.path.join(run, "embeddings", "_manifest.json")):
        a = ["train", "--data", data, "--storage-path", runs, "--run-name", name, "--num-workers",
             str(args.num_workers), "--epochs", str(args.epochs)]
        timings["train_s"], _ = _ripple(*a)
        commands.append("ripple " + " ".join(a))
    a = ["seeds", run, "--k", str(args.k), "--evaluate", "--sims", str(args.sims)]
    if args.candidates:
        a += ["--candidates", str(args.candidates)]
    timings["seeds_evaluate_s"], stdout = _ripple(*a)
    commands.append("ripple " + " ".join(a))
    print(stdout)

    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(data, "manifest.json")) as f:
        manifest = json.load(f)
    rows, generator = manifest["rows"], manifest.get("generator") or {}
    with open(os.path.join(run, "config.yaml")) as f:
        import yaml

        run_cfg = yaml.safe_load(f)
    evaluation = metrics["influence_maximization"]
    result = {"config": {"users": rows["user"], "follows": rows["follows"], "ic_edges": rows.get("_truth/ic_edges"),
                         "generator_seed": generator.get("seed"), "epochs": run_cfg["train"]["epochs"],
                         "num_workers": run_cfg["scaling"]["num_workers"], "run": run,
                         "k": args.k, "sims": args.sims, "cpu_count": os.cpu_count(), "cpu": platform.machine()},
              "commands": commands, "timings": timings,
              "gnn": {"spearman": metrics["spearman"].get("gnn"), "ndcg_at_100": metrics["ndcg_at_100"].get("gnn")},
              "evaluation": evaluation, "checks": {k: checks(evaluation["table"], k) for k in (10, 50, 100)}}
    result["checks"] = result["checks"][50] | {"by_k": result["checks"]}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "influence_max.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, os.path.join(args.out, "influence_max.png"))
    print(f"{'method':<16} {'k':>4} {'spread':>18} {'selection_s':>12}")
    for r in sorted(evaluation["table"], key=lambda r: (METHODS.index(r["method"]), r["k"])):
        print(f"{r['method']:<16} {r['k']:>4} {r['spread_mean']:>10.1f} +- {r['spread_se']:<5.1f} "
              f"{r['selection_s']:>12.3f}")
    print(json.dumps({k: v for k, v in result["checks"].items() if k != "by_k"}, indent=1))


if __name__ == "__main__":
    main()
