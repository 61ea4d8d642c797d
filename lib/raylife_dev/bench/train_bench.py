"""Train section: Ray Train (1 worker) vs a plain PyTorch loop on the same MNIST CNN.

Both run the same raylife.training.loop code, data, global batch size, torch threads and epochs, and both
validate every epoch. The steady-state epoch time is the wall time from the start of epoch 2 to the
end of the last epoch, divided by the epochs in between: for Ray Train it includes every per-epoch
cost Ray adds (here a report with a checkpoint after EVERY epoch, the worst case).

The plain loop's epochs are timed in this process. A Ray Train run's worker timeline is rebuilt
from what the run reports anyway, with nothing written into its checkpoints for the bench: each
epoch's own compute time (the `epoch_s` of every metrics row, rank 0's clock) and the wall clock
when each report reached the Train controller (`ReportClock`, this section's Ray Train callback).
The time between two epochs' compute (a report with its checkpoint, the metrics all-reduce) is
the first-to-last arrival span less the compute of the epochs in it, per gap: `report_s`. Epoch k
then ended `report_s` before its report arrived, and started `epoch_s` earlier; from that timeline
come the steady epoch time, `fit_start_s` (fit() called to epoch 1's start) and `fit_end_s`
(the last epoch's end to fit() returning). An arrival is late by up to one controller poll
(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: 0.05 s with raylife's settings, 2 s with Ray's defaults), so
`report_s` and the steady epoch time are good to one poll / (epochs - 1), each fit() part to one
poll and their sum, `fit_fixed_s`, to one poll.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ray.train import UserCallback
from ray.util.queue import Queue

from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.settings import Settings
from raylife.tracking import runs as tracking
from raylife.training.loop import as_tensors, fit, make_loader
from raylife.training.train import (
    EPOCH_SECONDS,
    build_trainer,
    fresh_model,
    new_run_name,
    storage_path,
)
from raylife_dev.bench.stats import Section, alternate

MODEL = "mnist"

RAY_DEFAULTS_ENV = {
    # What raylife changes for Train (raylife.cluster), put back to Ray's defaults.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1",
}


@dataclass(frozen=True)
class TrainBenchSetup:
    preset: str
    epochs: int
    repeats: int
    threads: int
    """torch threads of the plain loop and of the 1-worker Ray run alike."""
    ray_defaults: bool
    """Also run Ray Train with Ray's own settings (2 s controller poll): the 'before' column."""
    scaling: bool
    """Also compare 2 workers x 1 thread with 1 worker x 2 threads."""
    tracking: bool
    """Also run Ray Train with MLflow tracking on (rank 0 logs each reported epoch)."""


def setup_for(quick: bool) -> TrainBenchSetup:
    if quick:
        return TrainBenchSetup(
            "debug",
            epochs=3,
            repeats=1,
            threads=1,
            ray_defaults=False,
            scaling=False,
            tracking=False,
        )
    return TrainBenchSetup(
        "default", epochs=3, repeats=3, threads=1, ray_defaults=True, scaling=True, tracking=True
    )


def steady_epoch_s(epochs: list[list[float]]) -> float:
    """Seconds per epoch from the start of epoch 2 to the end of the last (epoch 1 excluded)."""
    if len(epochs) < 2:
        raise ValueError("steady-state epoch time needs at least 2 epochs")
    return (epochs[-1][1] - epochs[1][0]) / (len(epochs) - 1)


def plain_fit(cfg: TrainConfig, data: PreparedData) -> dict[str, float]:
    """The same epochs as a Ray Train worker, in this process, without Ray."""
    task, hp = get_spec(cfg.model).task_obj, cfg.hparams
    with fresh_model(cfg, data) as (model, optimizer):
        loader = make_loader(data.train, task, hp.batch_size, cfg.seed)
        epochs = [
            [epoch.started, epoch.ended]
            for epoch in fit(model, loader, task, optimizer, hp, val=as_tensors(data.val, task))
        ]
    return {"epoch_s": steady_epoch_s(epochs)}


@dataclass(frozen=True)
class Arrival:
    """One report as the Train controller received it."""

    at: float
    """Wall clock (time.time()) in the controller when the report reached it."""
    epoch: int
    epoch_s: float
    """The reported epoch's compute seconds on rank 0 (its metrics row's epoch_s)."""


