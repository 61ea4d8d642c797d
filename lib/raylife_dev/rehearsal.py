"""Rehearse what Kubernetes would run, on a real multi-node Ray cluster on this machine.

`make rehearse` / `python -m raylife_dev.rehearsal`: start a head and worker nodes with `ray start`
(token authentication on, the EKS overlay's Ray environment), submit every CPU RayJob's entrypoint
from kuberay/ through the Jobs API with the store and storage on local paths (the same variables the
manifests set) and short runs, then deploy the rendered `local` Serve config through Serve's REST
API, with the logging config of kuberay/'s RayService, and query each model. Then, as on EKS:

- **Health.** The `ModelPool` replica (the app at `/`) and one replica of a two-replica model are killed; every proxy (one
  per node, each on its own port here as on its own pod address there) must answer the ALB's
  health path of kuberay/ingress.models.yaml with 200, and the model through it, until Serve has
  replaced both.
- **Logs.** Every non-empty file of the session's `logs/` must be matched by a tail glob of
  kuberay/fluent-bit.yaml (raylife_dev.log_shipping), and Serve's access lines must be there.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raylife.cluster import free_port
from raylife.errors import RaylifeError
from raylife.serve import config as serve_config
from raylife.waiting import wait_until
from raylife_dev import log_shipping

RAY = str(Path(sys.executable).parent / "ray")
SHORT_RUN = ["--preset", "debug", "--epochs", "1"]
"""Appended to each entrypoint (argparse: the last value wins): the rehearsal checks wiring, not quality."""
SHORT_SWEEP = ["--samples", "2", "--max-concurrent", "1"]
SPREAD_REPLICAS = 2
"""Replicas of the model that loses one: the EKS overlay's minimum, one per node."""
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
    temp_dir: str
    worker_proxy_ports: list[int] = field(default_factory=list)
    """The HTTP port of each worker node's Serve proxy (the head's is the config's port)."""
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def logs_dir(self) -> Path:
        """The session's logs/, every node's (they share this machine's temp dir)."""
        return Path(self.temp_dir) / "session_latest" / "logs"


def _node_flags() -> list[str]:
    # Every node on one machine needs its own agent ports (and must not take a running cluster's).
    return [f"--{flag}={free_port()}" for flag in _AGENT_PORT_FLAGS]


@contextlib.contextmanager
def multi_node_cluster(worker_nodes: int = 1, cpus_per_node: int = 3) -> Iterator[LocalCluster]:
    """Head + worker nodes via `ray start --block`, token auth on; stops only this cluster.

    Each worker's Serve proxy gets a port of its own: on one machine the proxies would otherwise
    share one port (SO_REUSEPORT) and no check could tell which of them answered."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.cluster import LOCAL_CLUSTER_TRAIN_ENV

    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # Ray's socket paths are length-limited
    # The EKS overlay's Ray environment, not this process's: the local overlay's (HAProxy in front
    # of each node, inherited from a test session or `raylife serve`) is not what the pods run.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env = {
        **inherited,
        **LOCAL_CLUSTER_TRAIN_ENV,
        **serve_config.cluster_env("eks"),
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
    cluster = LocalCluster(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{port}", env, temp_dir)
    try:
        cluster.processes.append(_start(head, env))
        wait_for_port(dashboard, cluster.processes[0])
        for _ in range(worker_nodes):
            worker = [RAY, "start", f"--address=127.0.0.1:{port}", *common, *_node_flags()]
            cluster.worker_proxy_ports.append(free_port())
            proxy_port = {"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(cluster.worker_proxy_ports[-1])}
            cluster.processes.append(_start(worker, {**env, **proxy_port}))
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


def eks_logging_config(kuberay_dir: Path) -> dict[str, Any]:
    """The Serve logging config of kuberay/'s RayService (its serveConfigV2, as applied)."""
    service = yaml.safe_load((kuberay_dir / "ray-service.models.yaml").read_text())
    return dict(yaml.safe_load(service["spec"]["serveConfigV2"])["logging_config"])


