"""Score an artifact on the held-out test split of the data it was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.data.profile import Profile, predictions_distribution
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


@torch.no_grad()
def answers(artifact: Artifact, X: np.ndarray, scaled: bool = False) -> list[str] | np.ndarray:
    """The artifact's answers to rows X: predicted label names (classification) or values.
    scaled: X is already through the artifact's preprocessing (a prepared split)."""
    task = TASKS[artifact.task]
    features = X if scaled else artifact.preprocessing.transform(X)
    outputs = artifact.build_module()(torch.from_numpy(np.asarray(features, dtype=np.float32)))
    if task.is_classification:
        names = artifact.label_names or []
        return [names[int(i)] for i in task.predict_labels(outputs)]
    return np.asarray(
        artifact.preprocessing.inverse_target(outputs.squeeze(1).double().numpy()), np.float64
    )


def with_validation_predictions(artifact: Artifact, data: PreparedData) -> dict[str, Any]:
    """The artifact's reference profile completed with the distribution of its answers on the
    validation split (what a monitor compares live answers with); {} when it has no profile."""
    if not artifact.profile:
        return {}
    given = answers(artifact, data.val.X, scaled=True)
    if isinstance(given, list):
        distribution = predictions_distribution(given, None, artifact.label_names or [])
    else:
        distribution = predictions_distribution(None, given, None)
    profile = Profile.from_dict(artifact.profile)
    return Profile(profile.features, profile.target, profile.rows, distribution).to_dict()
