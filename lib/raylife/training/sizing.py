"""How many Ray Train workers a sweep's trial gets, decided by measurement.

Data-parallel training splits each step's compute across workers and pays an allreduce of the
gradients per step. With n workers a step costs about compute/n + allreduce, so DDP pays only when
the step's compute is several times the allreduce. The tutorial's MLPs take a millisecond or two
per step, while an allreduce between two processes costs several milliseconds here: DDP would
make their trials slower, not faster (docs/performance.md has the measurements). Such a sweep
runs one process per trial and more trials side by side instead.

The step is measured on the real model and batch (a few steps, milliseconds); the allreduce cost
is modelled from the constants below, which `raylife bench` measures (section `crossover`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig
from raylife.data.contracts import PreparedData
from raylife.training.loop import as_tensors

ALLREDUCE_LATENCY_S = 0.003
"""Fixed cost of one gradient allreduce between two CPU processes over gloo on one machine,
plus the step synchronisation around it (measured by `raylife bench`, section crossover)."""

ALLREDUCE_BYTES_PER_S = 150e6
"""Gradient bytes per second that allreduce moves on top of its latency (same measurement)."""

DDP_PAYS_FACTOR = 4.0
"""Two workers must cut a step by at least a quarter: compute/2 + allreduce <= 0.75 x compute,
i.e. compute >= 4 x allreduce."""

DDP_WORKERS = 2
"""Workers per trial where DDP pays (a sweep runs several trials; each keeps to two)."""


@dataclass(frozen=True)
class TrialPlan:
    num_workers: int
    step_s: float
    """Seconds of one training step (global batch, one thread) of the sweep's base model."""
    allreduce_s: float
    """Modelled seconds of one gradient allreduce between DDP workers."""
    reason: str

    @property
    def in_process(self) -> bool:
        """A one-worker trial trains in the trial's own process: nothing to distribute."""
        return self.num_workers == 1


def allreduce_s(parameters: int) -> float:
    """Modelled seconds of one allreduce of `parameters` float32 gradients."""
    return ALLREDUCE_LATENCY_S + 4 * parameters / ALLREDUCE_BYTES_PER_S


def measure_step_s(cfg: TrainConfig, data: PreparedData, repeats: int = 5) -> tuple[float, int]:
    """Median seconds of one forward + backward + optimizer step on one global batch with one
    torch thread, and the model's parameter count."""
    # lazy: imports torch, Ray, needed only on this path
    from raylife.training.train import fresh_model

    task, hp = get_spec(cfg.model).task_obj, cfg.hparams
    with fresh_model(cfg, data) as (model, optimizer):
        X, y = as_tensors(data.train, task)
        X, y = X[: hp.batch_size], y[: hp.batch_size]
        times = []
        for _ in range(repeats + 2):  # the first two warm up the allocator and kernels
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(X), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
    return statistics.median(times[2:]), sum(p.numel() for p in model.parameters())


def plan_trials(
    cfg: TrainConfig, data: PreparedData, requested: int | None, cpus: float, trials: int
) -> TrialPlan:
    """Workers per trial: `requested` when given (--num-workers), else by the measured rule.

    cpus: the cluster's CPUs; trials: the sweep's trials. DDP pays for a sweep only when its step
    amortizes the allreduce AND the CPUs outnumber the trials: where one-process trials side by
    side already use every CPU, splitting each trial adds synchronization and no compute."""
    step, parameters = measure_step_s(cfg, data)
    sync = allreduce_s(parameters)
    shown = f"a step takes {step * 1e3:.1f} ms on a CPU, an allreduce about {sync * 1e3:.1f} ms"
    if requested is not None:
        return TrialPlan(requested, step, sync, f"set by --num-workers ({shown})")
    if cfg.use_gpu:
        return TrialPlan(1, step, sync, "one GPU per trial (--num-workers N: DDP across N GPUs)")
    if step < DDP_PAYS_FACTOR * sync:
        return TrialPlan(
            1,
            step,
            sync,
            f"{shown}: under {DDP_PAYS_FACTOR:g}x, DDP would slow each step; one process per "
            "trial, trials side by side",
        )
    if DDP_WORKERS * trials > cpus:
        return TrialPlan(
            1,
            step,
            sync,
            f"{shown}: DDP would pay for a lone trial, but {trials} one-process trials side by "
            f"side already fill the {cpus:g} CPUs",
        )
    return TrialPlan(DDP_WORKERS, step, sync, f"{shown}: DDP pays and the CPUs are spare")