def alb_health_path(kuberay_dir: Path) -> str:
    """The path the ALB of kuberay/'s Ingress checks on every target (each Serve proxy)."""
    ingress = yaml.safe_load((kuberay_dir / "ingress.models.yaml").read_text())
    return str(ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"])


def rehearsal_config(
    kuberay_dir: Path, store: str, models: list[str], port: int, spread: str
) -> dict[str, Any]:
    """The rendered `local` config (this machine's sizes) for `models`, with what the RayService
    adds that a check here depends on: its logging config, and model `spread` at two replicas,
    one per node (the EKS overlay's max_replicas_per_node), so that one of them can be lost."""
    config = yaml.safe_load(serve_config.rendered_path("local").read_text())
    config = serve_config.for_models(config, models)
    serve_config.point_at(config, store, port)
    config["logging_config"] = eks_logging_config(kuberay_dir)
    for _, deployment in serve_config.model_deployments(config, [spread]):
        bounds = {"min_replicas": SPREAD_REPLICAS, "max_replicas": SPREAD_REPLICAS}
        deployment["autoscaling_config"] = {**deployment.get("autoscaling_config", {}), **bounds}
        deployment["max_replicas_per_node"] = 1
    return config


def deploy(dashboard_url: str, config: dict[str, Any]) -> None:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url).deploy_applications(config)


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


# --------------------------------------------------------------------------------------------------
# Health while replicas are lost, and the logs the sidecar would ship


def serve_details(dashboard_url: str) -> dict[str, Any]:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return dict(ServeSubmissionClient(dashboard_url).get_serve_details())


def running_replicas(details: dict[str, Any], app: str) -> list[dict[str, Any]]:
    return [
        replica
        for deployment in details["applications"][app]["deployments"].values()
        for replica in deployment["replicas"]
        if replica["state"] == "RUNNING"
    ]


def kill_actors(names: list[str], namespace: str = "serve") -> None:
    """Run as a job's driver on the cluster: kill each named actor for good, print the time."""
    import ray

    ray.init()
    for name in names:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    print(f"{KILLED_AT} {time.time():.3f}")


KILLED_AT = "killed at"


def kill_entrypoint(names: list[str]) -> str:
    code = f"from raylife_dev.rehearsal import kill_actors; kill_actors({names!r})"
    return f"python -c {shlex.quote(code)}"


