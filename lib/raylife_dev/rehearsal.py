"""Rehearse what Kubernetes would run, on a real multi-node Ray cluster on this machine.

`make rehearse` / `python -m raylife_dev.rehearsal`: start a head and worker nodes with `ray start`
(token authentication on), submit every CPU RayJob's entrypoint from kuberay/ through the Jobs API
with the store and storage on local paths (the same variables the manifests set) and short runs,
then deploy the rendered `local` Serve config through Serve's REST API and query each model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raylife.cluster import free_port
from raylife.errors import RaylifeError
from raylife.serve import config as serve_config
from raylife.waiting import wait_until

RAY = str(Path(sys.executable).parent / "ray")
SHORT_RUN = ["--preset", "debug", "--epochs", "1"]
"""Appended to each entrypoint (argparse: the last value wins): the rehearsal checks wiring, not quality."""
SHORT_SWEEP = ["--samples", "2", "--max-concurrent", "1"]
_AGENT_PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


@dataclass
class LocalCluster:
    dashboard_url: str
    gcs_address: str
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)


def _node_flags() -> list[str]:
    # Every node on one machine needs its own agent ports (and must not take a running cluster's).
    return [f"--{flag}={free_port()}" for flag in _AGENT_PORT_FLAGS]


@contextlib.contextmanager
def multi_node_cluster(worker_nodes: int = 1, cpus_per_node: int = 3) -> Iterator[LocalCluster]:
    """Head + worker nodes via `ray start --block`, token auth on; stops only this cluster."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.cluster import LOCAL_CLUSTER_TRAIN_ENV

    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # Ray's socket paths are length-limited
    env = {
        **os.environ,
        **LOCAL_CLUSTER_TRAIN_ENV,
        **serve_config.cluster_env("local"),
        # `ray start` turns token authentication on only when asked (or a token exists).
        "RAY_AUTH_MODE": "token",
        # Jobs run `python`: the one with raylife installed, as for a user with the venv active.
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    common = ["--block", "--disable-usage-stats", f"--num-cpus={cpus_per_node}"]
    head = [
        RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}", *common, *_node_flags(),
    ]  # fmt: skip
    cluster = LocalCluster(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{port}", env)
    try:
        cluster.processes.append(_start(head, env))
        wait_for_port(dashboard, cluster.processes[0])
        for _ in range(worker_nodes):
            worker = [RAY, "start", f"--address=127.0.0.1:{port}", *common, *_node_flags()]
            cluster.processes.append(_start(worker, env))
        _wait_for_nodes(cluster, 1 + worker_nodes)
        yield cluster
    finally:
        for process in reversed(cluster.processes):
            process.terminate()
        for process in cluster.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def wait_for_port(
    port: int, process: subprocess.Popen, timeout_s: float = 120, host: str = "127.0.0.1"
) -> None:
    """Until something listens on host:port; a `ray start` that exits first raises."""
    import socket

    def listening() -> bool:
        if process.poll() is not None:
            raise RaylifeError(f"`ray start` exited with {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((host, port)) == 0

    wait_until(
        listening,
        timeout_s,
        f"nothing listens on {host}:{port} after {timeout_s:.0f} s",
        interval_s=1,
    )


def alive_nodes(dashboard_url: str) -> list[dict[str, Any]]:
    """The cluster's ALIVE nodes, from its dashboard's state API (token sent)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import httpx

    from raylife.cluster import auth_headers

    nodes = httpx.get(f"{dashboard_url}/api/v0/nodes", headers=auth_headers(), timeout=5).json()
    return [n for n in nodes["data"]["result"]["result"] if n["state"] == "ALIVE"]


def _wait_for_nodes(cluster: LocalCluster, count: int, timeout_s: float = 120) -> None:
    import httpx

    wait_until(
        lambda: len(alive_nodes(cluster.dashboard_url)) >= count,
        timeout_s,
        f"{count} Ray nodes did not come up within {timeout_s:.0f} s",
        interval_s=1,
        ignore=(httpx.HTTPError, ValueError, KeyError),
    )


# --------------------------------------------------------------------------------------------------
# Jobs and Serve, as the manifests define them


def cpu_job_entrypoints(kuberay_dir: Path) -> dict[str, str]:
    """RayJob name -> entrypoint, for every job without GPUs (the GPU job is machine-checked only).
    Batch-predict jobs are left out: they score s3:// inputs the rehearsal has no copy of."""
    jobs = {}
    for path in sorted(kuberay_dir.glob("ray-job.*.yaml")):
        if path.name.startswith("ray-job.batch-predict-"):
            continue
        job = yaml.safe_load(path.read_text())
        cluster = job["spec"]["rayClusterSpec"]
        groups = cluster["workerGroupSpecs"]
        if (
            any("nvidia.com/gpu" in str(g["template"]) for g in groups)
            or "--use-gpu" in job["spec"]["entrypoint"]
        ):
            continue
        jobs[job["metadata"]["name"]] = job["spec"]["entrypoint"]
    return jobs


def chosen_jobs(entrypoints: dict[str, str], names: Collection[str] | None) -> dict[str, str]:
    """The named jobs (all of them without names); an unknown name is refused, listing them."""
    if names is None:
        return entrypoints
    unknown = sorted(set(names) - set(entrypoints))
    if unknown or not names:
        raise RaylifeError(
            f"no CPU RayJob named {', '.join(unknown) or '(none given)'}; choose from: "
            f"{', '.join(entrypoints)}"
        )
    return {name: entrypoint for name, entrypoint in entrypoints.items() if name in names}


def is_sweep(entrypoint: str) -> bool:
    return " jobs.tune " in f"{entrypoint} "


def short(entrypoint: str) -> str:
    extra = SHORT_RUN + (SHORT_SWEEP if is_sweep(entrypoint) else [])
    return " ".join([entrypoint, *extra])


def run_job(client: Any, entrypoint: str, env_vars: dict[str, str], timeout_s: float = 300) -> str:
    """Submit, wait, return the logs; a failed or stuck job raises with the end of its logs."""
    from ray.job_submission import JobStatus

    job_id = submit_when_ready(client, entrypoint=entrypoint, runtime_env={"env_vars": env_vars})

    def ended() -> Any:
        status = client.get_job_status(job_id)
        return (
            status if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} else None
        )

    def stuck() -> str:
        tail = str(client.get_job_logs(job_id))[-2000:]
        client.stop_job(job_id)
        return f"job {entrypoint!r} did not finish within {timeout_s:.0f} s: {tail}"

    status = wait_until(ended, timeout_s, stuck, interval_s=2)
    logs: str = client.get_job_logs(job_id)
    if status != JobStatus.SUCCEEDED:
        raise RaylifeError(f"job {entrypoint!r} ended {status}: {logs[-2000:]}")
    return logs


def submit_when_ready(client: Any, timeout_s: float = 90, **job: Any) -> str:
    """The dashboard answers before its job agent is up ('No available agent'): retry until then."""

    def submitted() -> str | None:
        try:
            return str(client.submit_job(**job))
        except RuntimeError as exc:
            if "No available agent" not in str(exc):
                raise
            return None

    return wait_until(submitted, timeout_s, "the job agent did not come up", interval_s=2)


def deploy_local_config(dashboard_url: str, store: str, models: list[str], port: int) -> dict:
    """The rendered `local` config file, pointed at this store and port, through Serve's REST API."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    config = yaml.safe_load(serve_config.rendered_path("local").read_text())
    config = serve_config.for_models(config, models)
    serve_config.point_at(config, store, port)
    ServeSubmissionClient(dashboard_url).deploy_applications(config)
    return config


def wait_serving(url: str, models: list[str], timeout_s: float = 180) -> dict[str, Any]:
    import httpx

    def ready() -> dict[str, Any] | None:
        response = httpx.get(f"{url}/readyz", timeout=5)
        if response.status_code == 200 and set(response.json()["models"]) == set(models):
            return dict(response.json()["models"])
        return None

    return wait_until(
        ready,
        timeout_s,
        f"Serve at {url} was not ready for {models} within {timeout_s:.0f} s",
        interval_s=1,
        ignore=(httpx.HTTPError, ValueError),
    )


def rehearse(
    kuberay_dir: Path, work: Path, jobs: Collection[str] | None = None, say: Any = print
) -> dict[str, Any]:
    """Every CPU RayJob (or those named in `jobs`), then the local Serve config for the models
    they promoted, on a 2-node cluster. Returns what happened."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import httpx
    from ray.job_submission import JobSubmissionClient

    from raylife.lifecycle.store import ModelStore

    env_vars = {"RAYLIFE_STORE": str(work / "store"), "RAYLIFE_RUNS": str(work / "runs")}
    report: dict[str, Any] = {"jobs": {}, "answers": {}}
    # This process's clients must send the cluster's token. Ray reads the mode once, at import:
    # main() sets it before importing Ray; a process with a token-auth cluster already has it.
    os.environ["RAY_AUTH_MODE"] = "token"
    chosen = chosen_jobs(cpu_job_entrypoints(kuberay_dir), jobs)
    with multi_node_cluster() as cluster:
        client = JobSubmissionClient(cluster.dashboard_url)
        for name, entrypoint in chosen.items():
            started = time.monotonic()
            # A sweep starts a trial process per trial on top of the job's own: on a loaded
            # 2-core machine it needs more than a single run's time.
            timeout_s = 600 if is_sweep(entrypoint) else 300
            logs = run_job(client, short(entrypoint), env_vars, timeout_s=timeout_s)
            report["jobs"][name] = round(time.monotonic() - started, 1)
            say(
                f"  {name}: SUCCEEDED in {report['jobs'][name]} s ({logs.strip().splitlines()[-1][:100]})"
            )
        store = ModelStore(env_vars["RAYLIFE_STORE"])
        models = [m for m in store.models() if store.pointer(m)]
        port = free_port()
        deploy_local_config(cluster.dashboard_url, env_vars["RAYLIFE_STORE"], models, port)
        url = f"http://127.0.0.1:{port}"
        report["served"] = wait_serving(url, models)
        for model in models:
            example = httpx.get(f"{url}/{model}/info", timeout=10).json()["input"]["example"]
            answer = httpx.post(f"{url}/{model}", json={"row": example}, timeout=30)
            if answer.status_code != 200:
                raise RaylifeError(f"POST /{model} answered {answer.status_code}: {answer.text}")
            report["answers"][model] = answer.json()
            say(
                f"  POST /{model} -> {answer.json()['predictions'][0]} ({answer.json()['version']})"
            )
        with contextlib.suppress(Exception):
            from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

            ServeSubmissionClient(cluster.dashboard_url).delete_applications()
    return report


def main(jobs: Collection[str] | None = None) -> None:
    # Before Ray is imported: its clients read the auth mode once, at import.
    os.environ["RAY_AUTH_MODE"] = "token"
    root = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="rl-rehearse-") as work:
        started = time.monotonic()
        print("Rehearsing kuberay/ on a local 2-node Ray cluster (token auth on) ...")
        report = rehearse(root / "kuberay", Path(work), jobs)
        print(
            f"rehearsal passed in {time.monotonic() - started:.0f} s: {len(report['jobs'])} jobs, "
            f"{len(report['answers'])} models answered over HTTP"
        )


if __name__ == "__main__":
    main()
