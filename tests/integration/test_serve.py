"""Ray Serve over real HTTP: the rendered local config on the session's Ray cluster, models trained
with the debug presets, requests sent with httpx (and the aiohttp load-test client)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from raylife.catalog.lookup import model_names
from raylife.cli import main
from raylife.inference.predict import Predictor
from raylife.lifecycle.store import ModelStore
from raylife.serve import local as serving
from raylife.settings import Settings
from raylife_dev.loadtest import run_load
from tests.conftest import prepared, quick_artifact
from tests.integration.conftest import serving_quick_models, wait_for

MODELS = sorted(model_names())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """All four models promoted in a fresh store and served; yields (settings, base URL)."""
    with serving_quick_models(tmp_path_factory.mktemp("serve-home"), MODELS) as (settings, local):
        yield settings, local.url


def _predictor(settings: Settings, model: str) -> Predictor:
    return Predictor.from_store(ModelStore(settings.store_uri), model)


def _test_rows(model: str, n: int) -> np.ndarray:
    return prepared(model).test_raw.X[:n]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _assert_same(http: list[dict[str, Any]], local: list[dict[str, Any]]) -> None:
    assert len(http) == len(local)
    for a, b in zip(http, local, strict=True):
        if "value" in b:
            assert a["value"] == pytest.approx(b["value"], rel=1e-5)
        else:
            assert a["label"] == b["label"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_prediction_equals_raylife_predict(served, model):
    settings, url = served
    rows = _test_rows(model, 5)
    predictor = _predictor(settings, model)
    one = httpx.post(f"{url}/{model}", json={"row": rows[0].tolist()}, timeout=30)
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == model and body["version"] == predictor.version
    _assert_same(body["predictions"], predictor.predict_array(rows[:1]))
    batch = httpx.post(f"{url}/{model}", json={"rows": rows.tolist()}, timeout=30)
    assert batch.status_code == 200, batch.text
    _assert_same(batch.json()["predictions"], predictor.predict_array(rows))


def test_named_features_and_cli_predict_url(served, capsys):
    settings, url = served
    schema = _predictor(settings, "iris").artifact.schema
    row = dict(zip(schema.feature_names, _test_rows("iris", 1)[0].tolist(), strict=True))
    answer = httpx.post(f"{url}/iris", json={"rows": [row]}).json()["predictions"]
    assert main(["predict", "--model", "iris", "--url", url, "--input", json.dumps([row])]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"] == answer


def test_mnist_png_upload(served, tmp_path):
    settings, url = served
    pixels = _test_rows("mnist", 1)[0, 0]
    response = httpx.post(
        f"{url}/mnist/image", files={"file": ("d.png", _png(pixels), "image/png")}
    )
    assert response.status_code == 200, response.text
    expected = _predictor(settings, "mnist").predict_image(_png(pixels))
    _assert_same(response.json()["predictions"], [expected])


def test_operations_endpoints(served):
    settings, url = served
    models = httpx.get(f"{url}/models").json()
    store = ModelStore(settings.store_uri)
    assert {m: entry["version"] for m, entry in models.items()} == {
        m: store.pointer(m).version for m in MODELS
    }
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert httpx.get(f"{url}/iris/docs").status_code == 200
    schema = httpx.get(f"{url}/iris/openapi.json").json()
    assert "IrisRequest" in schema["components"]["schemas"]
    info = httpx.get(f"{url}/mnist/info").json()
    assert info["input"]["shape"] == [1, 28, 28]


IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
BAD_INPUTS = [
    # (id, method, path, request kwargs, status, words the error must contain)
    ("too-few-features", "POST", "/iris", {"json": {"row": [1.0, 2.0]}}, 422, "at least 4"),
    ("wrong-field-names", "POST", "/iris", {"json": {"row": {"petals": 1}}}, 422, "required"),
    ("string-value", "POST", "/iris", {"json": {"row": ["1", 2, 3, 4]}}, 422, "valid number"),
    ("nan", "POST", "/iris", {"content": b'{"row": [NaN, 1, 2, 3]}'}, 422, "finite"),
    ("infinity", "POST", "/iris", {"content": b'{"row": [Infinity, 1, 2, 3]}'}, 422, "finite"),
    ("empty-batch", "POST", "/iris", {"json": {"rows": []}}, 422, "at least 1"),
    ("batch-over-limit", "POST", "/iris", {"json": {"rows": [IRIS_ROW] * 257}}, 422, "at most 256"),
    (
        "row-and-rows",
        "POST",
        "/iris",
        {"json": {"row": IRIS_ROW, "rows": [IRIS_ROW]}},
        422,
        "exactly one",
    ),
    ("unknown-key", "POST", "/iris", {"json": {"inputs": [IRIS_ROW]}}, 422, "extra"),
    ("malformed-json", "POST", "/iris", {"content": b'{"row": [1, 2,'}, 400, "not valid JSON"),
    ("undecodable-bytes", "POST", "/iris", {"content": b"\xff\xfe\x00"}, 400, "not valid JSON"),
    ("body-too-large", "POST", "/iris", {"content": b"[" + b"1," * 600_000 + b"1]"}, 413, "bytes"),
    (
        "wrong-content-type",
        "POST",
        "/iris",
        {"content": b"1,2,3,4", "headers": {"content-type": "text/csv"}},
        415,
        "application/json",
    ),
    (
        "wrong-image-shape",
        "POST",
        "/mnist",
        {"json": {"row": [[0.0] * 28] * 27}},
        422,
        "at least 28",
    ),
    (
        "png-wrong-size",
        "POST",
        "/mnist/image",
        {"files": {"file": ("d.png", _png(np.zeros((20, 28))), "image/png")}},
        422,
        "28x28",
    ),
    (
        "not-a-png",
        "POST",
        "/mnist/image",
        {"files": {"file": ("d.png", b"GIF89a...", "image/png")}},
        422,
        "PNG",
    ),
    ("image-as-json", "POST", "/mnist/image", {"json": {"row": 1}}, 415, "multipart/form-data"),
    ("image-route-on-tabular", "POST", "/iris/image", {"json": {}}, 404, "no route"),
    ("unknown-route", "GET", "/nope", {}, 404, "no route"),
    ("unknown-model", "POST", "/irs", {"json": {"row": IRIS_ROW}}, 404, "iris"),
    ("wrong-method", "GET", "/iris", {}, 405, ""),
]


@pytest.mark.parametrize(
    "method,path,kwargs,status,words",
    [case[1:] for case in BAD_INPUTS],
    ids=[c[0] for c in BAD_INPUTS],
)
def test_bad_input_is_a_named_4xx(served, method, path, kwargs, status, words):
    _, url = served
    if "content" in kwargs and "headers" not in kwargs:
        kwargs = {**kwargs, "headers": {"content-type": "application/json"}}
    response = httpx.request(method, f"{url}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "message"}
    assert words.lower() in body["message"].lower()


def test_no_replica_crashed_after_bad_input(served):
    from ray import serve

    _, url = served
    apps = serve.status().applications
    assert all(apps[m].status == "RUNNING" for m in MODELS)
    assert httpx.post(f"{url}/iris", json={"row": IRIS_ROW}).status_code == 200


def _under_load(url: str, argv: list[str], requests: int) -> Any:
    """Run the CLI command `argv` while `requests` requests load /iris; the load's result."""
    results: dict[str, Any] = {}

    def load() -> None:
        results["load"] = run_load(f"{url}/iris", requests=requests, concurrency=8, warmup=0)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)
    assert main(argv) == 0  # waits until /iris/info answers the version the pointer names
    thread.join(timeout=120)
    return results["load"]


