"""Rollouts without Ray: routing by weight and sticky header, the pin header, the ledger's
feedback scoring, the live gates, step parsing and the rollout config."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest
from pydantic import ValidationError

from raylife.errors import RaylifeError
from raylife.serve import canary
from raylife.serve.rollout import (
    PIN_HEADER,
    Feedback,
    Ledger,
    Rollout,
    Tally,
    VersionStats,
    choose,
    sticky_bucket,
    truth_of,
)

CANARY = Rollout(id="r1", challenger="new", weight=10.0)


def test_random_routing_follows_the_weight_within_its_99_percent_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from raylife.serve import rollout

    monkeypatch.setattr(rollout, "_draws", random.Random(0))  # deterministic, not flaky
    random.seed(1)  # the global generator plays no part
    n, p = 20_000, 0.10
    hits = sum(choose(CANARY, "old", {}) == "new" for _ in range(n))
    half_width = 2.576 * (n * p * (1 - p)) ** 0.5
    assert abs(hits - n * p) <= half_width


def test_sticky_callers_keep_their_version_and_stay_on_it_as_the_weight_grows() -> None:
    sticky = CANARY.model_copy(update={"sticky_header": "X-User"})
    users = [f"user-{i}" for i in range(2000)]
    first = {u: choose(sticky, "old", {"x-user": u}) for u in users}
    assert all(choose(sticky, "old", {"x-user": u}) == first[u] for u in users)
    share = sum(v == "new" for v in first.values()) / len(users)
    assert 0.07 < share < 0.13
    wider = sticky.model_copy(update={"weight": 50.0})
    assert all(choose(wider, "old", {"x-user": u}) == "new" for u in users if first[u] == "new")
    assert statistics.mean(sticky_bucket(u) for u in users) == pytest.approx(50, abs=3)


def test_pin_header_forces_a_served_version_and_refuses_others() -> None:
    assert choose(CANARY, "old", {PIN_HEADER: "new"}) == "new"
    assert choose(None, "old", {PIN_HEADER: "old"}) == "old"
    with pytest.raises(RaylifeError, match="not served here; served: new, old"):
        choose(CANARY, "old", {PIN_HEADER: "v9"})
    with pytest.raises(RaylifeError, match="served: old"):  # a shadow never answers callers
        choose(CANARY.model_copy(update={"mode": "shadow"}), "old", {PIN_HEADER: "new"})


def test_no_rollout_or_zero_weight_is_the_champion_alone() -> None:
    assert {choose(None, "old", {}) for _ in range(50)} == {"old"}
    zero = CANARY.model_copy(update={"weight": 0.0})
    assert {choose(zero, "old", {}) for _ in range(50)} == {"old"}


@pytest.mark.parametrize(
    "bad",
    [{"weight": 101}, {"weight": -1}, {"mode": "blue"}, {"shadow_fraction": 2}, {"extra": 1}],
)
def test_rollout_config_refuses_bad_fields(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Rollout.model_validate({"id": "r", "challenger": "v", **bad})


def _tally(step: int, version: str, **fields: Any) -> Tally:
    tally = Tally()
    tally.version(step, version).add(VersionStats(**fields))
    return tally


def test_ledger_sums_replicas_and_scores_feedback_once() -> None:
    ledger = Ledger()
    for replica in range(3):
        tally = _tally(0, "new", requests=10, errors=replica, latencies_ms=[1.0] * 10)
        tally.pending.append((f"id{replica}", 0, "new", "setosa"))
        ledger.add("r1", tally)
    assert ledger.feedback("r1", "id0", "setosa") == {
        "request_id": "id0",
        "version": "new",
        "step": 0,
        "correct": True,
    }
    assert ledger.feedback("r1", "id0", "setosa") is None  # scored once
    assert ledger.feedback("r1", "missing", "setosa") is None
    ledger.feedback("r1", "id1", "virginica")
    stats = VersionStats(**ledger.snapshot("r1")["steps"]["0"]["versions"]["new"])
    assert (stats.requests, stats.errors, stats.feedback, stats.accuracy) == (30, 3, 2, 0.5)
    assert ledger.snapshot("other")["steps"] == {}
    ledger.add("r2", Tally())  # a new rollout starts from nothing
    assert ledger.feedback("r2", "id2", "setosa") is None


def test_feedback_truth_is_checked_against_the_task() -> None:
    labels = ["setosa", "versicolor", "virginica"]
    assert truth_of(Feedback(request_id="a", label=2), labels) == "virginica"
    assert truth_of(Feedback(request_id="a", label="setosa"), labels) == "setosa"
    assert truth_of(Feedback(request_id="a", value=3.5), []) == 3.5
    for body, task_labels, problem in [
        (Feedback(request_id="a", label=7), labels, "not in 0..2"),
        (Feedback(request_id="a", label="rose"), labels, "unknown label"),
        (Feedback(request_id="a", value=1.0), labels, "classifier"),
        (Feedback(request_id="a", label="x"), [], "regression"),
    ]:
        with pytest.raises(RaylifeError, match=problem):
            truth_of(body, task_labels)


GATES = canary.Gates(min_latency_samples=100, min_feedback=30, min_requests=20)


def _stats(requests: int = 200, errors: int = 0, ms: float = 1.0, **fields: Any) -> VersionStats:
    return VersionStats(requests, errors, [ms] * requests, **fields)


def _tail(ms: float, requests: int = 200) -> VersionStats:
    """Fast answers but for a slow 2%: the median is the champion's, the p99 is not."""
    slow = requests // 50
    return VersionStats(requests, 0, [1.0] * (requests - slow) + [ms] * slow)


