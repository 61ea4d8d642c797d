"""Ray Tune: sample hyperparameters, run each trial through the same worker loop as `raylife train`.

A trial of several workers (DDP) is the Train V2 pattern: a function trainable that builds the
SAME TorchTrainer as `raylife train` and forwards its per-epoch reports to Tune through
raylife.training.trial_bridge (Ray's TuneReportCallback can deadlock the trial at its end). A trial of one worker has nothing to distribute, so the trial's own process
is its worker: it runs the same train.run_worker with a TrialSession that reports straight to
Tune (no worker group to start, synchronize or shut down; raylife.training.sizing decides which, by
measurement). Ray Train's own local mode (num_workers=0) is the same idea but in Ray 2.60 neither
persists checkpoints nor calls callbacks, so it cannot feed Tune. Either way ASHA can stop weak
trials early and the best trial's chosen checkpoint (an artifact) can be promoted directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ray.tune import Callback

from raylife.catalog import carry
from raylife.catalog.lookup import get_spec
from raylife.catalog.specs import LogUniform, ModelSpec
from raylife.cluster import configure_train_env
from raylife.config import Hyperparams, StallPolicy, TrainConfig, TuneConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.errors import RaylifeError
from raylife.settings import Settings
from raylife.tracking.runs import EPOCH_ROWS, Tracker
from raylife.training.loop import OBJECTIVE
from raylife.training.sizing import TrialPlan, plan_trials
from raylife.training.train import (
    build_trainer,
    check_model_fits,
    new_run_name,
    run_worker,
    storage_path,
    stream_datasets,
)
from raylife.training.trial_bridge import fit_reporting_to_tune
from raylife.training.watchdog import Pace

if TYPE_CHECKING:
    import pandas as pd

HPARAMS = "hparams"
"""Key of a trial's Tune config: the sampled hyperparameters."""

SEED = "seed"
"""Optional key of a trial's Tune config: the seed of its data split and initialisation (a grid
over seeds measures a recipe, as `raylife quality` does); absent: the base run's seeds."""

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


def trial_train_config(
    base: TrainConfig, sampled: dict[str, Any], run_name: str, seed: int | None = None
) -> TrainConfig:
    """The trial's TrainConfig: the base run with the sampled hyperparameters (and seed)."""
    cfg = base.replace(hparams=base.hparams.replace(**sampled), run_name=run_name)
    if seed is None:
        return cfg
    return cfg.replace(seed=seed, data=dataclasses.replace(cfg.data, seed=seed))


def _trial(
    config: dict[str, Any], base: TrainConfig, data_box: tuple[Any, dict[int, Any]], storage: str
) -> None:
    """Function trainable: the trial's run, its reports forwarded to Tune.

    data_box holds the ObjectRef of the prepared data, and those of the other splits the driver
    prepared (by split seed, see `split_refs`); the tuple keeps tune.with_parameters from
    resolving them, so every trial's workers read the one shared copy.
    """
    import ray
    from ray import tune

    carry.unpack(base)  # a user model's declaration and code, on a node without its folder
    context = tune.get_context()
    run_name = f"{context.get_experiment_name()}-{context.get_trial_id()}"
    cfg = trial_train_config(base, config[HPARAMS], run_name, config.get(SEED))
    # A trial of another split (a grid over seeds) takes the driver's copy of it, or prepares its
    # own; the rest share one copy.
    base_ref, by_seed = data_box
    if cfg.data == base.data:
        data_ref = base_ref
    elif cfg.data.seed in by_seed:
        data_ref = by_seed[cfg.data.seed]
    else:
        data_ref = ray.put(prepare(get_spec(cfg.model), cfg.data))
    if cfg.num_workers == 1:
        run_worker(cfg, ray.get(data_ref), TrialSession(run_name, cfg.use_gpu))
        return
    configure_train_env()
    datasets = stream_datasets(ray.get(data_ref))
    fit_reporting_to_tune(
        lambda callbacks: build_trainer(
            cfg, data_ref, storage, run_name, callbacks=callbacks, datasets=datasets
        )
    )


