"""The KubeRay rehearsal (`make rehearse`): every CPU RayJob entrypoint of kuberay/ through the
Jobs API on a real 2-node cluster with token auth, then the rendered `local` Serve config deployed
through Serve's REST API and every model queried over HTTP; then the pool app's replica and one model
replica killed while every proxy answers the ALB's health path, and the session's logs walked
against kuberay/fluent-bit.yaml. The same code as `make rehearse`, with two jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylife.lifecycle.store import ModelStore
from raylife_dev import rehearsal

ROOT = Path(__file__).resolve().parents[2]


IN_MAKE_TEST = ("rayjob-train-iris", "rayjob-tune-mnist")
"""Both entrypoints (jobs.train, jobs.tune), a table and an image model. The other train jobs
differ from rayjob-train-iris only in --model (tests/unit/test_rehearsal_plan.py holds them to
that); `make rehearse` runs all five (about 6 minutes here, against 2-3 for these two)."""


@pytest.mark.slow
def test_rehearsal_on_a_two_node_cluster(tmp_path):
    report = rehearsal.rehearse(ROOT / "kuberay", tmp_path, jobs=IN_MAKE_TEST)
    assert sorted(report["jobs"]) == sorted(IN_MAKE_TEST)
    store = ModelStore(str(tmp_path / "store"))
    assert sorted(report["served"]) == ["iris", "mnist"]
    for model in ("iris", "mnist"):
        assert report["served"][model]["version"] == store.pointer(model).version
        assert report["answers"][model]["version"] == store.pointer(model).version
    health = report["health"]
    assert health["health_path"] == "/-/healthz"
    assert len(health["killed"]) == 2  # the pool app's replica and one of the first model's two
    assert len(health["in_window"]) == 2  # the head's proxy and the worker's
    for proxy, answered in health["in_window"].items():
        assert set(answered["health"]) == {200}, (proxy, answered)
        assert set(answered["model"]) == {200}, (proxy, answered)
    logs = report["logs"]
    assert logs["files"] == logs["shipped"] > 0
    assert logs["access_lines"]["proxy"] > 0 and logs["access_lines"]["replica"] > 0
