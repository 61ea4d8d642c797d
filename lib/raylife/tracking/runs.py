"""MLflow tracking: a Ray Train run is one MLflow run, a sweep a parent run with a nested run per
trial. Ray Train V2 has no MLflow integration (its RunConfig refuses Tune's MLflowLoggerCallback),
so a run logs through a small tracker instead:

    tracker = worker_tracker(cfg, rank)       # a no-op unless rank 0 of a tracked run
    tracker.start(cfg, data.provenance, run_name, history_so_far)
    tracker.log_epoch(row, flush=due)         # buffered; flushed before every ray.train.report
    tracker.finish(make_artifact)             # final artifact files + learning curves, status

A sweep's trials are logged by the same tracker in the sweep's driver (`tune.TrialTracking`, as
Tune's own MLflowLoggerCallback does): each trial's reports carry the rows of its epochs since the
previous report (`EPOCH_ROWS`), so a trial's process never imports MLflow nor opens its store
(about 4 s of CPU per trial process, paid by each of a sweep's first trials).

Runs are found again by their Ray run name (tag `raylife.run_name`): a resumed run, a worker
group restarted by FailureConfig or a restored sweep continues THE SAME MLflow run, and only
epochs past the last one logged (tag `raylife.last_epoch`) are logged, so no step is duplicated.
A tracking server that fails mid-run never fails the training: rows stay buffered, are retried,
and what could not be logged is reported at the end. One that is unreachable before training
starts stops the run in one line (`check`). mlflow is imported lazily: importing this module is
free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylife.config import TrackingConfig, TrainConfig, TuneConfig
from raylife.errors import RaylifeError
from raylife.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from raylife.data.contracts import PreparedData
    from raylife.lifecycle.artifact import Artifact

RUN_NAME_TAG = "raylife.run_name"
"""The Ray run name (train run, trial or sweep): how a run is found again on resume."""
LAST_EPOCH_TAG = "raylife.last_epoch"
"""The last epoch logged, written in the same batch as its metrics."""
KIND_TAG = "raylife.kind"
STOPPED_TAG = "raylife.stopped_by"
"""Set on a trial's run that the sweep's scheduler (ASHA) stopped early."""
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own nesting tag: the UI shows a trial's run under its sweep's."""

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
"""Opens the experiment in the UI's model-training view (runs, metrics), not the GenAI one."""

RETRY_AFTER_S = 10.0
"""After a failed flush, wait this long before trying the server again (rows stay buffered)."""
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""MLflow's HTTP client retries for minutes by default; a training run must not wait on it."""
EPOCH_ROWS = "epoch_rows"
"""Key of a trial's report that carries the rows of its epochs since its previous report, for the
sweep's driver to log (taken out of the result before Tune's own loggers see it)."""


def experiment_name(model: str) -> str:
    """One MLflow experiment per model: its train runs and sweeps side by side."""
    return f"raylife-{model}"


def config_for(settings: Settings) -> TrackingConfig | None:
    """The tracking of runs started with these settings (None when tracking is off)."""
    if settings.mlflow_uri is None:
        return None
    return TrackingConfig(uri=settings.mlflow_uri, artifact_location=settings.mlflow_artifacts)


def client(uri: str) -> MlflowClient:
    """An MLflow client of `uri`, one per process and URI (opening a SQLite store checks its
    schema, which takes a second)."""
    for name, value in HTTP_ENV.items():
        os.environ.setdefault(name, value)
    return _client(uri)


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()
"""One opening per URI even with open_in_background's thread racing the caller."""


def open_in_background(uri: str) -> threading.Thread:
    """Open the store of `uri` in a thread, so that the first use finds it open. A new local
    store takes seconds of schema migrations (~8 s on 2 cores) that would otherwise hold up the
    first sweep; `raylife run` starts this before its Ray cluster, whose start mostly waits.
    A failure here is left for the caller's own client() to meet and report."""

    def open_quietly() -> None:
        with contextlib.suppress(Exception):
            client(uri)

    thread = threading.Thread(target=open_quietly, name="mlflow-open", daemon=True)
    thread.start()
    return thread


