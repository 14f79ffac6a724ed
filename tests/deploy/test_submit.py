"""``ripple submit``'s checks made before any cluster is reached. Submitting for real, to a multi-node cluster
through the Ray Jobs API, is ``tests/test_multinode.py``'s."""
from __future__ import annotations

import pytest

from ripple.cli import EXIT_BAD_INPUT, main
from ripple.deploy.submit import resolve_address, submission_id


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
