"""Rollout section: canary steps under load, bad challengers rolled back, the cost of a shadow.

Iris on the local Serve app. A good challenger (another seed) goes through 10,50,100 while the
load-test client (`--retries 0`) runs; each step's split, counted by the ledger, must sit in the
99% binomial interval of its weight. Three bad challengers must be rolled back in their first step:
one that answers 500 and one 10x slower or more (test-only models from raylife_dev.faulty_models,
served like any user's factory), and one trained on shuffled labels whose wrong answers the
feedback client reveals. Shadow at 100% is alternated with no rollout: throughput and p99 of the champion's
callers.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from raylife.catalog.architectures import build_model
from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig, TrainConfig
from raylife.data.prepare import prepare
from raylife.lifecycle.store import ModelStore
from raylife.serve import canary
from raylife.serve import local as serving
from raylife.serve.rollout import REQUEST_ID_HEADER, Rollout
from raylife.settings import Settings
from raylife.training.loop import fit, make_loader, make_optimizer, seed_everything
from raylife.training.train import make_artifact, model_args_for
from raylife_dev import loadtest
from raylife_dev.bench.serve_bench import section_serve
from raylife_dev.bench.stats import Section
from raylife_dev.faulty_models import faulty_artifact

MODEL = "iris"
Z99 = 2.576


@dataclass(frozen=True)
class RolloutBenchSetup:
    steps: tuple[float, ...]
    dwell_s: float
    bad_dwell_s: float
    chunk: int
    """Requests per load-test call while a canary runs (the load loops until it ends)."""
    concurrency: int
    shadow_requests: int
    repeats: int


def setup_for(quick: bool) -> RolloutBenchSetup:
    if quick:
        return RolloutBenchSetup((50.0, 100.0), 2.0, 6.0, 100, 4, 200, 1)
    return RolloutBenchSetup((10.0, 50.0, 100.0), 8.0, 15.0, 200, 8, 2000, 3)


def train_version(store: ModelStore, seed: int, shuffle_labels: bool = False) -> str:
    """A real iris artifact from the plain loop; shuffled labels make a wrong-answer model.
    Trained with the registry defaults (about 1 s): debug-trained models were at 0.66-0.78 online
    accuracy, so a shuffled-label one was hardly worse than the champion, and good ones differed
    among themselves by as much as the accuracy gate's margin."""
    spec = get_spec(MODEL)
    cfg = TrainConfig(model=MODEL, hparams=spec.defaults, seed=seed)
    data = prepare(spec, DataConfig())
    if shuffle_labels:
        labels = np.random.default_rng(seed).permutation(data.train.y)
        data = dataclasses.replace(data, train=dataclasses.replace(data.train, y=labels))
    seed_everything(seed)
    module = build_model(spec.architecture, model_args_for(cfg, data))
    optimizer = make_optimizer(cfg.hparams, module.parameters())
    for _ in fit(
        module,
        make_loader(data.train, spec.task_obj, 16, seed),
        spec.task_obj,
        optimizer,
        cfg.hparams,
    ):
        pass
    return store.register(
        make_artifact(cfg, data, module, history=[], metrics={}, run_name="bench")
    )


class Feedback:
    """Callers that send test rows and the truth for each answer (for the online metric).
    Several at once: one caller gave a 10% challenger 13 truths in a 15 s step, short of the 30
    the accuracy gate waits for, so a wrong-answer challenger got through its first step."""

    CALLERS = 4

    def __init__(self, url: str) -> None:
        test = prepare(get_spec(MODEL), DataConfig()).test_raw
        self.url, self.rows, self.truth = url, test.X, test.y
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(start,), daemon=True)
            for start in range(self.CALLERS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout)

    def _run(self, start: int) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            i = start
            while not self.stop.is_set():
                row = self.rows[i % len(self.rows)]
                answer = client.post(f"{self.url}/{MODEL}", json={"row": row.tolist()})
                if answer.status_code == 200:
                    request_id = answer.headers[REQUEST_ID_HEADER]
                    label = int(self.truth[i % len(self.truth)])
                    client.post(
                        f"{self.url}/{MODEL}/feedback",
                        json={"request_id": request_id, "label": label},
                    )
                i += self.CALLERS


def under_load(
    url: str, setup: RolloutBenchSetup, work: Callable[[], Any]
) -> tuple[Any, dict[str, int]]:
    """Run `work` in a thread while the load-test client loops; (its result, failures by cause)."""
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    feedback = Feedback(url)
    thread.start()
    feedback.start()
    errors: dict[str, int] = {}
    while thread.is_alive():
        result = loadtest.run_load(
            f"{url}/{MODEL}", setup.chunk, setup.concurrency, retries=0, warmup=0
        )
        for cause, count in result.errors.items():
            errors[cause] = errors.get(cause, 0) + count
    feedback.join(timeout=30)
    thread.join()
    return (done[0] if done else None), errors


def within_interval(step: dict[str, Any]) -> tuple[float, bool]:
    """(the challenger's measured share, whether it is in the weight's 99% binomial interval)."""
    counts = {v: f["requests"] for v, f in step["versions"].items()}
    n, k, p = sum(counts.values()), counts.get(step["challenger"], 0), step["weight"] / 100
    half = Z99 * (n * p * (1 - p)) ** 0.5
    return (k / n if n else float("nan")), abs(k - n * p) <= half + 1e-9


