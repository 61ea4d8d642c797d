"""Ray Train: the worker loop (run_worker), build_trainer(cfg) (shared with Tune) and run_training(cfg).

The Ray touchpoints are few and numbered; a worker reaches them through its session
(RayTrainSession here; a one-process Tune trial passes tune.TrialSession instead):
  [1] read the shared, already-preprocessed data from the object store
  [2] ray.train.torch.prepare_model        (DDP wrap + device)
  [3] DistributedSampler + prepare_data_loader (sharding + device), or, for streamed data,
      ray.train.get_dataset_shard               (this worker's share of the Ray datasets)
  [4] ray.train.get_checkpoint              (resume after a failure or with --resume)
  [5] ray.train.report                      (every worker, once per epoch; rank 0 attaches the checkpoint)
Everything else is plain PyTorch from raylife.training.loop.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from raylife.catalog import carry
from raylife.catalog.architectures import build_model
from raylife.catalog.lookup import get_spec
from raylife.config import TrainConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.errors import RaylifeError
from raylife.lifecycle.artifact import META_FILE, WEIGHTS_FILE, Artifact
from raylife.settings import Settings
from raylife.storage import root_cause
from raylife.tracking.runs import EPOCH_ROWS, worker_tracker
from raylife.training.loop import (
    OBJECTIVE,
    Epoch,
    as_tensors,
    epoch_metrics,
    fit,
    make_loader,
    make_optimizer,
    seed_everything,
)
from raylife.training.watchdog import Beating, Pace, Watch, exit_stalled

TRAIN_STATE_FILE = "train_state.pt"
EPOCH_SECONDS = "epoch_s"
"""Every epoch's row: seconds of the epoch's compute (train + validation) on its worker."""


def new_run_name(model: str, kind: str = "train") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{kind}-{model}-{stamp}-{uuid.uuid4().hex[:4]}"


def model_args_for(cfg: TrainConfig, data: PreparedData) -> dict[str, Any]:
    spec = get_spec(cfg.model)
    n_outputs = spec.task_obj.output_size(len(data.label_names or []))
    return spec.model_args(cfg.hparams, data.schema.shape, n_outputs)


def check_model_fits(cfg: TrainConfig, data: PreparedData) -> None:
    """One forward pass of the run's model on one training example, before any worker starts: a
    factory that raises, returns no module, or whose output does not fit the task fails here."""
    spec = get_spec(cfg.model)
    n_outputs = spec.task_obj.output_size(len(data.label_names or []))
    model = build_model(spec.architecture, model_args_for(cfg, data)).eval()
    raw = data.schema.example_batch()
    example = torch.as_tensor(data.preprocessing.transform(raw), dtype=torch.float32)
    where = f"model {cfg.model} ({spec.architecture})"
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as exc:  # the user's forward: name it with its own message
        raise RaylifeError(
            f"{where}: forward pass on one example of shape {list(example.shape)} raised "
            f"{type(exc).__name__}: {exc}; fix the model"
        ) from exc
    wanted = (1, n_outputs)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != wanted:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RaylifeError(
            f"{where}: a {spec.task} task needs outputs of shape [batch, {n_outputs}] "
            f"({'one logit' if n_outputs == 1 else 'one logit per class'}), got {got} for a "
            "batch of 1; fix the model's last layer"
        )


def make_artifact(
    cfg: TrainConfig,
    data: PreparedData,
    model: torch.nn.Module | dict[str, torch.Tensor],
    history: list[dict[str, float]],
    metrics: dict[str, float],
    run_name: str,
) -> Artifact:
    """A complete artifact of a model's weights (or of a state dict): checkpoints ARE artifacts,
    so any checkpoint can be registered in the store without re-running anything."""
    weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
    spec = get_spec(cfg.model)
    return Artifact(
        model=cfg.model,
        architecture=spec.architecture,
        model_args=model_args_for(cfg, data),
        task=spec.task,
        state_dict={k: v.detach().cpu().clone() for k, v in weights.items()},
        preprocessing=data.preprocessing,
        schema=data.schema,
        label_names=data.label_names,
        metrics=metrics,
        history=list(history),
        run={
            "run_name": run_name,
            "hparams": cfg.hparams.to_dict(),
            "num_workers": cfg.num_workers,
            "use_gpu": cfg.use_gpu,
            "seed": cfg.seed,
            "data_config": {k: v for k, v in cfg.data.__dict__.items()},
        },
        data=data.provenance,
        declaration=spec.source.to_dict() if spec.source else {},
        code=(cfg.carried or {}).get("code"),
        profile=data.profile.to_dict() if data.profile else {},
    )


@contextlib.contextmanager
def fresh_model(
    cfg: TrainConfig, data: PreparedData
) -> Iterator[tuple[torch.nn.Module, torch.optim.Optimizer]]:
    """The run's seeded model and optimizer, outside Ray, on the run's torch threads (restored
    after): the plain loop of the bench and the step measurement of raylife.training.sizing start here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads_per_worker)
    try:
        seed_everything(cfg.seed)
        model = build_model(get_spec(cfg.model).architecture, model_args_for(cfg, data))
        yield model, make_optimizer(cfg.hparams, model.parameters())
    finally:
        torch.set_num_threads(threads)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (state_dicts are saved without the `module.` prefix)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, torch.nn.Module)
    return inner