class TrialSession:
    """The session of a one-process trial (see train.WorkerSession): rank 0 of 1, checkpoints
    and reports through Tune, which persists them, resumes a restarted trial from the latest and
    keeps the best ones (the sweep's CheckpointConfig)."""

    rank, world = 0, 1

    def __init__(self, run_name: str, use_gpu: bool) -> None:
        import logging

        from ray.train._internal import storage

        self.run_name = run_name
        self._device = torch.device("cuda" if use_gpu else "cpu")
        # One INFO line per checkpoint ("Checkpoint successfully created at ...") otherwise.
        logging.getLogger(storage.__name__).setLevel(logging.WARNING)

    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self._device)

    def prepare_loader(self, loader: Any) -> Any:
        return loader if self._device.type == "cpu" else _OnDevice(loader, self._device)

    def dataset_shard(self, name: str) -> Any:
        return None  # one process: it iterates the whole dataset

    def latest_checkpoint(self) -> Any:
        from ray import tune

        return tune.get_checkpoint()

    def report(self, row: dict[str, Any], checkpoint_folder: Path | None) -> None:
        from ray import tune

        checkpoint = (
            None if checkpoint_folder is None else tune.Checkpoint.from_directory(checkpoint_folder)
        )
        tune.report(row, checkpoint=checkpoint)


