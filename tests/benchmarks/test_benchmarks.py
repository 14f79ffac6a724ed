"""The benchmark runner's own logic: dispatch, and the growth-exponent fit the scale benchmark reports."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import pipeline_scale  # noqa: E402


def _rows(edges, seconds, memory):
    return [{"edges": e, "stages": {s: {"seconds": t, "peak_pss_bytes": m} for s in pipeline_scale.STAGES}}
            for e, t, m in zip(edges, seconds, memory)]


def test_growth_exponents_recover_known_powers():
    e = [1e6, 1e7, 1e8]
    got = pipeline_scale.fit_exponents(_rows(e, [3 * x ** 1.0 for x in e], [5e8 + 0 * x for x in e]))
    for s in pipeline_scale.STAGES:
        assert got[s]["seconds"] == pytest.approx(1.0)
        assert got[s]["peak_pss"] == pytest.approx(0.0, abs=1e-9)
    got = pipeline_scale.fit_exponents(_rows(e, [x ** 1.5 for x in e], [x ** 0.5 for x in e]))
    assert got["train"]["seconds"] == pytest.approx(1.5) and got["embed"]["peak_pss"] == pytest.approx(0.5)
    assert pipeline_scale.fit_exponents(_rows([1e6], [1.0], [1.0])) == {}


@pytest.mark.parametrize("name", ["devices", "train", "scale", "sharded", "partition", "seeds", "history", "labels",
                                  "ablation", "multinode", "real", "pyg-tests"])
def test_runner_dispatches_every_benchmark(name):
    out = subprocess.run([sys.executable, "-m", "benchmarks", name, "--help"], cwd=BENCH.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_runner_lists_benchmarks_on_a_bad_name():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], cwd=BENCH.parent, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "python -m benchmarks devices" in out.stderr


def test_influence_max_checks_the_issue_bar():
    import influence_max

    def row(method, spread, seconds):
        return {"method": method, "k": 50, "spread_mean": spread, "spread_se": 1.0, "selection_s": seconds}

    got = influence_max.checks([row("ripple", 930.0, 0.2), row("follower_count", 700.0, 0.001),
                                row("celf", 1000.0, 30.0)])
    assert got["ripple_over_follower_count"] == pytest.approx(930 / 700)
    assert got["ripple_over_celf"] == pytest.approx(0.93) and got["celf_time_over_ripple_time"] == pytest.approx(150)
    assert all(got["pass"].values())
    assert not influence_max.checks([row("ripple", 800.0, 0.5), row("follower_count", 700.0, 0.001),
                                     row("celf", 1000.0, 30.0)])["pass"]["spread >= 90% of CELF"]
    assert influence_max.checks([row("ripple", 1.0, 1.0)]) == {}


@pytest.mark.timeout(240)
def test_devices_sweeps_batch_sizes_and_depths(tmp_path):
    """The GPU sweep (issue L) runs on every device there is; here the CPU: a point per depth and batch size,
    each with its sampled edges and seeds per second."""
    import json

    out = subprocess.run([sys.executable, "-m", "benchmarks", "devices", "--users", "2000", "--batch-size", "64",
                          "--batches", "2", "--train-batches", "0", "--inference", "0", "--threads", "1",
                          "--sweep-batch-sizes", "64", "512", "--sweep-fanouts", "15,10", "20,15,10",
                          "--sweep-seeds", "512", "--out", str(tmp_path)],
                         cwd=BENCH.parent, capture_output=True, text=True, timeout=230)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = json.loads((tmp_path / "device_sampling.json").read_text())["sweep"]
    assert [(p["fanouts"], p["batch_size"]) for p in sweep] == [([15, 10], 64), ([15, 10], 512),
                                                               ([20, 15, 10], 64), ([20, 15, 10], 512)]
    for p in sweep:
        assert p["device"] == "cpu" and p["batches"] == 512 // p["batch_size"]
        assert p["edges"] > 0 and p["seeds_per_s"] == pytest.approx(512 / p["seconds"])
    # a third hop samples more edges from the same seeds
    assert sweep[2]["edges"] > sweep[0]["edges"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_runs_the_whole_path_on_the_higgs_slice(tmp_path):
    """``benchmarks real`` on the repo's slice of the Higgs file: import -> labels -> train -> every model with its
    bootstrap SE, the variant reported as ``gnn`` picked by validation Spearman."""
    import json

    higgs = BENCH.parent / "tests" / "data" / "higgs" / "higgs-activity-slice.txt.gz"
    out = subprocess.run([sys.executable, "-m", "benchmarks", "real", "--higgs", str(higgs), "--cutoffs",
                          "2012-07-04T12:00:00Z", "--horizon", "30h", "--epochs", "1", "--num-workers", "1",
                          "--skip-android", "--variants", "small=model: {hidden: 16}", "--work", str(tmp_path / "w"),
                          "--out", str(tmp_path)], cwd=BENCH.parent, capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "real_data.json").read_text())
    imported = result["imports"]["higgs"]
    assert imported["source"]["format"] == "snap-activity" and imported["stage"]["peak_pss_bytes"] > 0
    (row,) = result["rows"]
    assert row["labels_stage"]["seconds"] > 0 and row["test_users"] > 0
    assert set(row["variants"]) == {"default", "small"}
    val = {k: v["val_spearman"] for k, v in row["variants"].items()}
    assert row["gnn_variant"] == max(val, key=val.get)
    assert row["spearman"]["gnn"] == row["variants"][row["gnn_variant"]]["test_spearman"]
    assert all(0 <= row["spearman_se"][m] < 1 for m in row["spearman"])
    assert (tmp_path / "real_data.png").stat().st_size > 0