def _client(uri: str) -> Any:
    with _CLIENTS_LOCK:
        if uri not in _CLIENTS:
            import logging

            from mlflow import MlflowClient

            # MLflow logs each schema migration and model validation at INFO: not a run's output.
            logging.getLogger("mlflow").setLevel(logging.WARNING)
            if uri.startswith("sqlite:///"):
                database = Path(uri.removeprefix("sqlite:///"))
                if not database.exists():
                    _say(f"creating the local MLflow store {database} (first use: ~10 s)")
                database.parent.mkdir(parents=True, exist_ok=True)
            _CLIENTS[uri] = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return _CLIENTS[uri]


def prepare(cfg: TrainConfig) -> TrainConfig:
    """Before training: check that the tracking store answers and create the model's experiment
    (so workers only look it up). Fails in one line naming the URI and the off switch."""
    if cfg.tracking is None:
        return cfg
    tracking = cfg.tracking
    try:
        experiment = ensure_experiment(client(tracking.uri), cfg.model, tracking.artifact_location)
    except Exception as exc:
        raise RaylifeError(
            f"MLflow tracking at {tracking.uri} is unreachable ({error_text(exc)}); start it, point "
            "--tracking-uri / RAYLIFE_MLFLOW_URI at a running one, or pass --no-tracking"
        ) from exc
    return cfg.replace(tracking=tracking.replace(experiment_id=experiment))


def ensure_experiment(mlflow: Any, model: str, artifact_location: str | None) -> str:
    """The model's experiment, created on first use (a concurrent creator may win the race)."""
    name = experiment_name(model)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            mlflow.create_experiment(
                name, artifact_location=artifact_location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
            )
        )
    except Exception:
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def find_run(mlflow: Any, experiment_id: str, run_name: str) -> Any | None:
    """The MLflow run of a Ray run name, or None."""
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
        max_results=1,
    )
    return runs[0] if runs else None


def find_or_create_run(
    mlflow: Any, experiment_id: str, run_name: str, tags: dict[str, str]
) -> tuple[Any, bool]:
    """(run, created): the run of `run_name`, reopened when it had ended, or a new one."""
    run = find_run(mlflow, experiment_id, run_name)
    if run is None:
        tags = {RUN_NAME_TAG: run_name, **tags}
        return mlflow.create_run(experiment_id, tags=tags, run_name=run_name), True
    if run.info.status != "RUNNING":
        mlflow.update_run(run.info.run_id, status="RUNNING")
    return run, False


def run_params(cfg: TrainConfig, provenance: dict[str, Any]) -> dict[str, str]:
    """Every hyperparameter, the resources, seeds, data source and sha256 (the prepared data's
    provenance), code and versions."""
    # lazy: imports torch, needed only on this path
    import ray
    import torch

    from raylife.lifecycle.artifact import git_commit

    params: dict[str, Any] = {
        **{k: v for k, v in cfg.hparams.to_dict().items()},
        "model": cfg.model,
        "num_workers": cfg.num_workers,
        "use_gpu": cfg.use_gpu,
        "seed": cfg.seed,
        "data_source": provenance.get("source"),
        "data_origin": provenance.get("origin"),
        "data_sha256": provenance.get("sha256"),
        "split_seed": provenance.get("split_seed"),
        "rows": provenance.get("rows"),
        "git_commit": git_commit(),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
    }
    return {k: str(v)[:6000] for k, v in params.items()}


def _last_logged_step(mlflow: Any, run: Any) -> int:
    """The last epoch whose metrics reached a run. LAST_EPOCH_TAG alone can lag one batch: MLflow's
    SQL store commits a batch's metrics and its tags separately, so a process killed between the
    two (a sweep's driver, say) leaves metrics the tag does not count, and a resume would log
    those epochs again. Every row carries the same keys, so one key's history tells."""
    key = next(iter(run.data.metrics), None)
    if key is None:
        return 0
    return max((int(m.step) for m in mlflow.get_metric_history(run.info.run_id, key)), default=0)