class _OnDevice:
    """Batches of a loader moved to a device (what prepare_data_loader does in a Train worker)."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device, self.sampler = loader, device, loader.sampler

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield [t.to(self.device, non_blocking=True) for t in batch]

    def __len__(self) -> int:
        return len(self.loader)


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


class TrialWatchdog(Callback):
    """The sweep driver's watch over its trials: a running trial whose results stop arriving for
    longer than its bound (several times its slowest gap between results, at least a floor that
    waits out every restart its own run may make) has its actor killed, which Tune handles as a
    trial failure (retried under the sweep's failure policy, else marked failed) while the sweep
    goes on. It catches what the workers' own watches cannot: a frozen process, or a trial actor
    stuck in Ray's code. Checked on each step of Tune's loop (at least every second)."""

    def __init__(self, policy: StallPolicy) -> None:
        self.policy = policy
        self.paces: dict[str, Pace] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Saved with the sweep's state: clocks of a dead driver mean nothing on resume.
        return {"policy": self.policy, "paces": {}}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.paces[trial.trial_id] = Pace(self.policy)

    on_trial_recover = on_trial_start

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.paces:
            self.paces[trial.trial_id].beat()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.paces.pop(trial.trial_id, None)

    on_trial_error = on_trial_complete

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        for trial in trials:
            pace = self.paces.get(trial.trial_id)
            idle = pace.stalled_s() if pace is not None and trial.status == "RUNNING" else None
            if pace is None or idle is None:
                continue
            actor = trial.temporary_state.ray_actor  # pinned by tests/unit/test_trial_bridge.py
            TrialProgress.say(
                f"    raylife watchdog: trial {trial.trial_id}: {pace.describe(idle)}; "
                "stopping it (Tune retries or marks it failed)"
            )
            del self.paces[trial.trial_id]
            if actor is not None:
                import ray

                ray.kill(actor, no_restart=True)


def driver_stall_policy(base: TrainConfig, in_process: bool) -> StallPolicy:
    """The driver's bound on a trial: it waits out every restart the trial's own run makes (a
    DDP trial's Ray Train restarts its worker group up to max_failures times, each after a worker's
    watch fired), plus one floor for start-up."""
    # A one-process trial does not restart itself: its watch ends it and Tune restarts it.
    return base.stall.over_trial(0 if in_process else base.max_failures)


class TrialTracking(Callback):
    """Each trial's MLflow run, logged from the sweep's driver (the pattern of Tune's own
    MLflowLoggerCallback): a trial's reports carry its epochs' rows (tracking.EPOCH_ROWS), its last
    checkpoint is its final artifact (Tune's for a one-process trial; for a DDP trial, Ray Train's,
    whose path rides in the report). The trials' processes never import MLflow or open its store:
    about 4 s of CPU that each first trial of a sweep paid, two at once on 2 cores.

    The same `tracking.Tracker` as a Ray Train run's rank 0, so a trial's run holds what a train
    run holds (params, every epoch, final artifact files, learning curves) and is found again by
    its Ray run name when a trial restarts or the sweep is resumed.
    """

    def __init__(self, base: TrainConfig, provenance: dict[str, Any], experiment: str) -> None:
        # The provenance, not the data: Tune pickles its callbacks with the sweep's state.
        self.base, self.provenance, self.experiment = base, provenance, experiment
        self.trackers: dict[str, Tracker] = {}
        self.train_checkpoints: dict[str, str] = {}
        """A DDP trial's latest checkpoint: Ray Train keeps it, Tune only sees its path."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_name = f"{self.experiment}-{trial.trial_id}"
        cfg = trial_train_config(self.base, trial.config[HPARAMS], run_name, trial.config.get(SEED))
        assert cfg.tracking is not None, "a tracked sweep's trials are tracked"
        provenance = {**self.provenance, "split_seed": cfg.data.seed}
        tracker = self.trackers[trial.trial_id] = Tracker(cfg.tracking)
        tracker.start(cfg, provenance, run_name, [])

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

        rows = result.pop(EPOCH_ROWS, [])  # Tune allows this: its CSV/JSON loggers come after
        if result.get(CHECKPOINT_PATH_KEY):
            self.train_checkpoints[trial.trial_id] = str(result[CHECKPOINT_PATH_KEY])
        tracker = self.trackers.get(trial.trial_id)
        if tracker is None:
            return
        for row in rows:
            tracker.log_epoch(row)
        tracker.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from ray.train import Checkpoint

        tracker = self.trackers.pop(trial.trial_id, None)
        train_checkpoint = self.train_checkpoints.pop(trial.trial_id, None)
        if tracker is None:
            return
        # The latest checkpoint: Tune and Ray Train keep it whatever num_to_keep says.
        checkpoint = trial.checkpoint or (train_checkpoint and Checkpoint(path=train_checkpoint))
        tracker.finish(_checkpoint_artifact(checkpoint) if checkpoint else None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Its epochs so far are logged; the sweep's end marks the run FAILED (finish_sweep).
        tracker = self.trackers.pop(trial.trial_id, None)
        self.train_checkpoints.pop(trial.trial_id, None)
        if tracker is not None:
            tracker.flush(force=True)


def _checkpoint_artifact(checkpoint: Any) -> Callable[[], Any]:
    """A loader of the artifact a trial's checkpoint folder holds (weights checksum-verified),
    called by the tracker when it logs the final files."""
    # lazy: imports torch, pyarrow, needed only on this path
    from raylife.lifecycle.store import load_artifact_dir

    def load() -> Any:
        with checkpoint.as_directory() as folder:
            return load_artifact_dir(Path(folder))

    return load


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
    chosen: dict[str, str] = dataclasses.field(default_factory=dict)
    """Each trial's chosen checkpoint, by trial id."""
    plan: TrialPlan | None = None
    """Workers per trial and why (raylife.training.sizing)."""


def trial_cpus(base: TrainConfig) -> float:
    """Logical CPUs one trial holds: its own process when it is the worker, else a driver that
    mostly waits (TRIAL_DRIVER_CPUS) plus its Train workers."""
    if base.num_workers == 1:
        return base.cpus_per_worker
    return TRIAL_DRIVER_CPUS + base.num_workers * base.cpus_per_worker


def required_cpus(base: TrainConfig, tune_cfg: TuneConfig) -> float:
    """Logical CPUs for a local cluster: the concurrent trials, plus room for one more.

    A trial that ASHA stopped releases its Train workers' placement group asynchronously; without
    the spare room the next trial's workers can wait on it until their startup timeout. A
    one-process trial has no worker group, so it needs no spare room.
    """
    concurrent = tune_cfg.max_concurrent_trials or 1
    return (concurrent + _spare_trials(base)) * trial_cpus(base)


def _spare_trials(base: TrainConfig) -> int:
    """Room kept for one more trial: a stopped DDP trial's workers release their placement group
    asynchronously; a one-process trial has no worker group to drain."""
    return 0 if base.num_workers == 1 else 1


def concurrent_trials(base: TrainConfig, tune_cfg: TuneConfig, cluster_cpus: float) -> int:
    """Trials at once: the user's number, else as many as the cluster's CPUs hold (at most the
    trials there are; a DDP sweep keeps room for one stopped trial's workers to drain)."""
    if tune_cfg.max_concurrent_trials:
        return tune_cfg.max_concurrent_trials
    fits = int(cluster_cpus // trial_cpus(base)) - _spare_trials(base)
    return max(1, min(tune_cfg.num_samples, fits))


def grace_period(tune_cfg: TuneConfig, epochs: int) -> int:
    """Small-lr trials look bad for the first few epochs; judge them after a sixth of the budget."""
    return min(tune_cfg.grace_period or max(1, epochs // 6), epochs)


def plan_sweep(base: TrainConfig, tune_cfg: TuneConfig, data: PreparedData) -> TrialPlan:
    """Workers per trial (raylife.training.sizing): measured against the CPUs this sweep will see."""
    import ray

    cpus = (
        ray.cluster_resources().get("CPU", 0.0)
        if ray.is_initialized()
        else float(os.cpu_count() or 1)
    )
    return plan_trials(base, data, tune_cfg.workers_per_trial, cpus, tune_cfg.num_samples)


def run_sweep(
    base: TrainConfig,
    tune_cfg: TuneConfig,
    settings: Settings,
    data: PreparedData | None = None,
    seeds: list[int] | None = None,
    callbacks: Sequence[Callback] = (),
) -> SweepOutcome:
    """Sample trials (or, with `seeds`, run the base hyperparameters once per seed), run each (one process, or a Ray Train run of several workers), return the
    table and the best trial's checkpoint.

    `callbacks`: more Tune callbacks, run after raylife's own.
    A sweep whose name already has state under the runs folder is resumed: finished trials are
    not rerun (checked before a new Tuner is built, since a new Tuner writes its state at once).
    """
    # lazy: resolved at call time, so a stand-in for it (tests that prove no cluster starts) is the one called
    import ray
    from ray import tune

    from raylife.cluster import ensure_ray

    base = carry.pack(base)
    spec = get_spec(base.model)
    task = spec.task_obj
    data = data or prepare(spec, base.data)  # bad data fails before Ray starts
    check_model_fits(base, data)  # and so does a model that does not fit its task
    plan = plan_sweep(base, tune_cfg, data)
    base = base.replace(num_workers=plan.num_workers)
    if base.tracking is not None:  # the trials' runs are logged here (TrialTracking)
        base = base.replace(tracking=base.tracking.replace(by_driver=True))
    ensure_ray(num_cpus=required_cpus(base, tune_cfg))
    _check_capacity(base)
    concurrent = concurrent_trials(base, tune_cfg, ray.cluster_resources().get("CPU", 0.0))
    TrialProgress.say(
        f"  trials: {plan.num_workers} worker{'s' if plan.num_workers > 1 else ''} each, "
        f"{concurrent} at a time ({plan.reason})"
    )
    name = tune_cfg.name or new_run_name(base.model, kind="tune")
    storage = storage_path(settings)
    if tune_cfg.scheduler == "asha":
        base = base.replace(report_epochs=rung_epochs(tune_cfg, base.hparams.epochs))
    resources = {
        "CPU": trial_cpus(base),
        **({"GPU": 1} if plan.in_process and base.use_gpu else {}),
    }
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            base=base,
            data_box=(ray.put(data), split_refs(spec, base, seeds)),
            storage=storage,
        ),
        resources,
    )
    path = f"{storage.rstrip('/')}/{name}"
    # Tune saves the sweep's state at most every 10 s by default: a driver killed within 10 s of a
    # trial's end would run that trial again on resume. Our state is a few KB and our trials
    # take seconds to minutes, so save it each second (the user's value wins).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_PERIOD_S)
    # ...which Tune then warns about on every save after a checkpoint (it is deliberate), and
    # Tune's new output engine prints its tables even at verbose=0: TrialProgress tells the
    # sweep in one line per trial instead.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune warns whenever its bookkeeping of a result takes over 0.5 s, which a busy 2-core
    # machine does now and then: advice to report less, not a fault.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(spec, base, tune_cfg, seeds),
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE,
                mode=task.mode,
                scheduler=_scheduler(tune_cfg, base.hparams.epochs),
                max_concurrent_trials=concurrent,
                # One-process trials: a trial's process (torch imported, data read) serves the
                # next trial instead of a new one starting.
                reuse_actors=plan.in_process,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=0,
                callbacks=[
                    TrialProgress(f"val_{task.metric}", task.mode, base.hparams.epoch_selection),
                    *([TrialTracking(base, data.provenance, name)] if base.tracking else []),
                    *(
                        [TrialWatchdog(driver_stall_policy(base, plan.in_process))]
                        if base.stall.enabled
                        else []
                    ),
                    *callbacks,
                ],
                # Used by one-process trials (a DDP trial's checkpoints and restarts are Ray
                # Train's, configured by build_trainer from the same fields).
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=base.checkpoints_to_keep,
                    checkpoint_score_attribute=OBJECTIVE,
                    checkpoint_score_order=task.mode,
                ),
                failure_config=tune.FailureConfig(
                    max_failures=base.max_failures if plan.in_process else 0
                ),
            ),
        )
    grid = tuner.fit()
    outcome = _outcome(
        grid,
        name,
        Scoring(OBJECTIVE, task.mode, base.hparams.epoch_selection),
        f"val_{task.metric}",
        base.hparams.epochs,
    )
    outcome.plan = plan
    return outcome


