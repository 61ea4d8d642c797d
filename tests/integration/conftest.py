"""One local Ray cluster for the whole integration session, with pinned resources.

6 logical CPUs on a 2-core machine: a Tune trial's driver (1 CPU) mostly waits while its two
Train workers (1 CPU each) compute, so 3 logical CPUs make one trial; the other 3 leave room for
the previous trial's placement group, which is released asynchronously (see tune.required_cpus).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def ray_cluster():
    import ray

    from raylife import cluster

    cluster.ensure_ray(num_cpus=6)  # exactly as every raylife command starts its local cluster
    # The session owns this cluster: commands the tests run in-process must not stop it.
    cluster._started_here = False
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
