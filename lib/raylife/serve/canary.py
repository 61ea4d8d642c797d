"""The rollout controller: `raylife promote MODEL VERSION --canary 10,50,100 | --shadow FRACTION`.

It runs in the CLI process and owns no state of its own: each step is one edit of the running
Serve config (`user_config.rollout`, through serve.local.update_deployments; on EKS the same field
of serveConfigV2), and the live figures come from GET /<model>/rollout (the ledger, summed over
replicas). At every check the challenger's figures in the current step are compared with the
champion's over the whole rollout; a failed gate sends all traffic back to the champion and
records why in the model's history, with the pointer never moved. Passing every step ends in the
normal gated promotion (raylife.lifecycle.promotion.promote).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raylife.errors import RaylifeError
from raylife.lifecycle import history
from raylife.lifecycle.gate import accuracy_drop_z, schema_mismatch
from raylife.lifecycle.promotion import Outcome, promote
from raylife.lifecycle.store import ModelStore
from raylife.serve import config as serve_config
from raylife.serve import local as serving
from raylife.serve.rollout import Rollout, ShadowStats, VersionStats
from raylife.settings import Settings
from raylife.waiting import wait_until

CHECK_EVERY_S = 0.5
"""How often the gates look at the live figures within a step's dwell."""


@dataclass(frozen=True)
class Gates:
    """How much worse than the champion a challenger may be on live traffic."""

    max_error_rate_increase: float = 0.01
    """5xx rate above the champion's, as a fraction of requests."""
    max_p99_ratio: float = 2.0
    p99_slack_ms: float = 1.0
    """The challenger's median and p99 may each reach ratio x the champion's + slack (slack:
    small-model noise). The median is judged all along: a uniformly slow challenger fails at once.
    The p99 is judged when the step's dwell ends: its first moments carry the transient of the
    step's own reconfiguration (a good challenger's first 179 answers at 100% had a 12.8 ms p99
    against the champion's 5.4 ms, then settled), and a p99 needs many answers to mean much."""
    max_accuracy_drop: float = 0.10
    """Fails only when the drop is also significant (one-sided, accuracy_z): with 30-60 truths a
    drop of 0.1 is within noise for a model as good as the champion (a good challenger at 50% was
    rolled back at 0.661 on 56 truths against 0.778, a 1.7-sigma difference)."""
    accuracy_z: float = 2.326
    """99% one-sided: the drop must exceed this many standard errors of the difference."""
    max_rmse_ratio: float = 1.25
    min_latency_samples: int = 100
    """No latency is compared before each version has this many answers in view."""
    min_feedback: int = 30
    """Neither online metric is compared before each version has this many truths."""
    min_requests: int = 20
    """A step ends with a rollback when the challenger answered fewer requests than this."""


@dataclass(frozen=True)
class Plan:
    model: str
    version: str
    steps: tuple[float, ...] = ()
    """Canary weights in percent, ending at 100 (empty: a shadow run)."""
    dwell_s: float = 60.0
    shadow: float | None = None
    """Fraction of requests mirrored to the challenger (a shadow run: nothing is promoted)."""
    sticky_header: str | None = None
    gates: Gates = field(default_factory=Gates)
    note: str = ""
    """Why this rollout happens (a retrain's drift reason): the history entry says it."""


@dataclass
class Result:
    action: str
    """promoted | rolled_back | refused | shadowed"""
    line: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    """Per step reached: weight and each version's figures."""
    shadow: dict[str, Any] | None = None
    outcome: Outcome | None = None


def parse_steps(text: str) -> tuple[float, ...]:
    """'10,50,100' -> (10.0, 50.0, 100.0); RaylifeError says what is wrong and how to write it."""
    try:
        steps = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise RaylifeError(
            f"--canary {text!r} is not a list of percents; write e.g. --canary 10,50,100"
        ) from None
    if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise RaylifeError(
            f"--canary {text!r}: weights must rise strictly within (0, 100]; e.g. 10,50,100"
        )
    if steps[-1] != 100:
        raise RaylifeError(
            f"--canary {text!r} ends at {steps[-1]:g}%, not 100: a canary that passes ends with "
            "all traffic on the challenger; add 100 as the last step"
        )
    return steps


