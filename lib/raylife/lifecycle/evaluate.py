"""Score an artifact on the held-out test split of the data it was trained on."""

from __future__ import annotations

import torch

from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.errors import RaylifeError
from raylife.lifecycle.artifact import Artifact
from raylife.tasks import TASKS


def test_data_for(artifact: Artifact) -> PreparedData:
    """Rebuild the artifact's splits from its recorded data config; refuse if the data changed."""
    data = prepare(get_spec(artifact.model), DataConfig(**artifact.run.get("data_config", {})))
    recorded = artifact.data.get("sha256")
    if recorded and recorded != data.provenance["sha256"]:
        raise RaylifeError(
            f"the data of {artifact.model} changed since training (sha256 {recorded[:12]}... -> "
            f"{data.provenance['sha256'][:12]}...); retrain before evaluating"
        )
    return data


@torch.no_grad()
def evaluate_artifact(artifact: Artifact, data: PreparedData | None = None) -> dict[str, float]:
    """test_* metrics, computed as serving would: raw test rows through the artifact's preprocessing."""
    data = data or test_data_for(artifact)
    task = TASKS[artifact.task]
    pre = artifact.preprocessing
    X = torch.from_numpy(pre.transform(data.test_raw.X))
    y = torch.as_tensor(pre.transform_target(data.test_raw.y), dtype=task.target_dtype)
    module = artifact.build_module()
    outputs = module(X)
    sums = task.batch_sums(outputs, y, task.loss(outputs, y))
    return {f"test_{k}": v for k, v in task.finalize(sums, pre.target_std or 1.0).items()}
