"""The RayService's high-availability promise, rehearsed on this machine (`raylife rehearse-ha`).

Each Ray node runs in its own network namespace with its own address, as a pod does. The head
persists the GCS state (`RAY_gcs_storage=rocksdb`: on EKS KubeRay's GCS fault tolerance keeps it in
Redis), workers wait for a lost GCS instead of exiting (`RAY_gcs_rpc_server_reconnect_timeout_s`,
which KubeRay sets for the same reason), and the model application has a proxy on every node and
its replicas on the worker. While a load client with retries drives the model through the worker
node's proxy, the head's GCS is killed and the head restarted, as Kubernetes restarts its pod.

Measured: requests lost, first-try success while the GCS was down, the outage (GCS killed ->
Serve's controller answering again), whether the applications came back with the same replicas and
no redeploy, and whether a promotion after recovery reaches the running replicas.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylife.errors import RaylifeError
from raylife.lifecycle.store import ModelStore
from raylife.serve import config as serve_config
from raylife.waiting import poll, wait_until
from raylife_dev.rehearsal import alive_nodes, wait_for_port

RAY = str(Path(sys.executable).parent / "ray")
GCS_PORT = 6379
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
MODEL = "iris"
WORKER_RECONNECT_S = "300"
"""How long a worker's raylet waits for a lost GCS before giving up (KubeRay sets it on workers
when GCS fault tolerance is on; Ray's default, 60 s, is shorter than a slow pod restart)."""


@dataclass(frozen=True)
class Host:
    """One network namespace with one address on a private bridge: a pod's view of the network."""

    name: str
    netns: str
    ip: str

    def run(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]


@contextlib.contextmanager
def namespaced_hosts(names: list[str]) -> Iterator[list[Host]]:
    """A bridge in this namespace and one namespace per name, each reachable from here."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        raise RaylifeError("the HA rehearsal needs root and iproute2 (`ip netns`) for its hosts")
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.231.{os.getpid() % 250}"
    bridge = f"rlb{tag}"
    hosts = [
        Host(name, f"rl{tag}-{name}", f"{subnet}.{index}")
        for index, name in enumerate(names, start=2)
    ]
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for index, host in enumerate(hosts):
            outside, inside = f"rl{tag}v{index}", f"rl{tag}n{index}"
            _ip("netns", "add", host.netns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("netns", "exec", host.netns, "ip", "addr", "add", f"{host.ip}/24", "dev", inside)
            _ip("netns", "exec", host.netns, "ip", "link", "set", inside, "up")
            _ip("netns", "exec", host.netns, "ip", "link", "set", "lo", "up")
        yield hosts
    finally:
        for index, host in enumerate(hosts):
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
            subprocess.run(
                ["ip", "link", "del", f"rl{tag}v{index}"], capture_output=True, check=False
            )
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RaylifeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@dataclass
class Node:
    """A `ray start --block` process in a host's namespace; its temp dir holds its sessions."""

    host: Host
    argv: list[str]
    env: dict[str, str]
    temp_dir: str
    """Prefix of the temp dir of each start (on every one of its processes' command lines)."""
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        """Start (or restart) the node; `ray start`'s own output goes to <temp dir>.log. A restart
        gets a fresh temp dir under the same prefix, as a restarted pod gets a fresh /tmp/ray."""
        self.starts += 1
        temp = f"{self.temp_dir}-{self.starts}"
        with open(f"{self.temp_dir}.log", "a") as log:
            self.process = subprocess.Popen(
                self.host.run([*self.argv, f"--temp-dir={temp}"]),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 5000) -> str:
        """The end of `ray start`'s output and of the latest start's raylet log."""
        tails = []
        for path in (
            Path(f"{self.temp_dir}.log"),
            Path(f"{self.temp_dir}-{self.starts}/session_latest/logs/raylet.out"),
        ):
            with contextlib.suppress(OSError):
                tails.append(f"[{path.name}] {path.read_text()[-chars:]}")
        return " ".join(tails)

    def pids(self) -> list[int]:
        """Every process of this node: its temp dir is on each one's command line."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if self.temp_dir in (entry / "cmdline").read_bytes().decode(errors="replace"):
                        found.append(int(entry.name))
        return found

    def kill(self, only: str | None = None) -> None:
        """SIGKILL the node's processes (those whose command line has `only`, when given) and
        wait until they are gone."""
        targets = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                if only is None or only in cmdline:
                    os.kill(pid, signal.SIGKILL)
                    targets.append(pid)
        if only is None and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        if poll(lambda: not any(_alive(pid) for pid in targets), 30, interval_s=0.2) is None:
            raise RaylifeError(f"processes of {self.host.name} survived SIGKILL: {targets}")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Cluster:
    head: Node
    worker: Node
    work: Path

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head.host.ip}:{DASHBOARD_PORT}"

    @property
    def serve_url(self) -> str:
        """The worker node's proxy: where the load goes (the head may be down)."""
        return f"http://{self.worker.host.ip}:{SERVE_PORT}"


