"""Differential test against MLServer, the Open Inference Protocol's reference server: the same
requests to raylife's iris and to an MLServer model of the same signature get answers of the same
shape (status, top-level fields, output names, datatypes and shapes). MLServer runs from its own
virtualenv (tests.support.oip_reference); without it this test skips with one line."""

import httpx
import pytest
from fastapi.testclient import TestClient

from raylife.cluster import free_port
from raylife.lifecycle.store import ModelStore
from raylife_dev.bare import build
from tests.support import oip_reference

from ..conftest import quick_artifact

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def body(**extra):
    flat = [value for row in ROWS for value in row]
    return {
        "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": flat}],
        **extra,
    }


REQUESTS = {
    "plain": ("/v2/models/iris/infer", body()),
    "with id": ("/v2/models/iris/infer", body(id="abc")),
    "nested data": (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS}]},
    ),
    "one output": ("/v2/models/iris/infer", body(outputs=[{"name": "probabilities"}])),
    "unknown model": ("/v2/models/nope/infer", body()),
    "no inputs key": ("/v2/models/iris/infer", {"id": "x"}),
}


def shape_of(answer: httpx.Response):
    """What must agree: the status class and, for a 200, the fields and each output's signature."""
    payload = answer.json()
    if answer.status_code != 200:  # MLServer answers FastAPI's {"detail": ...} for a bad body
        return answer.status_code // 100
    outputs = [(o["name"], o["datatype"], o["shape"], len(o["data"])) for o in payload["outputs"]]
    given = payload.get("id") if payload.get("id") == "abc" else isinstance(payload.get("id"), str)
    return 200, sorted(k for k in payload if k != "parameters"), outputs, given


@pytest.mark.slow  # MLServer starts in ~10 s
def test_same_answers_shape_as_mlserver(tmp_path):
    if oip_reference.python() is None:
        pytest.skip(oip_reference.SKIP)
    store = ModelStore(str(tmp_path / "store"))
    store.promote("iris", store.register(quick_artifact("iris", epochs=0)))
    ours = TestClient(build("iris", str(tmp_path / "store")))
    ports = (free_port(), free_port(), free_port())
    with oip_reference.mlserver(tmp_path / "mlserver", *ports) as url:
        for name, (path, request) in REQUESTS.items():
            theirs = httpx.post(url + path, json=request, timeout=30)
            mine = ours.post("/iris" + path, json=request)
            assert shape_of(mine) == shape_of(theirs), (name, mine.text, theirs.text)
            assert mine.status_code == 200 or set(mine.json()) == {"error"}  # the protocol's form
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/iris/ready"):
            assert ours.get("/iris" + path).status_code == httpx.get(url + path).status_code == 200
        theirs_meta = httpx.get(f"{url}/v2/models/iris").json()
        mine_meta = ours.get("/iris/v2/models/iris").json()
        assert {"name", "versions", "platform", "inputs", "outputs"} <= set(mine_meta)
        assert mine_meta["name"] == theirs_meta["name"] == "iris"
