"""One local Ray cluster for the whole integration session, with pinned resources.

6 logical CPUs on a 2-core machine: a Tune trial's driver (1 CPU) mostly waits while its two
Train workers (1 CPU each) compute, so 3 logical CPUs make one trial; the other 3 leave room for
the previous trial's placement group, which is released asynchronously (see tune.required_cpus).
"""

from __future__ import annotations

import contextlib
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
    from raylife.serve.rollout import FAULTS_ENV

    # Exactly as a raylife command that serves starts its local cluster.
    # FAULTS_ENV: the rollout tests' challengers may misbehave on purpose (never set elsewhere).
    cluster_env = {**local.serving_cluster_env(), FAULTS_ENV: "1"}
    cluster.ensure_ray(num_cpus=6, cluster_env=cluster_env)
    # The session owns this cluster: commands the tests run in-process must not stop it.
    cluster._started_here = False
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@contextlib.contextmanager
def serving_quick_models(home: Path, models: list[str]) -> Iterator[tuple[Any, Any]]:
    """Quick artifacts of `models` promoted in a fresh store under `home` and served on a free
    port; yields (settings, LocalServe) and stops Serve after."""
    from raylife.cluster import free_port
    from raylife.serve import local as serving
    from raylife.settings import Settings
    from raylife.store import ModelStore
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