@contextlib.contextmanager
def ha_cluster(head_host: Host, worker_host: Host, work: Path) -> Iterator[Cluster]:
    """Head (no CPUs: replicas go to the worker) with persisted GCS state, and one worker."""
    # The EKS overlay's environment, not this process's: a local cluster's Serve settings
    # (HAProxy and friends, inherited from a `raylife serve` or a test session) do not apply.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base_env = {
        **inherited,
        **serve_config.cluster_env("eks"),
        "RAY_AUTH_MODE": "token",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    common = ["start", "--block", "--disable-usage-stats"]
    # Short paths under /tmp: Ray's socket paths are length-limited.
    head_tmp = tempfile.mkdtemp(prefix="rl-ha-head-", dir="/tmp")
    worker_tmp = tempfile.mkdtemp(prefix="rl-ha-wrk-", dir="/tmp")
    head_argv = [
        RAY, *common, "--head", f"--node-ip-address={head_host.ip}", f"--port={GCS_PORT}",
        "--include-dashboard=true", f"--dashboard-host={head_host.ip}",
        f"--dashboard-port={DASHBOARD_PORT}", "--num-cpus=0",
    ]  # fmt: skip
    worker_argv = [
        RAY, *common, f"--address={head_host.ip}:{GCS_PORT}",
        f"--node-ip-address={worker_host.ip}", "--num-cpus=2",
    ]  # fmt: skip
    gcs_storage = {
        "RAY_gcs_storage": "rocksdb",
        "RAY_gcs_storage_path": str(work / "gcs-state"),
        # A head restarted on a busy 2-core machine starts its agents slowly; Ray's default wait
        # for them made the raylet abort ("Timed out waiting for file ... metrics_agent_port").
        "RAY_agent_register_timeout_ms": "120000",
    }
    reconnect = {"RAY_gcs_rpc_server_reconnect_timeout_s": WORKER_RECONNECT_S}
    head = Node(head_host, head_argv, {**base_env, **gcs_storage}, head_tmp)
    worker = Node(worker_host, worker_argv, {**base_env, **reconnect}, worker_tmp)
    cluster = Cluster(head, worker, work)
    try:
        head.start()
        assert head.process is not None
        wait_for_port(DASHBOARD_PORT, head.process, timeout_s=120, host=head_host.ip)
        worker.start()
        wait_until(
            lambda: len(alive_nodes(cluster.dashboard_url)) >= 2,
            120,
            "the worker node did not join the head within 120 s",
            interval_s=1,
            ignore=(Exception,),
        )
        yield cluster
    finally:
        for node in (worker, head):
            with contextlib.suppress(Exception):
                node.kill()
        for node in (head, worker):
            for folder in [
                node.temp_dir,
                *(f"{node.temp_dir}-{n}" for n in range(1, node.starts + 1)),
            ]:
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{node.temp_dir}.log")


# --------------------------------------------------------------------------------------------------
# Serve on the cluster


def ha_serve_config(store_uri: str, replicas: int) -> dict[str, Any]:
    """The model app as the RayService runs it: a proxy on every node (the base config's
    EveryNode), listening on the pod address, Serve's own proxy (no HAProxy, as on EKS)."""
    config = serve_config.for_models(serve_config.render("local"), [MODEL])
    serve_config.point_at(config, store_uri, SERVE_PORT, host="0.0.0.0")
    config["proxy_location"] = "EveryNode"
    for _, deployment in serve_config.model_deployments(config):
        deployment["autoscaling_config"] = {"min_replicas": replicas, "max_replicas": replicas}
        deployment.setdefault("user_config", {})["promotion"] = 0
    return config


