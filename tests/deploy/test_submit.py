"""``ripple submit`` against a real Ray head (``ray start --head``, stopped afterwards) through the Ray Jobs API."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, main
from ripple.deploy.submit import resolve_address, submission_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submission_id_and_address_errors(monkeypatch):
    assert submission_id("reach-v1.2_b") == "ripple-reach-v1.2_b"
    with pytest.raises(ValueError, match="cannot be a Ray submission id"):
        submission_id("my run/1")
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="--address"):
        resolve_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert resolve_address(None) == "http://head:8265"
    assert resolve_address("http://other:8265") == "http://other:8265"


def test_bad_train_args_are_refused_before_the_cluster(capsys):
    # no cluster is running at this address: the arguments are checked first
    assert main(["submit", "--address", "http://127.0.0.1:9", "--", "--epochs", "many"]) == EXIT_BAD_INPUT
    assert "--epochs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_head():
    # the head runs on this interpreter, so its workers import the ripple under test
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    port, dash = _free_port(), _free_port()
    # the job driver runs `ripple train`: the head must find this environment's console scripts
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    # `--block` in its own process group: the teardown stops this head only. (`ray stop` would stop every Ray
    # cluster on the machine, other users' and other test runs' included.)
    head = subprocess.Popen([*ray_cli, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
                             "--dashboard-port", str(dash), "--include-dashboard", "true", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    mode = os.environ.get("RAY_AUTH_MODE")
    try:
        deadline = time.monotonic() + 180
        while True:  # the dashboard's HTTP port answers once the head (and its Jobs API) is up
            if head.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {head.returncode}")
            try:
                socket.create_connection(("127.0.0.1", dash), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Ray head's dashboard did not come up within 180 s") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{dash}"
    finally:
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # a head stopped by signal leaves its address as "the current cluster" for later ray.init() calls
        record = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
        try:
            with open(record) as f:
                if f.read().strip().endswith(f":{port}"):
                    os.remove(record)
        except OSError:
            pass
        # the client may have switched this process to token auth for the head; later tests start their own
        if mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = mode


@pytest.mark.slow
def test_submit_runs_the_job_and_never_duplicates_it(ray_head, tmp_path, capsys):
    from ray.job_submission import JobSubmissionClient

    from ripple.data.generator import GeneratorConfig, generate
    from ripple.data.storage import Store

    data = generate(str(tmp_path / "data"), GeneratorConfig(users=300, seed=2, label_sims=100)) and \
        str(tmp_path / "data")
    runs = str(tmp_path / "runs")
    train = ["--data", data, "--storage-path", runs, "--run-name", "sub", "--epochs", "1", "--num-workers", "1"]
    assert main(["submit", "--address", ray_head, "--", *train]) == EXIT_OK
    assert "spearman" in capsys.readouterr().out  # the job's logs were followed
    assert Store(runs).exists("sub", "metrics.json")

    # KubeRay (or a user) submits again: the finished job is reported, nothing new starts
    assert main(["submit", "--address", ray_head, "--", *train]) == EXIT_OK
    jobs = [j for j in JobSubmissionClient(ray_head).list_jobs() if j.submission_id == "ripple-sub"]
    assert len(jobs) == 1 and jobs[0].status.value == "SUCCEEDED"

    # a job that fails gives exit 1; submitting it again is refused with the way out
    bad = ["--data", str(tmp_path / "missing"), "--storage-path", runs, "--run-name", "bad", "--epochs", "1"]
    assert main(["submit", "--address", ray_head, "--", *bad]) == EXIT_RUNTIME
    capsys.readouterr()
    assert main(["submit", "--address", ray_head, "--no-wait", "--", *bad]) == EXIT_BAD_INPUT
    assert "ray job delete ripple-bad" in capsys.readouterr().err
