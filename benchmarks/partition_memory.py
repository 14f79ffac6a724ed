"""Peak memory and time of ``ripple partition`` at several graph sizes: does memory follow edges or not?

Each size is generated once (cached under ``--work``), then partitioned in a fresh subprocess so its peak RSS is
its own; the baseline is the same subprocess importing ripple and doing nothing. Reports peak RSS, peak RSS above
the import baseline, and both per edge. Results: ``partition_memory.json`` and ``.png`` under ``--out``.

    python benchmarks/partition_memory.py [--users 50000 150000 500000] [--parts 4] [--chunk-rows 1048576]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
from ripple.config import PartitionConfig
from ripple.graph.partition import partition
data, out, parts, chunk, method = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t0 = time.perf_counter()
m = None if parts == 0 else partition(data, out, PartitionConfig(num_parts=parts, chunk_rows=chunk, method=method))
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "edges": m["stats"]["edges"] if m else 0, "edge_cut": m["edge_cut"] if m else None,
                  "stage_seconds": m["stats"]["stage_seconds"] if m else None}))
"""


def _child(*args) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[50_000, 150_000, 500_000])
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--chunk-rows", type=int, default=1 << 20)
    ap.add_argument("--method", default="lp")
    ap.add_argument("--work", default="/tmp/ripple-bench-partition")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()

    from ripple.data.dataset import DATASET_MANIFEST
    from ripple.data.generator import GeneratorConfig, generate

    baseline = _child("-", "-", 0, 1, "lp")["peak_rss_bytes"]
    rows = []
    for users in args.users:
        data = os.path.join(args.work, f"data-{users}")
        if not os.path.exists(os.path.join(data, DATASET_MANIFEST)):
            t0 = time.perf_counter()
            generate(data, GeneratorConfig(users=users, seed=0))
            print(f"generated {users} users in {time.perf_counter() - t0:.0f}s", flush=True)
        for method in dict.fromkeys([args.method, "hash"]):
            r = _child(data, os.path.join(args.work, f"parts-{users}-{method}"), args.parts, args.chunk_rows, method)
            r.update(users=users, method=method, above_baseline_bytes=r["peak_rss_bytes"] - baseline)
            r["bytes_per_edge"] = r["peak_rss_bytes"] / r["edges"]
            r["above_baseline_bytes_per_edge"] = r["above_baseline_bytes"] / r["edges"]
            rows.append(r)
            print(f"{users:>8} users {r['edges']:>10} edges {method:4s}: {r['seconds']:6.1f}s peak "
                  f"{r['peak_rss_bytes'] / 2**20:7.0f} MiB ({r['above_baseline_bytes'] / 2**20:6.0f} MiB above import "
                  f"baseline, {r['above_baseline_bytes_per_edge']:.1f} B/edge) follows cut {r['edge_cut']['follows']:.3f}",
                  flush=True)
    result = {"baseline_rss_bytes": baseline, "parts": args.parts, "chunk_rows": args.chunk_rows, "runs": rows,
              "cores": os.cpu_count()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "partition_memory.json"), "w") as f:
        json.dump(result, f, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        e = [r["edges"] / 1e6 for r in rs]
        ax[0].plot(e, [r["peak_rss_bytes"] / 2**20 for r in rs], "o-", label=f"{method}: peak RSS")
        ax[1].plot(e, [r["seconds"] for r in rs], "o-", label=method)
    ax[0].axhline(baseline / 2**20, color="gray", ls="--", label="import baseline")
    ax[0].set_xlabel("edges (millions)")
    ax[0].set_ylabel("MiB")
    ax[0].legend()
    ax[1].set_xlabel("edges (millions)")
    ax[1].set_ylabel("seconds")
    ax[1].legend()
    fig.suptitle(f"ripple partition, P={args.parts}, chunk_rows={args.chunk_rows}")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "partition_memory.png"), dpi=120)


if __name__ == "__main__":
    main()
