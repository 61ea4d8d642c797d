"""Canary rollouts on the session cluster: a good challenger promoted through its steps under
traffic, a failing one rolled back with the pointer unchanged; routing headers and feedback."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from raylife.lifecycle import history
from raylife.lifecycle.store import ModelStore
from raylife.serve import canary
from raylife.serve.rollout import PIN_HEADER, REQUEST_ID_HEADER
from raylife_dev.faulty_models import faulty_artifact
from tests.conftest import prepared, quick_artifact
from tests.integration.conftest import alive_replicas, serving_quick_models

QUICK_GATES = canary.Gates(min_requests=5, min_feedback=10**6, min_latency_samples=10**6)
"""Short dwell times carry too few requests for the latency and metric gates (the bench has them)."""


class Traffic:
    """One client thread posting test rows until stopped; every answer's status and version."""

    def __init__(self, url: str) -> None:
        self.url, self.rows = url, prepared("iris").test_raw.X
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                row = self.rows[i % len(self.rows)].tolist()
                response = client.post(f"{self.url}/iris", json={"row": row})
                version = response.json().get("version", "") if response.status_code == 200 else ""
                self.answers.append((response.status_code, version))
                i += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """iris served; yields (settings, local, store)."""
    with serving_quick_models(tmp_path_factory.mktemp("rollout-home"), ["iris"]) as (
        settings,
        local,
    ):
        yield settings, local, ModelStore(settings.store_uri)


def test_good_canary_reaches_100_and_moves_the_pointer(served: Any) -> None:
    settings, local, store = served
    champion = store.pointer("iris").version
    challenger = store.register(quick_artifact("iris", epochs=2))
    plan = canary.Plan("iris", challenger, (50.0, 100.0), dwell_s=1.5, gates=QUICK_GATES)
    with Traffic(local.url) as traffic:
        result = canary.run(settings, plan, say=lambda line: None)
    assert result.action == "promoted", result.line
    assert store.pointer("iris").version == challenger
    statuses = Counter(status for status, _ in traffic.answers)
    assert statuses == {200: len(traffic.answers)}, statuses
    assert {v for _, v in traffic.answers} == {champion, challenger}
    first = result.steps[0]["versions"]
    assert first[challenger]["requests"] > 0 and first[champion]["requests"] > 0
    assert httpx.get(f"{local.url}/iris/info").json()["version"] == challenger


def test_failing_canary_is_rolled_back_and_the_pointer_stays(served: Any) -> None:
    settings, local, store = served
    before = store.pointer("iris")
    bad = store.register(faulty_artifact("iris", "failing"))
    plan = canary.Plan("iris", bad, (20.0, 100.0), dwell_s=5, gates=QUICK_GATES)
    with Traffic(local.url) as traffic:
        result = canary.run(settings, plan, say=lambda line: None)
    assert result.action == "rolled_back" and "5xx rate" in result.line, result.line
    assert len(result.steps) == 1  # stopped within its first step
    assert store.pointer("iris") == before
    last = history.read(store, "iris")[-1]
    assert (last.action, last.to_version, last.from_version) == (
        "canary_failed",
        bad,
        before.version,
    )
    failed = sum(status != 200 for status, _ in traffic.answers)
    assert 0 < failed <= 0.2 * len(traffic.answers) + 5
    assert canary.current_rollout(local, "iris") is None
    answer = httpx.post(f"{local.url}/iris", json={"row": [5.1, 3.5, 1.4, 0.2]})
    assert answer.status_code == 200 and answer.json()["version"] == before.version


def test_pin_header_sticky_routing_and_feedback(served: Any, tmp_path: Path) -> None:
    settings, local, store = served
    champion = store.pointer("iris").version
    other = store.register(quick_artifact("iris", epochs=4))
    row = {"row": [5.1, 3.5, 1.4, 0.2]}
    assert httpx.post(f"{local.url}/iris", json=row, headers={PIN_HEADER: other}).status_code == 422
    plan = canary.Plan("iris", other, (50.0, 100.0), dwell_s=60, sticky_header="x-user")
    done = threading.Event()
    runner = threading.Thread(
        target=lambda: (canary.run(settings, plan, say=lambda line: done.set()), None)
    )
    runner.start()
    try:
        assert done.wait(60)
        pinned = httpx.post(f"{local.url}/iris", json=row, headers={PIN_HEADER: other})
        assert pinned.json()["version"] == other
        sticky = {
            httpx.post(f"{local.url}/iris", json=row, headers={"x-user": "ada"}).json()["version"]
            for _ in range(8)
        }
        assert len(sticky) == 1
        request_id = pinned.headers[REQUEST_ID_HEADER]
        assert request_id == pinned.headers["x-request-id"]  # one id with Serve's own
        scored = httpx.post(
            f"{local.url}/iris/feedback", json={"request_id": request_id, "label": 0}
        )
        assert scored.status_code == 200, scored.text
        assert scored.json()["version"] == other
        unknown = httpx.post(f"{local.url}/iris/feedback", json={"request_id": "nope", "label": 0})
        assert unknown.status_code == 404 and "unknown_request_id" in unknown.text
        with pytest.raises(Exception, match="already in progress"):
            canary.run(settings, plan)
    finally:
        print(canary.abort(settings, "iris"))
        runner.join(timeout=90)
    assert store.pointer("iris").version == champion


def test_a_rollout_survives_a_serve_controller_restart(served: Any) -> None:
    """The rollout lives in the deployment's user_config, which Serve's controller checkpoints:
    killed and restarted, the controller still holds it, and a replica it starts afterwards
    (the old ones killed too) routes by it."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    from raylife.serve.rollout import Rollout
    from raylife.waiting import poll

    settings, local, store = served
    champion = store.pointer("iris").version
    other = store.register(quick_artifact("iris", epochs=5))
    rollout = Rollout(id="controller-restart", challenger=other, mode="canary", weight=50.0)
    canary.set_rollout(settings, local, "iris", rollout)
    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        ray.kill(controller, no_restart=False)
        killed = {r.actor_id for r in alive_replicas("iris")}
        assert killed
        for replica in alive_replicas("iris"):
            ray.kill(ray.get_actor(replica.name, namespace=SERVE_NAMESPACE))

        def running_again() -> bool:
            states = serve.status().applications["iris"].deployments["ModelServer"].replica_states
            return states.get("RUNNING", 0) >= 1 and not states.get("STARTING", 0)

        assert poll(running_again, 180, interval_s=1, ignore=(Exception,))

        def both_versions() -> bool:
            row = {"row": [5.1, 3.5, 1.4, 0.2]}
            with httpx.Client(timeout=10) as client:
                answers = [client.post(f"{local.url}/iris", json=row) for _ in range(40)]
            return {a.json()["version"] for a in answers if a.status_code == 200} == {
                champion,
                other,
            }

        assert poll(both_versions, 60, interval_s=1, ignore=(httpx.HTTPError,))
        assert not killed & {r.actor_id for r in alive_replicas("iris")}, (
            "the answers came from new replicas"
        )
        assert canary.figures(local.url, "iris")["rollout"]["id"] == "controller-restart"
    finally:
        canary.set_rollout(settings, local, "iris", None)