@dataclass
class Probe:
    """Each proxy's health path and a request to the model, over and over, until stopped:
    (wall time, proxy, "health" or "model", HTTP status; 0 when no answer came)."""

    proxies: list[str]
    health_path: str
    model: str
    row: Any
    samples: list[tuple[float, str, str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                for proxy in self.proxies:
                    for kind, send in (
                        ("health", lambda p=proxy: http.get(f"{p}{self.health_path}")),
                        ("model", lambda p=proxy: http.post(f"{p}/{self.model}", json=self.row)),
                    ):
                        try:
                            status = send().status_code
                        except httpx.HTTPError:
                            status = 0
                        self.samples.append((time.time(), proxy, kind, status))
                time.sleep(0.1)

    def statuses(self, since: float, until: float) -> dict[str, dict[str, dict[int, int]]]:
        """proxy -> kind -> status -> count, for the samples taken in [since, until]."""
        out: dict[str, dict[str, Counter[int]]] = {}
        for at, proxy, kind, status in self.samples:
            if since <= at <= until:
                out.setdefault(proxy, {}).setdefault(kind, Counter())[status] += 1
        return {p: {k: dict(c) for k, c in kinds.items()} for p, kinds in out.items()}


def wait_proxies(proxies: list[str], health_path: str, timeout_s: float = 120) -> None:
    """Until every proxy answers its health path with 200 (a worker's starts after the apps)."""
    import httpx

    def all_up() -> bool:
        return all(httpx.get(f"{p}{health_path}", timeout=5).status_code == 200 for p in proxies)

    wait_until(
        all_up,
        timeout_s,
        f"not every proxy of {proxies} answered {health_path} with 200 within {timeout_s:.0f} s",
        interval_s=1,
        ignore=(httpx.HTTPError,),
    )


def lose_replicas(
    cluster: LocalCluster,
    client: Any,
    proxies: list[str],
    kuberay_dir: Path,
    config: dict[str, Any],
    spread: str,
    row: Any,
) -> dict[str, Any]:
    """Kill the pool app's replica and one of model `spread`'s two; every proxy must keep answering
    the ALB's health path with 200, and `spread` with 200, until Serve has replaced both."""
    health_path = alb_health_path(kuberay_dir)
    wait_proxies(proxies, health_path)
    details = serve_details(cluster.dashboard_url)
    victims = {app: running_replicas(details, app)[0] for app in _victim_apps(config, spread)}
    probe = Probe(proxies, health_path, spread, {"row": row})
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # a baseline before the kill
        logs = run_job(client, kill_entrypoint([v["actor_name"] for v in victims.values()]), {})
        killed = float(logs.rsplit(KILLED_AT, 1)[1].split()[0])
        back = _replaced(cluster, {app: v["actor_id"] for app, v in victims.items()}, details)
        time.sleep(1.0)
    finally:
        probe.stop.set()
        thread.join(timeout=30)
    result = {
        "health_path": health_path,
        "killed": {app: v["actor_name"] for app, v in victims.items()},
        "window_s": round(back - killed, 1),
        "in_window": probe.statuses(killed, back),
        "throughout": probe.statuses(0, float("inf")),
    }
    _check_health(result, proxies)
    return result


def _victim_apps(config: dict[str, Any], spread: str) -> list[str]:
    """The apps that lose a replica: every one that is not a model (the pool app at /), and `spread`'s."""
    return [
        app["name"]
        for app in config["applications"]
        if app["import_path"] != serve_config.MODEL_IMPORT_PATH or app["args"]["model"] == spread
    ]


def _replaced(
    cluster: LocalCluster, killed: dict[str, str], before: dict[str, Any], timeout_s: float = 240
) -> float:
    """Until each app runs as many replicas as before, none of them a killed one; the time."""

    def done() -> float | None:
        details = serve_details(cluster.dashboard_url)
        for app, actor_id in killed.items():
            ids = {r["actor_id"] for r in running_replicas(details, app)}
            if actor_id in ids or len(ids) < len(running_replicas(before, app)):
                return None
        return time.time()

    return wait_until(
        done,
        timeout_s,
        f"Serve did not replace the killed replicas of {sorted(killed)} within {timeout_s:.0f} s",
        interval_s=0.5,
        ignore=(KeyError, OSError, RuntimeError),
    )


def _check_health(result: dict[str, Any], proxies: list[str]) -> None:
    """200 only, on every proxy, for both the health path and the model; and samples in the
    window on each, or the check proved nothing."""
    problems = []
    for proxy in proxies:
        for kind in ("health", "model"):
            window = result["in_window"].get(proxy, {}).get(kind, {})
            if not window:
                problems.append(f"{proxy}: no {kind} request answered while replicas were lost")
            answered = result["throughout"].get(proxy, {}).get(kind, {})
            if set(answered) - {200}:
                problems.append(f"{proxy}: {kind} answered {answered} (only 200 may appear)")
    if problems:
        raise RaylifeError(
            f"losing {', '.join(result['killed'].values())}: {'; '.join(problems)}; the ALB "
            f"checks {result['health_path']} on every proxy and sends traffic only to those answering 200"
        )


def check_logs(logs_dir: Path, kuberay_dir: Path) -> dict[str, Any]:
    """Every non-empty log file is matched by a tail glob of kuberay/fluent-bit.yaml, and the
    proxies and replicas wrote access lines (the RayService's logging config at INFO)."""
    globs = log_shipping.shipped_globs(kuberay_dir)
    walked = log_shipping.walk(logs_dir, globs)
    access = log_shipping.access_lines(logs_dir)
    if walked.missed:
        raise RaylifeError(
            f"{len(walked.missed)} of {walked.files} log files match no Fluent Bit Path of "
            f"kuberay/fluent-bit.yaml ({', '.join(globs)}): {walked.missed[:10]}; add a glob to "
            "LOG_PATHS in lib/raylife/deploy/kuberay.py and run `make kuberay-manifests`"
        )
    by_role = {
        role: sum(n for name, n in access.items() if name.startswith(role))
        for role in ("proxy_", "replica_")
    }
    if not all(by_role.values()):
        raise RaylifeError(
            f"access lines in {logs_dir / 'serve'}: {access or 'none'}; the RayService's "
            "logging_config (serve_apps/config/eks.yaml) must keep log_level INFO and the access log on"
        )
    return {
        "files": walked.files,
        "shipped": len(walked.shipped),
        "access_lines": {role.rstrip("_"): n for role, n in by_role.items()},
    }


# --------------------------------------------------------------------------------------------------
# The rehearsal


def rehearse(
    kuberay_dir: Path, work: Path, jobs: Collection[str] | None = None, say: Any = print
) -> dict[str, Any]:
    """Every CPU RayJob (or those named in `jobs`), then the local Serve config for the models
    they promoted, on a 2-node cluster; then replicas lost under the ALB's health checks, and the
    session's logs against the Fluent Bit config. Returns what happened."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
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
        spread = models[0]
        config = rehearsal_config(kuberay_dir, env_vars["RAYLIFE_STORE"], models, port, spread)
        deploy(cluster.dashboard_url, config)
        url = f"http://127.0.0.1:{port}"
        report["served"] = wait_serving(url, models)
        rows = _query_each(url, models, report, say)
        proxies = [url, *(f"http://127.0.0.1:{p}" for p in cluster.worker_proxy_ports)]
        report["health"] = lose_replicas(
            cluster, client, proxies, kuberay_dir, config, spread, rows[spread]
        )
        say(
            f"  lost {', '.join(report['health']['killed'].values())}: for "
            f"{report['health']['window_s']} s, {report['health']['health_path']} and /{spread} "
            f"answered {report['health']['in_window']}"
        )
        report["logs"] = check_logs(cluster.logs_dir, kuberay_dir)
        say(
            f"  logs: {report['logs']['shipped']} of {report['logs']['files']} non-empty files "
            f"matched by kuberay/fluent-bit.yaml; access lines {report['logs']['access_lines']}"
        )
        with contextlib.suppress(Exception):
            from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

            ServeSubmissionClient(cluster.dashboard_url).delete_applications()
    return report


def _query_each(url: str, models: list[str], report: dict[str, Any], say: Any) -> dict[str, Any]:
    """POST each model its own example row; returns the rows."""
    import httpx

    rows = {}
    for model in models:
        rows[model] = httpx.get(f"{url}/{model}/info", timeout=10).json()["input"]["example"]
        answer = httpx.post(f"{url}/{model}", json={"row": rows[model]}, timeout=30)
        if answer.status_code != 200:
            raise RaylifeError(f"POST /{model} answered {answer.status_code}: {answer.text}")
        report["answers"][model] = answer.json()
        say(f"  POST /{model} -> {answer.json()['predictions'][0]} ({answer.json()['version']})")
    return rows


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
            f"{len(report['answers'])} models answered over HTTP; every proxy answered "
            f"{report['health']['health_path']} with 200 while replicas were lost; "
            f"{report['logs']['shipped']}/{report['logs']['files']} log files shipped"
        )


if __name__ == "__main__":
    main()