def serve_details(cluster: Cluster) -> dict[str, Any]:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return dict(ServeSubmissionClient(cluster.dashboard_url).get_serve_details())


def app_state(cluster: Cluster) -> tuple[str, set[str]]:
    """(status of the model app, actor ids of its replicas) as Serve's controller reports them."""
    app = serve_details(cluster)["applications"][MODEL]
    replicas = {
        replica["actor_id"]
        for deployment in app["deployments"].values()
        for replica in deployment["replicas"]
        if replica["state"] == "RUNNING"
    }
    return app["status"], replicas


def deploy(cluster: Cluster, config: dict[str, Any], replicas: int, timeout_s: float) -> set[str]:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(cluster.dashboard_url).deploy_applications(config)

    def running() -> set[str] | None:
        status, ids = app_state(cluster)
        return ids if status == "RUNNING" and len(ids) == replicas else None

    return wait_until(
        running,
        timeout_s,
        f"the {MODEL} app was not RUNNING with {replicas} replicas within {timeout_s:.0f} s",
        interval_s=1,
        ignore=(Exception,),
    )


def served_version(cluster: Cluster) -> str | None:
    import httpx

    return str(httpx.get(f"{cluster.serve_url}/{MODEL}/info", timeout=5).json()["version"])


# --------------------------------------------------------------------------------------------------
# Load in chunks, so the requests sent while the GCS was down can be told apart


@dataclass
class Chunk:
    started: float
    ended: float
    result: Any


