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

    from raylife.cluster import apply_local_cluster_env, configure_train_env

    configure_train_env()
    apply_local_cluster_env()  # what `raylife` sets on the clusters it starts (Serve fast paths)
    ray.init(
        num_cpus=6, include_dashboard=True, dashboard_host="127.0.0.1", logging_level="WARNING"
    )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
