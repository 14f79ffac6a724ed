"""``ripple labels`` at growing history sizes: wall time and peak memory, and what the chunk size changes.

For each size (``--follows``, users = follows / avg-follows), ``ripple generate`` writes a post history (cached under
``--work``), then ``ripple labels`` cuts it at mid-history (T = day 60, H = 30 days) once per ``--chunk-rows``. Memory
is the peak PSS of the ``ripple labels`` process tree sampled every ``--interval`` seconds (the same sampler as
``benchmarks scale``). What ``ripple labels`` holds is per user, per past post and per window post/reshare; edge
tables stream in chunks, so the chunk size bounds the rest.

    python -m benchmarks labels [--follows 1e6 1e7] [--chunk-rows 1048576 262144] [--work /tmp/ripple-bench-labels]
                                [--out benchmarks/results]

Writes ``labels_scale.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys

from pipeline_scale import _window, run_stage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--follows", type=float, nargs="+", default=[1e6, 1e7])
    p.add_argument("--avg-follows", type=float, default=20.0)
    p.add_argument("--chunk-rows", type=int, nargs="+", default=[1 << 20, 1 << 18])
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--work", default="/tmp/ripple-bench-labels")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    rows = []
    for follows in args.follows:
        users = int(follows / args.avg_follows)
        work = os.path.join(args.work, f"u{users}")
        data = os.path.join(work, "data")
        os.makedirs(work, exist_ok=True)
        gen_s = None
        if not os.path.exists(os.path.join(data, "manifest.json")):
            r = run_stage(["generate", data, "--users", str(users), "--avg-follows", str(args.avg_follows)],
                          args.interval, os.path.join(work, "generate.log"))
            gen_s = r["end"] - r["start"]
        with open(os.path.join(data, "manifest.json")) as f:
            m = json.load(f)
        hist, table_rows = m["history"], m["rows"]
        horizon = (hist["end"] - hist["start"]) // 4
        for chunk in args.chunk_rows:
            out = os.path.join(work, f"labelled-{chunk}")
            shutil.rmtree(out, ignore_errors=True)
            r = run_stage(["labels", data, "--cutoff", str(hist["end"] - 2 * horizon), "--horizon", f"{horizon}s",
                           "--out", out, "--chunk-rows", str(chunk)], args.interval,
                          os.path.join(work, f"labels-{chunk}.log"))
            with open(os.path.join(out, "manifest.json")) as f:
                lm = json.load(f)
            edges = sum(table_rows[t] for t in ("follows", "shared", "created", "member_of", "reply_to"))
            row = {"users": users, "follows": table_rows["follows"], "edges": edges, "content": table_rows["content"],
                   "shared": table_rows["shared"], "chunk_rows": chunk, "generate_s": gen_s,
                   "labels_s": r["end"] - r["start"], "peak_pss_bytes": _window(r["samples"], 0, 1e18),
                   "labelled_users": lm["labels"]["labelled_users"], "window_posts": lm["labels"]["window_posts"],
                   "past_rows": lm["rows"]}
            row["pss_bytes_per_edge"] = row["peak_pss_bytes"] / edges
            rows.append(row)
            print(f"{edges:>12,} edges, chunk {chunk:>8,}: labels {row['labels_s']:.1f}s, peak PSS "
                  f"{row['peak_pss_bytes'] / 2**30:.2f} GiB ({row['pss_bytes_per_edge']:.1f} B/edge), "
                  f"{row['labelled_users']:,} users labelled", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    result = {"benchmark": "labels_scale", "host": platform.node(), "cpus": os.cpu_count(),
              "command": "python -m benchmarks labels " + " ".join(sys.argv[1:]), "rows": rows}
    with open(os.path.join(args.out, "labels_scale.json"), "w") as f:
        json.dump(result, f, indent=1)
    _plot(rows, os.path.join(args.out, "labels_scale.png"))


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for chunk in sorted({r["chunk_rows"] for r in rows}):
        rs = [r for r in rows if r["chunk_rows"] == chunk]
        e = [r["edges"] for r in rs]
        axes[0].loglog(e, [r["labels_s"] for r in rs], "o-", label=f"chunk {chunk:,} rows")
        axes[1].loglog(e, [r["peak_pss_bytes"] / 2**30 for r in rs], "o-", label=f"chunk {chunk:,} rows")
    axes[0].set_ylabel("ripple labels wall time, s")
    axes[1].set_ylabel("peak PSS of ripple labels, GiB")
    for ax in axes:
        ax.set_xlabel("edges in the history")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