def test_gates_pass_a_challenger_like_the_champion() -> None:
    assert canary.judge(_stats(), _stats(), GATES, classification=True, final=True) == ""


@pytest.mark.parametrize(
    ("challenger", "classification", "problem"),
    [
        (_stats(errors=20), True, "5xx rate 10.0%"),
        (_stats(ms=10.0), True, "median latency 10.00 ms"),
        (_tail(50.0), True, "p99 latency 50.00 ms"),
        (_stats(feedback=40, correct=12), True, "online accuracy 0.300"),
        (_stats(feedback=40, squared_error=400.0), False, "online RMSE"),
        (_stats(requests=5), True, "only 5 requests"),
    ],
)
def test_gates_fail_a_bad_challenger(
    challenger: VersionStats, classification: bool, problem: str
) -> None:
    champion = _stats(feedback=40, correct=36, squared_error=40.0)
    assert problem in canary.judge(champion, challenger, GATES, classification, final=True)


def test_an_accuracy_drop_within_noise_is_not_a_failure() -> None:
    """0.661 on 56 truths against 0.778 on 250 (a good challenger's figures in a bench run) is a
    1.7-sigma drop: no rollback. 0.30 on 40 against 0.90 on 40 is far outside noise."""
    champion = _stats(feedback=250, correct=194)
    assert canary.judge(champion, _stats(feedback=56, correct=37), GATES, True, final=True) == ""
    worse = canary.judge(
        _stats(feedback=40, correct=36), _stats(feedback=40, correct=12), GATES, True, final=True
    )
    assert "online accuracy 0.300 (40 labels) vs champion 0.900 (40)" in worse
    assert "standard errors" in worse


def test_gates_wait_for_evidence_before_judging_latency_and_metrics() -> None:
    few = _stats(requests=10, ms=50.0, feedback=5, correct=0)
    assert canary.judge(_stats(feedback=40, correct=40), few, GATES, True, final=False) == ""


def test_a_slow_tail_is_judged_when_the_step_ends_a_slow_median_at_once() -> None:
    """The first answers after a step's reconfiguration can be slow for a good challenger: its p99
    waits for the end of the dwell; a challenger slow throughout fails on its median at once."""
    assert canary.judge(_stats(), _tail(50.0), GATES, True, final=False) == ""
    assert "p99 latency" in canary.judge(_stats(), _tail(50.0), GATES, True, final=True)
    assert "median latency" in canary.judge(_stats(), _stats(ms=10.0), GATES, True, final=False)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10,50", "ends at 50%, not 100"),
        ("50,10,100", "must rise"),
        ("0,100", "must rise"),
        ("10,abc,100", "not a list of percents"),
        ("10,10,100", "must rise"),
    ],
)
def test_canary_steps_are_validated(text: str, problem: str) -> None:
    with pytest.raises(RaylifeError, match=problem):
        canary.parse_steps(text)
    assert canary.parse_steps("10,50,100") == (10.0, 50.0, 100.0)


def test_step_stats_compare_the_current_step_with_the_champion_so_far() -> None:
    ledger = Ledger()
    ledger.add("r", _tally(0, "old", requests=90))
    ledger.add("r", _tally(0, "new", requests=10))
    ledger.add("r", _tally(1, "new", requests=100, errors=1))
    champion, challenger = canary.step_stats(ledger.snapshot("r"), 1, "old", "new")
    assert (champion.requests, challenger.requests, challenger.errors) == (90, 100, 1)