def judge(
    champion: VersionStats,
    challenger: VersionStats,
    gates: Gates,
    classification: bool,
    final: bool = False,
) -> str:
    """Why the challenger fails (one line), or "" when it passes what can be judged yet.
    `final`: the step's dwell is over, so too little traffic is a failure too."""
    if challenger.errors and (
        challenger.error_rate > champion.error_rate + gates.max_error_rate_increase
    ):
        return (
            f"5xx rate {challenger.error_rate:.1%} ({challenger.errors}/{challenger.requests}) vs "
            f"champion {champion.error_rate:.1%}: above the gate (+{gates.max_error_rate_increase:.1%})"
        )
    n = gates.min_latency_samples
    if len(challenger.latencies_ms) >= n and len(champion.latencies_ms) >= n:
        for name, q in [("median", 50.0)] + ([("p99", 99.0)] if final else []):
            mine, theirs = challenger.latency_ms(q), champion.latency_ms(q)
            if mine > gates.max_p99_ratio * theirs + gates.p99_slack_ms:
                return (
                    f"{name} latency {mine:.2f} ms vs champion {theirs:.2f} ms: above the gate "
                    f"({gates.max_p99_ratio:g}x + {gates.p99_slack_ms:g} ms)"
                )
    problem = _online_metric(champion, challenger, gates, classification)
    if problem or not final or challenger.requests >= gates.min_requests:
        return problem
    return (
        f"only {challenger.requests} requests reached the challenger in the step (gates need "
        f"{gates.min_requests}); send traffic during the canary or lengthen --dwell-s"
    )


def _online_metric(
    champion: VersionStats, challenger: VersionStats, gates: Gates, classification: bool
) -> str:
    if min(champion.feedback, challenger.feedback) < gates.min_feedback:
        return ""
    if classification:
        mine, theirs = challenger.accuracy or 0.0, champion.accuracy or 0.0
        z = accuracy_drop_z(mine, challenger.feedback, theirs, champion.feedback)
        if mine < theirs - gates.max_accuracy_drop and z > gates.accuracy_z:
            return (
                f"online accuracy {mine:.3f} ({challenger.feedback} labels) vs champion "
                f"{theirs:.3f} ({champion.feedback}): below the gate (-{gates.max_accuracy_drop:g}, "
                f"{z:.1f} standard errors)"
            )
        return ""
    mine, theirs = challenger.rmse or 0.0, champion.rmse or 0.0
    if mine > gates.max_rmse_ratio * theirs:
        return (
            f"online RMSE {mine:.4g} ({challenger.feedback} values) vs champion {theirs:.4g}: "
            f"above the gate ({gates.max_rmse_ratio:g}x)"
        )
    return ""


# --------------------------------------------------------------------------------------------------
# The controller