def run(settings: Settings, quick: bool, say: Callable[[str], None]) -> Section:
    setup = setup_for(quick)
    section = Section("rollout", dataclasses.asdict(setup))
    started = time.monotonic()
    store = ModelStore(settings.store_uri)
    champion = train_version(store, seed=0)
    store.promote(MODEL, champion)
    with section_serve(settings, [MODEL]) as local:
        bench = _Bench(settings, store, local, setup, section, say)
        _good(bench)
        _bad(bench)
        _shadow(bench)
    section.seconds = time.monotonic() - started
    return section


@dataclass(frozen=True)
class _Bench:
    """What each scenario of the section works with."""

    settings: Settings
    store: ModelStore
    local: serving.LocalServe
    setup: RolloutBenchSetup
    section: Section
    say: Callable[[str], None]


def _fields(
    bench: _Bench,
) -> tuple[
    Settings, ModelStore, serving.LocalServe, RolloutBenchSetup, Section, Callable[[str], None]
]:
    # Not dataclasses.astuple: it deep-copies, and the section must stay the one being filled.
    return bench.settings, bench.store, bench.local, bench.setup, bench.section, bench.say


def _good(bench: _Bench) -> None:
    settings, store, local, setup, section, say = _fields(bench)
    version = train_version(store, seed=1)
    plan = canary.Plan(MODEL, version, setup.steps, dwell_s=setup.dwell_s)
    result, errors = under_load(local.url, setup, lambda: canary.run(settings, plan, say))
    say(f"  rollout: good challenger: {result.line}; failed requests {errors or 0}")
    section.check("good challenger promoted", float(result.action == "promoted"), ">=", 1.0)
    section.check("good canary: failed requests", float(sum(errors.values())), "<=", 0.0)
    splits = []
    for step in result.steps:
        share, inside = within_interval(step)
        splits.append(
            {"weight": step["weight"], "measured": round(share * 100, 2), "in_99_interval": inside}
        )
        section.check(
            f"split at {step['weight']:g}% in its 99% interval",
            float(inside),
            ">=",
            1.0,
            f"measured {share:.2%}",
        )
    section.extra["good_canary"] = {"line": result.line, "splits": splits, "steps": result.steps}


def _bad(bench: _Bench) -> None:
    settings, store, local, setup, section, say = _fields(bench)
    kinds = {
        "5xx": store.register(faulty_artifact(MODEL, "failing")),
        "10x slower": store.register(faulty_artifact(MODEL, "slow")),
        "wrong answers": train_version(store, seed=4, shuffle_labels=True),
    }
    outcomes = {}
    for kind, version in kinds.items():
        before = store.pointer(MODEL)
        plan = canary.Plan(MODEL, version, setup.steps, dwell_s=setup.bad_dwell_s)
        result, errors = under_load(local.url, setup, partial(canary.run, settings, plan, say))
        first: dict[str, Any] = (
            result.steps[0]
            if result.steps
            else {"weight": setup.steps[0], "versions": {}, "challenger": version}
        )
        share, _ = within_interval(first)
        upper = first["weight"] / 100
        n = sum(f["requests"] for f in first["versions"].values()) or 1
        bound = upper + Z99 * (upper * (1 - upper) / n) ** 0.5
        rolled = result.action == "rolled_back" and len(result.steps) == 1
        unchanged = store.pointer(MODEL) == before
        say(f"  rollout: {kind}: {result.line[:200]}; challenger share {share:.2%}")
        section.check(f"{kind} challenger rolled back in its first step", float(rolled), ">=", 1.0)
        section.check(f"{kind}: pointer unchanged", float(unchanged), ">=", 1.0)
        section.check(
            f"{kind}: challenger share of step 1", share, "<=", bound, f"weight {upper:.0%}"
        )
        outcomes[kind] = {
            "line": result.line,
            "share": share,
            "failed_requests": errors,
            "steps": result.steps,
        }
    section.extra["bad_canaries"] = outcomes


def _shadow(bench: _Bench) -> None:
    settings, store, local, setup, section, say = _fields(bench)
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife_dev.bench.stats import alternate

    version = train_version(store, seed=5)
    shadow = Rollout(
        id=f"bench-shadow-{time.time_ns()}", challenger=version, mode="shadow", shadow_fraction=1.0
    )

    def load(rollout: Rollout | None) -> Callable[[int], dict[str, float]]:
        def one(_: int) -> dict[str, float]:
            canary.set_rollout(settings, local, MODEL, rollout)
            result = loadtest.run_load(f"{local.url}/{MODEL}", setup.shadow_requests, 16, retries=0)
            return {"rps": result.rps, "p99_ms": result.p99_ms}

        return one

    rounds = alternate(
        {"champion alone": load(None), "shadow 100%": load(shadow)}, setup.repeats, say
    )
    canary.set_rollout(settings, local, MODEL, shadow)
    report = canary.shadow_report(canary.figures(local.url, MODEL))
    canary.set_rollout(settings, local, MODEL, None)
    for name, values in rounds.items():
        section.add(f"{name} rps", values["rps"], "req/s")
        section.add(f"{name} p99", values["p99_ms"], "ms")
    section.check(
        "shadow 100%: throughput / alone",
        section.ratio("shadow 100% rps", "champion alone rps"),
        ">=",
        0.9,
    )
    section.check(
        "shadow 100%: p99 / alone",
        section.ratio("shadow 100% p99", "champion alone p99"),
        "<=",
        1.2,
    )
    section.extra["shadow_report"] = report
