"""The Open Inference Protocol v2 routes (raylife.serve.oip) in-process, no Ray: the model's FastAPI
app mounted under /<model> as Serve mounts it; binary requests and answers built and parsed by
tritonclient's own (de)serialisation."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from raylife.lifecycle.store import ModelStore
from raylife_dev.bare import build

from ..conftest import quick_artifact


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("oip-store")
    store = ModelStore(str(path))
    for model in ("iris", "boston"):
        store.promote(model, store.register(quick_artifact(model, epochs=0)))
    return str(path)


@pytest.fixture(scope="module")
def iris(store):
    return TestClient(build("iris", store))


def infer_body(data, shape, datatype="FP32", name="input", **extra):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}], **extra}


def test_metadata_health_and_ready(iris):
    version = iris.get("/iris/info").json()["version"]
    assert iris.get("/iris/v2/health/live").json() == {"live": True}
    assert iris.get("/iris/v2/health/ready").json() == {"ready": True}
    meta = iris.get("/iris/v2/models/iris").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]
    assert meta["versions"] == [version] and len(meta["parameters"]["labels"]) == 3
    assert iris.get(f"/iris/v2/models/iris/versions/{version}/ready").json()["ready"] is True
    assert iris.get("/iris/v2/models/iris/ready").status_code == 200


def test_infer_matches_the_native_route(iris):
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    native = iris.post("/iris/", json={"rows": rows}).json()
    answer = iris.post("/iris/v2/models/iris/infer", json=infer_body(rows, [2, 4], id="r1"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "iris" and body["id"] == "r1"
    assert body["model_version"] == native["version"]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predictions"]["datatype"] == "BYTES" and outputs["predictions"]["shape"] == [2]
    assert outputs["predictions"]["data"] == [p["label"] for p in native["predictions"]]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(2, 3)
    labels = iris.get("/iris/v2/models/iris").json()["parameters"]["labels"]
    expected = [[p["probabilities"][n] for n in labels] for p in native["predictions"]]
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    # Flat data, another numeric datatype, a pinned version and one requested output.
    flat = infer_body([5, 3, 1, 0], [1, 4], "INT64", outputs=[{"name": "predictions"}])
    version = native["version"]
    one = iris.post(f"/iris/v2/models/iris/versions/{version}/infer", json=flat).json()
    assert [o["name"] for o in one["outputs"]] == ["predictions"]


def test_regression_outputs(store):
    boston = TestClient(build("boston", store))
    n = boston.get("/boston/v2/models/boston").json()["inputs"][0]["shape"][1]
    body = boston.post(
        "/boston/v2/models/boston/infer", json=infer_body([[1.0] * n] * 3, [3, n])
    ).json()
    assert body["outputs"] == [
        {
            "name": "predictions",
            "datatype": "FP64",
            "shape": [3],
            "data": body["outputs"][0]["data"],
        }
    ]
    assert all(isinstance(v, float) for v in body["outputs"][0]["data"])


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (infer_body([1, 2, 3, 4], [1, 4], "BYTES"), 400, "not numeric"),
        (infer_body([1, 2, 3, 4], [1, 4], "FP32", name="x"), 400, "named 'input'"),
        (infer_body([1, 2, 3, 4], [4, 1]), 400, "shape [4, 1]"),
        (infer_body([1, 2, 3, 4, 5], [1, 4]), 400, "5 elements, its shape [1, 4] says 4"),
        (infer_body([1, 2, 3], [1, 4]), 400, "3 elements"),
        (infer_body([1, 2, "3", 4], [1, 4]), 400, "not a FP32 value"),
        (infer_body([1.5, 2, 3, 4], [1, 4], "INT32"), 400, "not a INT32 value"),
        (infer_body([1, 2, 3, 1e308], [1, 4]), 400, "out of FP32's range"),
        (infer_body([1, 2, 3, 1e308], [1, 4], "FP64"), 400, "values too large"),
        (infer_body([1, 2, 3, 4], [0, 4]), 400, "1..256 rows"),
        (infer_body([1, 2, 3, 4], [1, 4], outputs=[{"name": "nope"}]), 400, "unknown outputs"),
        ({"inputs": []}, 400, "invalid inference request"),
        ({"inputs": [{"name": "input"}]}, 400, "inputs.0.shape"),
    ],
)
def test_bad_requests_get_one_protocol_error(iris, body, status, says):
    answer = iris.post("/iris/v2/models/iris/infer", json=body)
    assert answer.status_code == status and set(answer.json()) == {"error"}, answer.text
    assert says in answer.json()["error"]
    # The champion keeps serving.
    assert iris.post("/iris/", json={"row": [5.1, 3.5, 1.4, 0.2]}).status_code == 200


def test_unknown_model_or_version_and_non_json(iris):
    body = infer_body([1, 2, 3, 4], [1, 4])
    for path in ("/iris/v2/models/mnist/infer", "/iris/v2/models/iris/versions/nope/infer"):
        answer = iris.post(path, json=body)
        assert answer.status_code == 404 and "error" in answer.json()
    assert iris.get("/iris/v2/models/mnist").status_code == 404
    answer = iris.post("/iris/v2/models/iris/infer", content=b"{not json")
    assert answer.status_code == 400 and "invalid inference request" in answer.json()["error"]
    header = {"Inference-Header-Content-Length": "999"}
    answer = iris.post("/iris/v2/models/iris/infer", content=json.dumps(body), headers=header)
    assert answer.status_code == 400 and "Inference-Header-Content-Length" in answer.json()["error"]


def test_tritonclient_binary_tensors_both_ways(iris):
    """tritonclient's defaults: binary inputs and binary outputs (its binary tensor extension)."""
    http = pytest.importorskip("tritonclient.http", reason="the dev extra brings tritonclient")
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    tensor = http.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # binary_data=True by default
    body, json_size = http.InferenceServerClient.generate_request_body([tensor])
    answer = iris.post(
        "/iris/v2/models/iris/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    assert answer.status_code == 200, answer.text
    header_length = answer.headers.get("Inference-Header-Content-Length")
    assert header_length is not None  # the answer came back binary, as asked
    result = http.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(header_length)
    )
    native = iris.post("/iris/", json={"rows": rows.tolist()}).json()["predictions"]
    assert [b.decode() for b in result.as_numpy("predictions")] == [p["label"] for p in native]
    assert result.as_numpy("probabilities").shape == (2, 3)
    # A binary size that disagrees with the shape: one 400, nothing read past the body.
    short = body[:-4]
    answer = iris.post(
        "/iris/v2/models/iris/infer",
        content=short,
        headers={"Inference-Header-Content-Length": str(json_size)},
    )
    assert answer.status_code == 400 and "binary_data_size" in answer.json()["error"]
