import io

import numpy as np
import pytest
import torch
from PIL import Image

from raylife.errors import InputError
from raylife.inference.predict import Predictor
from raylife.lifecycle.evaluate import evaluate_artifact
from raylife.lifecycle.store import ModelStore

from ..conftest import prepared, quick_artifact


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    store = ModelStore(str(tmp_path_factory.mktemp("store")))
    out = {}
    for model in ("iris", "boston", "mnist", "ionosphere"):
        version = store.register(quick_artifact(model))
        out[model] = Predictor.from_store(store, model, version)
    return out


def test_classifier_answers_label_and_probabilities(predictors):
    answer = predictors["iris"].predict_rows([[5.1, 3.5, 1.4, 0.2]])[0]
    assert answer["label"] in ("setosa", "versicolor", "virginica")
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4


def test_binary_and_regression_answers(predictors):
    row = prepared("ionosphere").test_raw.X[0].tolist()
    answer = predictors["ionosphere"].predict_rows([row])[0]
    assert answer["label"] in ("b", "g") and set(answer["probabilities"]) == {"b", "g"}
    value = predictors["boston"].predict_rows([prepared("boston").test_raw.X[0].tolist()])[0][
        "value"
    ]
    assert np.isfinite(value)


def test_named_fields_match_positional_rows(predictors):
    iris = predictors["iris"]
    names = iris.artifact.schema.feature_names
    row = [5.9, 3.0, 5.1, 1.8]
    assert iris.predict_rows([dict(zip(names, row, strict=True))]) == iris.predict_rows([row])


def test_serving_applies_stored_preprocessing_without_refitting(predictors):
    """Predicting raw rows must equal the model applied to rows standardised with the stored stats."""
    iris = predictors["iris"]
    raw = prepared("iris").test_raw.X[:5]
    expected = iris.module(torch.from_numpy(prepared("iris").test.X[:5])).argmax(1).tolist()
    labels = iris.artifact.label_names
    assert [labels.index(a["label"]) for a in iris.predict_array(raw)] == expected


def test_wrong_inputs_are_refused_with_the_fix(predictors):
    with pytest.raises(InputError, match="got 3 values, the model takes 4"):
        predictors["iris"].predict_rows([[1, 2, 3]])
    with pytest.raises(InputError, match="not a finite number"):
        predictors["iris"].predict_rows([[1, 2, 3, float("inf")]])
    with pytest.raises(InputError, match="takes 784"):
        predictors["mnist"].predict_rows([[0.0] * 100])


def _png(width, height):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mnist_png_upload(predictors, tmp_path):
    digit = prepared("mnist").test_raw.X[0].reshape(28, 28).astype(np.uint8)
    path = tmp_path / "digit.png"
    Image.fromarray(digit).save(path)
    answer = predictors["mnist"].predict_image(path)
    assert answer["label"] in [str(d) for d in range(10)]
    assert answer == predictors["mnist"].predict_array(digit.reshape(1, 1, 28, 28).astype(float))[0]
    with pytest.raises(InputError, match="image is 32x20 pixels; the model takes 28x28"):
        predictors["mnist"].predict_image(_png(32, 20))
    with pytest.raises(InputError, match="cannot read the image"):
        predictors["mnist"].predict_image(b"not a png")
    with pytest.raises(InputError, match="not found"):
        predictors["mnist"].predict_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="takes feature rows"):
        predictors["iris"].predict_image(path)


def test_evaluate_scores_the_test_split(predictors):
    metrics = evaluate_artifact(predictors["boston"].artifact)
    assert set(metrics) == {"test_loss", "test_rmse", "test_mae"} and metrics["test_rmse"] > 0
    assert set(evaluate_artifact(predictors["iris"].artifact)) == {"test_loss", "test_accuracy"}
