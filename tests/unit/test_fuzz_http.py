"""Schema-driven fuzzing of the model HTTP API (tests.support.fuzz) in-process, no network, no Ray: the
same app a Serve replica serves, mounted under /<model> as Serve mounts it, gets at least 300
generated requests per route (valid, schema-violating and malformed) and answers none with a 5xx
or with a 2xx that breaks its documented response schema."""

import threading

import pytest

pytest.importorskip("schemathesis", reason="the dev extra brings schemathesis")

from fastapi import FastAPI

from raylife.errors import RaylifeError
from raylife.lifecycle.store import ModelStore
from raylife.waiting import poll
from raylife_dev.bare import build
from tests.support.fuzz import fuzz_routes, problems

from ..conftest import quick_artifact

PER_ROUTE = 300


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """iris and mnist promoted; untrained weights (fuzzing tests the serving path, not answers)."""
    path = tmp_path_factory.mktemp("fuzz-store")
    store = ModelStore(str(path))
    for model in ("iris", "mnist"):
        store.promote(model, store.register(quick_artifact(model, epochs=0)))
    return str(path)


# schemathesis cases cost ~100x the malformed ones on MNIST's 784-number rows: a smaller share
# keeps this test near 15 s of CPU and still sends 60 schema-generated requests per route.
@pytest.mark.parametrize(
    ("model", "schema_share", "routes"),
    [
        ("iris", 0.5, {"POST /", "GET /info", "GET /healthz"}),
        ("mnist", 0.2, {"POST /", "POST /image", "GET /info", "GET /healthz"}),
    ],
)
@pytest.mark.slow  # about a minute: in make test, not in make test-fast
def test_no_route_answers_5xx(store, model, schema_share, routes):
    report = fuzz_routes(
        build(model, store),
        routes=sorted(routes),  # the Open Inference Protocol routes: test_oip_routes_never_5xx
        prefix=f"/{model}",
        per_route=PER_ROUTE,
        schema_share=schema_share,
    )
    assert set(report) == routes
    assert not problems(report), "\n".join(problems(report))
    for key, stats in report.items():
        assert stats["requests"] >= PER_ROUTE, key
        assert stats["server_errors"] == stats["connection_errors"] == 0, key
    for key in routes - {"GET /info", "GET /healthz"}:
        stats = report[key]
        # Every source ran, and the answers span success and each kind of refusal.
        assert {"positive", "negative", "malformed"} <= set(stats["by_source"]), key
        assert {"200", "400", "405", "413", "415", "422"} <= set(stats["statuses"]), (
            key,
            stats["statuses"],
        )


OIP_INFER = ("POST /v2/models/{name}/infer", "POST /v2/models/{name}/versions/{version}/infer")


@pytest.mark.slow  # about 40 s: schemathesis cases of the nested tensor schema are costly
def test_oip_routes_never_5xx(store):
    """The Open Inference Protocol routes, the model's own name and version in their paths (a random
    name only meets the 404): infer gets valid, mutated, malformed and oversized tensors."""
    app = build("iris", store)
    paths = {"name": "iris", "version": ModelStore(store).pointer("iris").version}
    reads = [key for key in _oip_keys(app) if key not in OIP_INFER]
    report = fuzz_routes(app, routes=reads, prefix="/iris", per_route=30, path_params=paths)
    report |= fuzz_routes(
        app, routes=OIP_INFER, prefix="/iris", per_route=150, schema_share=0.3, path_params=paths
    )
    assert len(report) == 9 and not problems(report), "\n".join(problems(report))
    for key in OIP_INFER:
        assert {"200", "400", "405", "413"} <= set(report[key]["statuses"]), report[key]
    assert "200" in report["GET /v2/models/{name}/versions/{version}/ready"]["statuses"]


def _oip_keys(app):
    doc = app.app.openapi()
    return [
        f"{m.upper()} {p}" for p, ops in doc["paths"].items() if p.startswith("/v2") for m in ops
    ]


@pytest.mark.slow  # ~6 s of schemathesis cases: in make test, not in make test-fast
def test_a_5xx_and_a_broken_answer_are_counted_with_examples():
    """The harness itself: an app that crashes on some inputs and breaks its schema on others."""
    app = FastAPI()

    @app.post("/divide")
    async def divide(x: int) -> dict[str, float]:
        return {"inverse": 1 / x}  # x=0 raises: a 500

    @app.get("/count")
    async def count(n: int = 0) -> dict[str, int]:
        return {"n": n}

    # Documented as an int but answered as a string when n < 0: an invalid response.
    app.openapi()
    broken = app.openapi_schema["paths"]["/count"]["get"]["responses"]["200"]["content"]
    broken["application/json"]["schema"] = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
    }
    report = fuzz_routes(app, per_route=40, seed=1)
    assert set(report) == {"POST /divide", "GET /count"}
    divide_stats, count_stats = report["POST /divide"], report["GET /count"]
    assert divide_stats["requests"] >= 40 and divide_stats["server_errors"] >= 1
    example = divide_stats["examples"][0]
    assert example["kind"] == "server_errors" and "ZeroDivisionError" in example["answer"]
    assert "x=0" in example["request"]
    assert count_stats["invalid_responses"] >= 1 and count_stats["server_errors"] == 0
    lines = problems(report)
    assert len(lines) == 2 and lines[0].startswith("POST /divide: {'server_errors':")


def test_route_selection_and_unknown_routes(store):
    app = build("iris", store)
    report = fuzz_routes(app, routes=["/healthz"], prefix="/iris", per_route=20)
    assert list(report) == ["GET /healthz"] and report["GET /healthz"]["requests"] >= 20
    with pytest.raises(RaylifeError, match=r"routes \['GET /nope'\] are not in the OpenAPI"):
        fuzz_routes(app, routes=["GET /nope"], prefix="/iris", per_route=1)
    with pytest.raises(RaylifeError, match="openapi.json answered 404"):
        fuzz_routes(app, prefix="/wrong", per_route=1)


@pytest.mark.slow  # ~14 s: a live uvicorn fuzzed over HTTP, in make test only
def test_over_http_a_live_server_and_a_dead_one(store):
    """The URL mode a Serve deployment gets: a real uvicorn on a free loopback port, then the
    same routes with nothing listening (every request a connection error, none a 5xx)."""
    import uvicorn

    from raylife.cluster import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build("iris", store), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        poll(lambda: server.started, timeout_s=20, interval_s=0.05)
        url = f"http://127.0.0.1:{port}/iris"
        report = fuzz_routes(url, per_route=30, seed=2)
        assert not problems(report), "\n".join(problems(report))
        assert all(stats["requests"] >= 30 for stats in report.values())
        assert "200" in report["POST /"]["statuses"]
        openapi = build("iris", store).app.openapi()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    dead = fuzz_routes(url, routes=["GET /healthz"], per_route=5, openapi=openapi, timeout_s=2)
    stats = dead["GET /healthz"]
    assert stats["connection_errors"] == stats["requests"] >= 5 and stats["server_errors"] == 0
