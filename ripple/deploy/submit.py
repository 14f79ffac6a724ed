"""``ripple submit``: the training job through Ray Jobs (``JobSubmissionClient``) on an existing Ray cluster.

The submission id is the run name, so submitting twice never starts a duplicate (KubeRay's submitter may resubmit):
a job already pending or running is followed instead, one that already succeeded is reported, and one that failed
or was stopped is refused with the way out (a new ``--run-name``, or ``ray job delete``). Logs are followed until
the job ends unless ``--no-wait``; the exit code is the job's (0 succeeded, 1 failed or stopped).
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


def _client(address: str):
    """A ``JobSubmissionClient``. A local cluster started by ``ray start`` turns on token authentication when a
    token exists on the machine; Ray's client sends it only once token mode is enabled, which Ray's own CLI does
    with the same call when ``RAY_AUTH_MODE`` is unset."""
    from ray.job_submission import JobSubmissionClient

    import importlib.util

    setup = "ray._private.authentication.authentication_token_setup"
    if importlib.util.find_spec(setup) is not None:  # absent from Rays without token authentication
        importlib.import_module(setup).maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    return JobSubmissionClient(address)


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
    """Submit (or re-attach to) ``ripple train <train_args>`` as run ``run_name``; returns the exit code."""
    out = out or sys.stdout
    client = _client(resolve_address(address))
    sid = submission_id(run_name)
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
