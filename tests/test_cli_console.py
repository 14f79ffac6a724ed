"""What a user sees: `ripple train` in its own process, with its own local Ray cluster, prints the stages, a line
per epoch and the table, and nothing of Ray's or Ray Train's internals, which go to the run's logs/ folder."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from images import assert_png

from ripple.data.generator import GeneratorConfig, generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: what Ray Train and PyTorch print per epoch and rank when their output reaches the console
INTERNALS = ("TrainingReport", "Checkpoint successfully created", "UserWarning", "find_unused_parameters",
             "RayTrainWorker", "TrainController", "Started a local Ray instance")


def test_train_console_is_short_and_the_logs_hold_the_rest(tmp_path):
    data = tmp_path / "data"
    generate(str(data), GeneratorConfig(users=300, seed=5, label_sims=50))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    cmd = [sys.executable, "-m", "ripple.cli", "train", "--data", str(data), "--storage-path", str(tmp_path / "runs"),
           "--run-name", "console", "--epochs", "2", "--num-workers", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    lines = console.strip().splitlines()
    assert len(lines) <= 25, console
    for text in INTERNALS:
        assert text not in console, f"{text!r} reached the console:\n{console}"
    assert [ln.split()[:2] for ln in lines if ln.startswith("[")] == [
        ["[1/4]", "validate"], ["[2/4]", "train"], ["[3/4]", "embed"], ["[4/4]", "evaluate"]]
    epochs = [ln for ln in lines if ln.lstrip().startswith("epoch ")]
    assert len(epochs) == 2 and "val Spearman" in epochs[0] and "seeds/s" in epochs[0] and "ETA" in epochs[0]
    assert any(ln.startswith("gnn ") for ln in lines) and "outputs under" in done.stdout.strip().splitlines()[-1]
    # the table goes to stdout, progress to stderr
    assert done.stdout.lstrip().startswith("model ") and "[1/4]" in done.stderr

    run = tmp_path / "runs" / "console"
    for name in ("training_curve.png", "predicted_vs_observed.png"):
        assert_png((run / name).read_bytes())
    assert "logs of this run go to" in (run / "logs" / "ripple.log").read_text()
    # Ray Train's per-epoch chatter is kept, in the workers' own log files
    worker_logs = "".join(p.read_text(errors="replace") for p in (run / "logs" / "ray").glob("worker-*"))
    assert "TrainingReport" in worker_logs or "Checkpoint successfully created" in worker_logs