@dataclass
class Load:
    url: str
    chunk_requests: int
    concurrency: int
    retries: int
    chunks: list[Chunk] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    def run(self, body: dict[str, Any]) -> None:
        # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
        from raylife_dev.loadtest import run_load

        try:
            while not self.stop.is_set():
                started = time.monotonic()
                result = run_load(
                    self.url,
                    self.chunk_requests,
                    self.concurrency,
                    retries=self.retries,
                    warmup=0,
                    body=body,
                )
                self.chunks.append(Chunk(started, time.monotonic(), result))
        except BaseException as exc:  # surfaced by the caller: a crashed client is a failure
            self.failure = exc

    def totals(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Requests, first-try successes and final successes of chunks overlapping the window."""
        chosen = [c.result for c in self.chunks if c.ended >= since and c.started <= until]
        return {
            "requests": sum(r.requests for r in chosen),
            "ok_first_try": sum(r.ok_first_try for r in chosen),
            "ok_final": sum(r.ok_final for r in chosen),
            "retries": sum(r.retries for r in chosen),
        }


@contextlib.contextmanager
def load_in_background(url: str, chunk_requests: int, retries: int) -> Iterator[Load]:
    import httpx

    example = httpx.get(f"{url}/info", timeout=10).json()["input"]["example"]
    load = Load(url, chunk_requests, concurrency=2, retries=retries)
    thread = threading.Thread(target=load.run, args=({"row": example},), daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        thread.join(timeout=120)
        if load.failure is not None:
            raise RaylifeError(f"the load client crashed: {load.failure!r}") from load.failure


# --------------------------------------------------------------------------------------------------
# The rehearsal


def rehearse_ha(
    store_uri: str,
    work: Path,
    replicas: int = 2,
    settle_s: float = 5.0,
    chunk_requests: int = 100,
    say: Any = print,
) -> dict[str, Any]:
    """Kill the head's GCS, then the head, under load; bring the head back; promote. The store
    must hold a promoted version of the model; the promotion after recovery re-promotes it as a
    new version. Returns the figures."""
    store = ModelStore(store_uri)
    if store.pointer(MODEL) is None:
        raise RaylifeError(
            f"no promoted {MODEL} in {store_uri}; run `raylife train --model {MODEL} --promote` first"
        )
    report: dict[str, Any] = {}
    with (
        namespaced_hosts(["head", "worker"]) as (head_host, worker_host),
        ha_cluster(head_host, worker_host, work) as cluster,
    ):
        say(f"  cluster: head {head_host.ip} (GCS state in RocksDB), worker {worker_host.ip}")
        config = ha_serve_config(store_uri, replicas)
        before = deploy(cluster, config, replicas, timeout_s=240)
        wait_until(  # the worker's proxy starts on its own, after the app is RUNNING
            lambda: served_version(cluster),
            120,
            f"the worker's proxy at {cluster.serve_url} did not answer within 120 s",
            interval_s=0.5,
            ignore=(Exception,),
        )
        say(f"  serving {MODEL} through {cluster.serve_url} ({len(before)} replicas on the worker)")
        with load_in_background(f"{cluster.serve_url}/{MODEL}", chunk_requests, 5) as load:
            time.sleep(settle_s)
            outage = _kill_and_restart_head(cluster, say)
            time.sleep(settle_s)
        report.update(_figures(load, outage, before, cluster))
        report["promotion_after_recovery"] = _promote_again(cluster, config, store, replicas)
    say(f"  {report}")
    return report


MAX_HEAD_STARTS = 4
"""Starts of the head after the kill: like the kubelet, a head that exits is started again."""


def _kill_and_restart_head(cluster: Cluster, say: Any) -> dict[str, float]:
    """GCS killed -> head pod gone -> head restarted -> Serve's controller answers again."""
    killed = time.monotonic()
    cluster.head.kill(only="gcs_server")
    say("  killed the head's GCS")
    time.sleep(1.0)  # what a container restart takes at the least
    cluster.head.kill()  # the rest of the pod goes with its main process
    restarted = time.monotonic()
    cluster.head.start()
    say("  head restarted with the same GCS storage")
    first_start = cluster.head.starts

    def controller_back() -> bool:
        head = cluster.head.process
        if head is not None and head.poll() is not None:  # it exited: restart it, as Kubernetes
            if cluster.head.starts - first_start + 1 >= MAX_HEAD_STARTS:
                raise RaylifeError(
                    f"the head exited {MAX_HEAD_STARTS} times after the restart; its output "
                    f"ends: {cluster.head.log_tail()}"
                )
            say(f"  the head exited ({head.returncode}); starting it again, as the kubelet would")
            cluster.head.kill()
            cluster.head.start()
            return False
        status, _ = app_state(cluster)
        return status == "RUNNING"

    wait_until(
        controller_back,
        300,
        lambda: (
            "Serve's controller did not report the app RUNNING within 300 s of the head "
            f"restart; the head's output ends: {cluster.head.log_tail()}"
        ),
        interval_s=0.5,
        ignore=(OSError, KeyError, ValueError, TypeError, RuntimeError),
    )
    back = time.monotonic()
    return {
        "killed": killed,
        "restarted": restarted,
        "back": back,
        "head_starts": cluster.head.starts - first_start + 1,
    }


def _figures(
    load: Any, outage: dict[str, float], before: set[str], cluster: Cluster
) -> dict[str, Any]:
    during = load.totals(outage["killed"], outage["back"])
    total = load.totals()
    status, after = app_state(cluster)
    return {
        "outage_s": round(outage["back"] - outage["killed"], 1),
        "head_starts_after_kill": int(outage["head_starts"]),
        "requests": total["requests"],
        "lost": total["requests"] - total["ok_final"],
        "first_try_share": round(total["ok_first_try"] / max(total["requests"], 1), 4),
        "during_outage_requests": during["requests"],
        "during_outage_first_try_share": round(
            during["ok_first_try"] / max(during["requests"], 1), 4
        ),
        "retries": total["retries"],
        "app_status_after": status,
        "same_replicas": before == after,
        "nodes_alive_after": len(alive_nodes(cluster.dashboard_url)),
    }


def _promote_again(
    cluster: Cluster, config: dict[str, Any], store: ModelStore, replicas: int
) -> dict[str, Any]:
    """A new version of the promoted artifact, promoted in the store, then the Serve config's
    promotion counter moved (what `raylife promote` and an in-place RayService edit do)."""
    _, artifact = store.load(MODEL)
    version = store.register(artifact)
    pointer = store.promote(MODEL, version)
    for _, deployment in serve_config.model_deployments(config):
        deployment["user_config"]["promotion"] = pointer.generation
    deploy(cluster, config, replicas, timeout_s=120)
    reached = poll(
        lambda: served_version(cluster) == version, 60, interval_s=0.5, ignore=(Exception,)
    )
    return {"version": version, "served": bool(reached)}
