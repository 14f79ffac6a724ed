"""Learning from a cascade history: does the GNN beat the baselines on the *future* observed reach?

Per generator seed: ``ripple generate`` (a post history over 120 days), ``ripple labels`` cut at mid-history (T =
day 60, H = 30 days: past-only graph, labels = reach of the posts of [T, T+H) observed within H), ``ripple train``
with 2 Ray workers on the labelled dataset. Every model (GNN, follower count, PageRank, LightGBM flat / 2-hop /
engineered) is scored on the same test users against the future observed reach (the label) and against the
generator's hidden ``_truth/users.expected_reach`` (how well each recovers true influence from noisy labels), next
to the labels' split-half reliability and the oracle (the truth scored against the label). The generator is never
tuned against these results.

    python -m benchmarks history [--users 40000] [--seeds 0 1] [--epochs 30] [--num-workers 2]
                                 [--work /tmp/ripple-bench-history] [--out benchmarks/results]

Writes ``history_quality.json`` and ``.png``. ``checks`` says, per seed, whether GNN > LightGBM(flat) > follower
count on the future observed reach.
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

MODELS = ["gnn", "lightgbm_engineered", "lightgbm_2hop", "lightgbm_flat", "pagerank", "follower_count"]


def _ripple(*args: str) -> float:
    print("$ ripple " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ripple.cli", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        raise SystemExit(f"ripple {args[0]} failed with exit code {out.returncode}")
    return time.perf_counter() - t0


def run_seed(seed: int, args) -> dict:
    work = os.path.join(args.work, f"u{args.users}-s{seed}")
    data, labelled, runs = (os.path.join(work, d) for d in ("data", "labelled", "runs"))
    times = {}
    if not os.path.exists(os.path.join(data, "manifest.json")):
        times["generate_s"] = _ripple("generate", data, "--users", str(args.users), "--seed", str(seed))
    with open(os.path.join(data, "manifest.json")) as f:
        hist = json.load(f)["history"]
    horizon = (hist["end"] - hist["start"]) // 4
    cutoff = hist["end"] - 2 * horizon
    times["labels_s"] = _ripple("labels", data, "--cutoff", str(cutoff), "--horizon", f"{horizon}s", "--out", labelled,
                                "--split-seed", str(seed))
    shutil.rmtree(runs, ignore_errors=True)
    times["train_s"] = _ripple("train", "--data", labelled, "--storage-path", runs, "--run-name", "history",
                               "--num-workers", str(args.num_workers), "--epochs", str(args.epochs))
    with open(os.path.join(labelled, "manifest.json")) as f:
        info = json.load(f)["labels"]
    with open(os.path.join(runs, "history", "metrics.json")) as f:
        m = json.load(f)
    sp, truth = m["spearman"], m.get("spearman_vs_truth", {})
    row = {"seed": seed, "users": args.users, "cutoff": cutoff, "horizon_s": horizon,
           "labelled_users": info["labelled_users"], "test_users_with_2_posts": info["reliability"]["test"]["users"],
           "window_posts": info["window_posts"], "reliability": info["reliability"],
           "spearman_vs_label": {k: sp[k] for k in MODELS}, "label_reliability": sp["label_reliability"],
           "oracle": sp.get("oracle"),
           "spearman_vs_truth": truth, "kendall": m["kendall"], "ndcg_at_100": m["ndcg_at_100"],
           "best_epoch": m["best_epoch"], "seconds": times}
    row["checks"] = {"gnn > lightgbm_flat": sp["gnn"] > sp["lightgbm_flat"],
                     "gnn >= lightgbm_engineered - 0.01": sp["gnn"] >= sp["lightgbm_engineered"] - 0.01,
                     "lightgbm_flat > follower_count": sp["lightgbm_flat"] > sp["follower_count"]}
    print(json.dumps({k: row[k] for k in ("seed", "labelled_users", "spearman_vs_label", "label_reliability",
                                          "spearman_vs_truth", "checks")}, indent=1), flush=True)
    return row


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    x = np.arange(len(MODELS))
    w = 0.8 / len(rows)
    for ax, key, title in ((axes[0], "spearman_vs_label", "vs future observed reach (label)"),
                           (axes[1], "spearman_vs_truth", "vs expected reach (hidden truth)")):
        for i, r in enumerate(rows):
            ax.bar(x + i * w, [r[key].get(m, 0) for m in MODELS], w, label=f"seed {r['seed']}")
        ax.set_xticks(x + w * (len(rows) - 1) / 2, MODELS, rotation=20)
        ax.set_title(f"test Spearman {title}")
    for i, r in enumerate(rows):
        axes[0].axhline(r["label_reliability"], ls="--", lw=1, color=f"C{i}",
                        label=f"seed {r['seed']} split-half reliability")
        if "label" in r["spearman_vs_truth"]:
            axes[1].axhline(r["spearman_vs_truth"]["label"], ls="--", lw=1, color=f"C{i}",
                            label=f"seed {r['seed']}: the label itself")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"history labels, {rows[0]['users']:,} users per graph")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=40000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--work", default="/tmp/ripple-bench-history")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    rows = [run_seed(s, args) for s in args.seeds]
    os.makedirs(args.out, exist_ok=True)
    result = {"benchmark": "history_quality", "host": platform.node(), "cpus": os.cpu_count(),
              "command": "python -m benchmarks history " + " ".join(sys.argv[1:]), "rows": rows,
              "all_checks_pass": all(all(r["checks"].values()) for r in rows)}
    with open(os.path.join(args.out, "history_quality.json"), "w") as f:
        json.dump(result, f, indent=1)
    _plot(rows, os.path.join(args.out, "history_quality.png"))
    print(f"wrote {args.out}/history_quality.json and .png; all checks pass: {result['all_checks_pass']}")


if __name__ == "__main__":
    main()
