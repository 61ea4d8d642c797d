"""A served iris version with its profile, and traffic captured as the replicas capture it:
shared by the monitor and retrain tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raylife.cli import main
from raylife.inference.predict import Predictor
from raylife.lifecycle.evaluate import evaluate_artifact, with_validation_predictions
from raylife.lifecycle.store import ModelStore
from raylife.serve.capture import CaptureWriter
from tests.conftest import prepared, quick_artifact


@pytest.fixture
def served(home: Path) -> tuple[ModelStore, str, Predictor]:
    """A promoted iris version with its profile, as register_checkpoint leaves it."""
    store = ModelStore(str(home / "store"))
    artifact = quick_artifact("iris", epochs=3)
    artifact.profile = with_validation_predictions(artifact, prepared("iris"))
    artifact.metrics.update(evaluate_artifact(artifact, prepared("iris")))
    version = store.register(artifact)
    store.promote("iris", version)
    return store, version, Predictor(artifact, version)


def capture(
    store: ModelStore,
    version: str,
    predictor: Predictor,
    rows: np.ndarray,
    tag: str,
    truths: list[str] | None = None,
) -> None:
    """Answer each row, capture it, and send back its truth when given (as POST /feedback does)."""
    writer = CaptureWriter(store.uri, "iris", fraction=1.0, flush_s=0.05)
    for i, row in enumerate(rows):
        one = row[None, :]
        writer.record(f"{tag}-{i}", one, version, predictor.predict_array(one), 1.0, "predict")
        if truths is not None:
            writer.record_feedback(f"{tag}-{i}", 0, truths[i], None)
    writer.close()


def traffic(n: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """Held-out iris rows (test split), resampled; `shift` cm added to the sepal length."""
    return labelled(n, seed)[0] + np.array([shift, 0.0, 0.0, 0.0])


def labelled(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """n held-out iris rows (test split, resampled) and their true species."""
    data = prepared("iris")
    chosen = np.random.default_rng(seed).integers(len(data.test_raw.y), size=n)
    names = data.label_names or []
    return data.test_raw.X[chosen].copy(), [names[int(y)] for y in data.test_raw.y[chosen]]


def monitor(*extra: str) -> int:
    return main(["monitor", "iris", "--no-tracking", *extra])
