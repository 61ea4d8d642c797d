"""The test-only challengers (raylife_dev.faulty_models) are ordinary factory artifacts: they
survive the store's files (Artifact.to_files / from_files, and the torch.export attempt that
registration makes), rebuild through the recorded code, stand beside the champion's schema, and
misbehave only when answering."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from raylife.errors import RaylifeError
from raylife.inference.predict import Predictor
from raylife.lifecycle.artifact import Artifact
from raylife.lifecycle.gate import schema_mismatch
from raylife.lifecycle.store import ModelStore
from raylife_dev import faulty_models
from raylife_dev.faulty_models import SLOW_S, faulty_artifact
from tests.conftest import prepared, quick_artifact


def _served(artifact: Artifact, tmp_path: Path) -> Predictor:
    """What a replica gets: registered (export attempted, files written), loaded, built."""
    store = ModelStore(str(tmp_path / "store"))
    version, loaded = store.load(artifact.model, store.register(artifact))
    assert "error" in loaded.exported, "an exported program would bypass the factory's forward"
    return Predictor(loaded, version)


def _stands_beside_the_champion(artifact: Artifact) -> None:
    champion = quick_artifact("iris", epochs=0)
    assert schema_mismatch(artifact, champion) is None
    assert (artifact.label_names, artifact.preprocessing.to_dict()) == (
        champion.label_names,
        champion.preprocessing.to_dict(),
    )


def test_failing_round_trips_and_raises_only_when_answering(tmp_path: Path) -> None:
    artifact = faulty_artifact("iris", "failing")
    assert artifact.architecture == "raylife_dev.faulty_models:failing"
    assert set(artifact.model_args) == {"hyperparameters", "input_shape", "n_outputs"}
    assert artifact.code is not None and artifact.code["module"] == faulty_models.__name__
    _stands_beside_the_champion(artifact)
    predictor = _served(artifact, tmp_path)
    with pytest.raises(RuntimeError, match="test fault: this challenger fails"):
        predictor.predict_array(prepared("iris").test_raw.X[:1])


@pytest.mark.slow  # trains iris for its 100 default epochs (1-6 s)
def test_slow_round_trips_answers_well_and_takes_slow_s(tmp_path: Path) -> None:
    artifact = faulty_artifact("iris", "slow")
    _stands_beside_the_champion(artifact)
    predictor = _served(artifact, tmp_path)
    test = prepared("iris").test_raw
    start = time.perf_counter()
    predictor.predict_array(test.X[:1])
    assert time.perf_counter() - start >= SLOW_S
    answers = predictor.predict_array(test.X)
    truth = [predictor.label_names[int(y)] for y in test.y]
    correct = sum(a["label"] == t for a, t in zip(answers, truth, strict=True))
    assert correct >= 0.8 * len(truth)  # trained: only its latency differs from a champion's


def test_an_unknown_kind_names_the_choices() -> None:
    with pytest.raises(RaylifeError, match="choose one of: failing, slow"):
        faulty_artifact("iris", "flaky")