def split_refs(spec: ModelSpec, base: TrainConfig, seeds: list[int] | None) -> dict[int, Any]:
    """The other seeds' splits of a streamed source, prepared here before any trial starts.

    Preparing reads the source, and Ray Data's Parquet reader samples the files in a task that
    needs a whole logical CPU: inside a trial, with the trials holding every CPU, that task never
    runs and the sweep hangs (a seeds grid of 2 one-process trials on 2 CPUs did). An in-memory
    source is prepared in the trial (empty here): no Ray task, and the trials work side by side.
    """
    # lazy: imports pyarrow, needed only on this path
    import ray

    from raylife.data.streaming import wants_streaming

    if not seeds or not wants_streaming(spec.data_config(base.data).source):
        return {}
    return {
        seed: ray.put(prepare(spec, dataclasses.replace(base.data, seed=seed)))
        for seed in seeds
        if seed != base.data.seed
    }


def _param_space(
    spec: ModelSpec, base: TrainConfig, tune_cfg: TuneConfig, seeds: list[int] | None
) -> dict[str, Any]:
    from ray import tune

    if seeds is not None:
        return {HPARAMS: {}, SEED: tune.grid_search(list(seeds))}
    sampled = sample_configs(spec, tune_cfg.num_samples, tune_cfg.seed, anchor=base.hparams)
    return {HPARAMS: tune.grid_search(sampled)}


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


