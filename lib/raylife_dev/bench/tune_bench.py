"""Tune section: what Tune adds on top of the trials it schedules, and what ASHA saves.

Two comparisons, each interleaved over rounds; round k samples its trials with search seed k, so
the contenders of a round run exactly the same hyperparameters:
- overhead: a FIFO sweep, one trial at a time, vs the same trials run alone the same way: for
  one-process trials (what raylife.training.sizing picks here) the trials one after another in one new
  Ray worker process; before sizing (`make run`'s 2-worker DDP trials) lone TorchTrainer.fit()
  calls. Tune's own overhead = sweep wall / lone wall.
- schedulers: an ASHA sweep vs a FIFO sweep (trials side by side as `make run` runs them):
  trial-epochs spent and the best validation metric reached.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig, TuneConfig
from raylife.data.prepare import prepare
from raylife.lifecycle.store import ModelStore
from raylife.lifecycle.train_and_store import register_checkpoint
from raylife.settings import Settings
from raylife.tasks import Task
from raylife.training.train import build_trainer, new_run_name, run_worker, storage_path
from raylife.training.tune import SweepOutcome, run_sweep, sample_configs, trial_train_config
from raylife_dev.bench.stats import Section, alternate


@dataclass(frozen=True)
class TuneBenchSetup:
    preset: str
    overhead_model: str
    overhead_epochs: int
    scheduler_model: str
    """A regressor: accuracy on a 23-row validation split ties at 1.0, so every trial would look
    equally good to ASHA; RMSE tells trials apart."""
    scheduler_epochs: int
    repeats: int
    num_workers: int
    """Train workers per trial."""
    overhead_trials: int
    """Trials of the overhead comparison (each also runs alone)."""
    scheduler_trials: int
    """Trials of the ASHA vs FIFO comparison: ASHA needs a few to prune anything."""
    scheduler_concurrency: int
    before: bool
    """Also measure the overhead of a 2-worker DDP sweep against lone TorchTrainer runs."""


FULL = TuneBenchSetup(
    preset="default",
    overhead_model="iris",
    overhead_epochs=100,
    scheduler_model="boston",
    scheduler_epochs=150,
    repeats=3,
    num_workers=1,
    overhead_trials=2,
    scheduler_trials=6,
    scheduler_concurrency=2,
    before=True,
)
QUICK = dataclasses.replace(
    FULL, preset="debug", overhead_epochs=2, scheduler_epochs=2, repeats=1, overhead_trials=1,
    scheduler_trials=2, before=False,
)  # fmt: skip


def setup_for(quick: bool) -> TuneBenchSetup:
    return QUICK if quick else FULL


def trial_epochs(sweep: SweepOutcome) -> int:
    """Epochs run, summed over the trials (an ASHA-stopped trial counts the epochs it ran)."""
    return int(sweep.trials["epochs"].fillna(0).sum())


def _sweep(
    base: TrainConfig, tune_cfg: TuneConfig, settings: Settings, data: Any
) -> dict[str, float]:
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
    """The sweep's trials (same sampling, same anchor) as lone TorchTrainer.fit() calls: how a
    DDP sweep's trials run without Tune."""
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


class _LoneSession:
    """A one-process run without Tune: checkpoints copied to storage as Tune would, reports kept."""

    rank, world = 0, 1

    def __init__(self, run_name: str, storage: str) -> None:
        self.run_name, self.folder, self.reports = run_name, Path(storage) / run_name, 0

    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    def prepare_model(self, module: Any) -> Any:
        return module

    def prepare_loader(self, loader: Any) -> Any:
        return loader

    def dataset_shard(self, name: str) -> None:
        return None

    def latest_checkpoint(self) -> None:
        return None

    def report(self, row: dict[str, float], checkpoint_folder: Path | None) -> None:
        if checkpoint_folder is not None:
            shutil.copytree(checkpoint_folder, self.folder / f"checkpoint_{self.reports:06d}")
        self.reports += 1


def _lone_trials(configs: list[TrainConfig], data: Any, storage: str) -> None:
    for cfg in configs:
        run_worker(cfg, data, _LoneSession(cfg.run_name or "lone", storage))


def _alone_in_one_process(
    base: TrainConfig, seed: int, trials: int, settings: Settings, data_ref: Any
) -> dict[str, float]:
    """The sweep's trials one after another in one new Ray worker process, without Tune: what
    a one-process sweep (one trial at a time, its actor reused) does minus Tune's machinery."""
    import ray

    spec = get_spec(base.model)
    configs = [
        trial_train_config(base.replace(num_workers=1), sampled, new_run_name(base.model, "lone"))
        for sampled in sample_configs(spec, trials, seed, anchor=base.hparams)
    ]
    lone = ray.remote(num_cpus=1, max_calls=1)(_lone_trials)  # max_calls=1: a new process
    started = time.monotonic()
    ray.get(lone.remote(configs, data_ref, storage_path(settings)))
    return {"wall_s": time.monotonic() - started}


