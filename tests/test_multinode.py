"""Several Ray nodes: a head and two worker nodes built with ``ray.cluster_utils.Cluster``, the way Ray tests
itself. Each node is its own raylet with its own object store and worker processes (all on this machine), so
placement, zero-copy mapping, cross-node object transfer and the loss of a whole node are real here.

* ``ripple train --address`` joins the cluster: two trainers on two nodes (``scaling.placement_strategy: SPREAD``,
  each node has room for both, so spreading is the strategy's doing), each mapping only the shards on its own
  node, reaching the others across nodes; layer-wise embedding over shard actors spread over the three nodes;
  data, partitions, checkpoints and embeddings on S3 (moto's server). The embeddings equal what the same checkpoint
  gives over the whole graph in one process.
* A worker node holding a trainer is removed after a checkpoint was registered: the run resumes from it, the
  shards that lived there start again on the nodes left and reload their parts from storage, the run's quality is
  an uninterrupted run's, and every user is embedded.
* A node is removed between two layers of the embedding: the pass starts again on the nodes left, and the
  embeddings still commit, complete and correct.
* ``ripple submit`` runs the training as a Ray job on the cluster, and never twice (the Ray Jobs API's submission
  id); a failing job gives exit 1 and a second submission of it is refused with the way out.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import ray
from conftest import AfterFirstCheckpoint

from ripple import pipeline
from ripple.config import load_config
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.storage import StorageOptions, Store, join, read_committed, read_manifest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

USERS, PARTS, EPOCHS = 1200, 4, 3
SMALL = {"model.hidden": 32, "model.heads": 2, "sampling.batch_size": 64, "sampling.fanouts": [5, 5],
         "scaling.num_workers": 2, "train.epochs": EPOCHS, "train.patience": 0, "train.seed": 1,
         "partition.num_parts": PARTS,
         # the embeddings are compared with whole-graph inference to float precision
         "inference.state_dtype": "float32"}
NODE = {"num_cpus": 2}


@pytest.fixture(scope="module")
def cluster(s3_server):
    """Head + 2 worker nodes, 2 CPUs each; the driver (this process) on the head. Ray jobs' drivers find this
    interpreter's ``ripple`` script, and every process the S3 credentials (set by ``s3_server``)."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        mp.delenv("RAY_ADDRESS", raising=False)
        c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": True, "dashboard_port": 0})
        for _ in range(2):
            c.add_node(**NODE)
        c.wait_for_nodes()
        c.connect()
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()


def worker_nodes(c) -> dict[str, object]:
    """node id -> Node of the cluster's worker nodes (the head, where the driver runs, is never removed)."""
    return {n.node_id: n for n in c.worker_nodes}


def restore(c) -> None:
    """Back to a head and two worker nodes after a test removed one."""
    while len(c.worker_nodes) < 2:
        c.add_node(**NODE)
    c.wait_for_nodes()


@pytest.fixture(scope="module")
def data(cluster, s3_server):
    bucket = f"s3://ripple-multinode-{os.getpid()}"
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket[5:])
    options = StorageOptions(endpoint_url=s3_server)
    generate(f"{bucket}/data", GeneratorConfig(users=USERS, seed=2, label_sims=50), options)
    return bucket, options


def _embeddings(store: Store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user ids, embeddings, influence scores) of a committed embeddings folder, by user id."""
    emb = read_committed(store)
    order = np.argsort(emb["user_id"].to_numpy())
    return (emb["user_id"].to_numpy()[order], np.asarray(emb["embedding"].to_pylist(), np.float32)[order],
            emb["influence_score"].to_numpy()[order])


def whole_graph_embeddings(cfg, data_url: str, options) -> tuple[np.ndarray, np.ndarray]:
    """The best checkpoint's embeddings over the whole graph in this process (layer-wise, every neighbour)."""
    from ripple.data.dataset import Dataset
    from ripple.data.graph import load_local_graph
    from ripple.models.gnn import build_model
    from ripple.models.layerwise import LayerwiseGraph, infer_local
    from ripple.run import best_checkpoint
    from ripple.train.checkpoint import load_state

    model = build_model(cfg)
    model.load_state_dict(load_state(best_checkpoint(cfg))["model"])
    g = load_local_graph(Dataset(data_url, options))
    pred, emb = infer_local(model.eval(), LayerwiseGraph.from_local(g))
    order = np.argsort(g.ids["user"])
    return g.ids["user"][order], emb.numpy()[order], np.expm1(np.clip(pred.numpy(), 0, None))[order]