def _all_reduce(sums: torch.Tensor, device: torch.device) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        sums = sums.to(device)
        dist.all_reduce(sums)
    return sums.cpu()


def _restore(
    checkpoint: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, float]], float | None]:
    """Weights (checksum-verified), optimizer state, epochs done, history, best-so-far. Keys a
    train state holds beyond these (older checkpoints' "timings") are ignored."""
    if checkpoint is None:
        return 0, [], None
    with checkpoint.as_directory() as folder:
        path = Path(folder)
        artifact = Artifact.from_files(
            (path / META_FILE).read_bytes(), (path / WEIGHTS_FILE).read_bytes(), where=str(path)
        )
        state = load_train_state(path)
    _unwrap(model).load_state_dict(artifact.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epochs_done"]), list(state["history"]), state["best"]


class WorkerSession(Protocol):
    """What a worker loop needs from the runtime it runs in: its place in the group, the device,
    model and loader preparation, the checkpoint to resume from, and where reports go."""

    rank: int
    world: int
    run_name: str

    def device(self) -> torch.device: ...

    def prepare_model(self, module: torch.nn.Module) -> torch.nn.Module: ...

    def prepare_loader(self, loader: Any) -> Iterable: ...

    def dataset_shard(self, name: str) -> Any:
        """This worker's shard of a streamed dataset; None: the whole dataset (one process)."""
        ...

    def latest_checkpoint(self) -> Any: ...

    def report(self, row: dict[str, Any], checkpoint_folder: Path | None) -> None:
        """One epoch's metrics (a trial's also carry its epochs' rows: tracking.EPOCH_ROWS)."""
        ...


class RayTrainSession:
    """A Ray Train worker of a TorchTrainer run: the numbered touchpoints of this module."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.run_name = context.get_experiment_name()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, module: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(module)  # [2]

    def prepare_loader(self, loader: Any) -> Iterable:
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)  # [3]

    def dataset_shard(self, name: str) -> Any:
        import ray.train

        return ray.train.get_dataset_shard(name)  # [3]

    def latest_checkpoint(self) -> Any:
        import ray.train

        return ray.train.get_checkpoint()  # [4]

    def report(self, row: dict[str, Any], checkpoint_folder: Path | None) -> None:
        import ray.train

        checkpoint = (
            None
            if checkpoint_folder is None
            else ray.train.Checkpoint.from_directory(checkpoint_folder)
        )
        ray.train.report(row, checkpoint=checkpoint)  # [5]


class _WorkerRun:
    """One worker's training state; the runtime (Ray Train or a Tune trial) is the session's."""

    def __init__(
        self, cfg: TrainConfig, data: PreparedData, session: WorkerSession, pace: Pace
    ) -> None:
        from torch.utils.data.distributed import DistributedSampler

        self.cfg, self.data, self.session, self.pace = cfg, data, session, pace
        self.task, hp = get_spec(cfg.model).task_obj, cfg.hparams
        self.rank, world = session.rank, session.world
        torch.set_num_threads(cfg.threads_per_worker)
        seed_everything(cfg.seed)  # the same initial weights on every rank
        module = build_model(get_spec(cfg.model).architecture, model_args_for(cfg, data))
        self.model = session.prepare_model(module)
        # Then a stream per rank: with one shared seed every rank would draw the same dropout
        # masks, so the averaged gradient would carry correlated rather than independent noise.
        torch.manual_seed(cfg.seed * 1000 + self.rank)
        self.device = session.device()
        self.optimizer = make_optimizer(hp, self.model.parameters())
        self.epochs_done, self.history, self.best = _restore(
            session.latest_checkpoint(), self.model, self.optimizer
        )
        self.last_report = time.monotonic()
        self.best_unreported: _Snapshot | None = None
        # A sweep's trial hands its epochs' rows to the sweep's driver, which logs them to MLflow.
        self.rows_for_driver = bool(cfg.tracking and cfg.tracking.by_driver and self.rank == 0)
        self.rows_reported = self.epochs_done  # restored epochs were reported before the restart
        val_X, val_y = (
            t[self.rank :: world].to(self.device) for t in as_tensors(data.val, self.task)
        )
        self.val = (val_X, val_y)
        self.sampler: DistributedSampler | None = None
        if data.stream is not None:
            self.loader = Beating(self._stream_batches(data), pace)
            return
        # DistributedSampler only needs len(): a range avoids building the dataset twice.
        self.sampler = (
            DistributedSampler(
                range(len(data.train)),  # type: ignore[arg-type]
                world,
                self.rank,
                shuffle=True,
                seed=cfg.seed,
            )
            if world > 1
            else None
        )
        self.loader = Beating(
            session.prepare_loader(
                make_loader(
                    data.train, self.task, max(1, hp.batch_size // world), cfg.seed, self.sampler
                )
            ),
            pace,
        )

    def _stream_batches(self, data: PreparedData) -> Iterable:
        """Streamed data: each epoch iterates this worker's shard of the training dataset."""
        stream, cfg = data.stream, self.cfg
        batch = max(1, cfg.hparams.batch_size // self.session.world)
        shard = self.session.dataset_shard("train")
        source = shard if shard is not None else stream.datasets["train"]
        return stream.batches(source, batch, self.task, self.device, cfg.seed, shuffle=True)

    def epochs(self) -> Iterator[Epoch]:
        """The epochs left to run, as loop.fit runs them."""
        return fit(
            self.model,
            self.loader,
            self.task,
            self.optimizer,
            self.cfg.hparams,
            val=self.val,
            start_epoch=self.epochs_done + 1,
        )

    def finish_epoch(self, epoch: Epoch) -> tuple[dict[str, float], bool]:
        """All-reduce one epoch's statistics; returns its metrics row and whether to report it.
        The row's epoch_s is this worker's own compute time (train + validation): rank 0's is the
        one its history, checkpoints and MLflow run keep."""
        # Rank 0's clock decides time-based reports; riding on the metrics all-reduce keeps every
        # worker's decision identical (all must call ray.train.report equally often) at no cost.
        interval_due = (
            self.rank == 0 and time.monotonic() - self.last_report >= self.cfg.report_interval_s
        )
        sums = _all_reduce(
            torch.cat([epoch.train_sums, epoch.val_sums, torch.tensor([float(interval_due)])]),
            self.device,
        )
        target_std = self.data.preprocessing.target_std or 1.0
        row = epoch_metrics(epoch.number, sums[:4], sums[4:8], self.task, target_std)
        row[EPOCH_SECONDS] = epoch.ended - epoch.started
        self.history.append(row)
        if self.task.is_better(row[OBJECTIVE], self.best):
            self.best = row[OBJECTIVE]
            self.best_unreported = self._snapshot(row)
        due = (
            epoch.number == self.cfg.hparams.epochs
            or epoch.number in self.cfg.report_epochs
            or sums[8] > 0
        )
        return row, bool(due)

    def report(self, row: dict[str, float]) -> None:
        """Every worker reports; rank 0 attaches the checkpoint (an artifact + train state).

        An epoch that improved the validation objective is not reported when it happens (each
        report is a round trip to Tune or the Train controller, which early epochs would pay
        nearly every epoch): its snapshot is reported just before the next due report, so the
        best epoch's checkpoint is kept all the same, at most report_interval_s later.
        """
        best, self.best_unreported = self.best_unreported, None
        if best is not None and best.row["epoch"] != row["epoch"]:
            self._report(best)
        self._report(self._snapshot(row, keep=False))

    def _snapshot(self, row: dict[str, float], keep: bool = True) -> _Snapshot:
        """The state a checkpoint of this epoch holds (rank 0 only: the others attach none).
        keep=False: the live state, uncopied, for a checkpoint written at once (the copies are
        only needed by an improving epoch's snapshot, reported later)."""
        if self.rank != 0:
            return _Snapshot(row)
        weights = _unwrap(self.model).state_dict()
        optimizer = self.optimizer.state_dict()
        if not keep:
            return _Snapshot(row, weights, optimizer, self.history, self.best)
        return _Snapshot(
            row,
            {k: v.detach().clone() for k, v in weights.items()},
            copy.deepcopy(optimizer),
            list(self.history),
            self.best,
        )

    def _report(self, snapshot: _Snapshot) -> None:
        metrics: dict[str, Any] = snapshot.row
        if self.rows_for_driver:
            epoch = int(snapshot.row["epoch"])
            rows = [r for r in self.history if self.rows_reported < r["epoch"] <= epoch]
            metrics, self.rows_reported = {**metrics, EPOCH_ROWS: rows}, epoch
        if snapshot.weights is None:
            self.session.report(metrics, None)
        else:
            with tempfile.TemporaryDirectory() as folder:
                self._write_checkpoint(Path(folder), snapshot)
                self.session.report(metrics, Path(folder))
        self.pace.beat()
        self.last_report = time.monotonic()

    def artifact(self, row: dict[str, float]) -> Artifact:
        """The current weights as a complete artifact, with `row` as its metrics."""
        model = _unwrap(self.model)
        return make_artifact(self.cfg, self.data, model, self.history, row, self.session.run_name)

    def _write_checkpoint(self, folder: Path, snapshot: _Snapshot) -> None:
        assert snapshot.weights is not None, "only rank 0 writes checkpoints"
        artifact = make_artifact(
            self.cfg,
            self.data,
            snapshot.weights,
            snapshot.history,
            snapshot.row,
            self.session.run_name,
        )
        for name, payload in artifact.to_files().items():
            (folder / name).write_bytes(payload)
        state = {
            "optimizer": snapshot.optimizer,
            "epochs_done": int(snapshot.row["epoch"]),
            "history": snapshot.history,
            "best": snapshot.best,
        }
        torch.save(state, folder / TRAIN_STATE_FILE)


@dataclass
class _Snapshot:
    """One epoch's checkpoint contents, taken when the epoch ends (reported then or later)."""

    row: dict[str, float]
    weights: dict[str, torch.Tensor] | None = None
    """None on ranks other than 0, which report metrics only."""
    optimizer: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None


def run_worker(cfg: TrainConfig, data: PreparedData, session: WorkerSession) -> None:
    """One worker's whole run: epochs of plain PyTorch, reported when they improve the validation
    objective, when report_interval_s has passed, at ASHA's rung epochs and at the end. A watch
    ends the process if the run stops making progress (a step, an epoch, a report) for longer
    than cfg.stall allows, so the runtime restarts it from the latest checkpoint."""
    carry.unpack(cfg)  # a user model's declaration and code, on a node without its folder
    pace = Pace(cfg.stall)
    name = f"run {session.run_name} rank {session.rank}"
    with Watch(pace, name, exit_stalled):
        run = _WorkerRun(cfg, data, session, pace)
        tracker = worker_tracker(cfg, session.rank)  # MLflow: rank 0 of a tracked run, else no-op
        tracker.start(cfg, data.provenance, session.run_name, run.history)
        if run.epochs_done >= cfg.hparams.epochs and run.history:
            # Resumed after its last epoch (the process that drove it died before recording
            # the end, e.g. a killed sweep): report the final epoch again so the caller gets it.
            run.report(run.history[-1])
        for epoch in run.epochs():
            pace.beat()
            row, due = run.finish_epoch(epoch)
            tracker.log_epoch(row, flush=due)  # before the report, after which ASHA may stop us
            if due:
                run.report(row)
    tracker.finish(lambda: run.artifact(run.history[-1]))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: run_worker with the Ray Train session."""
    import ray

    _quiet_report_log()
    data = ray.get(loop_config["data_ref"])  # [1] shared, preprocessed data
    run_worker(loop_config["cfg"], data, RayTrainSession())


def _quiet_report_log() -> None:
    """Ray 2.60 logs every report at INFO through a logger named by file path (not under
    `ray.train`), so LoggingConfig cannot silence it; per-epoch reports would flood the console."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def build_trainer(
    cfg: TrainConfig,
    data_ref: Any,
    storage_path: str,
    run_name: str,
    callbacks: list | None = None,
    datasets: dict[str, Any] | None = None,
) -> Any:
    """The TorchTrainer of one run. Tune's trials call exactly this (see tune.py).
    datasets: a streaming source's Ray datasets (PreparedData.stream), sharded across workers."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    task = get_spec(cfg.model).task_obj
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "data_ref": data_ref},
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={
                "CPU": cfg.cpus_per_worker,
                **({"GPU": 1} if cfg.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.checkpoints_to_keep,
                checkpoint_score_attribute=OBJECTIVE,
                checkpoint_score_order=task.mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]
        ),
    )


@dataclass
class TrainOutcome:
    run_name: str
    checkpoint_path: str
    """The chosen checkpoint (hparams.epoch_selection: best validation epoch, or the last): a
    complete artifact folder."""
    metrics: dict[str, float]
    history: list[dict[str, float]]


def run_training(
    cfg: TrainConfig, settings: Settings, data: PreparedData | None = None
) -> TrainOutcome:
    """Prepare data, fit one TorchTrainer run, return its chosen checkpoint."""
    # lazy: resolved at call time, so a stand-in for it (tests that prove no cluster starts) is the one called
    import ray

    from raylife.cluster import ensure_ray

    cfg = carry.pack(cfg)
    data = data or prepare(get_spec(cfg.model), cfg.data)  # bad data fails before Ray starts
    check_model_fits(cfg, data)  # and so does a model that does not fit its task
    ensure_ray(num_cpus=cfg.num_workers * cfg.cpus_per_worker)
    run_name = cfg.run_name or new_run_name(cfg.model)
    storage = storage_path(settings)
    trainer = build_trainer(cfg, ray.put(data), storage, run_name, datasets=stream_datasets(data))
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; surface the user-facing cause in one line
        raise RaylifeError(f"training run {run_name} failed: {root_cause(exc)}") from exc
    return outcome_from_result(result, cfg, run_name)


def stream_datasets(data: PreparedData) -> dict[str, Any] | None:
    """The Ray datasets a TorchTrainer shards across its workers (streamed data only)."""
    return None if data.stream is None else data.stream.datasets


def outcome_from_result(result: Any, cfg: TrainConfig, run_name: str) -> TrainOutcome:
    task = get_spec(cfg.model).task_obj
    if result.checkpoint is None or not result.best_checkpoints:
        raise RaylifeError(
            f"run {run_name} reported no checkpoint; check its logs under the runs folder"
        )
    # Ray keeps the best checkpoints by validation objective and always the latest one (not
    # listed among the best unless it is one), which is the last epoch's: the last epoch is
    # always reported with a checkpoint.
    if cfg.hparams.epoch_selection == "last":
        checkpoint, metrics = result.checkpoint, result.metrics
    else:
        checkpoint = result.get_best_checkpoint(metric=OBJECTIVE, mode=task.mode)
        metrics = next(m for c, m in result.best_checkpoints if c.path == checkpoint.path)
    history = _load_history(checkpoint)
    return TrainOutcome(run_name, checkpoint.path, dict(metrics), history)


def _load_history(checkpoint: Any) -> list[dict[str, float]]:
    return list(checkpoint_train_state(checkpoint)["history"])


def load_train_state(folder: Path) -> dict[str, Any]:
    """The train state of a checkpoint folder (optimizer, epochs done, history, best).
    weights_only: a checkpoint is data, and unpickling anything else would run its code."""
    try:
        state = torch.load(folder / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RaylifeError(
            f"{folder / TRAIN_STATE_FILE} holds objects other than tensors and plain data; "
            "it was not written by raylife: resume from another checkpoint or start a new run"
        ) from exc
    return dict(state)


def checkpoint_train_state(checkpoint: Any) -> dict[str, Any]:
    """load_train_state of a Ray Train Checkpoint (downloaded first when it lives on S3)."""
    with checkpoint.as_directory() as folder:
        return load_train_state(Path(folder))


def storage_path(settings: Settings) -> str:
    """Ray Train/Tune storage (settings.runs_uri), created when it is a local folder."""
    if "://" not in settings.runs_uri:
        Path(settings.runs_uri).mkdir(parents=True, exist_ok=True)
    return settings.runs_uri
