"""Ray Tune: sample hyperparameters, run each trial as a Ray Train run built by train.build_trainer.

Train V2 pattern: the trial is a function trainable that builds the SAME TorchTrainer as
`raylife train` and forwards its per-epoch reports to Tune with TuneReportCallback, so ASHA can stop
weak trials early and the best trial's chosen checkpoint (an artifact) can be promoted directly.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune import Callback

from raylife.config import Hyperparams, TrainConfig, TuneConfig
from raylife.data import PreparedData, prepare
from raylife.errors import RaylifeError
from raylife.loop import OBJECTIVE
from raylife.registry import LogUniform, ModelSpec, get_spec
from raylife.settings import Settings
from raylife.train import build_trainer, new_run_name, storage_path

if TYPE_CHECKING:
    import pandas as pd

HPARAMS = "hparams"
"""The single key of a trial's Tune config: the sampled hyperparameters."""

EXPERIMENT_STATE_PERIOD_S = "1"
"""Seconds between saves of a sweep's state: a trial that finished longer ago than this before
its sweep's driver died is not run again on resume."""

TRIAL_DRIVER_CPUS = 1.0
"""CPUs reserved for each trial's driver (the function that calls TorchTrainer.fit)."""


def sample_configs(
    spec: ModelSpec, num_samples: int, seed: int, anchor: Hyperparams | None = None
) -> list[dict[str, Any]]:
    """Draw the sweep's hyperparameter sets up front, from a seeded generator.

    Sampling here (not inside Tune) makes a sweep reproducible and lets two schedulers (ASHA vs
    FIFO) be compared on exactly the same trials; Tune then runs them as a grid. With an anchor
    (the run's own hyperparameters) the first trial is that known-good point, so a sweep never
    promotes a model worse than its anchor on validation.
    """
    rng = np.random.default_rng(seed)
    configs = [{name: getattr(anchor, name) for name in spec.search_space}] if anchor else []
    while len(configs) < num_samples:
        config: dict[str, Any] = {}
        for name, dim in spec.search_space.items():
            if isinstance(dim, LogUniform):
                config[name] = float(np.exp(rng.uniform(np.log(dim.low), np.log(dim.high))))
            else:
                config[name] = dim.options[int(rng.integers(len(dim.options)))]
        configs.append(config)
    return configs


def trial_train_config(base: TrainConfig, sampled: dict[str, Any], run_name: str) -> TrainConfig:
    """The trial's TrainConfig: the base run with the sampled hyperparameters."""
    return base.replace(hparams=base.hparams.replace(**sampled), run_name=run_name)


