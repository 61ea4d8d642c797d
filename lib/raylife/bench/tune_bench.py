"""Tune section: what Tune adds on top of the Train runs it schedules, and what ASHA saves.

Each round uses one seed of the search space and runs three contenders on the SAME sampled
trials: an ASHA sweep, a FIFO sweep (every trial runs all epochs), and each trial alone as a plain
Ray Train run. Tune's own overhead = FIFO sweep wall time / sum of the lone runs' wall times
(trials run one at a time in both). ASHA vs FIFO = trial-epochs spent and best validation metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from raylife.bench.stats import Section, alternate
from raylife.config import Settings, TrainConfig, TuneConfig
from raylife.data import PreparedData, prepare
from raylife.lifecycle import register_checkpoint
from raylife.registry import get_spec
from raylife.store import ModelStore
from raylife.train import build_trainer, new_run_name, storage_path
from raylife.tune import SweepOutcome, run_sweep, sample_configs, trial_train_config

MODEL = "iris"


@dataclass(frozen=True)
class TuneBenchSetup:
    preset: str
    epochs: int
    trials: int
    repeats: int
    num_workers: int
    """Train workers per trial: `make run`'s 2."""


def setup_for(quick: bool) -> TuneBenchSetup:
    if quick:
        return TuneBenchSetup("debug", epochs=2, trials=1, repeats=1, num_workers=1)
    return TuneBenchSetup("default", epochs=100, trials=6, repeats=3, num_workers=2)


def trial_epochs(sweep: SweepOutcome) -> int:
    """Epochs run, summed over the trials (an ASHA-stopped trial counts the epochs it ran)."""
    return int(sweep.trials["epochs"].fillna(0).sum())


def _sweep(
    base: TrainConfig, scheduler: str, seed: int, trials: int, settings: Settings, data: Any
) -> dict[str, float]:
    tune_cfg = TuneConfig(num_samples=trials, scheduler=scheduler, seed=seed)  # type: ignore[arg-type]
    started = time.monotonic()
    sweep = run_sweep(base, tune_cfg, settings, data)
    wall = time.monotonic() - started
    # As in `make run`, the best trial is promoted (in the bench's own store): the serve section
    # then serves it instead of training a stand-in.
    register_checkpoint(
        ModelStore(settings.store_uri), sweep.checkpoint_path, {"source": "bench"}, True, data
    )
    metric = f"val_{get_spec(base.model).task_obj.metric}"
    return {
        "wall_s": wall,
        "trial_epochs": trial_epochs(sweep),
        "best_val": float(sweep.best_metrics[metric]),
    }


def _alone(
    base: TrainConfig, seed: int, trials: int, settings: Settings, data_ref: Any
) -> dict[str, float]:
    """The sweep's trials (same sampling, same anchor) as lone TorchTrainer.fit() calls."""
    spec = get_spec(base.model)
    total = 0.0
    for sampled in sample_configs(spec, trials, seed, anchor=base.hparams):
        run_name = new_run_name(base.model, "bench-alone")
        cfg = trial_train_config(base, sampled, run_name)
        trainer = build_trainer(cfg, data_ref, storage_path(settings), run_name)
        started = time.monotonic()
        trainer.fit()
        total += time.monotonic() - started
    return {"wall_s": total}


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    import ray

    setup = setup_for(quick)
    spec = get_spec(MODEL)
    base = TrainConfig(
        model=MODEL,
        hparams=spec.preset(setup.preset).replace(epochs=setup.epochs),
        num_workers=setup.num_workers,
    )
    data: PreparedData = prepare(spec, base.data)
    data_ref = ray.put(data)
    section = Section("tune", {**asdict(setup), "model": MODEL})
    started = time.monotonic()
    say(
        f"  tune: ASHA sweep, FIFO sweep and the same {setup.trials} trials alone, "
        f"{setup.repeats} rounds (round k uses search seed k)"
    )
    # Round k samples its trials with search seed k; the three contenders share them.
    measured = alternate(
        {
            "asha": lambda k: _sweep(base, "asha", k, setup.trials, settings, data),
            "fifo": lambda k: _sweep(base, "fifo", k, setup.trials, settings, data),
            "alone": lambda k: _alone(base, k, setup.trials, settings, data_ref),
        },
        setup.repeats,
        say,
    )
    _summarize(section, measured, spec.task_obj.mode)
    section.seconds = time.monotonic() - started
    return section


def _summarize(section: Section, measured: dict[str, dict[str, list[float]]], mode: str) -> None:
    for contender, values in measured.items():
        for key, series in values.items():
            section.add(f"{contender} {key}", series, "s" if key == "wall_s" else "")
    overheads = [
        fifo / alone
        for fifo, alone in zip(measured["fifo"]["wall_s"], measured["alone"]["wall_s"], strict=True)
    ]
    section.add("tune overhead (fifo / alone)", overheads, "x")
    section.check(
        "Tune overhead (sweep / lone runs)",
        section.figures["tune overhead (fifo / alone)"].median,
        "<=",
        1.15,
    )
    shares = [
        a / f
        for a, f in zip(
            measured["asha"]["trial_epochs"], measured["fifo"]["trial_epochs"], strict=True
        )
    ]
    section.add("asha / fifo trial-epochs", shares, "x")
    section.check(
        "ASHA trial-epochs / FIFO's", section.figures["asha / fifo trial-epochs"].median, "<=", 0.40
    )
    # Best validation metric: accuracy within 1 point of FIFO's, per seed (the worst seed counts).
    gaps = [
        (f - a) if mode == "max" else (a - f) / f
        for a, f in zip(measured["asha"]["best_val"], measured["fifo"]["best_val"], strict=True)
    ]
    section.add("asha best-metric shortfall vs fifo", gaps, "")
    section.check(
        "ASHA best metric shortfall (worst seed)",
        max(gaps),
        "<=",
        0.01 if mode == "max" else 0.05,
        "accuracy points" if mode == "max" else "relative RMSE",
    )