def _served_versions(url: str) -> set[str]:
    return {
        httpx.post(f"{url}/iris", json={"row": IRIS_ROW}).json()["version"] for _ in range(20)
    } | {httpx.get(f"{url}/models").json()["iris"]["version"]}


def test_promotion_and_rollback_swap_under_load_without_failures(served):
    settings, url = served
    store = ModelStore(settings.store_uri)
    old = store.pointer("iris").version
    new = store.register(quick_artifact("iris", epochs=3))  # better than old: the gate lets it

    promoted = _under_load(url, ["promote", "iris", new], requests=3000)
    assert promoted.errors == {} and promoted.ok_final == 3000
    assert set(promoted.versions) <= {old, new}
    assert _served_versions(url) == {new}

    rolled_back = _under_load(url, ["rollback", "iris"], requests=2000)
    assert rolled_back.errors == {} and rolled_back.ok_final == 2000
    assert set(rolled_back.versions) <= {old, new}
    assert _served_versions(url) == {old} and store.pointer("iris").version == old


def test_loadtest_command_short_run(served, capsys):
    _, url = served
    args = ["loadtest", "--url", url, "--model", "iris", "--requests", "300", "--concurrency", "8"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["errors"] == {} and result["ok_first_try"] == 300 and result["rps"] > 0
    assert main([*args, "--baseline", "--repeats", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["serve"]["errors"] == 0 and summary["bare"]["errors"] == 0
    assert summary["ratio_rps"] > 0


def _running_replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments["ModelServer"]
    return int(deployment.replica_states.get("RUNNING", 0))


def test_autoscaling_up_under_load_and_back_down(served):
    """Delays shortened in this test's config: 1 -> 2 replicas under load, back to 1 after."""
    settings, url = served
    local = serving.read_state(settings)
    assert local is not None
    autoscaling = {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 1,
        "downscale_delay_s": 5,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    serving.update_deployments(
        settings, local, ["boston"], lambda d: d.update(autoscaling_config=autoscaling)
    )
    assert _running_replicas("boston") == 1
    results: dict[str, Any] = {}
    stop = threading.Event()
    # 256 rows per request: work the replica itself must do, so requests pile up there (with
    # one-row requests the client, not the replica, is the bottleneck on 2 cores).
    body = {"rows": np.repeat(_test_rows("boston", 1), 256, axis=0).tolist()}

    def load() -> None:
        totals = {"requests": 0, "errors": 0}
        while not stop.is_set():
            r = run_load(f"{url}/boston", requests=100, concurrency=8, warmup=0, body=body)
            totals["requests"] += r.requests
            totals["errors"] += r.requests - r.ok_final
        results.update(totals)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        peak = wait_for(lambda: _running_replicas("boston") >= 2, timeout_s=60)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert peak, "boston did not scale to 2 replicas under sustained load"
    assert results["errors"] == 0 and results["requests"] > 0
    assert wait_for(lambda: _running_replicas("boston") == 1, timeout_s=90), "no downscale"
    assert (
        httpx.post(f"{url}/boston", json={"row": _test_rows("boston", 1)[0].tolist()}).status_code
        == 200
    )


def test_serve_state_file_points_at_the_running_app(served):
    settings, url = served
    local = serving.read_state(settings)
    assert local is not None and local.url == url
    assert Path(settings.home / serving.STATE_FILE).is_file()


def _listeners() -> dict[int, set[str]]:
    """Listening TCP port -> the local addresses it is bound to (`ss`, as an operator would)."""
    import shutil
    import subprocess

    if not shutil.which("ss"):
        pytest.skip("needs `ss` (iproute2) to list listening sockets")
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    bound: dict[int, set[str]] = {}
    for line in out.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        bound.setdefault(int(port), set()).add(address.strip("[]"))
    return bound


def test_what_docs_security_says_binds_everywhere_does(served):
    """HAProxy's stats (8404) and metrics (9101) listeners ignore the loopback Serve host, and its
    admin socket is world-writable: docs/security.md tells operators to firewall them."""
    import os
    import stat

    from ray.serve._private import constants

    _, url = served
    bound = _listeners()
    everywhere = {"*", "0.0.0.0", "::"}
    assert bound[constants.RAY_SERVE_HAPROXY_STATS_PORT] & everywhere, bound
    assert bound[constants.RAY_SERVE_HAPROXY_METRICS_PORT] & everywhere, bound
    assert bound[int(url.rsplit(":", 1)[1])] == {"127.0.0.1"}  # the model port: loopback only
    # One socket per node, in a folder named by the node id (Ray 2.60: several raylets may share
    # a host), next to where RAY_SERVE_HAPROXY_SOCKET_PATH points.
    import ray

    folder, name = os.path.split(constants.RAY_SERVE_HAPROXY_SOCKET_PATH)
    socket = os.path.join(folder, ray.get_runtime_context().get_node_id(), name)
    mode = stat.S_IMODE(os.stat(socket).st_mode)
    assert mode == 0o666, oct(mode)
