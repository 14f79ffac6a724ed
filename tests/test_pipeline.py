"""End to end on a real local Ray cluster: generate -> validate -> 2 DDP workers -> embeddings -> metrics.

The same path runs with the dataset read from, and the run written to, S3 through moto's HTTP server.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ripple import pipeline
from ripple.config import load_config
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.storage import StorageOptions, Store, join, read_committed, read_manifest
from ripple.run import best_checkpoint
from images import assert_png

pytestmark = pytest.mark.slow

USERS = 400


@pytest.fixture(scope="module")
def ray_cluster(s3_server):
    """One local Ray cluster for the module, started after the S3 credentials are in the environment."""
    import ray

    pipeline.init_ray(None, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(data, storage_path, run_name, options=None, epochs=2, num_parts=0):
    return load_config(None, {
        "data": data, "storage_path": storage_path, "run_name": run_name,
        "scaling.num_workers": 2, "train.epochs": epochs, "train.patience": 0,
        "model.hidden": 32, "model.heads": 2, "sampling.batch_size": 64, "sampling.fanouts": [5, 5],
        "storage.endpoint_url": options.endpoint_url if options else None, "partition.num_parts": num_parts})


def _check_run(cfg, options=None, num_parts=1):
    run = Store(join(cfg.storage_path, cfg.run_name), options)
    assert run.exists("config.yaml")
    metrics = run.read_json("metrics.json")
    # the run's pictures next to metrics.json, valid PNGs; its logs, ripple's and Ray's session's
    assert metrics["pictures"] == ["predicted_vs_observed.png", "training_curve.png"]
    for name in metrics["pictures"]:
        assert_png(run.read_bytes(name))
    assert [h["epoch"] for h in metrics["history"]] == list(range(metrics["epochs"]["last"] + 1))
    assert b"logs of this run go to" in run.read_bytes("logs", "ripple.log")
    assert run.ls("logs", "ray"), "the Ray session's logs were not copied into the run"
    for metric in ("spearman", "kendall", "ndcg_at_100", "msle"):
        assert set(metrics[metric]) == {"gnn", "hybrid", "stacked", "follower_count", "pagerank", "lightgbm_flat",
                                        "lightgbm_2hop", "lightgbm_engineered", "ceiling", "label_reliability"}
        assert all(np.isfinite(v) for v in metrics[metric].values())
    assert metrics["kernel_backend"] in ("pyg-lib", "torch-sparse", "native", "distributed")
    assert metrics["throughput"]["train_seeds_per_s"] > 0
    emb_store = run.child("embeddings")
    manifest = read_manifest(emb_store)
    assert manifest["rows"] == USERS and len(manifest["parts"]) == num_parts
    emb = read_committed(emb_store)
    assert emb.num_rows == USERS
    assert len(set(emb["user_id"].to_pylist())) == USERS
    vecs = np.asarray(emb["embedding"].to_pylist(), dtype=np.float32)
    assert vecs.shape == (USERS, cfg.model.hidden) and np.isfinite(vecs).all()
    scores = emb["influence_score"].to_numpy()
    assert np.isfinite(scores).all() and (scores >= 0).all()
    return metrics


def test_local_two_workers_and_resume(ray_cluster, tmp_path, monkeypatch):
    # Relative paths, as a user types them: Ray workers run in other directories, so the driver must resolve them.
    monkeypatch.chdir(tmp_path)
    data = "data"
    generate(data, GeneratorConfig(users=USERS, seed=3, label_sims=100))
    cfg = _cfg(data, "runs", "e2e")
    first = pipeline.train(cfg)
    _check_run(pipeline.resolve_paths(cfg))
    assert first["epochs"] == {"start": 0, "last": 1, "best": first["best_epoch"]}

    # Same run name, more epochs: resumes after the last checkpoint (epoch 1) rather than starting over.
    cfg3 = _cfg(data, str(tmp_path / "runs"), "e2e", epochs=3)
    second = pipeline.train(cfg3)
    assert second["epochs"]["start"] == 2 and second["epochs"]["last"] == 2
    from ripple.train.checkpoint import load_state

    state = load_state(best_checkpoint(cfg3))
    assert state["epoch"] == second["best_epoch"]

    # `ripple embed RUN` rewrites embeddings from the best checkpoint, atomically.
    m = pipeline.embed("runs/e2e")
    assert m["rows"] == USERS

    # `ripple embed RUN --data NEW --out OUT`: the trained model scores a newer snapshot (more users) into OUT;
    # the run's own embeddings stay as they were
    generate("newer", GeneratorConfig(users=USERS + 50, seed=4, label_sims=100))
    snap = pipeline.embed("runs/e2e", data="newer", out="scores")
    assert snap["rows"] == USERS + 50 and snap["data"] == str(tmp_path / "newer")
    assert snap["run"] == str(tmp_path / "runs" / "e2e") and snap["checkpoint_epoch"] == state["epoch"]
    _cannot_mix_and_warm_start(str(tmp_path / "runs"), "e2e", str(tmp_path / "newer"))
    scores = read_committed(Store(str(tmp_path / "scores")))
    assert scores.num_rows == USERS + 50 and np.isfinite(scores["influence_score"].to_numpy()).all()
    assert read_manifest(Store(str(tmp_path / "runs" / "e2e" / "embeddings")))["rows"] == USERS
    # a checkpoint that does not fit the model the run's config builds is refused, naming the tensors, first
    config = tmp_path / "runs" / "e2e" / "config.yaml"
    config.write_text(config.read_text().replace("hidden: 32", "hidden: 16"))
    with pytest.raises(ValueError, match="does not fit.*checkpoint"):
        pipeline.embed("runs/e2e", data="newer", out="scores-16")
    assert not (tmp_path / "scores-16").exists()


def test_s3_history_labels_partitioned_in_three(ray_cluster, s3_server, s3_bucket):
    """The history path on S3: generate a post history, `ripple labels` cuts it (the CLI verb, on the moto
    server), the run partitions the labelled dataset into 3 shards and trains 2 workers; metrics score every model
    against the future observed reach and the truth oracle, next to the split-half reliability."""
    from ripple.cli import EXIT_OK, main
    from ripple.data.dataset import Dataset

    options = StorageOptions(endpoint_url=s3_server)
    data, labelled = f"{s3_bucket}/data", f"{s3_bucket}/labelled"
    hist = generate(data, GeneratorConfig(users=USERS, seed=5, label_sims=30), options)["history"]
    horizon = (hist["end"] - hist["start"]) // 4
    assert main(["labels", data, "--cutoff", str(hist["end"] - 2 * horizon), "--horizon", f"{horizon // 86400}d",
                 "--out", labelled, "--s3-endpoint-url", s3_server]) == EXIT_OK
    info = Dataset(labelled, options).manifest.labels
    assert info["cutoff"] == hist["end"] - 2 * horizon and info["labelled_users"] > 100
    cfg = _cfg(labelled, f"{s3_bucket}/runs", "history-s3", options, num_parts=3)
    metrics = pipeline.train(cfg)
    saved = Store(f"{s3_bucket}/runs/history-s3", options).read_json("metrics.json")
    assert saved["spearman"] == json.loads(json.dumps(metrics))["spearman"]
    models = {"gnn", "hybrid", "stacked", "follower_count", "pagerank", "lightgbm_flat", "lightgbm_2hop",
              "lightgbm_engineered"}
    assert models | {"label_reliability", "ceiling", "oracle"} == set(saved["spearman"])
    assert saved["spearman"]["label_reliability"] == info["reliability"]["test"]["spearman_brown"]
    truth = saved["spearman_vs_truth"]
    assert saved["spearman"]["oracle"] == truth["label"]  # the truth scored against the labels
    assert models | {"label", "users"} == set(truth) and truth["users"] > 20
    assert all(np.isfinite(v) for v in truth.values())
    assert saved["throughput"]["num_parts"] == 3 and saved["kernel_backend"] == "distributed"
    emb = read_committed(Store(f"{s3_bucket}/runs/history-s3/embeddings", options))
    assert emb.num_rows == USERS
    generate(f"{s3_bucket}/other", GeneratorConfig(users=200, seed=6, label_sims=5), options)
    _cannot_mix_and_warm_start(f"{s3_bucket}/runs", "history-s3", f"{s3_bucket}/other", options)


def test_training_table_at_many_cut_times_end_to_end(ray_cluster, tmp_path):
    """`ripple labels --every` -> train on the whole graph with time-aware sampling -> every model on the same
    test rows; influence_score is the model that won on validation, and the written scores are its test ranking."""
    from ripple.cli import EXIT_OK, main
    from ripple.data.dataset import Dataset
    from ripple.evaluate.metrics import spearman

    data, labelled = str(tmp_path / "data"), str(tmp_path / "labelled")
    generate(data, GeneratorConfig(users=USERS, seed=3, label_sims=10))
    assert main(["labels", data, "--every", "14d", "--horizon", "14d", "--out", labelled]) == EXIT_OK
    labels = Dataset(labelled).read("labels")
    assert len(set(labels["time"].to_pylist())) >= 3
    cfg = _cfg(labelled, str(tmp_path / "runs"), "many")
    metrics = pipeline.train(cfg)
    chosen = metrics["influence_score"]["model"]
    learned = {"gnn", "hybrid", "stacked", "lightgbm_flat", "lightgbm_2hop", "lightgbm_engineered"}
    assert set(metrics["val_spearman"]) == learned and chosen in learned
    assert metrics["val_spearman"][chosen] == max(metrics["val_spearman"].values())
    assert metrics["test_users"] == int((labels["split"].to_numpy(zero_copy_only=False) == "test").sum())
    # the written influence_score ranks the test rows as the chosen model does
    emb = read_committed(Store(str(tmp_path / "runs" / "many" / "embeddings")))
    score = dict(zip(emb["user_id"].to_pylist(), emb["influence_score"].to_pylist()))
    test = [(u, r) for u, r, s in zip(labels["user_id"].to_pylist(), labels["cascade_reach"].to_pylist(),
                                      labels["split"].to_pylist()) if s == "test"]
    rho = spearman(np.array([r for _, r in test]), np.array([score[u] for u, _ in test]))
    assert rho == pytest.approx(metrics["spearman"][chosen], abs=1e-5)
    written = read_manifest(Store(str(tmp_path / "runs" / "many" / "embeddings")))
    assert written.get("influence_score", {"model": "gnn"})["model"] == chosen
    # evaluated again from its checkpoint (what `benchmarks temporal --reevaluate` does): the embeddings written
    # again first, then every number is training's own; scores another model replaced are refused, never read as
    # the GNN's
    from ripple.infer.embed import rewrite_scores, write_embeddings

    run_cfg = pipeline.load_run_config(str(tmp_path / "runs" / "many"))
    checkpoint = best_checkpoint(run_cfg)
    ids = np.sort(np.array(emb["user_id"].to_pylist()))
    rewrite_scores(Store(str(tmp_path / "runs" / "many" / "embeddings")), ids, np.ones(len(ids)),
                   {"model": "lightgbm_flat"})
    with pytest.raises(ValueError, match="lightgbm_flat's predictions, not the GNN's"):
        pipeline.evaluate_run(run_cfg, labelled, checkpoint, sharded=False)
    write_embeddings(run_cfg, checkpoint)
    again = pipeline.evaluate_run(run_cfg, labelled, checkpoint, sharded=False).metrics
    assert again["spearman"] == metrics["spearman"] and again["influence_score"] == metrics["influence_score"]
    # the trained model scores the graph as it stood at an earlier cut: at the last cut that is the graph itself
    times = sorted(set(labels["time"].to_pylist()))
    scores = {}
    for name, as_of in (("now", None), ("last", times[-1]), ("first", times[0])):
        m = pipeline.embed(str(tmp_path / "runs" / "many"), data=labelled, out=str(tmp_path / name), as_of=as_of)
        assert m["rows"] == USERS
        got = read_committed(Store(str(tmp_path / name)))
        scores[name] = dict(zip(got["user_id"].to_pylist(), got["influence_score"].to_pylist()))
    assert read_manifest(Store(str(tmp_path / "first")))["as_of"].startswith("20")
    assert scores["last"] == pytest.approx(scores["now"], rel=1e-6)
    assert scores["first"] != pytest.approx(scores["now"], rel=1e-3)
    with pytest.raises(ValueError, match="--as-of .* is outside"):
        pipeline.embed(str(tmp_path / "runs" / "many"), data=labelled, out=str(tmp_path / "x"), as_of=10)
    assert not (tmp_path / "x").exists()
    # a partitioned run cannot take rows at many times yet: refused before any part is written
    with pytest.raises(ValueError, match="labels.time"):
        pipeline.train(_cfg(labelled, str(tmp_path / "runs"), "many-parts", num_parts=2))


def _cannot_mix_and_warm_start(runs: str, parent: str, other: str, options=None) -> None:
    """Run ``parent`` trained on one dataset: ``train --run-name parent`` on ``other`` exits 2 naming the
    difference (it would resume one model on another dataset) and changes nothing; ``--init-from parent`` starts a
    new run on ``other`` from the parent's best weights (checked: at lr ~0 its weights stay the parent's) and
    records the parent; a model whose shapes do not fit the parent's checkpoint is refused, naming the tensors."""
    import torch

    from ripple.cli import EXIT_BAD_INPUT, main
    from ripple.run import RUN_FILE
    from ripple.train.checkpoint import load_state

    before = Store(f"{runs}/{parent}", options).read_json(RUN_FILE)
    assert len(before["dataset_manifest_sha256"]) == 64 and before["init_from"] is None
    flags = ["--s3-endpoint-url", options.endpoint_url] if options else []
    assert main(["train", "--data", other, "--storage-path", runs, "--run-name", parent, *flags]) == EXIT_BAD_INPUT
    with pytest.raises(ValueError, match=r"other data.*dataset_manifest_sha256.*--init-from"):
        pipeline.train(_cfg(other, runs, parent, options))
    assert Store(f"{runs}/{parent}", options).read_json(RUN_FILE) == before  # the refusal changed nothing
    child = _cfg(other, runs, "warm", options, epochs=1)
    child.train.init_from, child.train.lr = f"{runs}/{parent}", 1e-12
    metrics = pipeline.train(child)
    parent_state = load_state(best_checkpoint(pipeline.load_run_config(f"{runs}/{parent}", options)))
    assert metrics["run"]["init_from"] == f"{runs}/{parent}"
    assert metrics["run"]["init_from_epoch"] == parent_state["epoch"]
    got = load_state(best_checkpoint(pipeline.load_run_config(f"{runs}/warm", options)))["model"]
    assert all(torch.allclose(parent_state["model"][k], got[k], atol=1e-6) for k in got)
    misfit = _cfg(other, runs, "misfit", options, epochs=1)
    misfit.train.init_from, misfit.model.hidden = f"{runs}/{parent}", 16
    with pytest.raises(ValueError, match="--init-from .*does not fit"):
        pipeline.train(misfit)