class ReportClock(UserCallback):
    """Ray Train callback (runs in the Train controller): each report's arrival as (at, epoch,
    epoch_s), into a queue the bench reads once fit() has returned. Train calls after_report before
    it can find the run finished, so every arrival is queued by then (see
    raylife.training.trial_bridge). The put, one actor call after the clock reading, carries plain
    numbers: an Arrival would make the queue's actor import this module on the first put (seconds
    of torch and raylife), holding up the controller's next polls. Unpickling the callback imports
    this module in the controller (about 0.1 s there, within fit_start_s)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        at, row = time.time(), metrics[0]
        self.queue.put((at, int(row["epoch"]), float(row[EPOCH_SECONDS])))


def worker_timeline(arrivals: list[Arrival]) -> tuple[list[list[float]], float]:
    """Rank 0's epochs as [start, end] on the controller's clock, and the mean seconds between two
    epochs' compute, from a run that reported every epoch once (see the module's docstring)."""
    if [a.epoch for a in arrivals] != list(range(1, len(arrivals) + 1)) or len(arrivals) < 2:
        raise ValueError(
            f"a timeline needs one report per epoch from epoch 1, at least 2; got epochs "
            f"{[a.epoch for a in arrivals]}"
        )
    compute = sum(a.epoch_s for a in arrivals[1:])
    gap = (arrivals[-1].at - arrivals[0].at - compute) / (len(arrivals) - 1)
    end = arrivals[0].at - gap
    spans = [[end - arrivals[0].epoch_s, end]]
    for arrival in arrivals[1:]:
        start = spans[-1][1] + gap
        spans.append([start, start + arrival.epoch_s])
    return spans, gap


def ray_fit(cfg: TrainConfig, data_ref: Any, settings: Settings) -> dict[str, float]:
    """One TorchTrainer.fit(): steady epoch time, fit()'s fixed costs, seconds between epochs."""
    queue = Queue(actor_options={"num_cpus": 0})
    queue.size()  # the queue's actor is up before the clock starts
    try:
        run_name = new_run_name(cfg.model, "bench")
        trainer = build_trainer(
            cfg, data_ref, storage_path(settings), run_name, callbacks=[ReportClock(queue)]
        )
        called = time.time()
        trainer.fit()
        returned = time.time()
        arrivals = [Arrival(*item) for item in queue.get_nowait_batch(queue.size())]
    finally:
        queue.shutdown()
    epochs, report_s = worker_timeline(arrivals)
    return {
        "epoch_s": steady_epoch_s(epochs),
        "fit_start_s": epochs[0][0] - called,
        "fit_end_s": returned - epochs[-1][1],
        "report_s": report_s,
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set variables for the fits inside (Train passes them to its controller and workers)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    import ray

    setup = setup_for(quick)
    spec = get_spec(MODEL)
    base = TrainConfig(
        model=MODEL,
        hparams=spec.preset(setup.preset).replace(epochs=setup.epochs),
        num_workers=1,
        threads_per_worker=setup.threads,
        report_interval_s=0.0,  # a report + checkpoint after every epoch
        max_failures=0,
    )
    data = prepare(spec, base.data)
    data_ref = ray.put(data)
    section = Section(
        "train",
        {
            **asdict(setup),
            "model": MODEL,
            "hparams": base.hparams.to_dict(),
            "train_rows": len(data.train),
        },
    )
    started = time.monotonic()
    say(f"  train: plain PyTorch vs Ray Train (1 worker), {setup.repeats} rounds")
    contenders: dict[str, Callable[[int], dict[str, float]]] = {
        "plain": lambda _: plain_fit(base, data),
        "ray": lambda _: ray_fit(base, data_ref, settings),
    }
    if setup.ray_defaults:

        def with_ray_defaults(_: int) -> dict[str, float]:
            with environment(RAY_DEFAULTS_ENV):
                return ray_fit(base, data_ref, settings)

        contenders["ray_defaults"] = with_ray_defaults
    tracked = tracking.config_for(settings) if setup.tracking else None
    if tracked is not None:  # None: RAYLIFE_MLFLOW_URI=off
        tracked_cfg = tracking.prepare(base.replace(tracking=tracked))
        contenders["ray tracked"] = lambda _: ray_fit(tracked_cfg, data_ref, settings)
    measured = alternate(contenders, setup.repeats, say)
    for contender, values in measured.items():
        for key, series in values.items():
            section.add(f"{contender} {key}", series, "s")
    _checks(section, measured)
    if setup.scaling:
        say("  train: 1 worker x 2 threads vs 2 workers x 1 thread")
        _scaling(section, base, data_ref, len(data.train), setup.repeats, settings, say)
    section.seconds = time.monotonic() - started
    return section


def _checks(section: Section, measured: dict[str, dict[str, list[float]]]) -> None:
    section.check(
        "Ray Train epoch / plain epoch", section.ratio("ray epoch_s", "plain epoch_s"), "<=", 1.05
    )
    if "ray tracked" in measured:
        section.check(
            "MLflow tracking: epoch tracked / untracked (a report every epoch)",
            section.ratio("ray tracked epoch_s", "ray epoch_s"),
            "<=",
            1.03,
        )
    ray = measured["ray"]
    fixed = [a + b for a, b in zip(ray["fit_start_s"], ray["fit_end_s"], strict=True)]
    section.add("ray fit_fixed_s", fixed, "s")
    section.check("fit() fixed cost (s)", section.figures["ray fit_fixed_s"].median, "<=", 8.0)
    section.check("seconds per report", section.figures["ray report_s"].median, "<=", 0.05)
    if "ray_defaults" in measured:
        section.extra["with Ray's defaults (before)"] = {
            "epoch_ratio": section.ratio("ray_defaults epoch_s", "plain epoch_s"),
            "report_s": section.figures["ray_defaults report_s"].median,
            "fit_fixed_s": section.figures["ray_defaults fit_start_s"].median
            + section.figures["ray_defaults fit_end_s"].median,
        }


def _scaling(
    section: Section,
    base: TrainConfig,
    data_ref: Any,
    rows: int,
    repeats: int,
    settings: Settings,
    say: Callable[[str], None],
) -> None:
    """2 workers x 1 thread vs 1 worker x 2 threads: the same 2 cores, no oversubscription."""
    one = base.replace(num_workers=1, threads_per_worker=2)
    two = base.replace(num_workers=2, threads_per_worker=1)

    def throughput(cfg: TrainConfig) -> dict[str, float]:
        return {"samples_per_s": rows / ray_fit(cfg, data_ref, settings)["epoch_s"]}

    measured = alternate(
        {"1x2": lambda _: throughput(one), "2x1": lambda _: throughput(two)}, repeats, say
    )
    section.add("1 worker x 2 threads samples_per_s", measured["1x2"]["samples_per_s"], "1/s")
    section.add("2 workers x 1 thread samples_per_s", measured["2x1"]["samples_per_s"], "1/s")
    section.extra["2 workers / 1 worker throughput"] = section.ratio(
        "2 workers x 1 thread samples_per_s", "1 worker x 2 threads samples_per_s"
    )
