"""Soak section: back-to-back 2-worker DDP sweep trials (the trials arm's "before" shape, each its
own sweep of one trial, rotating through the models) must all finish, and the watchdog's cost on
a sweep's wall time.

A DDP trial could hang forever at its end (Ray's report bridge deadlocked the trial actor when the
run's last report was still queued as fit() returned; raylife.training.trial_bridge replaced it). Each
soak trial gets a generous wall-clock limit: one that passes it counts as a hang and ends the soak
(its actor is left for the watchdog, which the bench cannot wait for).

The watchdog's cost: the main job's sweep shape (one-process trials, ASHA) with the watch on and
off (stall factor 0), alternated in an order that flips every round, as the ratio of median wall
times; and its direct cost, bounded
from below the noise: the beats it took, times a beat's measured price, plus the watch threads'
wake-ups, over the sweep's wall.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from raylife.catalog.lookup import get_spec, model_names
from raylife.config import StallPolicy, TrainConfig, TuneConfig
from raylife.data.prepare import prepare
from raylife.settings import Settings
from raylife.training.tune import run_sweep
from raylife.training.watchdog import Pace
from raylife_dev.bench.stats import Section

SOAK_TARGET = 50
"""Issue bar: consecutive 2-worker DDP sweep trials without a hang."""
WATCH_COST_TARGET = 0.02
"""Issue bar: the watchdog's cost on a sweep's wall time, at most 2%."""
TRIAL_LIMIT_S = 600.0
"""A soak trial slower than this counts as hung (the slowest here take well under a minute)."""


@dataclass(frozen=True)
class SoakBenchSetup:
    trials: int
    models: tuple[str, ...]
    epochs: dict[str, int]
    preset: str
    cost_model: str
    cost_samples: int
    cost_repeats: int


def setup_for(quick: bool) -> SoakBenchSetup:
    if quick:
        return SoakBenchSetup(2, ("iris",), {"iris": 3}, "debug", "iris", 2, 2)
    # The race is at a trial's end, so the soak's trials are short (fifty fit in a bench run);
    # otherwise the arm's shape: the default preset's reports, one 2-worker trial per sweep.
    epochs = {m: min(get_spec(m).defaults.epochs, 2 if m == "mnist" else 30) for m in model_names()}
    return SoakBenchSetup(SOAK_TARGET, tuple(model_names()), epochs, "default", "iris", 4, 6)


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    setup = setup_for(quick)
    section = Section("soak", asdict(setup))
    started = time.monotonic()
    soak(setup, settings, section, say)
    watch_cost(setup, settings, section, say)
    section.seconds = time.monotonic() - started
    return section


def soak(setup: SoakBenchSetup, settings: Settings, section: Section, say: Callable) -> None:
    bases = {
        m: TrainConfig(
            model=m, hparams=get_spec(m).preset(setup.preset).replace(epochs=setup.epochs[m])
        )
        for m in setup.models
    }
    data = {m: prepare(get_spec(m), bases[m].data) for m in setup.models}
    walls: list[float] = []
    finished = 0
    for i in range(setup.trials):
        model = setup.models[i % len(setup.models)]
        wall, outcome = _bounded_sweep(
            bases[model], TuneConfig(num_samples=1, workers_per_trial=2), settings, data[model]
        )
        if outcome is None:
            say(f"    soak trial {i + 1}/{setup.trials} ({model}): HUNG past {TRIAL_LIMIT_S:.0f} s")
            break
        (status,) = outcome.trials["status"]
        finished += status == "done"
        walls.append(wall)
        say(f"    soak trial {i + 1}/{setup.trials} ({model}): {status} in {wall:.1f} s")
    section.add("ddp trial wall_s", walls or [0.0], "s")
    section.extra["ddp trials finished"] = finished
    section.check(
        f"consecutive 2-worker DDP sweep trials finished (of {setup.trials})",
        finished,
        ">=",
        setup.trials,
    )


def _bounded_sweep(
    base: TrainConfig, tune_cfg: TuneConfig, settings: Settings, data: Any
) -> tuple[float, Any]:
    """(wall seconds, outcome), or (limit, None) when the sweep did not end within the limit."""
    box: dict[str, Any] = {}
    started = time.monotonic()
    thread = threading.Thread(
        target=lambda: box.update(outcome=run_sweep(base, tune_cfg, settings, data)), daemon=True
    )
    thread.start()
    thread.join(TRIAL_LIMIT_S)
    return time.monotonic() - started, box.get("outcome")


def watch_cost(setup: SoakBenchSetup, settings: Settings, section: Section, say: Callable) -> None:
    spec = get_spec(setup.cost_model)
    base = TrainConfig(model=setup.cost_model, hparams=spec.preset(setup.preset))
    data = prepare(spec, base.data)

    def sweep(factor: float) -> Callable[[int], dict[str, float]]:
        def one(round_no: int) -> dict[str, float]:
            cfg = base.replace(stall_factor=factor)
            tune_cfg = TuneConfig(num_samples=setup.cost_samples, seed=round_no)
            started = time.monotonic()
            run_sweep(cfg, tune_cfg, settings, data)
            return {"wall_s": time.monotonic() - started}

        return one

    # The order flips every round (on, off, off, on, ...): a sweep that runs first in its round
    # pays for processes the second one reuses, which a fixed order would charge to one side.
    measured: dict[str, dict[str, list[float]]] = {"watch on": {}, "watch off": {}}
    factors = {"watch on": StallPolicy.factor, "watch off": 0.0}
    for round_no in range(setup.cost_repeats):
        order = list(factors) if round_no % 2 == 0 else list(reversed(factors))
        for contender in order:
            value = sweep(factors[contender])(round_no)["wall_s"]
            measured[contender].setdefault("wall_s", []).append(value)
            say(f"    round {round_no + 1}/{setup.cost_repeats} {contender}: wall_s {value:.4g}")
    for contender, values in measured.items():
        section.add(f"sweep {contender} wall_s", values["wall_s"], "s")
    ratio = section.ratio("sweep watch on wall_s", "sweep watch off wall_s")
    section.extra["sweep wall, watch on / off (noise included)"] = round(ratio, 4)
    direct = direct_cost_s(
        base, data, setup.cost_samples, section.figures["sweep watch on wall_s"].median
    )
    section.extra["direct cost"] = direct
    section.check(
        "watchdog cost on a sweep's wall time (direct, beats + wake-ups)",
        direct["fraction"],
        "<=",
        WATCH_COST_TARGET,
        note=f"on/off wall ratio {ratio:.3f} in the same run",
    )


def direct_cost_s(
    base: TrainConfig, data: Any, trials: int, sweep_wall_s: float
) -> dict[str, float]:
    """The watch's own work in a sweep, counted high: every trial runs all its epochs, each
    step, epoch and report beats once (a beat's measured price), and each trial's watch thread
    wakes once a second for the whole sweep (a wake-up's measured CPU price)."""
    pace = Pace(StallPolicy())
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        pace.beat()
    beat_s = (time.perf_counter() - started) / n
    wake_s = _wake_price_s()
    steps_per_epoch = -(-len(data.train) // base.hparams.batch_size)
    beats = base.hparams.epochs * (steps_per_epoch + 2)
    cost_s = trials * (beats * beat_s + sweep_wall_s * wake_s)
    return {
        "beat_us": round(beat_s * 1e6, 3),
        "wake_us": round(wake_s * 1e6, 3),
        "beats_per_trial": beats,
        "cost_s": round(cost_s, 5),
        "fraction": cost_s / max(sweep_wall_s, 1e-9),
    }


def _wake_price_s() -> float:
    """CPU seconds of one wake-up of a watch thread (an Event.wait timing out, then a check)."""
    pace, event = Pace(StallPolicy()), threading.Event()
    n = 2000
    started = time.thread_time()
    for _ in range(n):
        event.wait(0)
        pace.stalled_s()
    return (time.thread_time() - started) / n
