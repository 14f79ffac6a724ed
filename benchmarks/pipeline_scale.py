"""Time and memory of every pipeline stage at growing graph sizes, and how each grows with the edge count.

For each size (follows edges; users = edges / --avg-follows) the stages run as the CLI a user runs, each in its own
process tree:
  generate   ``ripple generate``
  partition  ``ripple partition --num-parts P``
  train      ``ripple train --data PARTS --epochs 1`` (P GraphShard actors, W Ray Train workers), split by the
             CLI's stage log into train (one epoch) / embed (layer-wise inference + write-back) / evaluate
Memory is the peak over the stage of the summed PSS (proportional set size: shared pages such as Ray's object
store counted once) of the stage's whole process tree (the CLI, Ray's raylet/GCS, workers and actors), sampled
every --interval seconds. Per stage: seconds, peak PSS, PSS per edge, and the growth exponent b of
``cost ~ edges^b`` fitted over the sizes (b <= 1: linear or better).

    python benchmarks/pipeline_scale.py [--follows 1e6 1e7] [--parts 4] [--workers 2] [--work DIR] [--out DIR]
    python benchmarks/pipeline_scale.py --follows 1e8 --append     # the opt-in 100M-edge run, added to the JSON
    ... --resume: reuse the stages already measured in --work (generate, partition) after a late failure
    ... --until partition: only generate and partition (then measure the rest later with --resume)

Results: ``pipeline_scale.json`` and ``.png`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
from tree_memory import TreeMemory, describe

STAGES = ["generate", "partition", "train", "embed", "evaluate"]


# the console's stage line, ``[3/5] embed      (at 2m10s)`` (``ripple.console``), as it starts
_STAGE_LINE = re.compile(r"^\[\d+/\d+\] (\w+)\s")


def run_stage(cmd: list[str], interval: float, log_path: str) -> dict:
    """Run ``ripple ...`` as a subprocess; returns wall time, memory samples and the times of its stage log lines."""
    t0 = time.time()
    marks: list[tuple[float, str]] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ripple.cli", *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        mem = TreeMemory({"tree": proc.pid}, interval)
        for line in proc.stdout:
            log.write(line)
            stage = _STAGE_LINE.match(line)
            if stage:
                marks.append((time.time(), stage.group(1)))
        rc = proc.wait()
    mem.stop()
    if rc != 0:
        raise RuntimeError(f"`ripple {' '.join(cmd)}` exited {rc}; see {log_path}")
    return {"start": t0, "end": time.time(), "memory": mem, "marks": marks}


def _window(r: dict, a: float = 0, b: float = float("inf")) -> dict:
    """The peak of the stage's tree between two times, with its breakdown by process role and memory kind."""
    mem = r["memory"]
    return {"peak_pss_bytes": mem.peak(a, b)["tree"], "peak_breakdown": mem.breakdown(a, b)["tree"]}


def measure(follows: float, args) -> dict:
    users = int(follows / args.avg_follows)
    work = os.path.join(args.work, f"u{users}")
    data, parts, runs = (os.path.join(work, d) for d in ("data", "parts", "runs"))
    os.makedirs(work, exist_ok=True)
    cfg_path = os.path.join(work, "bench.yaml")
    with open(cfg_path, "w") as f:
        # PageRank / LightGBM baselines need the whole graph in one process: not what this measures
        f.write("eval: {baselines_max_edges: 0}\ntrain: {patience: 0}\n")
    out: dict = {"users": users, "stages": {}}
    done = _Done(work, args.resume)
    if not done.load(out, "generate"):
        r = run_stage(["generate", data, "--users", str(users), "--avg-follows", str(args.avg_follows)],
                      args.interval, os.path.join(work, "generate.log"))
        out["stages"]["generate"] = {"seconds": r["end"] - r["start"], **_window(r)}
        done.save(out, "generate")
    with open(os.path.join(data, "manifest.json")) as f:
        rows = json.load(f)["rows"]
    out["follows_edges"] = int(rows["follows"])
    out["edges"] = int(sum(v for k, v in rows.items() if k in ("follows", "shared", "created", "member_of",
                                                                 "reply_to")))
    if not done.load(out, "partition"):
        r = run_stage(["partition", data, "--num-parts", str(args.parts), "--out", parts], args.interval,
                      os.path.join(work, "partition.log"))
        out["stages"]["partition"] = {"seconds": r["end"] - r["start"], **_window(r)}
        done.save(out, "partition")
    if args.until == "partition":
        return None
    shutil.rmtree(runs, ignore_errors=True)  # a left-over run of the same name would resume, not train
    r = run_stage(["train", "--config", cfg_path, "--data", parts, "--storage-path", runs, "--run-name", "bench",
                   "--num-workers", str(args.workers), "--epochs", "1"], args.interval, os.path.join(work, "train.log"))
    marks = dict((name, t) for t, name in r["marks"])
    if not {"train", "embed", "evaluate"} <= set(marks):
        raise RuntimeError(f"`ripple train` printed stages {sorted(marks)}, not train/embed/evaluate: the stage "
                           f"split needs ripple.console's stage lines (see {os.path.join(work, 'train.log')})")
    bounds = [marks.get("train", r["start"]), marks.get("embed", r["end"]), marks.get("evaluate", r["end"]), r["end"]]
    for name, a, b in zip(["train", "embed", "evaluate"], bounds[:-1], bounds[1:]):
        out["stages"][name] = {"seconds": b - a, **_window(r, a, b)}
    with open(os.path.join(runs, "bench", "metrics.json")) as f:
        m = json.load(f)
    out["metrics"] = {"spearman_gnn": m["spearman"]["gnn"], "throughput": m["throughput"]}
    for s in out["stages"].values():
        s["pss_bytes_per_edge"] = s["peak_pss_bytes"] / out["edges"]
    print(f"{out['follows_edges']:>12,} follows / {out['edges']:,} edges: " + ", ".join(
        f"{k} {v['seconds']:.0f}s {v['peak_pss_bytes'] / 2**30:.2f}GiB" for k, v in out["stages"].items()), flush=True)
    for k, v in out["stages"].items():
        if "peak_breakdown" in v:
            print(f"  {k} peak: {describe(v['peak_breakdown'])}", flush=True)
    return out


