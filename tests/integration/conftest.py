"""One local Ray cluster for the whole integration session, with pinned resources.

6 logical CPUs on a 2-core machine: a Tune trial's driver (1 CPU) mostly waits while its two
Train workers (1 CPU each) compute, so 3 logical CPUs make one trial; the other 3 leave room for
the previous trial's placement group, which is released asynchronously (see tune.required_cpus).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raylife.waiting import poll


@pytest.fixture(scope="session", autouse=True)
def ray_cluster():
    import ray

    from raylife import cluster
    from raylife.serve import local

    # Exactly as `raylife run` starts its local cluster, HAProxy on ports of its own: HAProxy's
    # default ports stay taken for the whole session, as a `raylife serve` left running takes
    # them, so every Serve test fails if the cluster ever falls back to them.
    cluster_env = local.serving_cluster_env(own_ports=True)
    with contextlib.ExitStack() as held:
        for port in (8404, 9101):
            held.enter_context(_listening(port))
        cluster.ensure_ray(num_cpus=6, cluster_env=cluster_env)
        # The session owns this cluster: commands the tests run in-process must not stop it.
        cluster._started_here = False
        yield ray
        ray.shutdown()


@contextlib.contextmanager
def _listening(port: int) -> Iterator[None]:
    """A listener on `port` (all interfaces, as HAProxy binds), or nothing if it is taken."""
    sock = socket.socket()
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen()
    except OSError:  # already taken (by a `raylife serve` on this machine, say): the same test
        pass
    try:
        yield
    finally:
        sock.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@contextlib.contextmanager
def serving_quick_models(home: Path, models: list[str]) -> Iterator[tuple[Any, Any]]:
    """Quick artifacts of `models` promoted in a fresh store under `home` and served on a free
    port; yields (settings, LocalServe) and stops Serve after."""
    from raylife.cluster import free_port
    from raylife.lifecycle.store import ModelStore
    from raylife.serve import local as serving
    from raylife.settings import Settings
    from tests.conftest import quick_artifact

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYLIFE_HOME", str(home))
        patch.delenv("RAYLIFE_STORE", raising=False)
        settings = Settings.from_env()
        store = ModelStore(settings.store_uri)
        for model in models:
            store.promote(model, store.register(quick_artifact(model)))
        local = serving.start(settings, models, port=free_port())
        try:
            yield settings, local
        finally:
            serving.stop(settings)


def wait_for(condition: Any, timeout_s: float) -> bool:
    """Poll `condition` every 0.5 s until it holds (True) or `timeout_s` passes (False)."""
    return bool(poll(condition, timeout_s))


def alive_replicas(app: str) -> list[Any]:
    """The ALIVE replica actors of a Serve application (Ray's state API)."""
    from ray.util.state import list_actors

    alive = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return [a for a in alive if a.class_name.startswith(f"ServeReplica:{app}:")]
