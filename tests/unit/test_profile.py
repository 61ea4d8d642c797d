"""The reference profile: a mergeable uniform sample of the training rows, summarised."""

from __future__ import annotations

import numpy as np
import pytest

from raylife.data import profile
from raylife.data.profile import Distribution, Profile, Sample
from tests.conftest import prepared, quick_artifact


def test_merged_samples_are_the_sample_of_the_union():
    # bottom-k: what the streaming path builds batch by batch is what one pass would keep
    rng = np.random.default_rng(0)
    values, targets, keys = rng.normal(size=(5000, 3)), rng.integers(0, 2, 5000), rng.random(5000)
    whole = Sample.of(values, targets, keys, k=300)
    parts = [
        Sample.of(values[i : i + 700], targets[i : i + 700], keys[i : i + 700], k=300)
        for i in range(0, 5000, 700)
    ]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part, k=300)
    assert merged.rows == 5000
    np.testing.assert_array_equal(np.sort(merged.keys), np.sort(whole.keys))
    np.testing.assert_array_equal(merged.values[np.argsort(merged.keys)], whole.values)


def test_a_sample_survives_json_with_string_labels():
    sample = Sample.of(np.ones((4, 2)), np.array(["a", "b", "a", "c"]), np.arange(4.0), k=3)
    again = Sample.from_json(sample.to_json())
    assert again.targets.tolist() == ["a", "b", "a"] and again.values.shape == (3, 2)


def test_prepared_tables_and_images_carry_a_profile():
    iris = prepared("iris").profile
    assert iris is not None and iris.rows == len(prepared("iris").train)
    assert list(iris.features)[:1] == ["sepal_length_cm"] and iris.target.kind == "classes"
    assert abs(sum(iris.target.fractions.values()) - 1) < 1e-9
    assert len(iris.features["petal_length_cm"].percentiles) == 101
    mnist = prepared("mnist").profile
    assert list(mnist.features) == profile.IMAGE_VALUES
    assert mnist.features["pixel_mean"].count == profile.SAMPLE_ROWS  # 3,500 rows, sampled
    boston = prepared("boston").profile
    assert boston.target.kind == "values"


def test_an_artifact_round_trips_its_profile(tmp_path):
    from raylife.lifecycle.evaluate import with_validation_predictions
    from raylife.lifecycle.store import ModelStore

    artifact = quick_artifact("iris")
    artifact.profile = with_validation_predictions(artifact, prepared("iris"))
    store = ModelStore(str(tmp_path))
    version = store.register(artifact)
    loaded = Profile.from_dict(store.load("iris", version)[1].profile)
    assert loaded.predictions is not None and loaded.predictions.kind == "classes"
    assert loaded.predictions.count == len(prepared("iris").val)
    assert loaded == Profile.from_dict(artifact.profile)


@pytest.mark.parametrize("values", [[1.0, 1.0, 2.0], [0.5]])
def test_distribution_of_values(values):
    d = Distribution.of_values(np.asarray(values))
    assert d.percentiles[0] == min(values) and d.percentiles[-1] == max(values)
    assert Distribution.from_dict(d.to_dict()) == d
