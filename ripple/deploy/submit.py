"""``ripple submit``: the training job through Ray Jobs (``JobSubmissionClient``) on an existing Ray cluster.

The submission id is the run name, so submitting twice never starts a duplicate (KubeRay's submitter may resubmit):
a job already pending or running is followed instead, one that already succeeded is reported, and one that failed
or was stopped is refused with the way out (a new ``--run-name``, or ``ray job delete``). Logs are followed until
the job ends unless ``--no-wait``; the exit code is the job's (0 succeeded, 1 failed or stopped).

A cluster with Ray token authentication (every KubeRay manifest of ripple's turns it on) refuses a request without
its token: ``ripple submit`` sends the local one (``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, or
``~/.ray/auth_token``), and a refusal is one ``error:`` line (exit 2) that says how to pass the token.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
import time

log = logging.getLogger(__name__)

TERMINAL_OK, TERMINAL_BAD = ("SUCCEEDED",), ("FAILED", "STOPPED")
#: never uploaded with ``--working-dir``: virtualenvs, outputs, VCS metadata
WORKING_DIR_EXCLUDES = [".venv", ".git", "ripple-demo", "**/__pycache__", ".pytest_cache", "benchmarks/results"]


def resolve_address(flag: str | None) -> str:
    address = flag or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ValueError("no Ray cluster address: pass --address http://HEAD:8265 (the dashboard / job API), or set "
                         "RAY_API_SERVER_ADDRESS or RAY_ADDRESS")
    return address


def submission_id(run_name: str) -> str:
    """Ray submission ids allow letters, digits, '-', '_' and '.': a run name outside that set is refused."""
    if not run_name or any(not (c.isalnum() or c in "-_.") for c in run_name):
        raise ValueError(f"run name {run_name!r} cannot be a Ray submission id: use letters, digits, '-', '_', '.'")
    return f"ripple-{run_name}"


#: where a Ray client finds the cluster's token (the first one set wins)
TOKEN_SOURCES = "RAY_AUTH_TOKEN (or in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token)"
#: how a KubeRay cluster's token is read: the operator's Secret (key auth_token) carries label ray.io/cluster; its name
#: is the RayCluster's, cut to its last 50 characters
KUBERAY_TOKEN = ("export RAY_AUTH_TOKEN=\"$(kubectl get secret -l ray.io/cluster=<RayCluster name> "
                 "-o jsonpath='{.items[0].data.auth_token}' | base64 -d)\"")


def _client(address: str):
    """A ``JobSubmissionClient`` that sends the local token, if there is one. A cluster with token authentication
    refuses requests without it; Ray's client sends it only once token mode is enabled, which Ray's own CLI does with
    the same call when ``RAY_AUTH_MODE`` is unset. Ray's warnings on the way ("token authentication is enabled for
    this Ray cluster", of a cluster this process would start, none here; "no token was found") are kept off the
    console: a refusal says it in its one ``error:`` line (``refused``)."""
    from ray.job_submission import JobSubmissionClient

    import importlib.util

    auth_log = logging.getLogger("ray._private.authentication")
    level = auth_log.level
    auth_log.setLevel(logging.ERROR)
    try:
        setup = "ray._private.authentication.authentication_token_setup"
        if importlib.util.find_spec(setup) is not None:  # absent from Rays without token authentication
            if importlib.import_module(setup).maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
                log.info("sending the local Ray authentication token to %s", address)
        return JobSubmissionClient(address)
    finally:
        auth_log.setLevel(level)


def _authentication_error():
    """Ray's ``AuthenticationError`` (HTTP 401 / 403 from a cluster with token authentication), or a class nothing
    raises on a Ray without token authentication."""
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:
        class AuthenticationError(Exception):  # noqa: N818 — Ray's name
            """Never raised: this Ray has no token authentication."""
    return AuthenticationError


def refused(address: str, error: BaseException) -> ValueError:
    """One line for a request the cluster refused for want of the right token (or one this process could not send:
    token mode on here, no token found): what, why, the fix."""
    text = str(getattr(error, "message", None) or error)
    fix = f"Set the cluster's token in {TOKEN_SOURCES} and submit again; on KubeRay: {KUBERAY_TOKEN}"
    if text.startswith("Authentication failed"):  # 403: a token was sent, and it is not the cluster's
        why = "the token sent is not this cluster's (HTTP 403)"
    elif text.startswith("Authentication required"):  # 401: no token was sent
        why = "no token was sent (HTTP 401)"
        mode = os.environ.get("RAY_AUTH_MODE", "")
        if mode and mode.lower() != "token":
            why += f"; RAY_AUTH_MODE={mode} here keeps it from being sent: unset it"
    else:  # raised before any request: RAY_AUTH_MODE=token here, and no token anywhere
        return ValueError(f"no Ray authentication token to send to {address}: RAY_AUTH_MODE=token is set here and "
                          f"no token was found. {fix}")
    return ValueError(f"the Ray job API at {address} refused the request: the cluster requires token authentication "
                      f"and {why}. {fix}")


def _status(client, sid: str) -> str | None:
    try:
        return str(client.get_job_info(sid).status.value)
    except RuntimeError:  # the job API answers 404 as a RuntimeError: no such job
        return None


def _follow(client, sid: str, out) -> None:
    async def tail():
        async for lines in client.tail_job_logs(sid):
            out.write(lines)
            out.flush()
    asyncio.run(tail())


def submit(train_args: list[str], run_name: str, address: str | None = None, wait: bool = True,
           working_dir: str | None = None, entrypoint_num_cpus: float = 0, poll_s: float = 1.0,
           out=None) -> int:
    """Submit (or re-attach to) ``ripple train <train_args>`` as run ``run_name``; returns the exit code. A cluster
    that refuses the request for want of its token raises ``ValueError`` (``refused``)."""
    address = resolve_address(address)
    sid = submission_id(run_name)
    try:
        return _submit(_client(address), train_args, run_name, sid, wait, working_dir, entrypoint_num_cpus, poll_s,
                       out or sys.stdout)
    except _authentication_error() as e:
        raise refused(address, e) from None


def _submit(client, train_args: list[str], run_name: str, sid: str, wait: bool, working_dir: str | None,
            entrypoint_num_cpus: float, poll_s: float, out) -> int:
    status = _status(client, sid)
    if status in TERMINAL_BAD:
        raise ValueError(f"job {sid} already exists with status {status}; to train again under this run name "
                         f"(it resumes from its checkpoints) remove the old job with `ray job delete {sid}`, or "
                         "pick a new --run-name")
    if status is None:
        runtime_env = {}
        if working_dir:
            runtime_env = {"working_dir": os.path.abspath(working_dir), "excludes": WORKING_DIR_EXCLUDES}
        entrypoint = shlex.join(["ripple", "train", *train_args])
        client.submit_job(entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env or None,
                          metadata={"ripple_run": run_name}, entrypoint_num_cpus=entrypoint_num_cpus)
        log.info("submitted %s: %s", sid, entrypoint)
    else:
        log.info("job %s already exists (%s): not submitting a duplicate", sid, status)
    if not wait:
        out.write(f"{sid}\n")
        return 0
    if _status(client, sid) not in TERMINAL_OK:
        _follow(client, sid, out)
    while (status := _status(client, sid)) not in TERMINAL_OK + TERMINAL_BAD:
        time.sleep(poll_s)  # logs can end a moment before the status is final
    log.info("job %s finished: %s", sid, status)
    return 0 if status in TERMINAL_OK else 1
