"""The model pool in-process, no Ray: loads on first use, the budget (models and bytes), one load
per model, bounded loads, per-model failures, names checked first; and the pool app's ASGI routing
(`/<model>` to that model's own API, the protocol at the root) as Serve mounts it at `/`."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from raylife.lifecycle.store import ModelStore
from raylife.serve.endpoint import ModelEndpoint
from raylife.serve.endpoint_config import EndpointConfig
from raylife.serve.pool import Budget, ModelPool, PoolError

from ..conftest import quick_artifact

MODELS = ["iris", "boston", "ionosphere"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("pool-store")
    store = ModelStore(str(path))
    for model in MODELS:
        store.promote(model, store.register(quick_artifact(model, epochs=0)))
    return str(path)


class Loads:
    """The pool's loader, counting loads and how many ran at once."""

    def __init__(self, store: str, delay_s: float = 0.0) -> None:
        self.store, self.delay_s = store, delay_s
        self.calls: list[str] = []
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, model: str) -> ModelEndpoint:
        with self.lock:
            self.calls.append(model)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay_s)
            return ModelEndpoint(model, self.store)
        finally:
            with self.lock:
                self.running -= 1


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_model_loads_on_first_use_once_and_stays(store: str):
    loads = Loads(store)
    pool = ModelPool(MODELS, Budget(), loads)

    async def scenario() -> None:
        first = await pool.get("iris")
        again = await pool.get("iris")
        assert first is again and loads.calls == ["iris"]
        answer = await first.predict(__import__("numpy").array([[5.1, 3.5, 1.4, 0.2]]))
        assert answer[0] == ModelStore(store).pointer("iris").version

    run(scenario())


def test_an_unknown_model_is_a_404_naming_the_served_and_loads_nothing(store: str):
    loads = Loads(store)
    pool = ModelPool(MODELS, Budget(), loads)
    for name in ("irs", "../../etc", "iris/../boston"):
        with pytest.raises(
            PoolError, match="unknown model .*; served: boston, ionosphere, iris"
        ) as e:
            run(pool.get(name))
        assert e.value.status == 404
    assert loads.calls == []


def test_the_least_recently_used_model_is_evicted_beyond_the_count_budget(store: str):
    pool = ModelPool(MODELS, Budget(max_models=2), Loads(store))

    async def scenario() -> None:
        await pool.get("iris")
        await pool.get("boston")
        await pool.get("iris")  # boston is now the least recently used
        await pool.get("ionosphere")
        assert list(pool.entries) == ["iris", "ionosphere"] and pool.evictions == 1

    run(scenario())


def test_the_bytes_budget_evicts_and_refuses_a_model_alone_above_it(store: str):
    sizes = {m: ModelEndpoint(m, store).nbytes() for m in MODELS}
    budget = Budget(max_bytes=sizes["ionosphere"] + sizes["iris"])  # each fits, not all three
    pool = ModelPool(MODELS, budget, Loads(store))

    async def scenario() -> None:
        await pool.get("iris")
        await pool.get("boston")
        await pool.get("ionosphere")  # needs room: iris (oldest) goes, and boston if still short
        assert "ionosphere" in pool.entries and "iris" not in pool.entries
        assert pool.stats()["bytes"] <= budget.max_bytes

    run(scenario())
    small = ModelPool(MODELS, Budget(max_bytes=sizes["iris"] - 1), Loads(store))
    with pytest.raises(
        PoolError, match=r"more than the pool's budget of .* bytes per replica"
    ) as e:
        run(small.get("iris"))
    assert e.value.status == 503


def test_a_storm_of_cold_requests_loads_each_model_once_and_a_few_at_a_time(store: str):
    loads = Loads(store, delay_s=0.2)
    pool = ModelPool(MODELS, Budget(max_concurrent_loads=1), loads)

    async def scenario() -> None:
        got = await asyncio.gather(*(pool.get(MODELS[i % 3]) for i in range(30)))
        assert len({id(e) for e in got}) == 3

    run(scenario())
    assert sorted(loads.calls) == sorted(MODELS) and loads.most == 1


