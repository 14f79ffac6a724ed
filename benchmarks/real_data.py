"""Real cascades: SNAP's Higgs Twitter activity (and the StackExchange Android cascade set) through the whole path.

Higgs: ``ripple import snap-activity`` (time and peak PSS), then per cut point T (default 2012-07-03, -04 and -05,
H = 1 day) ``ripple labels`` (time and peak PSS) and ``ripple train`` with 2 Ray workers. Every model (GNN,
follower count, PageRank, LightGBM flat / 2-hop / engineered) is scored on the same labelled test users against
their future observed reach, with a paired bootstrap standard error over those users (``spearman_se``, and the SE
of the GNN's lead over each model, ``spearman_diff_se``), the labels' split-half reliability and the number of
labelled test users. ``--variants`` trains more model configurations on the same labels; the one reported as
``gnn`` is the one with the best *validation* Spearman (never the test's), and every variant's validation and test
numbers are kept.

Android: ``ripple import cascades --edges`` -> ``labels`` (T at the 70th percentile of post times, the window up to
their 85th) -> ``train``,
reported with its number of labelled test users, which says whether it means anything.

    python -m benchmarks real [--higgs FILE] [--android DIR] [--cutoffs 2012-07-03 2012-07-04 2012-07-05]
                              [--horizon 1d] [--epochs 30] [--num-workers 2] [--variants NAME=YAML ...]
                              [--work /tmp/ripple-bench-real] [--out benchmarks/results] [--reuse]

Writes ``real_data.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys

import numpy as np
from pipeline_scale import _window, run_stage

MODELS = ["gnn", "lightgbm_engineered", "lightgbm_2hop", "lightgbm_flat", "pagerank", "follower_count"]
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data")


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _stage(cmd: list[str], work: str, name: str, interval: float) -> dict:
    r = run_stage(cmd, interval, os.path.join(work, f"{name}.log"))
    return {"seconds": round(r["end"] - r["start"], 2), "peak_pss_bytes": _window(r)["peak_pss_bytes"]}


def _train(data: str, runs: str, run: str, args, config: str | None, work: str) -> dict:
    metrics = os.path.join(runs, run, "metrics.json")
    done = os.path.join(work, f"train-{run}.json")
    if args.reuse and os.path.exists(metrics):  # its labels are deterministic: the same run
        stage = _json(done) if os.path.exists(done) else {"seconds": None, "peak_pss_bytes": None}
        return {"stage": stage, "metrics": _json(metrics), "val_spearman": _json(metrics).get("best_val_spearman")}
    shutil.rmtree(os.path.join(runs, run), ignore_errors=True)
    cmd = ["train", "--data", data, "--storage-path", runs, "--run-name", run, "--num-workers",
           str(args.num_workers), "--epochs", str(args.epochs)]
    if config:
        cmd += ["--config", config]
    stage = _stage(cmd, work, f"train-{run}", args.interval)
    with open(done, "w") as f:
        json.dump(stage, f)
    m = _json(metrics)
    return {"stage": stage, "metrics": m, "val_spearman": m.get("best_val_spearman")}


def _variant_configs(args, work: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"default": None}
    for spec in args.variants:
        name, _, yaml_text = spec.partition("=")
        path = os.path.join(work, f"variant-{name}.yaml")
        with open(path, "w") as f:
            f.write(yaml_text.replace("; ", "\n"))
        out[name] = path
    return out


def _row(dataset: str, cutoff: str, labelled: str, trained: dict[str, dict], labels_stage: dict) -> dict:
    info = _json(os.path.join(labelled, "manifest.json"))
    lab = info["labels"]
    chosen = max(trained, key=lambda k: (trained[k]["val_spearman"] or float("-inf")))
    m = trained[chosen]["metrics"]
    sp = m["spearman"]
    row = {"dataset": dataset, "cutoff": cutoff, "horizon_s": lab["horizon_s"], "labels_stage": labels_stage,
           "labelled_users": lab["labelled_users"], "window_posts": lab["window_posts"],
           "test_users": m.get("test_users"), "past_rows": info["rows"],
           "spearman": {k: sp.get(k) for k in MODELS}, "spearman_se": m.get("spearman_se", {}),
           "spearman_diff_se": m.get("spearman_diff_se", {}), "label_reliability": sp.get("label_reliability"),
           "active_test_users": m.get("active_test_users"),
           "spearman_active": {k: m.get("spearman_active", {}).get(k) for k in MODELS},
           "spearman_active_se": m.get("spearman_active_se", {}),
           "spearman_active_diff_se": m.get("spearman_active_diff_se", {}),
           "reliability": lab["reliability"], "kendall": m["kendall"], "ndcg_at_100": m["ndcg_at_100"],
           "gnn_variant": chosen, "best_epoch": m.get("best_epoch"),
           "variants": {k: {"val_spearman": v["val_spearman"], "test_spearman": v["metrics"]["spearman"]["gnn"],
                            "train": v["stage"]} for k, v in trained.items()}}
    best_other = max((k for k in MODELS if k != "gnn"), key=lambda k: sp[k])
    row["leader"] = max(MODELS, key=lambda k: sp[k])
    row["gnn_minus_best_baseline"] = {"baseline": best_other, "gap": sp["gnn"] - sp[best_other],
                                      "paired_se": row["spearman_diff_se"].get(best_other)}
    print(json.dumps({k: row[k] for k in ("dataset", "cutoff", "test_users", "spearman", "label_reliability",
                                          "gnn_variant", "gnn_minus_best_baseline", "active_test_users",
                                          "spearman_active")}, indent=1), flush=True)
    return row


def higgs(args) -> tuple[dict, list[dict]]:
    work = os.path.join(args.work, "higgs")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    imp = _stage(["import", "snap-activity", args.higgs, "--out", data], work, "import", args.interval)
    manifest = _json(os.path.join(data, "manifest.json"))
    imported = {"stage": imp, "rows": manifest["rows"], "history": manifest["history"], "source": manifest["source"]}
    print(f"import: {imp['seconds']:.1f}s, peak PSS {imp['peak_pss_bytes'] / 2**20:.0f} MiB, {manifest['rows']}",
          flush=True)
    variants = _variant_configs(args, work)
    rows = []
    for cutoff in args.cutoffs:
        labelled = os.path.join(work, f"labelled-{cutoff}")
        shutil.rmtree(labelled, ignore_errors=True)
        lst = _stage(["labels", data, "--cutoff", cutoff, "--horizon", args.horizon, "--out", labelled], work,
                     f"labels-{cutoff}", args.interval)
        print(f"labels at {cutoff}: {lst['seconds']:.1f}s, peak PSS {lst['peak_pss_bytes'] / 2**20:.0f} MiB",
              flush=True)
        runs = os.path.join(work, "runs")
        trained = {name: _train(labelled, runs, f"{cutoff}-{name}", args, cfg, work) for name, cfg in variants.items()}
        rows.append(_row("higgs", cutoff, labelled, trained, lst))
    return imported, rows


def android(args) -> tuple[dict, list[dict]]:
    work = os.path.join(args.work, "android")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    imp = _stage(["import", "cascades", os.path.join(args.android, "cascades.txt"), "--edges",
                  os.path.join(args.android, "edges.txt"), "--out", data], work, "import", args.interval)
    manifest = _json(os.path.join(data, "manifest.json"))
    h = manifest["history"]
    # posts are created over the first third of the history and answered for years after: cut by post times,
    # T at their 70th percentile and the window up to their 85th (a fixed rule, not tuned on any result)
    from ripple.data.dataset import Dataset

    created = Dataset(data).read("created", ["timestamp"])["timestamp"].to_numpy()
    t70, t85 = (int(x) for x in np.percentile(created, [70, 85]))
    cutoff, horizon = str(t70), f"{t85 - t70}s"
    labelled = os.path.join(work, "labelled")
    shutil.rmtree(labelled, ignore_errors=True)
    lst = _stage(["labels", data, "--cutoff", cutoff, "--horizon", horizon, "--out", labelled], work, "labels",
                 args.interval)
    trained = {"default": _train(labelled, os.path.join(work, "runs"), "default", args, None, work)}
    row = _row("android", cutoff, labelled, trained, lst)
    row["meaningful"] = (row["test_users"] or 0) >= 3000
    return {"stage": imp, "rows": manifest["rows"], "history": h, "source": manifest["source"]}, [row]


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), sharey=True)
    x = np.arange(len(MODELS))
    w = 0.8 / len(rows)
    for ax, key, users, title in ((axes[0], "spearman", "test_users", "all labelled test users"),
                                  (axes[1], "spearman_active", "active_test_users",
                                   "test users with past activity")):
        for i, r in enumerate(rows):
            if not any(v is not None for v in r[key].values()):  # no slice: every test user has a past
                continue
            ax.bar(x + i * w, [r[key].get(m) or 0 for m in MODELS], w,
                   yerr=[r[f"{key}_se"].get(m, 0) for m in MODELS], capsize=2,
                   label=f"{r['dataset']} T={r['cutoff']} ({r[users] or 0:,} users)")
            if key == "spearman":
                ax.axhline(r["label_reliability"] or 0, ls="--", lw=1, color=f"C{i}")
        ax.set_xticks(x + w * (len(rows) - 1) / 2, MODELS, rotation=15)
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test Spearman vs future reach (± bootstrap SE)")
    fig.suptitle("real cascades: every model on the same test users (dashed: split-half reliability)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--higgs", default=os.path.join(SHARED, "higgs-twitter", "higgs-activity_time.txt.gz"))
    p.add_argument("--android", default=os.path.join(SHARED, "stackexchange-android"))
    p.add_argument("--cutoffs", nargs="+", default=["2012-07-03", "2012-07-04", "2012-07-05"])
    p.add_argument("--horizon", default="1d")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--variants", nargs="*", default=[],
                   help="NAME=YAML (lines joined by '; '), e.g. 'small=model: {hidden: 32}'")
    p.add_argument("--skip-android", action="store_true")
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--work", default="/tmp/ripple-bench-real")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--reuse", action="store_true",
                   help="keep a training run already finished under --work (its labels are deterministic)")
    p.add_argument("--tag", default="", help="suffix of the result files (real_data<tag>.json)")
    args = p.parse_args()
    args.higgs, args.android = os.path.abspath(args.higgs), os.path.abspath(args.android)
    imports, rows = {}, []
    imports["higgs"], higgs_rows = higgs(args)
    rows += higgs_rows
    if not args.skip_android:
        imports["android"], android_rows = android(args)
        rows += android_rows
    write_results(args.out, f"real_data{args.tag}", "real", {"imports": imports, "rows": rows}, _plot, rows)


def write_results(out: str, name: str, verb: str, result: dict, plot, rows: list[dict]) -> None:
    """``<out>/<name>.json`` (with the host and the command that made it) and ``<name>.png`` (``plot(rows, path)``)."""
    os.makedirs(out, exist_ok=True)
    result = {"benchmark": name, "host": platform.node(), "cpus": os.cpu_count(),
              "command": f"python -m benchmarks {verb} " + " ".join(sys.argv[1:]), **result}
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(rows, os.path.join(out, f"{name}.png"))
    print(f"wrote {out}/{name}.json and .png")


if __name__ == "__main__":
    main()