def _trial(config: dict[str, Any], base: TrainConfig, data_box: tuple[Any], storage: str) -> None:
    """Function trainable: one Ray Train run per trial, reports forwarded to Tune.

    data_box holds the ObjectRef of the prepared data; the tuple keeps tune.with_parameters from
    resolving it, so every trial's workers read the one shared copy.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raylife.cluster import configure_train_env

    configure_train_env()
    context = tune.get_context()
    run_name = f"{context.get_experiment_name()}-{context.get_trial_id()}"
    cfg = trial_train_config(base, config[HPARAMS], run_name)
    build_trainer(cfg, data_box[0], storage, run_name, callbacks=[TuneReportCallback()]).fit()


class TrialProgress(Callback):
    """One line when a trial starts and when it ends, so a long sweep shows progress."""

    selection = "best"  # class default: sweeps saved by an older raylife resume with it

    def __init__(self, metric: str, mode: str, selection: str = "best") -> None:
        self.metric, self.mode, self.selection = metric, mode, selection
        self.started: dict[str, float] = {}

    @staticmethod
    def say(line: str) -> None:
        # Not a stored callable: Tune pickles its callbacks, and Ray Train patches builtins.print.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.monotonic()
        hp = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in trial.config.get(HPARAMS, {}).items()
        )
        self.say(f"    trial {trial.trial_id} started: {hp}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        # The value the trial is scored by: its best epoch's, or its last epoch's.
        value = (
            last.get(self.metric, float("nan"))
            if self.selection == "last"
            else trial.metric_analysis.get(self.metric, {}).get(self.mode, float("nan"))
        )
        self.say(
            f"    trial {trial.trial_id} finished after {last.get('epoch', 0):.0f} epochs "
            f"in {seconds:.0f}s: {self.selection} {self.metric} {value:.4f}"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.say(f"    trial {trial.trial_id} FAILED; see its error.txt under {trial.local_path}")


@dataclass
class SweepOutcome:
    name: str
    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    checkpoint_path: str
    """The best trial's chosen checkpoint (best or last epoch, per hparams.epoch_selection): a
    complete artifact folder, ready to register."""
    trials: pd.DataFrame
    """One row per trial: sampled config, epochs run, validation metric at its chosen epoch, status."""
    histories: dict[str, pd.DataFrame]
    """Per-trial per-epoch metrics, keyed by trial id."""


def required_cpus(base: TrainConfig, tune_cfg: TuneConfig) -> float:
    """Logical CPUs for a local cluster: the concurrent trials, plus room for one more.

    A trial that ASHA stopped releases its Train workers' placement group asynchronously; without
    the spare room the next trial's workers can wait on it until their startup timeout.
    """
    per_trial = TRIAL_DRIVER_CPUS + base.num_workers * base.cpus_per_worker
    return (tune_cfg.max_concurrent_trials + 1) * per_trial


def grace_period(tune_cfg: TuneConfig, epochs: int) -> int:
    """Small-lr trials look bad for the first few epochs; judge them after a sixth of the budget."""
    return min(tune_cfg.grace_period or max(1, epochs // 6), epochs)


def run_sweep(
    base: TrainConfig,
    tune_cfg: TuneConfig,
    settings: Settings,
    data: PreparedData | None = None,
) -> SweepOutcome:
    """Sample trials, run each as a Ray Train run, return the table and the best trial's checkpoint.

    A sweep whose name already has state under the runs folder is resumed: finished trials are
    not rerun (checked before a new Tuner is built, since a new Tuner writes its state at once).
    """
    import ray
    from ray import tune

    from raylife.cluster import ensure_ray

    spec = get_spec(base.model)
    task = spec.task_obj
    data = data or prepare(spec, base.data)  # bad data fails before Ray starts
    ensure_ray(num_cpus=required_cpus(base, tune_cfg))
    _check_capacity(base, tune_cfg)
    name = tune_cfg.name or new_run_name(base.model, kind="tune")
    storage = storage_path(settings)
    if tune_cfg.scheduler == "asha":
        base = base.replace(report_epochs=rung_epochs(tune_cfg, base.hparams.epochs))
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, data_box=(ray.put(data),), storage=storage),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    path = f"{storage.rstrip('/')}/{name}"
    # Tune saves the sweep's state at most every 10 s by default: a driver killed within 10 s of a
    # trial's end would run that trial again on resume. Our state is a few KB and our trials
    # take seconds to minutes, so save it each second (the user's value wins).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_PERIOD_S)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={
                HPARAMS: tune.grid_search(
                    sample_configs(spec, tune_cfg.num_samples, tune_cfg.seed, anchor=base.hparams)
                )
            },
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode=task.mode,
                scheduler=_scheduler(tune_cfg, base.hparams.epochs),
                max_concurrent_trials=tune_cfg.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=0,
                callbacks=[
                    TrialProgress(f"val_{task.metric}", task.mode, base.hparams.epoch_selection)
                ],
            ),
        )
    grid = tuner.fit()
    return _outcome(
        grid,
        name,
        Scoring(OBJECTIVE, task.mode, base.hparams.epoch_selection),
        f"val_{task.metric}",
        base.hparams.epochs,
    )


def rung_epochs(tune_cfg: TuneConfig, epochs: int) -> tuple[int, ...]:
    """The epochs at which ASHA decides: grace period x reduction factor^k, below the budget."""
    rungs, rung = [], grace_period(tune_cfg, epochs)
    while rung < epochs:
        rungs.append(rung)
        rung *= tune_cfg.reduction_factor
    return tuple(rungs)


def _scheduler(tune_cfg: TuneConfig, epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if tune_cfg.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",  # reports are sparse (see TrainConfig.report_interval_s)
        max_t=epochs,
        grace_period=grace_period(tune_cfg, epochs),
        reduction_factor=tune_cfg.reduction_factor,
    )


def _check_capacity(base: TrainConfig, tune_cfg: TuneConfig) -> None:
    import ray

    available = ray.cluster_resources().get("CPU", 0.0)
    per_trial = TRIAL_DRIVER_CPUS + base.num_workers * base.cpus_per_worker
    if available < per_trial:
        raise RaylifeError(
            f"a trial needs {per_trial:g} CPUs (1 driver + {base.num_workers} workers x {base.cpus_per_worker:g}) "
            f"but the Ray cluster has {available:g}; lower --num-workers/--cpus-per-worker or add CPUs"
        )


@dataclass(frozen=True)
class Scoring:
    """How a trial is scored: `metric` at its chosen epoch (`selection`), compared by `mode`."""

    metric: str
    mode: str
    selection: str
    """"best": the trial's best reported epoch; "last": its last reported epoch, i.e. the weights
    the run yields with hparams.epoch_selection="last"."""

    def chosen_row(self, reports: pd.DataFrame) -> pd.Series | None:
        """The row of the epoch whose checkpoint the trial yields, among rows with a checkpoint."""
        if reports.empty:
            return None
        if self.selection == "last":
            return reports.iloc[-1]
        column = reports[self.metric]
        return reports.loc[column.idxmax() if self.mode == "max" else column.idxmin()]

    def rank(self, value: float, finished: bool) -> tuple[bool, float]:
        """Sort key, higher is better. With "last", a trial ASHA stopped never reached the end of
        training, so its rung-epoch weights rank below every finished trial: on a small
        validation split an early, half-trained model could otherwise win by chance."""
        return (finished or self.selection == "best", value if self.mode == "max" else -value)


def _outcome(grid: Any, name: str, scoring: Scoring, shown: str, epochs: int) -> SweepOutcome:
    """Per-trial table and the best (trial, chosen epoch) by the scoring; `shown` is the human
    metric."""
    import pandas as pd
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    rows, histories = [], {}
    best: tuple[tuple[bool, float], dict[str, Any], dict[str, Any], str] | None = None
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or scoring.metric not in frame:
            rows.append(
                {
                    "trial": _trial_id(result),
                    **_config_view(result.config),
                    "status": "no results",
                    "error": str(result.error or "")[:80],
                    "_first": False,
                    "_score": None,
                }
            )
            continue
        trial_id = str(frame["trial_id"].iloc[0]) if "trial_id" in frame else _trial_id(result)
        histories[trial_id] = frame
        with_ckpt = (
            frame.dropna(subset=[CHECKPOINT_PATH_KEY])
            if CHECKPOINT_PATH_KEY in frame
            else frame.iloc[0:0]
        )
        top = scoring.chosen_row(with_ckpt)
        finished = int(frame["epoch"].max()) >= epochs
        rank = None if top is None else scoring.rank(float(top[scoring.metric]), finished)
        rows.append(
            {
                "trial": trial_id,
                **_config_view(result.config),
                "epochs": int(frame["epoch"].max()),
                f"{shown} ({scoring.selection} epoch)": None if top is None else float(top[shown]),
                "status": "error" if result.error else ("done" if finished else "stopped early"),
                "_first": rank is not None and rank[0],
                "_score": None if rank is None else rank[1],
            }
        )
        if top is None or rank is None:
            continue
        if best is None or rank > best[0]:
            best = (
                rank,
                dict(result.config.get(HPARAMS, {})),
                top.to_dict(),
                str(top[CHECKPOINT_PATH_KEY]),
            )
    if best is None:
        raise RaylifeError(
            f"sweep {name}: no trial produced a checkpoint; see the trial errors under the runs folder"
        )
    table = pd.DataFrame(rows).sort_values(
        ["_first", "_score"], ascending=False, na_position="last"
    )
    table = table.drop(columns=["_first", "_score"]).reset_index(drop=True)
    return SweepOutcome(name, best[1], best[2], best[3], table, histories)


def _trial_id(result: Any) -> str:
    return str(result.path).rstrip("/").rsplit("/", 1)[-1]


def _config_view(config: dict[str, Any]) -> dict[str, Any]:
    config = config.get(HPARAMS, config)
    return {
        k: (round(v, 6) if isinstance(v, float) else str(v) if isinstance(v, (list, tuple)) else v)
        for k, v in config.items()
    }