class NoTracker:
    """What a worker that does not log runs (tracking off, or a rank other than 0)."""

    def start(
        self,
        cfg: TrainConfig,
        provenance: dict[str, Any],
        run_name: str,
        history: list[dict[str, float]],
    ) -> None:
        pass

    def log_epoch(self, row: dict[str, float], flush: bool = False) -> None:
        pass

    def finish(self, artifact: Callable[[], Artifact] | None = None) -> None:
        pass


class Tracker(NoTracker):
    """Rank 0's MLflow run. Every call is best-effort: a failing server never fails training."""

    def __init__(self, tracking: TrackingConfig, say: Callable[[str], None] | None = None) -> None:
        self.tracking = tracking
        self.say = say or _say
        self.run_id: str | None = None
        self.run_name = self.model = ""
        self.last_epoch = 0
        self.pending: list[dict[str, float]] = []
        self.error: str | None = None
        self.retry_at = 0.0
        self.metric = "accuracy"
        self.opening: tuple[TrainConfig, dict[str, Any], str] | None = None

    def start(
        self,
        cfg: TrainConfig,
        provenance: dict[str, Any],
        run_name: str,
        history: list[dict[str, float]],
    ) -> None:
        """Find or create the run; queue the restored epochs the run has not logged yet."""
        # lazy: imports pyarrow, needed only on this path
        from raylife.catalog.lookup import get_spec

        self.run_name, self.model = run_name, cfg.model
        self.metric = get_spec(cfg.model).task_obj.metric
        self.opening = (cfg, provenance, run_name)
        self.pending = [dict(row) for row in history]
        self._connect(force=True)

    def _connect(self, force: bool = False) -> bool:
        """Open the run if it is not open yet (a store busy or down at start is tried again at
        the next flush); then drop queued rows the run already has."""
        if self.run_id is not None:
            return True
        if not force and time.monotonic() < self.retry_at:
            return False
        try:
            assert self.opening is not None, "start() first"
            self._open(*self.opening)
        except Exception as exc:
            self._failed(exc)
            return False
        self.pending = [row for row in self.pending if int(row["epoch"]) > self.last_epoch]
        return True

    def _open(self, cfg: TrainConfig, provenance: dict[str, Any], run_name: str) -> None:
        from mlflow.entities import Param

        mlflow = client(self.tracking.uri)
        experiment = self.tracking.experiment_id or ensure_experiment(
            mlflow, cfg.model, self.tracking.artifact_location
        )
        tags = {KIND_TAG: "trial" if self.tracking.parent_run_id else "train"}
        if self.tracking.parent_run_id:
            tags[PARENT_TAG] = self.tracking.parent_run_id
        run, created = find_or_create_run(mlflow, experiment, run_name, tags)
        self.run_id = run.info.run_id
        if created:
            params = [Param(k, v) for k, v in run_params(cfg, provenance).items()]
            mlflow.log_batch(self.run_id, params=params)
        else:
            tagged = int(run.data.tags.get(LAST_EPOCH_TAG, 0))
            self.last_epoch = max(tagged, _last_logged_step(mlflow, run))

    def log_epoch(self, row: dict[str, float], flush: bool = False) -> None:
        """Queue an epoch's row (epochs already logged before a resume are skipped); flush=True
        sends the queue now (before a report, where the scheduler may stop the trial)."""
        newest = int(self.pending[-1]["epoch"]) if self.pending else self.last_epoch
        if int(row["epoch"]) <= max(newest, self.last_epoch):
            return
        self.pending.append(dict(row))
        if flush:
            self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send the queued rows in one batch per 100 epochs; False when they stay queued."""
        if not self._connect(force):
            return False
        if not self.pending:
            return True
        if not force and time.monotonic() < self.retry_at:
            return False
        try:
            self._send()
        except Exception as exc:
            self._failed(exc)
            return False
        self.error = None
        return True

    def _send(self) -> None:
        from mlflow.entities import Metric, RunTag

        assert self.run_id is not None
        mlflow, now = client(self.tracking.uri), int(time.time() * 1000)
        while self.pending:
            rows = self.pending[:100]
            metrics = [
                Metric(key, float(value), now, int(row["epoch"]))
                for row in rows
                for key, value in row.items()
                if key != "epoch"
            ]
            last = max(int(row["epoch"]) for row in rows)
            mlflow.log_batch(self.run_id, metrics=metrics, tags=[RunTag(LAST_EPOCH_TAG, str(last))])
            self.last_epoch = last
            del self.pending[: len(rows)]

    def finish(self, artifact: Callable[[], Artifact] | None = None) -> None:
        """Flush, log the final artifact files and learning curves, end the run; then one line if
        anything could not be logged."""
        if self.opening is None:
            return  # never started
        logged = self.flush(force=True)
        if logged and self.run_id is not None:
            try:
                self._log_files(artifact)
                client(self.tracking.uri).set_terminated(self.run_id, "FINISHED")
            except Exception as exc:
                self._failed(exc)
                logged = False
        if not logged:
            lost = f"{len(self.pending)} epoch(s) and the final files" if self.pending else "files"
            self.say(
                f"raylife: MLflow run {self.run_name}: {lost} not logged to {self.tracking.uri} "
                f"({self.error}); the training run itself is unaffected"
            )

    def _log_files(self, artifact: Callable[[], Artifact] | None) -> None:
        if artifact is None:
            return
        # lazy: imports matplotlib, pandas, needed only on this path
        from raylife.lifecycle import plots

        assert self.run_id is not None
        final = artifact()
        with tempfile.TemporaryDirectory() as folder:
            files = Path(folder) / "artifact"
            files.mkdir()
            for name, payload in final.to_files().items():
                (files / name).write_bytes(payload)
            if final.history:
                plots.learning_curves(
                    self.model, final.history, self.metric, Path(folder) / "learning_curves.png"
                )
            client(self.tracking.uri).log_artifacts(self.run_id, folder)

    def _failed(self, exc: BaseException) -> None:
        self.error = error_text(exc)
        self.retry_at = time.monotonic() + RETRY_AFTER_S


def worker_tracker(cfg: TrainConfig, rank: int) -> NoTracker:
    """Rank 0 of a tracked run logs; every other worker does nothing, and so does every worker of
    a sweep's trial (its sweep's driver logs it)."""
    if cfg.tracking is None or cfg.tracking.by_driver or rank != 0:
        return NoTracker()
    return Tracker(cfg.tracking)


@dataclass
class SweepRun:
    """A sweep's parent run (None id: tracking off) and the config its trials nest under."""

    tracking: TrackingConfig | None
    name: str

    @property
    def run_id(self) -> str | None:
        return self.tracking.parent_run_id if self.tracking else None