def test_a_corrupt_model_answers_503_with_the_reason_and_the_others_keep_serving(
    store: str, tmp_path: Path
):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    version = ModelStore(str(copy)).pointer("boston").version
    weights = copy / "boston" / version / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    loads = Loads(str(copy))
    pool = ModelPool(MODELS, Budget(), loads)

    async def scenario() -> None:
        with pytest.raises(PoolError, match="boston cannot be served: .*checksum mismatch") as e:
            await pool.get("boston")
        assert e.value.status == 503
        with pytest.raises(PoolError, match="checksum mismatch"):  # remembered, not retried at once
            await pool.get("boston")
        assert loads.calls.count("boston") == 1
        assert (await pool.get("iris")).model == "iris"
        assert "boston" in pool.stats()["failed"]

    run(scenario())


def test_settings_reach_loaded_models_now_and_the_others_when_they_load(store: str):
    pool = ModelPool(MODELS, Budget(), Loads(store))

    async def scenario() -> None:
        iris = await pool.get("iris")
        await pool.configure(
            {"iris": EndpointConfig(capture=0.5), "boston": EndpointConfig(capture=0.25)}
        )
        assert iris.capture.fraction == 0.5
        boston = await pool.get("boston")
        assert boston.capture.fraction == 0.25
        with pytest.raises(PoolError, match="models the pool does not serve: \\['mnist'\\]"):
            await pool.configure({"mnist": EndpointConfig()})

    run(scenario())


# ------------------------------------------------------------------------------------------------
# The pool app: routing as Serve mounts it at `/`


@pytest.fixture(scope="module")
def app(store: str) -> TestClient:
    from serve_apps.pool import PoolApp, PoolRouter, build_root_api

    replica = PoolApp({"models": ["iris", "boston"], "store": store})
    return TestClient(PoolRouter(build_root_api(replica), replica))


def test_a_pooled_model_answers_the_same_api_as_a_dedicated_app(app: TestClient, store: str):
    version = ModelStore(store).pointer("iris").version
    answer = app.post("/iris", json={"row": [5.1, 3.5, 1.4, 0.2]})
    assert answer.status_code == 200 and answer.json()["version"] == version
    assert answer.headers["x-raylife-request-id"]
    assert app.get("/iris/info").json()["version"] == version
    assert app.get("/iris/healthz").json()["model"] == "iris"
    assert app.get("/boston/docs").status_code == 200
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    prefixed = app.post("/iris/v2/models/iris/infer", json=body)
    root = app.post("/v2/models/iris/infer", json=body)
    assert prefixed.status_code == root.status_code == 200
    assert prefixed.json()["outputs"] == root.json()["outputs"]
    assert app.get("/v2/models/iris").json()["versions"] == [version]
    assert app.get("/v2/health/ready").status_code == 200
    models = app.get("/models").json()
    assert models["iris"]["version"] == version and models["iris"]["pooled"] is True


def test_an_answer_at_the_root_has_one_id_for_header_body_capture_and_feedback(
    tmp_path: Path, store: str
):
    """The root's Open Inference Protocol route answers with the id its model captured under."""
    import shutil

    from serve_apps.pool import PoolApp, PoolRouter, build_root_api

    from raylife.lifecycle.captures import read_captures

    own = str(tmp_path / "store")  # captures land in the store: keep the module's clean
    shutil.copytree(store, own)
    replica = PoolApp({"models": ["iris"], "store": own})
    run(replica.pool.configure({"iris": EndpointConfig(capture=1.0)}))
    app = TestClient(PoolRouter(build_root_api(replica), replica))
    row = [5.1, 3.5, 1.4, 0.2]
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    traced = app.post("/v2/models/iris/infer", json=body, headers={"x-request-id": "trace-9"})
    fresh = app.post("/v2/models/iris/infer", json=body)
    assert traced.status_code == fresh.status_code == 200
    assert traced.headers["x-raylife-request-id"] == traced.json()["id"] == "trace-9"
    assert fresh.headers["x-raylife-request-id"] == fresh.json()["id"]
    kept = app.post("/iris/feedback", json={"request_id": "trace-9", "label": "setosa"})
    assert kept.status_code == 200 and kept.json()["kept"], kept.text
    replica.pool.entries["iris"].close()  # the queued captures written
    ids = set(read_captures(own, "iris").to_pandas()["request_id"])
    assert ids == {"trace-9", fresh.json()["id"]}


def test_unknown_names_are_404s_naming_the_served_models(app: TestClient):
    missing = app.post("/irs", json={"row": [1, 2, 3, 4]})
    assert missing.status_code == 404 and "POST /boston, POST /iris" in missing.json()["message"]
    oip = app.get("/v2/models/irs")
    assert oip.status_code == 404 and "served: boston, iris" in oip.json()["error"]
    assert app.get("/v2/models/iris/versions/nope").status_code == 404