@pytest.fixture(scope="module")
def spread_run(cluster, data, s3_server):
    """``ripple train --address <cluster>`` in its own process, everything on S3; returns (cfg, metrics)."""
    bucket, options = data
    args = ["--data", f"{bucket}/data", "--storage-path", f"{bucket}/runs", "--run-name", "spread",
            "--s3-endpoint-url", s3_server]
    config = {k: v for k, v in SMALL.items() if k not in ("scaling.num_workers", "train.epochs")}
    nested: dict = {}
    for key, value in config.items():
        section, field = key.split(".")
        nested.setdefault(section, {})[field] = value
    config_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ripple-multinode-{os.getpid()}.yaml")
    with open(config_path, "w") as f:
        json.dump(nested, f)  # JSON is YAML
    done = subprocess.run([sys.executable, "-m", "ripple.cli", "train", "--config", config_path, *args,
                           "--num-workers", "2", "--epochs", str(EPOCHS), "--address", cluster.address],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    cfg = load_config(config_path, {"data": f"{bucket}/data", "storage_path": f"{bucket}/runs", "run_name": "spread",
                                    "storage.endpoint_url": s3_server, "scaling.num_workers": 2,
                                    "train.epochs": EPOCHS})
    return cfg, Store(join(cfg.storage_path, cfg.run_name), options).read_json("metrics.json")


def test_trainers_spread_over_nodes_map_their_node_s_shards_and_reach_the_rest_across(cluster, data, spread_run):
    cfg, m = spread_run
    ranks = m["placement"]
    assert len(ranks) == 2 and ranks[0]["node"] != ranks[1]["node"], ranks  # SPREAD: one trainer per node
    assert {r["node"] for r in ranks} <= {n.node_id for n in cluster.list_all_nodes()}
    for r in ranks:
        mapped, remote = {int(p): n for p, n in r["mapped"].items()}, {int(p): n for p, n in r["remote"].items()}
        assert set(r["owned"]) <= set(mapped), r  # its own parts, zero-copy
        assert set(mapped.values()) == {r["node"]}, r  # and only parts whose actor shares its node
        assert remote and r["node"] not in remote.values(), r  # the rest is on another node
        assert set(mapped) | set(remote) == set(range(PARTS))
    # each rank's graph memory: exactly its own parts
    from ripple.graph.part_io import PartitionMeta
    from ripple.graph.shard import ShardData

    meta = PartitionMeta.open(join(cfg.storage_path, cfg.run_name, "partitions"), cfg.storage)
    part_bytes = [ShardData.load(meta, p).resident_bytes() for p in range(PARTS)]
    assert m["throughput"]["graph_resident_bytes_per_rank"] == [sum(part_bytes[p] for p in r["owned"])
                                                                 for r in ranks]
    # cross-node traffic of a training epoch and of the embedding, counted by kind
    t = m["traffic"]["train_epoch"]
    assert t["cross_node_bytes"] > 0 and t["cross_node_bytes_per_sampled_edge"] > 0
    assert t["cross_node_bytes"] == sum(v["request_bytes"] + v["reply_bytes"] for v in t["cross_node"].values())
    assert {"sample", "fetch"} <= set(t["cross_node"])
    e = m["traffic"]["embed"]
    assert e["cross_node_bytes"] > 0 and "take_rows" in e["cross_node"], e
    # the embeddings are what the checkpoint gives over the whole graph in one process
    ids, emb, score = _embeddings(Store(join(cfg.storage_path, cfg.run_name, "embeddings"), cfg.storage))
    ref_ids, ref, ref_score = whole_graph_embeddings(cfg, cfg.data, cfg.storage)
    assert len(ids) == USERS and np.array_equal(ids, ref_ids)
    np.testing.assert_allclose(emb, ref, atol=1e-4, rtol=1e-4)
    # influence_score is the model that won on validation: the GNN's own scores when it did
    if m["influence_score"]["model"] == "gnn":
        np.testing.assert_allclose(score, ref_score, atol=1e-3, rtol=1e-4)
    else:
        manifest = read_manifest(Store(join(cfg.storage_path, cfg.run_name, "embeddings"), cfg.storage))
        assert manifest["influence_score"]["model"] == m["influence_score"]["model"]


def test_losing_a_trainer_s_node_resumes_from_the_checkpoint(cluster, data, spread_run, tmp_path):
    bucket, options = data
    _, base = spread_run
    cfg = pipeline.resolve_paths(load_config(None, {
        **SMALL, "data": f"{bucket}/data", "storage_path": str(tmp_path / "runs"), "run_name": "node-lost",
        "storage.endpoint_url": options.endpoint_url, "scaling.max_failures": 1}))
    nodes = worker_nodes(cluster)

    def remove_a_trainer_s_node(workers):
        victim = next(w.node_id for w in workers if w.node_id in nodes)  # SPREAD: a trainer is on a worker node
        cluster.remove_node(nodes[victim])
        return victim

    try:
        with AfterFirstCheckpoint(join(cfg.storage_path, cfg.run_name), remove_a_trainer_s_node,
                                  cluster.address) as remover:
            m = pipeline.train(cfg)
    finally:
        restore(cluster)
    remover.check("no node was removed")
    lost = remover.done
    assert m["restarts"] >= 1 and m["resumed_from_epoch"] is not None, (m["restarts"], m["resumed_from_epoch"])
    assert remover.checkpoint_epoch <= m["resumed_from_epoch"] and m["epochs"]["last"] == EPOCHS - 1
    # the restarted group's shards run on the nodes left: they started anew there and loaded their parts from
    # the partitions in storage (there is no other copy)
    for r in m["placement"]:
        assert r["node"] != lost and lost not in r["mapped"].values() and lost not in r["remote"].values(), r
    # quality: an uninterrupted run's (the same data and config on S3, trained by `ripple train --address`)
    assert abs(m["spearman"]["gnn"] - base["spearman"]["gnn"]) <= 0.02, (m["spearman"]["gnn"], base["spearman"]["gnn"])
    ids, emb, _ = _embeddings(Store(join(cfg.storage_path, cfg.run_name, "embeddings")))
    assert len(ids) == USERS and len(np.unique(ids)) == USERS and np.isfinite(emb).all()
    print(f"\nnode lost: {lost[:8]} after the checkpoint of epoch {remover.checkpoint_epoch}; restarts {m['restarts']}, "
          f"resumed from epoch {m['resumed_from_epoch']}; test spearman {m['spearman']['gnn']:.4f} vs uninterrupted "
          f"{base['spearman']['gnn']:.4f}; {len(ids)} users embedded")


def test_losing_a_node_mid_embedding_still_commits_every_user_correctly(cluster, data, spread_run):
    from ripple.infer.embed import write_embeddings
    from ripple.run import best_checkpoint, embeddings_store

    src, _ = spread_run
    # the spread run's checkpoint, embedded again over its partitions under another run name
    cfg = dataclasses.replace(src, run_name="spread-reembed", data=join(src.storage_path, src.run_name, "partitions"))
    checkpoint = best_checkpoint(src)
    removed = []

    def after_layer(layer: int, attempt: int) -> None:
        if layer == 0 and attempt == 0:  # between layer 0 and layer 1 of the first pass
            node_id, node = next(iter(worker_nodes(cluster).items()))
            cluster.remove_node(node)
            removed.append(node_id)

    try:
        manifest = write_embeddings(cfg, checkpoint, on_layer=after_layer)
    finally:
        restore(cluster)
    assert removed and manifest["attempts"] == 2, (removed, manifest.get("attempts"))
    ids, emb, _ = _embeddings(embeddings_store(cfg))
    ref_ids, ref, _ = whole_graph_embeddings(src, src.data, src.storage)
    assert len(ids) == USERS and np.array_equal(ids, ref_ids)
    np.testing.assert_allclose(emb, ref, atol=1e-4, rtol=1e-4)


def test_submit_runs_the_training_as_a_job_on_the_cluster_and_never_duplicates_it(cluster, data, s3_server, capsys):
    from ray.job_submission import JobSubmissionClient

    from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, main

    bucket, options = data
    address = f"http://{cluster.webui_url}"
    train = ["--data", f"{bucket}/data", "--storage-path", f"{bucket}/runs", "--run-name", "submitted",
             "--num-workers", "2", "--epochs", "1", "--s3-endpoint-url", s3_server]
    assert main(["submit", "--address", address, "--", *train]) == EXIT_OK
    assert "spearman" in capsys.readouterr().out  # the job's logs were followed
    m = Store(f"{bucket}/runs/submitted", options).read_json("metrics.json")
    assert len({r["node"] for r in m["placement"]}) == 2  # the job's trainers spread too

    # KubeRay (or a user) submits again: the finished job is reported, nothing new starts
    assert main(["submit", "--address", address, "--", *train]) == EXIT_OK
    jobs = [j for j in JobSubmissionClient(address).list_jobs() if j.submission_id == "ripple-submitted"]
    assert len(jobs) == 1 and jobs[0].status.value == "SUCCEEDED"

    # a job that fails gives exit 1; submitting it again is refused with the way out
    bad = ["--data", f"{bucket}/missing", "--storage-path", f"{bucket}/runs", "--run-name", "bad", "--epochs", "1",
           "--s3-endpoint-url", s3_server]
    assert main(["submit", "--address", address, "--", *bad]) == EXIT_RUNTIME
    capsys.readouterr()
    assert main(["submit", "--address", address, "--no-wait", "--", *bad]) == EXIT_BAD_INPUT
    assert "ray job delete ripple-bad" in capsys.readouterr().err
