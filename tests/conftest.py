"""Shared fixtures: a tiny literal dataset on local disk, a moto S3 server over real HTTP; helpers for tests on a real
Ray cluster (the state API's live actors, an action taken once a run's first checkpoint is registered)."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid

import pytest
import torch
from tiny_dataset import write_tiny_dataset


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Unit tests use tiny tensors: intra-op threads only add contention on a 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_dataset(tmp_path) -> str:
    """A valid tiny dataset (``tests/tiny_dataset.py``) written through ``DatasetWriter``; returns its path."""
    return write_tiny_dataset(str(tmp_path / "tiny"))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 over HTTP on 127.0.0.1 (free port), with dummy AWS credentials; yields the endpoint URL."""
    import moto.server as server_mod

    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(k, v)
        for k in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            mp.delenv(k, raising=False)
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the moto server; returns ``s3://<name>``."""
    import boto3

    name = f"ripple-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


@contextlib.contextmanager
def recorded_sample_calls(graph):
    """Record the parts each ``ShardedGraph.sample`` call covers (one list per hop), then restore the method."""
    calls: list[list[int]] = []
    real = graph.sample

    def recording(by_part):
        calls.append(sorted(by_part))
        return real(by_part)

    graph.sample = recording
    try:
        yield calls
    finally:
        del graph.sample


def same_sampler_output(a, b) -> bool:
    """Two ``HeteroSamplerOutput`` index sets are identical (nodes, edges, per-hop counts)."""
    if set(a.node) != set(b.node) or set(a.row) != set(b.row):
        return False
    return (all(torch.equal(a.node[t], b.node[t]) for t in a.node)
            and all(torch.equal(a.row[k], b.row[k]) and torch.equal(a.col[k], b.col[k])
                    and torch.equal(a.edge[k], b.edge[k]) for k in a.row)
            and a.num_sampled_nodes == b.num_sampled_nodes and a.num_sampled_edges == b.num_sampled_edges)


@pytest.fixture
def no_ray(monkeypatch):
    """Bad input must be refused before Ray: fail loudly (without starting it) if the pipeline gets that far."""
    from ripple import pipeline

    def refuse(*a, **kw):
        pytest.fail("the pipeline went past validation: it would start Ray")

    monkeypatch.setattr(pipeline, "init_ray", refuse)
    monkeypatch.setattr(pipeline, "fit", refuse)


def pytest_collection_modifyitems(config, items):
    """Every test gets a timeout (pytest-timeout): its own ``timeout`` mark, else 900 s for the slow end-to-end
    tier and 300 s for the rest, so a hung Ray cluster or S3 server fails one test instead of the CI run."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900 if item.get_closest_marker("slow") else 300))


def alive_actors(class_name: str, address: str) -> list:
    """The ALIVE actors of a class, from Ray's state API (pid, node_id, ...)."""
    from ray.util.state import list_actors

    return list_actors(address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
                       raise_on_missing_output=False)


class AfterFirstCheckpoint(threading.Thread):
    """Calls ``act(workers)`` once, as soon as Ray Train's controller has registered the run's first checkpoint
    (its ``checkpoint_manager_snapshot.json`` under ``<run>/checkpoints`` names one, on local storage) and the
    worker group's processes are known (``workers``: the state API's ALIVE RayTrainWorker actors). A failure that
    comes after the registration makes the restarted group resume from that checkpoint, not from scratch.

    ``done``: what ``act`` returned; ``checkpoint_epoch``: the registered checkpoint's epoch; ``error``: an
    exception it raised (the test reports it)."""

    def __init__(self, run_url: str, act, address: str, timeout_s: float = 300.0):
        super().__init__(daemon=True)
        self.snapshot = os.path.join(run_url, "checkpoints", "checkpoint_manager_snapshot.json")
        self.act, self.address, self.timeout_s = act, address, timeout_s
        self.done = self.checkpoint_epoch = self.error = None
        self.stop = threading.Event()

    def __enter__(self) -> "AfterFirstCheckpoint":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()

    def check(self, what: str) -> None:
        """Fails the test when ``act`` raised, or never ran (``what``: the act, for the message)."""
        assert self.error is None, self.error
        assert self.done is not None, f"{what}: the run ended first"

    def _registered_epoch(self):
        try:
            with open(self.snapshot) as f:
                latest = json.load(f).get("latest_checkpoint_result")
        except (OSError, ValueError):  # not written yet, or being written
            return None
        return latest["metrics"]["epoch"] if latest else None

    def run(self):
        try:
            deadline = time.monotonic() + self.timeout_s
            workers = []
            # the group's processes first (the state API answers in a fraction of a second), then the checkpoint:
            # the act follows the checkpoint's registration by one local file read
            while not self.stop.is_set() and time.monotonic() < deadline:
                workers = workers or alive_actors("RayTrainWorker", self.address)
                epoch = self._registered_epoch()
                if workers and epoch is not None:
                    self.done, self.checkpoint_epoch = self.act(workers), epoch
                    return
                time.sleep(0.05 if workers else 0.5)
        except Exception as e:  # noqa: BLE001 — reported by the test
            self.error = e
