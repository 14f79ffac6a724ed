"""Scale-out on simulated Ray nodes: per-node peak memory, cross-node traffic per epoch, embedding time.

One partitioned graph, trained and embedded on clusters of 1, 2, 4 ... nodes built with ``ray.cluster_utils.Cluster``
(the way Ray tests itself: each node its own raylet, object store and worker processes, all on this machine), one
Ray Train worker per node (``scaling.placement_strategy: SPREAD``). Per node count:

* per-node peak PSS during training and during embedding: the raylet and every process it started (trainers,
  shard actors, layer-wise workers, with the node's object store pages counted once), sampled every second; the
  head's GCS and dashboard and this driver process are left out (a fixed cost of the head, not of the graph);
* what one training epoch moved across node boundaries (``metrics["traffic"]``: sampling replies and feature rows,
  bytes per sampled edge), and what the embedding moved (halo states, feature rows);
* the training epoch's and the embedding's wall time.

    python -m benchmarks multinode --users 500000 --nodes 1 2 4 --parts 4 --epochs 1
    python -m benchmarks multinode --users 3000 --nodes 1 3 --parts 4 --tag 3k

Each node has ``--cpus`` logical CPUs: they are this machine's 2 cores shared, so wall times measure overheads and
contention, not the speed of real separate machines. Bytes and memory do not depend on that.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
from tree_memory import TreeMemory


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def run_nodes(n: int, parts: str, args) -> dict:
    """Train ``args.epochs`` epochs and embed every user on an ``n``-node cluster; returns the row."""
    import ray
    from ray.cluster_utils import Cluster

    from ripple.config import load_config
    from ripple.infer.embed import write_embeddings
    from ripple.train.driver import fit

    node_args = {"num_cpus": args.cpus, "object_store_memory": int(args.object_store_gb * 2**30)}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": True,
                                                             "dashboard_port": 0})
    for _ in range(n - 1):
        cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    cluster.connect()
    nodes = {node.node_id: _raylet_pid(node) for node in cluster.list_all_nodes()}
    mem = TreeMemory(nodes)
    try:
        time.sleep(3)
        idle = mem.peak(time.time() - 3, time.time())
        cfg = load_config(None, {"data": parts, "storage_path": os.path.join(args.work, "runs"),
                                 "run_name": f"nodes{n}-{int(time.time())}", "scaling.num_workers": n,
                                 "scaling.cpus_per_worker": args.cpus, "train.epochs": args.epochs,
                                 "sampling.batch_size": args.batch_size})
        t0 = time.time()
        outcome = fit(cfg)
        t1 = time.time()
        manifest = write_embeddings(cfg, outcome.best_checkpoint)
        t2 = time.time()
    finally:
        mem.stop()
        ray.shutdown()
        cluster.shutdown()
    last = outcome.last_metrics
    train_peak, embed_peak = mem.peak(t0, t1), mem.peak(t1, t2)
    traffic = last["traffic"]
    row = {"nodes": n, "train_workers": n, "fit_s": t1 - t0, "epoch_s": last["epoch_s"],
           "train_seeds_per_s": last["train_seeds_per_s"], "embed_s": t2 - t1, "embedded_users": manifest["rows"],
           "idle_node_pss": list(idle.values()),
           "train_peak_node_pss": list(train_peak.values()), "embed_peak_node_pss": list(embed_peak.values()),
           "train_epoch_cross_node_bytes": traffic["cross_node_bytes"],
           "train_epoch_sampled_edges": traffic["sampled_edges"],
           "train_cross_node_bytes_per_sampled_edge": traffic["cross_node_bytes_per_sampled_edge"],
           "train_traffic": traffic, "embed_traffic": manifest["traffic"],
           "embed_cross_node_bytes": manifest["traffic"]["cross_node_bytes"],
           "train_peak_breakdown": list(mem.breakdown(t0, t1).values()),
           "embed_peak_breakdown": list(mem.breakdown(t1, t2).values()),
           "placement": last.get("placement")}
    print(json.dumps({k: v for k, v in row.items() if k not in ("train_traffic", "embed_traffic", "placement",
                                                               "train_peak_breakdown", "embed_peak_breakdown")}),
          flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--cpus", type=int, default=1, help="logical CPUs per simulated node")
    ap.add_argument("--object-store-gb", type=float, default=2.0, help="object store per simulated node")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/ripple-multinode")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")

    from ripple.config import PartitionConfig
    from ripple.data.generator import GeneratorConfig, generate
    from ripple.graph.partition import partition
    from ripple.run import is_partitioned

    data = os.path.join(args.work, f"data-{args.users}-s{args.seed}")
    parts = os.path.join(args.work, f"parts-{args.users}-s{args.seed}-p{args.parts}")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        generate(data, GeneratorConfig(users=args.users, seed=args.seed))
    if not is_partitioned(parts):
        partition(data, parts, PartitionConfig(num_parts=args.parts))
    with open(os.path.join(data, "manifest.json")) as f:
        rows = json.load(f)["rows"]
    edges = sum(v for k, v in rows.items() if k in ("follows", "shared", "created", "member_of", "reply_to"))
    result = {"args": vars(args), "graph": {"users": args.users, "edges": edges, "rows": rows},
              "rows": [run_nodes(n, parts, args) for n in args.nodes]}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "multinode" + (f"_{args.tag}" if args.tag else ""))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    _plot(result, stem + ".png")


def _plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    n = np.array([r["nodes"] for r in rows])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("train_peak_node_pss", "train"), ("embed_peak_node_pss", "embed")):
        a.plot(n, [max(r[key]) / 2**30 for r in rows], "o-", label=f"{label}: the largest node")
    base = max(rows[0]["train_peak_node_pss"]) / 2**30
    a.plot(n, base / n, "k:", label="1/N of the 1-node figure")
    a.set_xlabel("nodes")
    a.set_ylabel("peak PSS per node (GiB)")
    a.set_xticks(n)
    a.legend(fontsize=8)
    b.plot(n, [r["train_epoch_cross_node_bytes"] / 2**20 for r in rows], "o-", label="training epoch")
    b.plot(n, [r["embed_cross_node_bytes"] / 2**20 for r in rows], "s-", label="embedding")
    b.set_xlabel("nodes")
    b.set_ylabel("cross-node MiB")
    b.set_xticks(n)
    b.legend(fontsize=8)
    g = result["graph"]
    fig.suptitle(f"{g['users']:,} users, {g['edges']:,} edges, {result['args']['parts']} parts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