def start_sweep(base: TrainConfig, tune_cfg: TuneConfig, data: PreparedData) -> SweepRun:
    """The sweep's parent run (reused when a sweep of this name is resumed); `base.tracking` of
    the returned config names it, so each trial's run nests under it. Call after `prepare`."""
    assert tune_cfg.name is not None
    if base.tracking is None or base.tracking.experiment_id is None:
        return SweepRun(None, tune_cfg.name)
    from mlflow.entities import Param

    try:
        mlflow = client(base.tracking.uri)
        run, created = find_or_create_run(
            mlflow, base.tracking.experiment_id, tune_cfg.name, {KIND_TAG: "sweep"}
        )
        if created:
            sweep = {f"tune_{k}": v for k, v in dataclasses.asdict(tune_cfg).items() if k != "name"}
            # Workers per trial are decided later (raylife.training.sizing): each trial's run says.
            params = {
                k: v for k, v in run_params(base, data.provenance).items() if k != "num_workers"
            }
            params |= {k: str(v) for k, v in sweep.items()}
            mlflow.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    except Exception as exc:  # the trials are still tracked, just not nested
        _say(f"raylife: MLflow sweep run {tune_cfg.name} not created ({error_text(exc)})")
        return SweepRun(base.tracking, tune_cfg.name)
    return SweepRun(base.tracking.replace(parent_run_id=run.info.run_id), tune_cfg.name)


