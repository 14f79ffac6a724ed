"""Learning from the whole history, judged on the next window: every model on a temporal split, one training
window against many.

Per dataset (generated graphs, one per generator seed, and the real Higgs Twitter history):
``ripple labels --every D --horizon H`` makes a training table at many cut times (the last cut tests, the one
before validates, the rest train: ``ripple.data.labels.temporal_roles``), and ``ripple labels --cutoffs`` with only
the latest training cut, the validation and the test cut makes the one-window table: the same validation and test
rows, one window of training rows instead of many. ``ripple train`` runs on each. Every model (the GNN, the hybrid,
follower count, PageRank, the LightGBMs) is scored on the same test rows, each row's features as of its time,
with bootstrap SEs; ``influence_score`` names the model chosen on validation. The generator and the models'
settings are never tuned against these results.

    python -m benchmarks temporal [--users 20000] [--seeds 0 1] [--every 7d] [--horizon 14d] [--epochs 10]
                                  [--higgs FILE] [--higgs-every 1d] [--higgs-horizon 1d] [--skip-higgs]
                                  [--reevaluate] [--tag _T] [--work /tmp/ripple-bench-temporal] [--out benchmarks/results]

Writes ``temporal_quality.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from history_quality import _ripple
from real_data import _json, write_results

MODELS = ["gnn", "hybrid", "stacked", "lightgbm_engineered", "lightgbm_2hop", "lightgbm_flat", "pagerank", "follower_count"]
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def reevaluate(run: str) -> float:
    """Evaluate a finished run again with the current code, as ``ripple train`` would have at its end: embeddings
    from its best checkpoint, then ``pipeline.evaluate_run``; its ``metrics.json`` takes the new evaluation (its
    training record is kept) and says so. Returns the seconds it took."""
    import time

    from ripple.infer.embed import write_embeddings
    from ripple.pipeline import evaluate_run, load_run_config
    from ripple.run import best_checkpoint

    t0 = time.perf_counter()
    cfg = load_run_config(run)
    checkpoint = best_checkpoint(cfg)
    write_embeddings(cfg, checkpoint)
    result = evaluate_run(cfg, cfg.data, checkpoint, sharded=False)
    path = os.path.join(run, "metrics.json")
    metrics = {**_json(path), **result.metrics, "reevaluated": "benchmarks temporal --reevaluate"}
    with open(path, "w") as f:
        json.dump(metrics, f, indent=1)
    return time.perf_counter() - t0


def _variant(name: str, data: str, work: str, label_args: list[str], args) -> dict:
    labelled, runs = os.path.join(work, f"labelled-{name}"), os.path.join(work, f"runs-{name}")
    done = os.path.join(runs, name, "metrics.json")
    if args.reevaluate and os.path.exists(done):  # trained: evaluated again only if it lacks a model
        stale = set(MODELS) - set(_json(done)["spearman"])
        seconds = {"reevaluate_s": reevaluate(os.path.join(runs, name))} if stale else {}
    else:
        seconds = {"labels_s": _ripple("labels", data, *label_args, "--out", labelled)}
        shutil.rmtree(runs, ignore_errors=True)
        seconds["train_s"] = _ripple("train", "--data", labelled, "--storage-path", runs, "--run-name", name,
                                     "--num-workers", str(args.num_workers), "--epochs", str(args.epochs))
    info = _json(os.path.join(labelled, "manifest.json"))["labels"]
    m = _json(done)
    cuts = info["cutoffs"]
    return {"variant": name, "cutoffs": [(c["cutoff_iso"], c["split"], c["labelled_users"]) for c in cuts],
            "train_rows": sum(c["labelled_users"] for c in cuts if c["split"] == "train"),
            "test_rows": m["test_users"], "test_reliability": cuts[-1]["reliability"],
            "spearman": {k: m["spearman"].get(k) for k in MODELS}, "spearman_se": m["spearman_se"],
            "spearman_diff_se": m["spearman_diff_se"], "val_spearman": m["val_spearman"],
            "influence_score": m["influence_score"], "spearman_active": m.get("spearman_active"),
            "spearman_active_se": m.get("spearman_active_se"), "active_test_users": m.get("active_test_users"),
            "spearman_vs_truth": m.get("spearman_vs_truth"), "oracle": m["spearman"].get("oracle"),
            "label_reliability": m["spearman"].get("label_reliability"), "best_epoch": m["best_epoch"],
            "seconds": seconds}


def _one_window(labelled_many: str) -> list[str]:
    """The one-window table's cut times: the many-window table's latest training cut, its validation and test."""
    cuts = _json(os.path.join(labelled_many, "manifest.json"))["labels"]["cutoffs"]
    train = [c["cutoff"] for c in cuts if c["split"] == "train"]
    return [str(train[-1]), *(str(c["cutoff"]) for c in cuts if c["split"] != "train")]


def _dataset(name: str, data: str, work: str, every: str, horizon: str, args) -> dict:
    many = _variant("many", data, work, ["--every", every, "--horizon", horizon], args)
    one = _variant("one", data, work, ["--cutoffs", ",".join(_one_window(os.path.join(work, "labelled-many"))),
                                       "--horizon", horizon], args)
    row = {"dataset": name, "every": every, "horizon": horizon, "many": many, "one": one}
    best_lgbm = max(many["spearman"][k] for k in MODELS if k.startswith("lightgbm"))
    written = many["influence_score"]["model"]
    row["goal"] = {"written_model": written, "written": many["spearman"][written], "best_lightgbm": best_lgbm,
                   "gnn": many["spearman"]["gnn"], "lead": many["spearman"][written] - best_lgbm,
                   "met (written >= best LightGBM + 0.02)": many["spearman"][written] >= best_lgbm + 0.02}
    print(json.dumps({"dataset": name, "many": many["spearman"], "one": one["spearman"], "goal": row["goal"]},
                     indent=1), flush=True)
    return row


def generated(seed: int, args) -> dict:
    work = os.path.join(args.work, f"u{args.users}-s{seed}")
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        _ripple("generate", data, "--users", str(args.users), "--seed", str(seed))
    return _dataset(f"generated seed {seed}", data, work, args.every, args.horizon, args)


def higgs(args) -> dict:
    work = os.path.join(args.work, "higgs")
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        _ripple("import", "snap-activity", args.higgs, "--out", data)
    return _dataset("higgs", data, work, args.higgs_every, args.higgs_horizon, args)


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4.5), squeeze=False)
    x = np.arange(len(MODELS))
    for ax, r in zip(axes[0], rows):
        for i, v in enumerate(("many", "one")):
            sp, se = r[v]["spearman"], r[v]["spearman_se"]
            ax.bar(x + i * 0.4, [sp.get(m) or 0 for m in MODELS], 0.4,
                   yerr=[se.get(m, 0) for m in MODELS], label=f"{v} training window(s)", capsize=2)
        ax.set_xticks(x + 0.2, MODELS, rotation=30, fontsize=8)
        ax.set_title(f"{r['dataset']}: test Spearman, {r['many']['test_rows']:,} test rows", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle("temporal split: trained on windows before T_val, tested on [T_test, T_test + H)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--every", default="7d")
    p.add_argument("--horizon", default="14d")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--higgs", default=os.path.join(SHARED, "higgs-twitter", "higgs-activity_time.txt.gz"))
    p.add_argument("--higgs-every", default="1d")
    p.add_argument("--higgs-horizon", default="1d")
    p.add_argument("--skip-higgs", action="store_true")
    p.add_argument("--skip-generated", action="store_true")
    p.add_argument("--reevaluate", action="store_true",
                   help="runs already trained under --work are kept, not retrained; those whose metrics lack a model "
                        "are evaluated again with the current code")
    p.add_argument("--tag", default="", help="suffix of the results' file names")
    p.add_argument("--work", default="/tmp/ripple-bench-temporal")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    args.higgs = os.path.abspath(args.higgs)
    rows = [] if args.skip_generated else [generated(s, args) for s in args.seeds]
    if not args.skip_higgs:
        rows.append(higgs(args))
    write_results(args.out, "temporal_quality" + ("_higgs" if args.skip_generated else "") + args.tag, "temporal",
                  {"rows": rows}, _plot, rows)


if __name__ == "__main__":
    main()