def _check_capacity(base: TrainConfig) -> None:
    import ray

    available = ray.cluster_resources().get("CPU", 0.0)
    per_trial = trial_cpus(base)
    if available < per_trial:
        raise RaylifeError(
            f"a trial needs {per_trial:g} CPUs ({base.num_workers} worker(s) x "
            f"{base.cpus_per_worker:g}{' + 1 driver' if base.num_workers > 1 else ''}) "
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

    rows, histories, chosen = [], {}, {}
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
        with_ckpt = _checkpointed_reports(result, frame)
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
        chosen[trial_id] = str(top[CHECKPOINT_PATH_KEY])
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
    return SweepOutcome(name, best[1], best[2], best[3], table, histories, chosen)


def _checkpointed_reports(result: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """The trial's reports that have a kept checkpoint, in epoch order, with its path under
    CHECKPOINT_PATH_KEY: a DDP trial's come from trial_bridge (Ray Train kept them), a
    one-process trial's from Tune's own checkpoint manager."""
    import pandas as pd
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    if CHECKPOINT_PATH_KEY in frame:
        return frame.dropna(subset=[CHECKPOINT_PATH_KEY])
    kept = list(result.best_checkpoints or [])
    # Tune keeps the latest checkpoint too, but lists it among the "best" only when it is one;
    # the last epoch always reports one, and result.metrics are that report's.
    if result.checkpoint is not None and all(c.path != result.checkpoint.path for c, _ in kept):
        kept.append((result.checkpoint, result.metrics))
    rows = [{**metrics, CHECKPOINT_PATH_KEY: checkpoint.path} for checkpoint, metrics in kept]
    if not rows:
        return frame.iloc[0:0]
    return pd.DataFrame(rows).sort_values("epoch").reset_index(drop=True)


def _trial_id(result: Any) -> str:
    return str(result.path).rstrip("/").rsplit("/", 1)[-1]


def _config_view(config: dict[str, Any]) -> dict[str, Any]:
    seed = {SEED: config[SEED]} if SEED in config else {}
    config = config.get(HPARAMS, config)
    return seed | {
        k: (round(v, 6) if isinstance(v, float) else str(v) if isinstance(v, (list, tuple)) else v)
        for k, v in config.items()
    }