@pytest.mark.slow  # ~20 s: in make test, not in make test-fast
def test_rollout_routes_never_answer_5xx(tmp_path: Any) -> None:
    """The app a replica serves during a canary (no Ray: figures stay in the replica), fuzzed."""
    pytest.importorskip("schemathesis", reason="the dev extra brings schemathesis")
    import asyncio

    from raylife.lifecycle.store import ModelStore
    from raylife.serve.api import build_model_api
    from raylife.serve.model_service import ModelService
    from raylife.serve.rollout import Rollouts
    from raylife_dev.bare import PrefixRoute
    from tests.conftest import quick_artifact
    from tests.support.fuzz import fuzz_routes, problems

    store = ModelStore(str(tmp_path))
    store.promote("iris", store.register(quick_artifact("iris", epochs=0)))
    challenger = store.register(quick_artifact("iris", epochs=1))
    service = ModelService("iris", str(tmp_path))
    rollouts = Rollouts("iris", "cpu", service.load_version)
    rollout = CANARY.model_copy(update={"challenger": challenger, "weight": 50.0})
    asyncio.run(rollouts.configure(rollout, service.check_schema))

    async def champion(X: Any) -> tuple[str, list[dict[str, Any]]]:
        loaded, predictions = service.predict(X)
        return loaded.version, predictions

    async def predict(X: Any) -> tuple[str, list[dict[str, Any]]]:
        return await rollouts.answer(X, service.current.version, champion)

    app = PrefixRoute(build_model_api(service, predict, rollouts=rollouts), "/iris")
    routes = ["POST /", "POST /feedback", "GET /rollout"]
    report = fuzz_routes(app, routes=routes, prefix="/iris", per_route=60, schema_share=0.5)
    assert not problems(report), "\n".join(problems(report))
    for key in routes:
        assert report[key]["server_errors"] == report[key]["connection_errors"] == 0, key
    versions = {v for (_, v) in rollouts.tally.versions}
    # every fuzzed answer came from a served version (how many were valid is the fuzzer's draw)
    assert versions <= {service.current.version, challenger}


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--canary", "10,50"], "not 100"),
        (["--canary", "10,x,100"], "not a list of percents"),
        (["--shadow", "1.5"], "not in (0, 1]"),
        (["--canary", "10,100", "--dwell-s", "0"], "--dwell-s must be above 0"),
        (["--canary", "10,100", "--force"], "--force skips gates"),
        (["--canary", "10,100"], "no running local Serve app serves iris"),
    ],
)
def test_promote_with_a_bad_rollout_says_one_line(
    flags: list[str], problem: str, home: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from raylife.cli import EXIT_USER_ERROR, main

    code = main(["promote", "iris", "v1", *flags])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == EXIT_USER_ERROR and len(lines) == 1 and problem in lines[0], lines


def test_check_plan_refuses_overlap_and_the_champion_itself(home: Any) -> None:
    from raylife.lifecycle.store import ModelStore
    from raylife.serve import local as serving
    from raylife.settings import Settings
    from tests.conftest import quick_artifact

    settings = Settings.from_env()
    store = ModelStore(settings.store_uri)
    champion = store.register(quick_artifact("iris", epochs=0))
    store.promote("iris", champion)
    challenger = store.register(quick_artifact("iris", epochs=1))
    config = serving.local_config(settings, ["iris"], 8000, "127.0.0.1")
    local = serving.LocalServe("http://x", "http://y", config, ["iris"])
    plan = canary.Plan("iris", challenger, (10.0, 100.0))
    assert canary.check_plan(store, local, plan) == (champion, challenger, True)
    with pytest.raises(RaylifeError, match="already the champion"):
        canary.check_plan(store, local, canary.Plan("iris", champion, (100.0,)))
    for _, deployment in serve_config_deployments(config):
        deployment["user_config"]["rollout"] = {"challenger": challenger, "mode": "canary"}
    with pytest.raises(RaylifeError, match="already in progress.*raylife rollout iris --abort"):
        canary.check_plan(store, local, plan)


def serve_config_deployments(config: dict[str, Any]) -> Any:
    from raylife.serve import config as serve_config

    return serve_config.model_deployments(config, ["iris"])