class _Done:
    """With ``--resume``, stages already measured at this size (their output still in the work folder) are read
    back instead of re-run: a 100M-edge run that fails late need not regenerate and repartition."""

    def __init__(self, work: str, resume: bool):
        self.path, self.resume = os.path.join(work, "stages.json"), resume

    def load(self, out: dict, stage: str) -> bool:
        if not (self.resume and os.path.exists(self.path)):
            return False
        with open(self.path) as f:
            saved = json.load(f)
        if stage not in saved:
            return False
        out["stages"][stage] = {**saved[stage], "resumed": True}
        print(f"{stage}: measured earlier, reused ({saved[stage]['seconds']:.0f}s)", flush=True)
        return True

    def save(self, out: dict, stage: str) -> None:
        saved = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
        saved[stage] = out["stages"][stage]
        with open(self.path, "w") as f:
            json.dump(saved, f, indent=1)


def fit_exponents(rows: list[dict]) -> dict:
    """Per stage: b in ``cost = a * edges^b`` (least squares in log-log) for seconds and for peak memory."""
    if len(rows) < 2:
        return {}
    e = np.log([r["edges"] for r in rows])
    out = {}
    for s in STAGES:
        t = np.log([max(r["stages"][s]["seconds"], 1e-3) for r in rows])
        m = np.log([max(r["stages"][s]["peak_pss_bytes"], 1) for r in rows])
        out[s] = {"seconds": float(np.polyfit(e, t, 1)[0]), "peak_pss": float(np.polyfit(e, m, 1)[0])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--follows", type=float, nargs="+", default=[1e6, 1e7])
    ap.add_argument("--avg-follows", type=float, default=20.0)
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--interval", type=float, default=1.0, help="memory sampling period, seconds")
    ap.add_argument("--append", action="store_true", help="add these sizes to an existing pipeline_scale.json")
    ap.add_argument("--resume", action="store_true",
                    help="reuse stages already measured in --work (a re-run after a late failure)")
    ap.add_argument("--until", choices=["partition"],
                    help="stop after this stage (prepare a large size's data, then measure it later with --resume)")
    ap.add_argument("--work", default="/tmp/ripple-bench-scale")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    path = os.path.join(args.out, "pipeline_scale.json")
    rows = []
    if args.append and os.path.exists(path):
        with open(path) as f:
            rows = json.load(f)["sizes"]
    new = [r for r in (measure(f, args) for f in args.follows) if r is not None]
    if args.until:
        return
    sizes = {r["users"] for r in new}
    rows = [r for r in rows if r["users"] not in sizes] + new  # a re-measured size replaces the old row
    rows.sort(key=lambda r: r["edges"])
    result = {"config": {"parts": args.parts, "workers": args.workers, "avg_follows": args.avg_follows,
                         "cores": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total},
              "sizes": rows, "growth_exponents": fit_exponents(rows)}
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    _plot(result, os.path.join(args.out, "pipeline_scale.png"))
    for s, b in result["growth_exponents"].items():
        print(f"{s:10s} growth exponent: time {b['seconds']:.2f}, peak memory {b['peak_pss']:.2f}")


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["sizes"]
    e = [r["edges"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for s in STAGES:
        b = result["growth_exponents"].get(s, {})
        axes[0].loglog(e, [r["stages"][s]["seconds"] for r in rows], "o-", label=f"{s} (b={b.get('seconds', 0):.2f})")
        axes[1].loglog(e, [r["stages"][s]["peak_pss_bytes"] / 2**30 for r in rows], "o-",
                       label=f"{s} (b={b.get('peak_pss', 0):.2f})")
    axes[0].set_ylabel("seconds")
    axes[1].set_ylabel("peak PSS of the stage's processes, GiB")
    for ax in axes:
        ax.set_xlabel("edges (all relations)")
        ax.legend(fontsize=7)
    c = result["config"]
    fig.suptitle(f"{c['parts']} parts, {c['workers']} workers, {c['cores']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
