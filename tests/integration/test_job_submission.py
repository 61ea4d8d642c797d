"""A training job submitted with Ray's JobSubmissionClient to a real `ray start --head` cluster,
exactly as the README documents (`ray job submit --working-dir . -- python -m jobs.train ...`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raylife.store import ModelStore

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def head_cluster():
    """A second, separate cluster started the way users start one (token auth on)."""
    port, dashboard = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(
        prefix="rl-", dir="/tmp"
    )  # short: Ray's unix socket paths are length-limited
    # As a user with the virtualenv activated: the job's `python` must be the one with raylife.
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
    }
    start = [
        RAY,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=4",
        f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        # The test session's own cluster holds Ray's default agent ports: pick free ones.
        *(
            f"--{flag}={_free_port()}"
            for flag in (
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "metrics-export-port",
                "runtime-env-agent-port",
                "ray-client-server-port",
            )
        ),
    ]
    # --block keeps `ray start` in the foreground as the cluster's parent: terminating it stops this
    # cluster only (`ray stop` would also kill the test session's own cluster).
    head = subprocess.Popen(
        start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for_dashboard(dashboard, head)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        head.terminate()  # SIGTERM drains for up to 30 s; a test cluster has nothing to drain
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_dashboard(port: int, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise TimeoutError("the head node's dashboard did not come up")


def _submit_when_ready(client, timeout: float = 90, **job) -> str:
    """The dashboard answers before its job agent is up ('No available agent'): retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(client.submit_job(**job))
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.mark.slow
def test_train_job_through_job_submission_client(head_cluster, tmp_path, monkeypatch):
    from ray.job_submission import JobStatus, JobSubmissionClient

    address, _ = head_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    client = JobSubmissionClient(address)
    home = tmp_path / "home"
    job_id = _submit_when_ready(
        client,
        entrypoint="python -m jobs.train --model iris --preset debug --epochs 1 --num-workers 2 --promote",
        runtime_env={"working_dir": str(REPO), "env_vars": {"RAYLIFE_HOME": str(home)}},
    )
    deadline = time.monotonic() + 300
    status = client.get_job_status(job_id)
    while (
        status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        and time.monotonic() < deadline
    ):
        time.sleep(2)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "promoted iris" in logs
    store = ModelStore(str(home / "store"))
    assert store.pointer("iris").version in store.versions("iris")
