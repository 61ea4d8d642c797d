"""The RayService's HA promise on a real 2-node cluster, each node in its own network namespace:
the head's GCS killed, then the head, under load through the worker node's proxy. Needs root and
iproute2. Opt-in (`make test-ha`): on a loaded 2-core machine the restarted head's raylet often
aborts waiting for its dashboard agent (`Timed out waiting for file ... metrics_agent_port`), so
it is not yet reliable enough for every `make test`."""

from __future__ import annotations

import os
import shutil

import pytest

from raylife.lifecycle.store import ModelStore
from tests.conftest import quick_artifact

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("RAYLIFE_TEST_HA") != "1",
        reason="opt-in: make test-ha (flaky on a loaded 2-core machine, see the module docstring)",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("ip"),
        reason="needs root and iproute2 for network namespaces",
    ),
]


def test_gcs_and_head_killed_under_load_lose_nothing(tmp_path):
    from raylife_dev.ha_rehearsal import rehearse_ha

    store = ModelStore(str(tmp_path / "store"))
    store.promote("iris", store.register(quick_artifact("iris")))
    report = rehearse_ha(str(tmp_path / "store"), tmp_path, replicas=2, settle_s=3)
    print(f"\nHA rehearsal: {report}")
    assert report["lost"] == 0, report
    assert report["during_outage_requests"] > 0, report
    assert report["during_outage_first_try_share"] >= 0.99, report
    assert report["app_status_after"] == "RUNNING" and report["same_replicas"], report
    assert report["promotion_after_recovery"]["served"], report