def finish_sweep(sweep: SweepRun, trials: Any, best: dict[str, Any], failed: bool = False) -> None:
    """The best trial's metrics on the parent, ASHA's stops as tags on the trials' runs, the
    trials table as a CSV; then the parent ends. Best-effort: reports in one line if it fails."""
    if sweep.tracking is None or sweep.run_id is None:
        return
    try:
        mlflow = client(sweep.tracking.uri)
        if failed:
            mlflow.set_terminated(sweep.run_id, "FAILED")
            return
        _mark_trials(mlflow, sweep, trials)
        _log_best(mlflow, sweep.run_id, best)
        with tempfile.TemporaryDirectory() as folder:
            trials.to_csv(Path(folder) / "trials.csv", index=False)
            mlflow.log_artifacts(sweep.run_id, folder)
        mlflow.set_terminated(sweep.run_id, "FINISHED")
    except Exception as exc:
        _say(f"raylife: MLflow sweep run {sweep.name}: not completed ({error_text(exc)})")


def _mark_trials(mlflow: Any, sweep: SweepRun, trials: Any) -> None:
    assert sweep.tracking is not None and sweep.tracking.experiment_id is not None
    for row in trials.to_dict(orient="records"):
        run = find_run(mlflow, sweep.tracking.experiment_id, f"{sweep.name}-{row['trial']}")
        if run is None:
            continue
        status = str(row.get("status", ""))
        mlflow.set_tag(run.info.run_id, "raylife.status", status)
        if status == "stopped early":
            mlflow.set_tag(run.info.run_id, STOPPED_TAG, "asha")
        if run.info.status == "RUNNING":
            mlflow.set_terminated(run.info.run_id, "FAILED" if status == "error" else "FINISHED")


def _log_best(mlflow: Any, run_id: str, best: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"best_{k}", float(v), now, 0)
        for k, v in best.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
    ]
    mlflow.log_batch(run_id, metrics=metrics)


def end_run(tracking: TrackingConfig | None, run_name: str, status: str) -> None:
    """Mark the run of `run_name` ended (a run whose training failed in the driver)."""
    if tracking is None or tracking.experiment_id is None:
        return
    try:
        mlflow = client(tracking.uri)
        run = find_run(mlflow, tracking.experiment_id, run_name)
        if run is not None and run.info.status == "RUNNING":
            mlflow.set_terminated(run.info.run_id, status)
    except Exception as exc:
        _say(f"raylife: MLflow run {run_name}: status not recorded ({error_text(exc)})")


def error_text(exc: BaseException) -> str:
    """An exception as one short line (whitespace collapsed, at most 300 characters) for a log."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _say(line: str) -> None:
    # Not print: Ray Train patches builtins.print in workers.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log_version_metrics(
    tracking: TrackingConfig | None,
    model: str,
    run_name: str,
    metrics: dict[str, float],
    step: int,
) -> str:
    """Metrics on the run that trained a store version (the monitor's figures per window).
    Best-effort: "" when logged or tracking is off, else the problem in one line."""
    if tracking is None or not run_name:
        return ""
    try:
        from mlflow.entities import Metric

        mlflow = client(tracking.uri)
        experiment = ensure_experiment(mlflow, model, tracking.artifact_location)
        run = find_run(mlflow, experiment, run_name)
        if run is None:
            return f"no MLflow run named {run_name} in {experiment_name(model)}"
        now = int(time.time() * 1000)
        mlflow.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
        )
        return ""
    except Exception as exc:
        return f"MLflow at {tracking.uri}: {error_text(exc)}"
