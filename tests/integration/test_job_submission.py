"""A training job submitted with Ray's JobSubmissionClient to a real `ray start --head` cluster,
exactly as the README documents (`ray job submit --working-dir . -- python -m jobs.train ...`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylife.lifecycle.store import ModelStore
from raylife.waiting import poll
from raylife_dev.rehearsal import multi_node_cluster, submit_when_ready

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def head_cluster():
    """A second, separate cluster started the way users start one (`ray start`, token auth on)."""
    with multi_node_cluster(worker_nodes=0, cpus_per_node=4) as cluster:
        yield cluster.dashboard_url


@pytest.mark.slow
def test_train_job_through_job_submission_client(head_cluster, tmp_path, monkeypatch):
    from ray.job_submission import JobStatus, JobSubmissionClient

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    client = JobSubmissionClient(head_cluster)
    home = tmp_path / "home"
    job_id = submit_when_ready(
        client,
        entrypoint="python -m jobs.train --model iris --preset debug --epochs 1 --num-workers 2 --promote",
        runtime_env={"working_dir": str(REPO), "env_vars": {"RAYLIFE_HOME": str(home)}},
    )
    ended = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    poll(lambda: client.get_job_status(job_id) in ended, timeout_s=300, interval_s=2)
    status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "promoted iris" in logs
    store = ModelStore(str(home / "store"))
    assert store.pointer("iris").version in store.versions("iris")


def _assert_anonymous_refused(dashboard: str) -> None:
    """The Jobs API and Serve's deploy API refuse callers without the token; with it, they answer."""
    import httpx

    from raylife.cluster import auth_headers

    job = {"entrypoint": "echo pwned"}
    anonymous_job = httpx.post(f"{dashboard}/api/jobs/", json=job, timeout=30)
    anonymous_deploy = httpx.put(
        f"{dashboard}/api/serve/applications/", json={"applications": []}, timeout=30
    )
    assert anonymous_job.status_code in (401, 403), anonymous_job.text
    assert anonymous_deploy.status_code in (401, 403), anonymous_deploy.text
    with_token = httpx.get(f"{dashboard}/api/jobs/", headers=auth_headers(), timeout=30)
    assert with_token.status_code == 200, with_token.text


def test_ray_start_cluster_refuses_requests_without_the_token(head_cluster):
    """`ray start` as raylife runs it (RAY_AUTH_MODE=token): token authentication is on."""
    _assert_anonymous_refused(head_cluster)


def test_ray_init_cluster_refuses_requests_without_the_token(ray_cluster):
    """The session cluster comes from raylife.cluster.ensure_ray, as every raylife command's."""
    from raylife.cluster import dashboard_url

    _assert_anonymous_refused(dashboard_url())
