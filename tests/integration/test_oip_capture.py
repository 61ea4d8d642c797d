"""The Open Inference Protocol and request capture on a real Serve deployment (the session cluster):
tritonclient (JSON and its binary tensors) and kserve's v2 REST client against the bare base URL
(the root's /v2) and against /<model>/v2, then
every answered request found exactly once in the captured Parquet rows after a graceful stop."""

from __future__ import annotations

import subprocess

import httpx
import numpy as np
import pytest

from raylife.lifecycle.captures import read_captures
from raylife.serve import local as serving
from raylife_dev.loadtest import run_load
from tests.integration.conftest import serving_quick_models
from tests.support import oip_reference

LOAD_REQUESTS = 200


def capture_everything(settings, local) -> None:
    serving.update_deployments(
        settings, local, ["iris"], lambda d: d.setdefault("user_config", {}).update(capture=1.0)
    )


def test_third_party_clients_and_every_request_captured(tmp_path):
    http = pytest.importorskip("tritonclient.http", reason="the dev extra brings tritonclient")
    with serving_quick_models(tmp_path / "home", ["iris"]) as (settings, local):
        capture_everything(settings, local)
        host = local.url.removeprefix("http://")
        rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
        native = httpx.post(f"{local.url}/iris", json={"rows": rows.tolist()}).json()
        labels = [p["label"] for p in native["predictions"]]
        # The bare base URL (the root's /v2, as KServe, Triton and MLServer expose it), then the
        # model's own prefix: the same answers from both.
        for base in (host, f"{host}/iris"):
            client = http.InferenceServerClient(url=base)
            assert client.is_server_live() and client.is_server_ready(), base
            assert client.is_model_ready("iris"), base
            meta = client.get_model_metadata("iris")
            assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
            assert meta["versions"] == [native["version"]]
            for binary in (True, False):
                tensor = http.InferInput("input", list(rows.shape), "FP32")
                tensor.set_data_from_numpy(rows, binary_data=binary)
                outputs = [
                    http.InferRequestedOutput(n, binary_data=binary) for n in meta_outputs(meta)
                ]
                result = client.infer("iris", [tensor], outputs=outputs, request_id=f"t{binary}")
                answered = [v.decode() if binary else v for v in result.as_numpy("predictions")]
                assert answered == labels, base
                assert result.as_numpy("probabilities").shape == (2, 3)
                assert result.get_response()["model_version"] == native["version"]
            bad = http.InferInput("input", [1, 4], "FP64")
            bad.set_data_from_numpy(np.ones((1, 4), dtype=np.float64))
            bad._datatype = (
                "BYTES"  # a wrong datatype: one 400 that says so, the model keeps serving
            )
            with pytest.raises(http.InferenceServerException, match="not numeric"):
                client.infer("iris", [bad])
        # At the root, a dedicated model's answer (forwarded through its deployment handle) keeps
        # the request's id: header, body and captured rows agree.
        body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                            "data": rows.reshape(-1).tolist()}]}  # fmt: skip
        traced = httpx.post(
            f"{local.url}/v2/models/iris/infer", json=body, headers={"x-request-id": "root-trace"}
        )
        assert traced.status_code == 200, traced.text
        assert traced.headers["x-raylife-request-id"] == traced.json()["id"] == "root-trace"
        # An unknown model at the root: the protocol's 404, naming what is served.
        unknown = httpx.get(f"{local.url}/v2/models/irs")
        assert unknown.status_code == 404 and "served: iris" in unknown.json()["error"]
        kserve_answers = sum(_kserve_client(url, rows) for url in (local.url, f"{local.url}/iris"))
        load = run_load(f"{local.url}/iris", LOAD_REQUESTS, 8, warmup=0)
        assert load.ok_final == LOAD_REQUESTS
        info = httpx.get(f"{local.url}/iris/info").json()["capture"]
        assert info["dropped"] == 0
        store = settings.store_uri
    # serving_quick_models stopped Serve as `raylife serve` stops: the replicas' queues flushed.
    # native batch, tritonclient 2 x 2, the traced one at the root, kserve
    two_row_requests = 1 + 2 * 2 + 1 + kserve_answers
    table = read_captures(store, "iris").to_pandas()
    assert len(table) == 2 * two_row_requests + LOAD_REQUESTS
    assert table["request_id"].nunique() == two_row_requests + LOAD_REQUESTS
    assert not table.duplicated(["request_id", "row"]).any()
    assert set(table["route"]) == {"predict", "oip"}
    assert (table["request_id"] == "root-trace").sum() == 2


def meta_outputs(meta):
    return [output["name"] for output in meta["outputs"]]


def _kserve_client(url: str, rows: np.ndarray) -> int:
    """kserve's InferenceRESTClient, from the reference virtualenv (its pins would downgrade this
    environment's pandas and protobuf). Returns the requests it sent (0 when the venv is absent)."""
    python = oip_reference.python()
    if python is None:
        return 0
    script = oip_reference.KSERVE_CLIENT.format(url=url, rows=rows.tolist())
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines == ["predictions BYTES [2]", "probabilities FP32 [2, 3]"], done.stdout
    return 1