def figures(url: str, model: str) -> dict[str, Any]:
    """GET /<model>/rollout: the rollout and its figures per step, summed over replicas."""
    import httpx

    response = httpx.get(f"{url}/{model}/rollout", timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def step_stats(
    snapshot: dict[str, Any], step: int, champion: str, challenger: str
) -> tuple[VersionStats, VersionStats]:
    """(the champion over steps 0..step, the challenger in `step`) from a /rollout snapshot."""
    baseline, current = VersionStats(), VersionStats()
    for key, figures_ in snapshot.get("steps", {}).items():
        versions = figures_.get("versions", {})
        if int(key) <= step and champion in versions:
            baseline.add(VersionStats(**versions[champion]))
        if int(key) == step and challenger in versions:
            current.add(VersionStats(**versions[challenger]))
    return baseline, current


def shadow_report(snapshot: dict[str, Any]) -> dict[str, Any]:
    total = ShadowStats()
    for figures_ in snapshot.get("steps", {}).values():
        if "shadow" in figures_:
            total.add(ShadowStats(**figures_["shadow"]))
    return total.report()


def _running(settings: Settings, model: str) -> serving.LocalServe:
    local = serving.read_state(settings)
    if local is None or model not in local.models:
        raise RaylifeError(
            f"no running local Serve app serves {model}; start one (raylife serve --models {model}) "
            "or, on EKS, edit the RayService's serveConfigV2 (docs/architecture.md, Rollouts)"
        )
    return local


def current_rollout(local: serving.LocalServe, model: str) -> dict[str, Any] | None:

    for _, deployment in serve_config.model_deployments(local.config, [model]):
        found: dict[str, Any] | None = deployment.get("user_config", {}).get("rollout")
        return found
    return None


def set_rollout(
    settings: Settings,
    local: serving.LocalServe,
    model: str,
    rollout: Rollout | None,
    promotion: int | None = None,
) -> None:
    """The one edit a rollout makes: user_config.rollout (and the promotion counter at the end)."""

    def change(deployment: dict[str, Any]) -> None:
        user_config = deployment.setdefault("user_config", {})
        if rollout is None:
            user_config.pop("rollout", None)
        else:
            user_config["rollout"] = rollout.model_dump(exclude_none=True)
        if promotion is not None:
            user_config["promotion"] = promotion

    serving.update_deployments(settings, local, [model], change)


def check_plan(store: ModelStore, local: serving.LocalServe, plan: Plan) -> tuple[str, str, bool]:
    """(champion, challenger (resolved), whether the task is classification), or the one-line
    refusal (another rollout running, no champion, the champion itself, another input schema)."""
    # lazy: imports pyarrow, needed only on this path
    from raylife.catalog.lookup import get_spec

    spec = get_spec(plan.model)
    ongoing = current_rollout(local, plan.model)
    if ongoing:
        raise RaylifeError(
            f"a rollout of {plan.model} is already in progress (challenger "
            f"{ongoing.get('challenger')}, {ongoing.get('mode')}); one at a time: wait for it, or "
            f"end it with: raylife rollout {plan.model} --abort"
        )
    pointer = store.pointer(plan.model)
    if pointer is None:
        raise RaylifeError(f"{plan.model} has no champion; promote one first without --canary")
    version, candidate = store.load(plan.model, plan.version)
    if version == pointer.version:
        raise RaylifeError(f"{plan.model} {version} is already the champion; nothing to roll out")
    mismatch = schema_mismatch(candidate, store.load(plan.model, pointer.version)[1])
    if mismatch:
        raise RaylifeError(
            f"{plan.model} {version} cannot be rolled out beside champion {pointer.version}: "
            f"{mismatch}; a new schema needs a new Serve deployment"
        )
    return pointer.version, version, spec.task_obj.is_classification


def run(
    settings: Settings, plan: Plan, say: Callable[[str], None] = print, mirror: Any = None
) -> Result:
    """Run the plan against the running local Serve app: a canary (steps) or a shadow run.
    `mirror`: the MLflow registry mirror the final promotion updates (as `raylife promote`)."""
    store = ModelStore(settings.store_uri)
    local = _running(settings, plan.model)
    with store.promotion_lock(plan.model):  # two controllers cannot both find no rollout
        champion, challenger, classification = check_plan(store, local, plan)
        first = Rollout(
            id=uuid.uuid4().hex[:16],
            challenger=challenger,
            mode="shadow" if plan.shadow is not None else "canary",
            weight=0.0 if plan.shadow is not None else plan.steps[0],
            shadow_fraction=plan.shadow or 0.0,
            sticky_header=plan.sticky_header,
        )
        try:
            set_rollout(settings, local, plan.model, first)
        except BaseException:
            set_rollout(settings, local, plan.model, None)
            raise
    controller = _Controller(settings, store, local, plan, champion, classification, say, mirror)
    try:
        if plan.shadow is not None:
            return _shadow(controller, first)
        return _canary(controller, first)
    except BaseException:
        # Ctrl-C or a failure of the controller itself: traffic goes back to the champion.
        set_rollout(settings, local, plan.model, None)
        raise


def _wait_step(local: serving.LocalServe, model: str, rollout: Rollout) -> None:
    """Until a replica reports this step (each replica counts its requests under its own step)."""

    def reached() -> bool:
        shown = figures(local.url, model).get("rollout") or {}
        return bool(shown.get("id") == rollout.id and shown.get("step") == rollout.step)

    wait_until(reached, 60, f"{model}: no replica took rollout step {rollout.step} within 60 s")


@dataclass(frozen=True)
class _Controller:
    """What one rollout's steps work with, once checked by `run`."""

    settings: Settings
    store: ModelStore
    local: serving.LocalServe
    plan: Plan
    champion: str
    classification: bool
    say: Callable[[str], None]
    mirror: Any
    """The MLflow registry mirror the final promotion updates (None: no mirror)."""


def _canary(ctl: _Controller, rollout: Rollout) -> Result:
    settings, store, local, plan, champion = (
        ctl.settings,
        ctl.store,
        ctl.local,
        ctl.plan,
        ctl.champion,
    )
    result = Result("promoted", "")
    for step, weight in enumerate(plan.steps):
        rollout = rollout.model_copy(update={"step": step, "weight": weight})
        if step:
            set_rollout(settings, local, plan.model, rollout)
        _wait_step(local, plan.model, rollout)
        ctl.say(
            f"{plan.model}: step {step + 1}/{len(plan.steps)}: {weight:g}% to {rollout.challenger}"
        )
        problem, snapshot = _dwell(local.url, plan, rollout, champion, ctl.classification)
        result.steps.append(_step_summary(snapshot, step, weight, champion, rollout.challenger))
        if problem:
            return _roll_back(ctl, rollout, problem, result)
    outcome = promote(
        store,
        plan.model,
        rollout.challenger,
        note="; ".join(n for n in (plan.note, f"canary {_steps(plan)} passed") if n),
        mirror=ctl.mirror,
    )
    if outcome.action != "promote":
        set_rollout(settings, local, plan.model, None)
        return Result("refused", outcome.line, result.steps, outcome=outcome)
    assert outcome.pointer is not None
    set_rollout(settings, local, plan.model, None, promotion=outcome.pointer.generation)
    serving.wait_for_version(local.url, plan.model, rollout.challenger)
    return Result(
        "promoted", f"{outcome.line} after canary {_steps(plan)}", result.steps, outcome=outcome
    )


def _dwell(
    url: str, plan: Plan, rollout: Rollout, champion: str, classification: bool
) -> tuple[str, dict[str, Any]]:
    """Watch one step for its dwell time; stop at the first failed gate. (problem, figures)"""
    deadline = time.monotonic() + plan.dwell_s
    while True:
        final = time.monotonic() >= deadline
        snapshot = figures(url, plan.model)
        if (snapshot.get("rollout") or {}).get("id") != rollout.id:
            return "the rollout was ended from outside (raylife rollout --abort)", snapshot
        baseline, current = step_stats(snapshot, rollout.step, champion, rollout.challenger)
        problem = judge(baseline, current, plan.gates, classification, final)
        if problem or final:
            return problem, snapshot
        time.sleep(min(CHECK_EVERY_S, max(deadline - time.monotonic(), 0)))


def _step_summary(
    snapshot: dict[str, Any], step: int, weight: float, champion: str, challenger: str
) -> dict[str, Any]:
    versions = snapshot.get("steps", {}).get(str(step), {}).get("versions", {})
    return {
        "step": step,
        "weight": weight,
        "champion": champion,
        "challenger": challenger,
        "versions": {v: VersionStats(**f).summary() for v, f in versions.items()},
    }


def _roll_back(ctl: _Controller, rollout: Rollout, problem: str, result: Result) -> Result:
    """All traffic back to the champion first, then the history entry (the pointer never moved)."""
    store, plan, champion = ctl.store, ctl.plan, ctl.champion
    set_rollout(ctl.settings, ctl.local, plan.model, None)
    reason = (
        f"canary {_steps(plan)} failed at step {rollout.step + 1} ({rollout.weight:g}%): {problem}"
    )
    reason = "; ".join(n for n in (plan.note, reason) if n)
    with store.promotion_lock(plan.model):
        entries = history.read(store, plan.model)
        pointer = store.pointer(plan.model)
        entry = history.new_entry(
            action="canary_failed",
            from_version=champion,
            to_version=rollout.challenger,
            from_metrics={},
            to_metrics={},
            forced=False,
            source_run={},
            reason=reason,
            generation=pointer.generation if pointer else None,
            extra={"step": rollout.step, "weight": rollout.weight, "figures": result.steps[-1]},
        )
        history.append(store, plan.model, entries, entry)
    line = f"rolled back {plan.model} canary of {rollout.challenger}; {champion} keeps serving: {reason}"
    return Result("rolled_back", line, result.steps)


def _shadow(ctl: _Controller, rollout: Rollout) -> Result:
    """Mirror for the dwell time, then the report; callers only ever saw the champion."""
    local, plan = ctl.local, ctl.plan
    _wait_step(local, plan.model, rollout)
    ctl.say(
        f"{plan.model}: mirroring {plan.shadow:.0%} of requests to {rollout.challenger} for {plan.dwell_s:g} s"
    )
    time.sleep(plan.dwell_s)
    report = shadow_report(figures(local.url, plan.model))
    report.pop("mean_abs_difference" if ctl.classification else "agreement_rate")
    set_rollout(ctl.settings, local, plan.model, None)
    return Result("shadowed", format_shadow(plan, rollout.challenger, report), shadow=report)


def format_shadow(plan: Plan, challenger: str, report: dict[str, Any]) -> str:
    """One line: what was mirrored, how the answers compared, both latency distributions."""
    if report.get("agreement_rate") is not None:
        quality = f"agreement {report['agreement_rate']:.1%}"
    elif report.get("mean_abs_difference") is not None:
        quality = f"mean |difference| {report['mean_abs_difference']:.4g}"
    else:
        quality = "nothing compared"
    champion, mine = report["champion_ms"], report["challenger_ms"]
    return (
        f"shadow of {plan.model} {challenger}: {report['mirrored']} mirrored "
        f"({report['dropped']} dropped, {report['errors']} errors), {quality}; latency ms "
        f"p50/p99 champion {champion['p50']}/{champion['p99']}, challenger {mine['p50']}/{mine['p99']}"
    )


def abort(settings: Settings, model: str) -> str:
    """End a rollout left behind (its controller was stopped): all traffic to the champion."""
    local = _running(settings, model)
    ongoing = current_rollout(local, model)
    if not ongoing:
        return f"no rollout of {model} in progress; nothing changed"
    set_rollout(settings, local, model, None)
    return f"ended the rollout of {model} (challenger {ongoing.get('challenger')}); the champion serves all traffic"


def _steps(plan: Plan) -> str:
    return ",".join(f"{w:g}" for w in plan.steps)


def status(settings: Settings, model: str) -> dict[str, Any]:
    """The rollout in progress and its live figures (per step and version), as /rollout has them."""
    local = _running(settings, model)
    snapshot = figures(local.url, model)
    for step in snapshot.get("steps", {}).values():
        step["versions"] = {v: VersionStats(**f).summary() for v, f in step["versions"].items()}
        if "shadow" in step:
            step["shadow"] = ShadowStats(**step["shadow"]).report()
    return snapshot
