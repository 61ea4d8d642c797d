"""Trials section: the main job's real shape. For each of the four models, the per-epoch time of a
sweep trial as `make run` configures it (raylife.training.sizing decides its workers; ASHA's rung reports,
improvement and interval checkpoints) against the plain single-process loop on the same data and
hyperparameters; and, as the "before" column, the same trial as a 2-worker DDP Ray Train run (what
`make run` ran before trials were sized). Contenders alternate within each round.

A trial's epoch time comes from its reports as Tune saw them (time_total_s at the last epoch minus
at the first, over the epochs between): every cost a trial adds between epochs is in it.

The crossover part measures what raylife.training.sizing models: one training step of each model alone,
and the same global batch as a 2-process DDP step over gloo (torch.multiprocessing, no Ray); the
difference to half the step is the allreduce and synchronisation a DDP step pays.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from raylife.catalog.architectures import build_model
from raylife.catalog.lookup import get_spec, model_names
from raylife.cluster import free_port
from raylife.config import TrainConfig, TuneConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.settings import Settings
from raylife.training import sizing
from raylife.training.loop import as_tensors, make_optimizer, seed_everything
from raylife.training.tune import run_sweep
from raylife_dev.bench.stats import Section, alternate
from raylife_dev.bench.train_bench import plain_fit

MAKE_RUN_SAMPLES = 4
"""Trials per sweep in `make run` (Makefile SAMPLES): what the bench's trial is sized for."""

TRIAL_EPOCH_TARGET = 2.0
"""Issue bar: a sweep trial's epoch at most twice the plain loop's, for every model."""


@dataclass(frozen=True)
class TrialsBenchSetup:
    models: tuple[str, ...]
    preset: str
    epochs: dict[str, int]
    """Epochs per model: the preset's, capped (MNIST's 15 would take minutes per contender)."""
    repeats: int
    before: bool
    """Also run the 2-worker DDP trial (the configuration before sizing)."""
    crossover: bool


def setup_for(quick: bool) -> TrialsBenchSetup:
    if quick:
        return TrialsBenchSetup(("iris",), "debug", {"iris": 3}, 1, before=False, crossover=False)
    models = tuple(model_names())
    epochs = {m: min(get_spec(m).defaults.epochs, 4 if m == "mnist" else 300) for m in models}
    return TrialsBenchSetup(models, "default", epochs, 2, before=True, crossover=True)


def trial_epoch_s(history: Any) -> float:
    """Seconds per epoch between a trial's first and last report, as Tune received them."""
    first, last = history.iloc[0], history.iloc[-1]
    epochs = float(last["epoch"] - first["epoch"])
    if epochs < 1:
        raise ValueError("a trial's epoch time needs reports of at least two epochs")
    return float(last["time_total_s"] - first["time_total_s"]) / epochs


def sweep_trial(
    base: TrainConfig, data: PreparedData, settings: Settings, workers: int | None
) -> dict[str, float]:
    """One trial through run_sweep, as `make run` runs it (workers=None: sized by measurement
    for a sweep of `make run`'s trials on this cluster, not for a lone trial)."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    from raylife.cluster import usable_cpus

    if workers is None:
        workers = sizing.plan_trials(base, data, None, usable_cpus(), MAKE_RUN_SAMPLES).num_workers
    started = time.monotonic()
    sweep = run_sweep(base, TuneConfig(num_samples=1, workers_per_trial=workers), settings, data)
    wall = time.monotonic() - started
    (history,) = sweep.histories.values()
    return {"epoch_s": trial_epoch_s(history), "sweep_wall_s": wall}


def _plain(base: TrainConfig, data: PreparedData, _round: int) -> dict[str, float]:
    return plain_fit(base, data)


def _trial(
    base: TrainConfig, data: PreparedData, settings: Settings, workers: int | None, _round: int
) -> dict[str, float]:
    return sweep_trial(base, data, settings, workers)


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    setup = setup_for(quick)
    section = Section("trials", asdict(setup))
    started = time.monotonic()
    for model in setup.models:
        spec = get_spec(model)
        base = TrainConfig(
            model=model, hparams=spec.preset(setup.preset).replace(epochs=setup.epochs[model])
        )
        data = prepare(spec, base.data)
        say(f"  trials: {model}, {setup.epochs[model]} epochs, {setup.repeats} rounds")
        contenders: dict[str, Callable[[int], dict[str, float]]] = {
            "plain": functools.partial(_plain, base, data),
            "trial": functools.partial(_trial, base, data, settings, None),
        }
        if setup.before:
            contenders["ddp trial"] = functools.partial(_trial, base, data, settings, 2)
        measured = alternate(contenders, setup.repeats, say)
        for contender, values in measured.items():
            for key, series in values.items():
                section.add(f"{model} {contender} {key}", series, "s")
        ratio = section.ratio(f"{model} trial epoch_s", f"{model} plain epoch_s")
        section.check(f"{model} sweep trial epoch / plain epoch", ratio, "<=", TRIAL_EPOCH_TARGET)
        if setup.before:
            section.extra[f"{model} 2-worker DDP trial epoch / plain epoch (before)"] = round(
                section.ratio(f"{model} ddp trial epoch_s", f"{model} plain epoch_s"), 2
            )
        if setup.crossover:
            section.extra[f"{model} crossover"] = crossover(base, data)
    section.seconds = time.monotonic() - started
    return section


def crossover(cfg: TrainConfig, data: PreparedData, steps: int = 40) -> dict[str, float]:
    """A step alone vs a 2-process DDP step of the same global batch, and sizing's model of it."""
    import torch.multiprocessing as mp

    step_s, parameters = sizing.measure_step_s(cfg, data, repeats=steps)
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_steps, args=(cfg, data, steps, free_port(), queue), nprocs=2)
    ddp_step_s = float(queue.get())
    return {
        "step_ms": round(step_s * 1e3, 2),
        "ddp_step_ms": round(ddp_step_s * 1e3, 2),
        "measured_allreduce_ms": round((ddp_step_s - step_s / 2) * 1e3, 2),
        "modelled_allreduce_ms": round(sizing.allreduce_s(parameters) * 1e3, 2),
        "parameters": parameters,
    }


def _ddp_steps(
    rank: int, cfg: TrainConfig, data: PreparedData, steps: int, port: int, queue: Any
) -> None:
    """One of two DDP processes: median step time on its half of the global batch."""
    # lazy: the CLI and tools load a verb's modules (torch, Ray, mlflow) only when it runs
    import torch.distributed as dist

    from raylife.training.train import model_args_for

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(cfg.threads_per_worker)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        spec = get_spec(cfg.model)
        seed_everything(cfg.seed)
        model = torch.nn.parallel.DistributedDataParallel(
            build_model(spec.architecture, model_args_for(cfg, data))
        )
        optimizer = make_optimizer(cfg.hparams, model.parameters())
        X, y = as_tensors(data.train, spec.task_obj)
        half = max(1, cfg.hparams.batch_size // 2)
        X, y = X[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        times = []
        for _ in range(steps + 2):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            spec.task_obj.loss(model(X), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        if rank == 0:
            queue.put(statistics.median(times[2:]))
    finally:
        dist.destroy_process_group()
