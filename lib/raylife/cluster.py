"""Connecting to Ray: one place that sizes a local cluster and sets the controller's poll interval."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from raylife.errors import RaylifeError

_started_here = False
"""True when ensure_ray started a local cluster (so this process should also stop it)."""

# Ray Train V2's controller polls workers every 2 s by default and a worker's report blocks until
# the controller has taken the previous one, so per-epoch reporting cost ~1.75 s per epoch. A short
# poll interval makes a report (with its checkpoint) cost ~0.04 s; Train propagates this variable from the process
# that calls fit() to its controller and workers.
TRAIN_POLL_INTERVAL_S = "0.05"


LOCAL_CLUSTER_TRAIN_ENV = {
    # A one-machine cluster has no spot nodes to be preempted and no Prometheus to scrape: skip
    # the per-run watcher actor and metric callbacks (measured: ~1.8 s off each 2-worker fit).
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    # Ray kills an idle worker after 1 s once the node's workers outnumber its CPUs, and the actors
    # (trials, Train workers, Ray Data's own) alone do: every epoch of a streamed table then
    # started a new process for its read task (importing Ray Data and pyarrow), ~5 s of CPU per
    # epoch on 2 cores. Keeping a few idle workers made an Iris epoch through Ray Data 0.8 s.
    "RAY_num_workers_soft_limit": "12",
}


def apply_local_cluster_env(cluster_env: dict[str, str] | None = None) -> None:
    """Before a local cluster starts (every Ray process inherits it): Train's local settings plus
    what the caller needs (serving passes its Serve fast paths). Values already set win."""
    for name, value in {**LOCAL_CLUSTER_TRAIN_ENV, **(cluster_env or {})}.items():
        os.environ.setdefault(name, value)


def configure_train_env() -> None:
    """Environment the process calling TorchTrainer.fit() needs (the user's value wins)."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_POLL_INTERVAL_S)


def ensure_ray(
    num_cpus: float | None = None,
    address: str | None = None,
    cluster_env: dict[str, str] | None = None,
    object_store_memory: int | None = None,
) -> None:
    """Connect to the cluster at `address`/RAY_ADDRESS, or start a local one with num_cpus logical CPUs.

    object_store_memory: cap of a local cluster's object store in bytes (Ray's default: 30% of RAM).

    cluster_env: environment for every process of a cluster started here (a command that will
    serve passes the Serve fast paths of the `local` overlay; training needs none of it).

    Logical CPUs may exceed physical cores on purpose: a Tune trial's driver (1 CPU) mostly waits
    while its Train workers compute, so it must not take a core a worker needs.
    """
    import ray

    configure_train_env()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    global _started_here
    # Token auth: Ray 2.60's ray.init turns it on for a new local cluster (setting RAY_AUTH_MODE
    # here, after `import ray`, would bypass the config refresh Ray does when it turns it on).
    # tests/integration/test_job_submission.py checks that anonymous calls to it are refused.
    cpus = max(float(os.cpu_count() or 1), num_cpus or 0.0)
    # No RAY_preload_python_modules: Ray applies it to every worker it starts, not only the
    # prestarted ones, so each Serve build task, replica and proxy imported torch and Ray Tune
    # (~4 s of CPU each on 2 cores) to save the first sweep's two trials their own import.
    apply_local_cluster_env(cluster_env)
    _started_here = True
    ray.init(
        num_cpus=int(cpus + 0.999),
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
        configure_logging=True,
        logging_level=logging.WARNING,
        object_store_memory=object_store_memory,
    )


def shutdown_if_started() -> None:
    """Stop the local cluster ensure_ray started; leave a cluster someone else started alone."""
    global _started_here
    if not _started_here:
        return
    import ray

    ray.shutdown()
    _started_here = False


def link_ray_logs(folder: Path) -> Path | None:
    """A `ray-logs` link in `folder` to the logs of the local cluster this process started (Ray
    writes them under its temp dir; every trial's and replica's output is there). None when
    connected to a cluster started elsewhere (`ray start`, KubeRay), whose logs live on its
    head node."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    if node is None or not node.head:
        return None
    link = folder / "ray-logs"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(node.get_logs_dir_path(), target_is_directory=True)
    return link


def usable_cpus() -> float:
    """CPUs that can compute at once: the cluster's logical CPUs, but no more than this
    machine's cores when the cluster is local (ensure_ray oversubscribes logical CPUs so that
    a DDP trial's mostly idle driver does not take a core a worker needs)."""
    import ray
    from ray._private import worker

    logical = float(ray.cluster_resources().get("CPU", 0.0))
    node = getattr(worker, "_global_node", None)
    if node is not None and node.head:
        return min(logical, float(os.cpu_count() or 1))
    return logical


def dashboard_url() -> str:
    """http://host:port of the connected cluster's dashboard (Jobs and Serve REST APIs)."""
    from ray._private.worker import get_dashboard_url

    url = get_dashboard_url()
    if not url:
        raise RaylifeError(
            "this Ray cluster runs without a dashboard; start it with the dashboard on"
        )
    return url if url.startswith("http") else f"http://{url}"


def auth_headers() -> dict[str, str]:
    """Headers that carry this machine's Ray token (empty when token auth is off)."""
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )

    return dict(get_auth_headers_if_auth_enabled({}))


# Ray's workers take 10002-19999 by default (--min/max-worker-port): chosen ports start above them.
_CHOSEN_PORTS_FROM = 20000
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port nothing is bound to now, on every interface (local clusters, Serve proxies and
    HAProxy's listeners, test servers), chosen between Ray's worker ports and the kernel's
    ephemeral range. A port taken from the ephemeral range (bind to 0) can become the local port
    of any outgoing connection before its user binds it: CI once saw HAProxy refuse to start on
    "cannot bind socket (Address already in use)" for such a port. Never the same port twice in
    one process."""
    import random
    import socket

    low, _ = _ephemeral_range()
    candidates = range(_CHOSEN_PORTS_FROM, low)
    for _ in range(200 if len(candidates) > 100 else 0):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:  # in use (or in TIME_WAIT): another one
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # an unusual ephemeral range leaves no room below it
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999
