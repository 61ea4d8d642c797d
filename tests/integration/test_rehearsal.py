"""The KubeRay rehearsal (`make rehearse`): every CPU RayJob entrypoint of kuberay/ through the
Jobs API on a real 2-node cluster with token auth, then the rendered `local` Serve config deployed
through Serve's REST API and every model queried over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylife.deploy import rehearsal
from raylife.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_rehearsal_on_a_two_node_cluster(tmp_path):
    report = rehearsal.rehearse(ROOT / "kuberay", tmp_path)
    assert len(report["jobs"]) == 5
    store = ModelStore(str(tmp_path / "store"))
    for model in ("boston", "ionosphere", "iris", "mnist"):
        assert report["served"][model]["version"] == store.pointer(model).version
        assert report["answers"][model]["version"] == store.pointer(model).version
