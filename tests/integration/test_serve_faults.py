"""Serve under faults, over real HTTP on the session cluster: a replica killed under load, an
overload burst, and schema-driven fuzzing of every route of the live apps.

Deployment settings are narrowed per test through the running config (as an operator would):
iris runs 2 fixed replicas (a replica can die while the other serves); mnist runs 1 replica with
tiny request limits, so that a burst of 256-row requests exceeds them many times over.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

from raylife.serve import config as serve_config
from raylife.serve import local as serving
from raylife_dev.loadtest import run_load
from tests.conftest import prepared
from tests.integration.conftest import alive_replicas, serving_quick_models, wait_for

pytestmark = pytest.mark.slow
MODELS = ["iris", "mnist"]
MNIST_LIMITS = {"max_ongoing_requests": 2, "max_queued_requests": 4}
LOAD_RETRIES = 5
"""raylife loadtest --retries 5: backoff 0.05 s doubling, 1.55 s in all before giving up."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    with serving_quick_models(tmp_path_factory.mktemp("serve-faults"), MODELS) as (settings, local):
        for model, deployment in serve_config.model_deployments(local.config):
            if model == "iris":
                deployment["autoscaling_config"] = {"min_replicas": 2, "max_replicas": 2}
            if model == "mnist":
                deployment.update(MNIST_LIMITS)
                deployment["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1}
        serving.redeploy(settings, local)
        _settle()
        yield settings, local.url


REPLICAS = {"iris": 2, "mnist": 1}


def _settle() -> None:
    """Wait until every app runs its full replica set. A replica killed by an earlier test is
    replaced in the background, and a replacement starting up (torch import, model load) takes
    CPU that a latency bar must not pay for on a 2-core machine."""
    for app, expected in REPLICAS.items():
        assert wait_for(lambda app=app, n=expected: _running(app) == {"RUNNING": n}, 90), app


def _running(app: str) -> dict[str, int]:
    """Replica states Serve reports: RUNNING means started and model loaded, past health checks."""
    from ray import serve

    states = serve.status().applications[app].deployments["ModelServer"].replica_states
    return {state: count for state, count in states.items() if count}


def test_replica_killed_under_load_loses_no_request(served):
    _, url = served
    victim = alive_replicas("iris")[0]
    results: dict[str, Any] = {}

    def load() -> None:
        try:
            results["load"] = run_load(
                f"{url}/iris", requests=4000, concurrency=8, retries=LOAD_RETRIES, warmup=0
            )
        except BaseException as exc:  # surfaced below: a crashed client is a failure, not a hang
            results["crash"] = exc

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=180)
    if "crash" in results:
        raise AssertionError("the load client crashed") from results["crash"]
    assert "load" in results, "the load did not finish within 180 s"
    result = results["load"]
    print(
        f"\nreplica killed under load: {result.requests} requests, first try ok "
        f"{result.ok_first_try}, final ok {result.ok_final}, retries {result.retries}, "
        f"errors {result.errors}, p99 {result.p99_ms} ms"
    )
    assert result.ok_final == result.requests, result.errors  # nothing lost
    assert result.ok_first_try >= 0.99 * result.requests
    assert wait_for(lambda: len(alive_replicas("iris")) == 2, 90), (
        "Serve did not replace the replica"
    )
    assert victim.pid not in {a.pid for a in alive_replicas("iris")}


async def _burst(url: str, body: bytes, n: int) -> list[tuple[str, float]]:
    import aiohttp

    answers: list[tuple[str, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

        async def one() -> None:
            started = time.perf_counter()
            try:
                headers = {"content-type": "application/json"}  # body encoded once, up front
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answers.append((str(response.status), time.perf_counter() - started))
            except aiohttp.ClientError as exc:
                answers.append((type(exc).__name__, time.perf_counter() - started))

        await asyncio.gather(*(one() for _ in range(n)))
    return answers


def test_overload_is_refused_fast_and_service_recovers(served):
    """100 concurrent 32-row requests against 2 ongoing + 4 queued: the excess gets 503 within a
    second (median; none over 2 s) instead of waiting; afterwards every request succeeds again."""
    _, url = served
    _settle()
    rows = prepared("mnist").test_raw.X[:1].reshape(1, -1)
    body = json.dumps({"rows": np.repeat(rows, 32, axis=0).tolist()}).encode()
    answers = asyncio.run(_burst(f"{url}/mnist", body, 100))
    statuses = Counter(status for status, _ in answers)
    refused = [seconds for status, seconds in answers if status in ("503", "429")]
    served = [seconds for status, seconds in answers if status == "200"]
    print(
        f"\noverload burst of 100: {dict(statuses)}; refusals answered in median "
        f"{statistics.median(refused):.3f} s, slowest {max(refused):.3f} s; answers in median "
        f"{statistics.median(served):.3f} s, slowest {max(served):.3f} s"
    )
    assert set(statuses) <= {"200", "503", "429"}, statuses
    assert statuses["200"] >= sum(MNIST_LIMITS.values())
    # The typical refusal within 1 s, and none unbounded. The slowest is not held to 1 s: with
    # HAProxy in front, each replica refuses for itself while it reads the burst's 200 KB bodies,
    # so the last refusals wait on those reads. Measured: 0.63 s median, 1.006 s slowest on a
    # quiet machine; 0.73 s and 1.17 s on a loaded one; a CI run's slowest was 1.22 s.
    assert len(refused) >= 50
    assert statistics.median(refused) <= 1.0 and max(refused) <= 2.0, sorted(refused)[-10:]
    after = asyncio.run(_burst(f"{url}/mnist", body, 2))
    assert [status for status, _ in after] == ["200", "200"]


@pytest.mark.parametrize(("model", "schema_share"), [("iris", 0.5), ("mnist", 0.2)])
def test_fuzzing_every_route_of_the_live_app(served, model, schema_share):
    """>= 300 generated requests per route over HTTP: no 5xx, no dropped connection, no replica
    restarted."""
    pytest.importorskip("schemathesis", reason="the dev extra brings schemathesis")
    from tests.support.fuzz import fuzz_routes, problems

    _, url = served
    _settle()  # a replica replaced by an earlier test would otherwise look like a restart here
    before = {a.pid for a in alive_replicas(model)}
    report = fuzz_routes(f"{url}/{model}", per_route=300, schema_share=schema_share)
    total = sum(stats["requests"] for stats in report.values())
    print(f"\nfuzzed {model}: {total} requests over {len(report)} routes")
    assert not problems(report), "\n".join(problems(report))
    assert all(stats["requests"] >= 300 for stats in report.values())
    assert {a.pid for a in alive_replicas(model)} == before, "a replica was replaced during fuzzing"
