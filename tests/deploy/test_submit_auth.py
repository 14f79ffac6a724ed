"""``ripple submit`` against a real local Ray cluster with token authentication on, as ripple's KubeRay manifests
start it (``RAY_AUTH_MODE=token``, the token in ``RAY_AUTH_TOKEN``): without the token, or with another one, the job
API refuses the submission and ``ripple submit`` says so in one ``error:`` line (exit 2) that says how to pass the
token; with it, the job is accepted.

One head (``ray start --head --block``, 1 CPU, every port it listens on picked free, its own temp dir and HOME so no
``~/.ray/auth_token`` of this machine's is read or written) for the module; it is stopped by its process id, and any
process left holding its temp dir by theirs. Each ``ripple submit`` runs in a fresh interpreter: Ray's client loads
the token once per process. The job checks use the job API over plain HTTP; the job itself (``ripple train`` of
nothing) is stopped as soon as it is accepted: no training runs."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ripple.cli import EXIT_BAD_INPUT, EXIT_OK

pytestmark = pytest.mark.timeout(180)

RUN = "auth-check"
SID = f"ripple-{RUN}"
#: what ``ripple submit`` must never inherit from this machine: its token, its auth mode, its cluster
_CLIENT_DROP = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _request(url: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _pids_holding(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the head's own temp dir: only this test's Ray processes)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(p.name))
    return [pid for pid in out if pid != os.getpid()]


@pytest.fixture(scope="module")
def cluster():
    """(job API address, token) of a 1-CPU Ray head with token authentication on."""
    token = secrets.token_hex(16)
    # a short path: Ray's unix sockets live under it (their paths are limited to ~107 bytes)
    root = tempfile.mkdtemp(prefix="rtauth")
    home = os.path.join(root, "home")
    os.makedirs(home)
    gcs, dashboard, client, agent = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_DROP}
    env.update(HOME=home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    log = open(os.path.join(root, "ray-start.log"), "w")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent), "--num-cpus", "1",
         "--include-dashboard", "true", "--temp-dir", os.path.join(root, "ray"), "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited {head.returncode}: {Path(log.name).read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if _request(f"{address}/api/jobs/", token)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray job API at {address} did not come up: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.5)
        yield address, token
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head stops every process it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # its own session (start_new_session): only what this test started
            head.wait(timeout=10)
        for pid in _pids_holding(os.path.join(root, "ray")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def ripple_submit(address: str, token: str | None, tmp_path: Path) -> subprocess.Popen:
    """``ripple submit --no-wait`` of a tiny run, started in a fresh interpreter, its HOME empty (no token file); the
    token, if any, in ``RAY_AUTH_TOKEN``. ``finish`` waits for it."""
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_DROP}
    home = tmp_path / f"home-{secrets.token_hex(4)}"
    home.mkdir()
    env["HOME"] = str(home)
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-m", "ripple.cli", "submit", "--address", address, "--no-wait", "--",
                             "--run-name", RUN, "--epochs", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_submit_is_refused_without_the_token_and_accepted_with_it(cluster, tmp_path):
    address, token = cluster
    # the cluster really requires the token: the job API refuses a bare request
    assert _request(f"{address}/api/jobs/")[0] == 401

    # no token, and another cluster's token (both at once: each is a fresh interpreter importing Ray)
    refused = {code: ripple_submit(address, sent, tmp_path)
               for sent, code in ((None, "HTTP 401"), (secrets.token_hex(16), "HTTP 403"))}
    for code, proc in refused.items():
        done = finish(proc)
        assert done.returncode == EXIT_BAD_INPUT, (done.returncode, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr  # one line, no traceback, no warning
        line = lines[0]
        assert f"the Ray job API at {address} refused the request" in line and "token authentication" in line
        assert code in line and "Set the cluster's token in RAY_AUTH_TOKEN" in line and "~/.ray/auth_token" in line
        assert "kubectl get secret" in line and "auth_token" in line
        assert token not in line  # never echo the cluster's token
        assert done.stdout == ""
    # and nothing was submitted
    assert _request(f"{address}/api/jobs/{SID}", token)[0] == 404

    done = finish(ripple_submit(address, token, tmp_path))
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout == f"{SID}\n"
    # nothing on the console: no error, and not Ray's "token authentication is enabled for this Ray cluster" (a
    # warning about a cluster this process would start; ripple submit starts none)
    assert done.stderr.strip() == "", done.stderr
    status, body = _request(f"{address}/api/jobs/{SID}", token)
    assert status == 200, body
    job = json.loads(body)
    assert job["submission_id"] == SID and job["entrypoint"] == f"ripple train --run-name {RUN} --epochs 1"
    assert job["metadata"] == {"ripple_run": RUN}
    # no training here: stop it (it may already have ended, with no data to read)
    assert _request(f"{address}/api/jobs/{SID}/stop", token, method="POST")[0] == 200
