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


REFUSED = "error: the Ray job API at http://head:8265 refused the request: the cluster requires token authentication"


@pytest.mark.parametrize("answer, mode, words", [
    ("Authentication required: Unauthorized: Missing authentication token", None,
     [REFUSED, "no token was sent (HTTP 401)"]),
    ("Authentication failed: Forbidden: Invalid authentication token", None,
     [REFUSED, "not this cluster's (HTTP 403)"]),
    ("Authentication required: Unauthorized: Missing authentication token", "disabled",
     [REFUSED, "HTTP 401", "RAY_AUTH_MODE=disabled here keeps it from being sent: unset it"]),
    # Ray's client refuses to start: token mode here, no token anywhere (nothing reached the cluster)
    ("Token authentication is enabled but Ray couldn't find an authentication token.", "token",
     ["error: no Ray authentication token to send to http://head:8265: RAY_AUTH_MODE=token is set here"]),
])
def test_a_refusal_for_want_of_the_token_is_one_error_line_exit_2(monkeypatch, capsys, answer, mode, words):
    """What Ray's job client raises on the job API's 401 / 403 (a real cluster: test_submit_auth.py), or before any
    request when it has no token to send, becomes one line saying what was refused and how to pass the token."""
    from ripple.deploy import submit as submit_mod

    def refuse(address):
        raise submit_mod._authentication_error()(f"{answer}\n\nToken authentication is enabled but ...")

    monkeypatch.setattr(submit_mod, "_client", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    if mode:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    assert main(["submit", "--address", "http://head:8265", "--", "--run-name", "r1"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith(words[0]), line
    for w in [*words[1:], "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token", "kubectl get secret"]:
        assert w in line, (w, line)