def _prepared(model: str, setup: TuneBenchSetup, epochs: int) -> tuple[TrainConfig, Any]:
    spec = get_spec(model)
    base = TrainConfig(
        model=model,
        hparams=spec.preset(setup.preset).replace(epochs=epochs),
        num_workers=setup.num_workers,
    )
    return base, prepare(spec, base.data)


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    import ray

    setup = setup_for(quick)
    section = Section("tune", asdict(setup))
    started = time.monotonic()

    base, data = _prepared(setup.overhead_model, setup, setup.overhead_epochs)
    data_ref = ray.put(data)
    trials = setup.overhead_trials
    say(f"  tune: FIFO sweep vs the same {trials} trials alone, {setup.repeats} rounds")

    def fifo(k: int, workers: int) -> TuneConfig:
        # One trial at a time: the lone runs run one at a time too.
        return TuneConfig(
            trials, scheduler="fifo", seed=k, max_concurrent_trials=1, workers_per_trial=workers
        )

    contenders: dict[str, Callable[[int], dict[str, float]]] = {
        "sweep": lambda k: _sweep(base, fifo(k, 1), settings, data),
        "alone": lambda k: _alone_in_one_process(base, k, trials, settings, data_ref),
    }
    if setup.before:  # what `make run` ran before sweeps were sized: 2-worker DDP trials
        ddp = base.replace(num_workers=2)
        contenders["ddp sweep"] = lambda k: _sweep(base, fifo(k, 2), settings, data)
        contenders["ddp alone"] = lambda k: _alone(ddp, k, trials, settings, data_ref)
    overhead = alternate(contenders, setup.repeats, say)

    scheduled, scheduled_data = _prepared(setup.scheduler_model, setup, setup.scheduler_epochs)

    def scheduler(name: str) -> Callable[[int], dict[str, float]]:
        def sweep(k: int) -> dict[str, float]:
            cfg = TuneConfig(
                setup.scheduler_trials,
                max_concurrent_trials=setup.scheduler_concurrency,
                scheduler=name,  # type: ignore[arg-type]
                seed=k,
            )
            return _sweep(scheduled, cfg, settings, scheduled_data)

        return sweep

    say(f"  tune: ASHA vs FIFO, {setup.scheduler_trials} trials, {setup.repeats} rounds")
    schedulers = alternate(
        {"asha": scheduler("asha"), "fifo": scheduler("fifo")}, setup.repeats, say
    )
    _summarize(section, overhead, schedulers, get_spec(setup.scheduler_model).task_obj)
    section.seconds = time.monotonic() - started
    return section


def _summarize(
    section: Section,
    overhead: dict[str, dict[str, list[float]]],
    schedulers: dict[str, dict[str, list[float]]],
    task: Task,
) -> None:
    section.add("fifo sweep wall_s", overhead["sweep"]["wall_s"], "s")
    section.add("same trials alone wall_s", overhead["alone"]["wall_s"], "s")
    ratios = [
        s / a for s, a in zip(overhead["sweep"]["wall_s"], overhead["alone"]["wall_s"], strict=True)
    ]
    section.add("tune overhead (sweep / alone)", ratios, "x")
    section.check(
        "Tune overhead (sweep / lone runs)",
        section.figures["tune overhead (sweep / alone)"].median,
        "<=",
        1.15,
    )
    if "ddp sweep" in overhead:
        section.add("ddp sweep wall_s", overhead["ddp sweep"]["wall_s"], "s")
        section.add("ddp trials alone wall_s", overhead["ddp alone"]["wall_s"], "s")
        section.extra["before: 2-worker DDP sweep / lone TorchTrainer runs"] = round(
            section.ratio("ddp sweep wall_s", "ddp trials alone wall_s"), 3
        )
        section.extra["one-process sweep wall / 2-worker DDP sweep wall"] = round(
            section.ratio("fifo sweep wall_s", "ddp sweep wall_s"), 3
        )
    for name, values in schedulers.items():
        for key, series in values.items():
            section.add(f"{name} {key}", series, "s" if key == "wall_s" else "")
    asha, fifo = schedulers["asha"], schedulers["fifo"]
    shares = [a / f for a, f in zip(asha["trial_epochs"], fifo["trial_epochs"], strict=True)]
    section.add("asha / fifo trial-epochs", shares, "x")
    section.check(
        "ASHA trial-epochs / FIFO's", section.figures["asha / fifo trial-epochs"].median, "<=", 0.40
    )
    # The best validation metric of each round (seed): ASHA's shortfall against FIFO's; the
    # worst round counts. Accuracy in points; RMSE relative.
    gaps = [
        task.gain(f, a) if task.higher_is_better else task.gain(f, a) / f
        for a, f in zip(asha["best_val"], fifo["best_val"], strict=True)
    ]
    section.add("asha best-metric shortfall vs fifo", gaps, "")
    section.check(
        "ASHA best metric shortfall (worst round)",
        max(gaps),
        "<=",
        0.01 if task.higher_is_better else 0.05,
        "accuracy points" if task.higher_is_better else "relative RMSE",
    )
