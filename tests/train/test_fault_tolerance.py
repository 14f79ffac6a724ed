"""Lost processes on a real local Ray cluster, killed for real (SIGKILL), not simulated.

* A Ray Train worker killed mid-epoch, with ``--max-failures 1``: Ray Train restarts the worker group from the last
  checkpoint (``restarts``/``resumed_from_epoch`` in ``metrics.json``), the run finishes with the test Spearman of
  an uninterrupted run and complete embeddings. With ``--max-failures 0`` the same kill fails ``ripple train``
  with exit code 1 and a message that says how to resume.
* A ``GraphShard`` actor killed between batches: it restarts, reloads its partition from storage, and sampling
  goes on with the batches the same seeds gave before the kill.

One local cluster (2 CPUs, with the dashboard: the state API finds the processes to kill) serves the module.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

import numpy as np
import pytest
import ray
import torch
from conftest import AfterFirstCheckpoint, same_sampler_output

from ripple import pipeline
from ripple.config import load_config
from ripple.data import schema as S
from ripple.data.generator import GeneratorConfig, generate
from ripple.data.storage import Store, join, read_committed, read_manifest


USERS = 400
EPOCHS = 6


@pytest.fixture(scope="module")
def ray_cluster():
    pipeline.init_ray(None, log_to_driver=False)
    yield
    ray.shutdown()


def state_address() -> str:
    """This cluster's address for the state API (which, left to itself, refuses when it finds other local
    clusters on the machine)."""
    return ray.get_runtime_context().gcs_address


# ----------------------------------------------------------------------------------------------- Ray Train workers


def _cfg(data, runs, run_name, max_failures):
    return load_config(None, {
        "data": data, "storage_path": runs, "run_name": run_name, "scaling.num_workers": 2,
        "scaling.max_failures": max_failures, "train.epochs": EPOCHS, "train.patience": 0, "train.seed": 1,
        "model.hidden": 32, "model.heads": 2, "sampling.batch_size": 64, "sampling.fanouts": [5, 5]})


def WorkerKiller(run_url: str, timeout_s: float = 300.0) -> AfterFirstCheckpoint:
    """SIGKILLs one Ray Train worker process once the controller has registered the run's first checkpoint: the
    workers are then in the next epoch. ``.done`` is the killed pid."""

    def kill(workers):
        victim = max(workers, key=lambda a: a.pid)  # any one of the group
        os.kill(victim.pid, signal.SIGKILL)
        return victim.pid

    return AfterFirstCheckpoint(run_url, kill, state_address(), timeout_s)


def test_lost_ranks_tells_a_lost_process_from_an_error_of_the_training_code():
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    from ripple.train.driver import lost_ranks

    died = WorkerHealthCheckFailedError("A worker health check failed.", ActorDiedError())
    assert lost_ranks(WorkerGroupError("x", {0: RuntimeError("gloo: Connection reset by peer"), 1: died})) == [1]
    assert lost_ranks(WorkerGroupError("x", {0: ActorDiedError(), 1: died})) == [0, 1]
    assert lost_ranks(WorkerGroupError("x", {0: ValueError("bad config")})) == []
    assert lost_ranks(RuntimeError("not a worker group error")) == []


def _train_with_kill(cfg):
    with WorkerKiller(join(cfg.storage_path, cfg.run_name)) as killer:
        metrics = pipeline.train(cfg)
    killer.check("no Ray Train worker was killed")
    return metrics, killer


@pytest.mark.slow
def test_killed_train_worker_restarts_from_last_checkpoint(ray_cluster, tmp_path):
    data, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    generate(data, GeneratorConfig(users=USERS, seed=3, label_sims=100))

    t0 = time.perf_counter()
    base = pipeline.train(_cfg(data, runs, "uninterrupted", max_failures=1))
    t_base = time.perf_counter() - t0
    assert base["restarts"] == 0 and base["resumed_from_epoch"] is None and base["epochs"]["start"] == 0

    cfg = pipeline.resolve_paths(_cfg(data, runs, "killed", max_failures=1))
    t0 = time.perf_counter()
    metrics, killer = _train_with_kill(cfg)
    t_killed = time.perf_counter() - t0
    # the worker group was restarted once, from the checkpoint registered when the worker died (or a later one,
    # had the next epoch's been registered in between), not from scratch; it went on to the last epoch
    assert metrics["restarts"] == 1, metrics
    resumed = metrics["resumed_from_epoch"]
    assert resumed is not None and killer.checkpoint_epoch <= resumed < EPOCHS - 1, (resumed, killer.checkpoint_epoch)
    assert metrics["epochs"]["start"] == resumed + 1 and metrics["epochs"]["last"] == EPOCHS - 1
    saved = Store(join(cfg.storage_path, cfg.run_name)).read_json("metrics.json")
    assert saved["restarts"] == 1 and saved["resumed_from_epoch"] == resumed

    # the restarted group restored every rank's random state with the checkpoint: it trained what the
    # uninterrupted run did, so the test Spearman matches (the bar: within 0.02)
    rho, rho_base = metrics["spearman"]["gnn"], base["spearman"]["gnn"]
    assert abs(rho - rho_base) <= 0.02, (rho, rho_base)

    # complete embeddings: one row per user, every part's checksum verified by read_committed
    emb_store = Store(join(cfg.storage_path, cfg.run_name, "embeddings"))
    assert read_manifest(emb_store)["rows"] == USERS
    emb = read_committed(emb_store)
    assert emb.num_rows == USERS and len(set(emb["user_id"].to_pylist())) == USERS
    vecs = np.asarray(emb["embedding"].to_pylist(), dtype=np.float32)
    assert vecs.shape == (USERS, cfg.model.hidden) and np.isfinite(vecs).all()
    # and they are the uninterrupted run's: the restart lost and changed nothing
    base_emb = read_committed(Store(join(cfg.storage_path, "uninterrupted", "embeddings")))
    order, base_order = np.argsort(emb["user_id"].to_numpy()), np.argsort(base_emb["user_id"].to_numpy())
    assert np.array_equal(emb["user_id"].to_numpy()[order], base_emb["user_id"].to_numpy()[base_order])
    base_vecs = np.asarray(base_emb["embedding"].to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vecs[order], base_vecs[base_order], atol=1e-4, rtol=1e-4)
    print(f"\nworker kill: pid {killer.done} after checkpoint of epoch {killer.checkpoint_epoch}; resumed from "
          f"epoch {resumed}; test spearman {rho:.4f} vs uninterrupted {rho_base:.4f}; {emb.num_rows} rows; "
          f"train {t_killed:.0f}s vs {t_base:.0f}s uninterrupted")


@pytest.mark.slow
def test_killed_train_worker_without_failure_budget_fails_with_exit_1(ray_cluster, tmp_path, capsys):
    from ripple.cli import EXIT_RUNTIME, main

    data, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    generate(data, GeneratorConfig(users=USERS, seed=3, label_sims=20))
    config = tmp_path / "small.yaml"
    config.write_text("model: {hidden: 32, heads: 2}\nsampling: {batch_size: 64, fanouts: [5, 5]}\n"
                      "train: {patience: 0}\n")
    with WorkerKiller(join(runs, "nobudget")) as killer:
        code = main(["train", "--config", str(config), "--data", data, "--storage-path", runs, "--run-name",
                     "nobudget", "--num-workers", "2", "--max-failures", "0", "--epochs", str(EPOCHS)])
    killer.check("no Ray Train worker was killed")
    assert code == EXIT_RUNTIME
    err = capsys.readouterr().err
    print("\n" + next(line for line in err.splitlines() if line.startswith("error:")))
    assert "error: RuntimeError: training of run 'nobudget' failed: lost the process of worker rank(s)" in err, err
    assert "(no restarts allowed). Checkpoints so far are under" in err, err
    assert "rerun the same command to resume from the last one, or pass --max-failures K" in err, err
    run = Store(join(runs, "nobudget"))
    assert run.exists("config.yaml") and not run.exists("metrics.json")


# ----------------------------------------------------------------------------------------------- GraphShard


@pytest.mark.slow
def test_sigkilled_shard_actor_restarts_reloads_its_part_and_sampling_continues(ray_cluster, tmp_path):
    from ray.util.state import get_actor

    from ripple.config import PartitionConfig
    from ripple.graph.partition import partition
    from ripple.graph.sharded_sampler import DistributedNeighborSampler
    from ripple.graph.part_io import PartitionMeta
    from ripple.graph.shards import ShardedGraph, find_shards, owner_of, shard_key, start_shard

    P, nn = 3, {et: [4, 3] for et in S.EDGE_TYPES}
    data, parts = str(tmp_path / "data"), str(tmp_path / "parts")
    generate(data, GeneratorConfig(users=600, seed=5, label_sims=20))
    partition(data, parts, PartitionConfig(num_parts=P))
    meta = PartitionMeta.open(parts)
    key = shard_key(parts, f"fault-{uuid.uuid4().hex[:8]}")
    owned = [start_shard(meta, key, p, max_restarts=2) for p in range(P)]
    try:
        actors, _ = find_shards(meta, key, timeout_s=120)
        # as a trainer holds it: part 0 mapped zero-copy from its co-located actor, parts 1 and 2 remote
        graph = ShardedGraph(meta, actors, local_parts=[0])
        reference = ShardedGraph.in_process(meta)
        rng = np.random.default_rng(0)
        seed_sets = [torch.from_numpy(rng.choice(meta.num_nodes("user"), 32, replace=False)) for _ in range(3)]
        assert all(len(torch.unique(owner_of(meta.offsets("user"), s))) == P for s in seed_sets)

        def batches(g):
            sampler = DistributedNeighborSampler(g, nn, seed=11)
            return [sampler.sample("user", s) for s in seed_sets]

        want = batches(reference)
        assert all(same_sampler_output(a, b) for a, b in zip(batches(graph), want))
        pid_of = lambda a: ray.get(a.__ray_call__.remote(lambda self: os.getpid()))  # noqa: E731
        pids = [pid_of(a) for a in actors]
        assert len(set(pids) | {os.getpid()}) == P + 1

        # part 1: a remote part; part 0: the part whose arrays this process maps from the actor's object store
        for victim in (1, 0):
            os.kill(pids[victim], signal.SIGKILL)
        # sampling right away: calls to a dead actor are retried (max_task_retries) on its restarted incarnation,
        # and the mapped part 0 stays readable after its publisher died
        after = batches(graph)
        assert all(same_sampler_output(a, b) for a, b in zip(after, want))
        idx = torch.cat(seed_sets)
        got_x = graph.gather([("user", "x", idx)])[0]
        assert torch.equal(got_x, reference.gather([("user", "x", idx)])[0])

        for victim in (1, 0):
            new_pid = pid_of(actors[victim])  # answered by the restarted actor
            assert new_pid != pids[victim]
            info = ray.get(actors[victim].ready.remote())
            # the restarted actor loaded its part from storage again, with the same arrays
            assert info["part"] == victim and info["load_seconds"] > 0
            assert info["shapes"] == reference.local[victim].array_shapes()
            assert info["resident_bytes"] == reference.local[victim].resident_bytes()
            state = get_actor(actors[victim]._actor_id.hex(), address=state_address())
            assert state.num_restarts == 1 and state.pid == new_pid
        for p in (2,):
            state = get_actor(actors[p]._actor_id.hex(), address=state_address())
            assert pid_of(actors[p]) == pids[p] and state.num_restarts == 0
        # a fresh sampler over the restarted shards: the same batches again, and the names still resolve
        assert all(same_sampler_output(a, b) for a, b in zip(batches(graph), want))
        assert len(find_shards(meta, key, timeout_s=30)[0]) == P
    finally:
        for h in owned:
            ray.kill(h, no_restart=True)
