"""Typed, validated configuration: hyperparameters, data, training and tuning (environment settings:
raylife.settings)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from raylife.errors import RaylifeError

Optimizer = Literal["adam", "sgd"]
Activation = Literal["relu", "sigmoid", "tanh"]
EpochSelection = Literal["best", "last"]
LrSchedule = Literal["constant", "cosine"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RaylifeError(message)


@dataclass(frozen=True)
class Hyperparams:
    """What Tune may search and what a training run is configured with."""

    lr: float
    """Learning rate of the optimizer."""
    batch_size: int
    """GLOBAL batch size: split evenly across Ray Train workers (each sees batch_size // workers)."""
    epochs: int
    """Number of passes over the training split."""
    hidden_sizes: tuple[int, ...]
    """Widths of the hidden fully connected layers (MLP body, or the CNN's classifier head)."""
    dropout: float = 0.0
    """Dropout probability after each hidden layer."""
    weight_decay: float = 0.0
    """L2 penalty (AdamW-style decoupled for adam, classic for sgd)."""
    optimizer: Optimizer = "adam"
    """Optimizer: adam (AdamW) or sgd (with momentum 0.9, the tutorial's choice)."""
    activation: Activation = "relu"
    """Hidden-layer activation of MLPs."""
    conv_channels: tuple[int, ...] = ()
    """Output channels of each 3x3 conv + max-pool block (CNN only)."""
    lr_schedule: LrSchedule = "constant"
    """"constant", or "cosine": the rate decays from lr towards 0 over the epochs (half a cosine),
    so the last epochs settle instead of oscillating at the full rate."""
    epoch_selection: EpochSelection = "best"
    """Which epoch's weights a run yields (and a sweep scores its trials by): "best" = the best
    validation objective (early stopping by checkpoint), "last" = the final epoch. On small
    validation splits "best" picks noise; `raylife selection-study` measures both per model."""

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"
        )
        _require(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(
            len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
            f"hidden sizes must be one or more positive widths, got {self.hidden_sizes}",
        )
        _require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _require(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}")
        _require(
            self.optimizer in ("adam", "sgd"),
            f"optimizer must be adam or sgd, got {self.optimizer!r}",
        )
        _require(
            self.activation in ("relu", "sigmoid", "tanh"),
            f"activation must be relu, sigmoid or tanh, got {self.activation!r}",
        )
        _require(all(c >= 1 for c in self.conv_channels), "conv channels must be positive")
        _require(
            self.lr_schedule in ("constant", "cosine"),
            f"lr schedule must be constant or cosine, got {self.lr_schedule!r}",
        )
        _require(
            self.epoch_selection in ("best", "last"),
            f"epoch selection must be best or last, got {self.epoch_selection!r}",
        )

    def replace(self, **overrides: Any) -> Hyperparams:
        """A copy with some fields changed (None values are ignored); validated again."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        _require(not unknown, f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        changes = {k: _coerce(k, v) for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparams:
        return cls(**{k: _coerce(k, v) for k, v in data.items()})


def _coerce(name: str, value: Any) -> Any:
    """Tune and JSON hand back lists and numpy scalars; the dataclass wants tuples and ints."""
    try:
        if name in ("hidden_sizes", "conv_channels"):
            kind = "a list of whole numbers like [64, 32]"
            return tuple(_whole(v) for v in value)
        if name in ("batch_size", "epochs"):
            kind = "a whole number"
            return _whole(value)
        if name in ("lr", "dropout", "weight_decay"):
            kind = "a number"
            return float(value)
    except (TypeError, ValueError):
        raise RaylifeError(f"{name} must be {kind}, got {value!r}") from None
    return value


def _whole(value: Any) -> int:
    """An int from an int-like value (3, 3.0, numpy ints); 2.5 or "2" are refused."""
    if isinstance(value, str) or float(value) != int(value):
        raise ValueError(value)
    return int(value)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split."""

    source: str = "embedded"
    """'embedded' (shipped with the packages), 'torchvision' (full MNIST), or a CSV/Parquet path or
    http(s):// / s3:// URL of a user table."""
    target: str | None = None
    """Target column of a user table (required for tables)."""
    data_dir: str | None = None
    """Local directory for torchvision MNIST (holds or receives MNIST/raw/*)."""
    download: bool = False
    """Allow torchvision to download full MNIST into data_dir (needs internet)."""
    val_fraction: float = 0.15
    """Share of all rows held out for validation (model selection, early stopping)."""
    test_fraction: float = 0.15
    """Share of all rows held out for the final test score; never seen in training or tuning."""
    seed: int = 0
    """Seed of the split: the same seed gives the same rows in every split."""

    def __post_init__(self) -> None:
        _require(
            0 < self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 0.9,
            "validation and test fractions must each be in (0, 1) and leave >= 10% for training",
        )


@dataclass(frozen=True)
class TrackingConfig:
    """Where a run is tracked in MLflow (raylife.tracking.runs); TrainConfig.tracking None = nowhere."""

    uri: str
    """MLflow tracking URI: the local SQLite store under RAYLIFE_HOME, or http(s)://server."""
    artifact_location: str | None = None
    """Where a new experiment keeps its artifacts (the local store's folder); None: the server's."""
    experiment_id: str | None = None
    """The model's experiment, created by the driver before any worker starts."""
    parent_run_id: str | None = None
    """The sweep's MLflow run: a trial's run is nested under it."""
    by_driver: bool = False
    """A sweep's trial: the sweep's driver logs its run from the trial's reports (each report
    carries its epochs' rows), so the trial's processes never import MLflow."""

    def replace(self, **changes: Any) -> TrackingConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StallPolicy:
    """How long a run may go without progress: factor x its slowest gap so far, at least floor_s."""

    factor: float = 5.0
    """Multiple of the slowest gap between two progress beats so far; 0 turns the watch off."""
    floor_s: float = 180.0
    """The bound never goes below this: it covers start-up (before the first beat) and the first
    slow step (a compile, a checkpoint's first upload)."""

    def __post_init__(self) -> None:
        if self.factor < 0 or (self.factor and self.factor < 1):
            raise RaylifeError(f"stall factor must be 0 (off) or >= 1, got {self.factor}")
        if self.floor_s <= 0:
            raise RaylifeError(f"stall floor must be > 0 seconds, got {self.floor_s}")

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    def bound_s(self, slowest_gap_s: float) -> float:
        return max(self.floor_s, self.factor * slowest_gap_s)

    def over_trial(self, restarts: int) -> StallPolicy:
        """A sweep driver's watch over a trial whose own run restarts itself up to `restarts`
        times, each after its workers' watch (this policy) fired: it waits out every attempt, plus
        one floor for start-up. The one formula for the driver's bound and the RayJob deadlines."""
        return StallPolicy(self.factor, (restarts + 2) * self.floor_s)


@dataclass(frozen=True)
class TrainConfig:
    """One Ray Train run of one model."""

    model: str
    """A declared model's name (raylife.catalog; `raylife catalog` lists them)."""
    hparams: Hyperparams
    """Hyperparameters (registry default, debug preset, or overridden by flags / Tune)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data source and split."""
    num_workers: int = 2
    """Ray Train workers (DDP processes)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL backend) instead of CPU (gloo)."""
    cpus_per_worker: float = 1.0
    """Logical CPUs Ray reserves per worker."""
    threads_per_worker: int = 1
    """torch intra-op threads per worker; workers x threads should not exceed the cores."""
    seed: int = 0
    """Seed of weight init and batch order (the data split has its own seed)."""
    run_name: str | None = None
    """Ray Train run name; a unique one is generated when None. Reusing a name resumes that run."""
    max_failures: int = 2
    """Times Ray Train restarts the worker group from the latest checkpoint after a failure."""
    checkpoints_to_keep: int = 2
    """Best checkpoints (by validation metric) kept on storage; the latest is always kept too."""
    report_interval_s: float = 2.0
    """Longest time between reports (each with a checkpoint) when nothing improves; epochs that
    improve the validation objective and the last epoch are always reported. 0 = every epoch.
    Bounds the work a worker failure can lose, without paying a checkpoint for every tiny epoch."""
    report_epochs: tuple[int, ...] = ()
    """Epochs reported whatever their metric: a Tune sweep sets ASHA's rung epochs here, so the
    scheduler judges every trial on its metric AT the rung (improvement-only reports would show
    it only best-so-far values, late)."""
    tracking: TrackingConfig | None = None
    """MLflow run of this run (rank 0 logs it); None: not tracked."""
    stall_factor: float = StallPolicy.factor
    """Watchdog: a run with no progress (a step, an epoch, a report) for this many times its
    slowest gap so far is stopped and retried under max_failures; 0 turns the watch off."""
    stall_floor_s: float = StallPolicy.floor_s
    """Watchdog: the least time without progress that counts as a stall (covers start-up)."""
    carried: dict[str, Any] | None = None
    """A user model's declaration and factory code, for processes that cannot see the models
    folder (Ray workers, trials); set by the driver (raylife.catalog.carry), None otherwise."""

    def __post_init__(self) -> None:
        _require(self.num_workers >= 1, f"num workers must be >= 1, got {self.num_workers}")
        _require(self.cpus_per_worker > 0, "cpus per worker must be > 0")
        _require(self.threads_per_worker >= 1, "threads per worker must be >= 1")
        _require(self.max_failures >= 0, "max failures must be >= 0")
        _require(self.checkpoints_to_keep >= 1, "checkpoints to keep must be >= 1")
        _require(self.report_interval_s >= 0, "report interval must be >= 0 seconds")
        StallPolicy(self.stall_factor, self.stall_floor_s)  # validates the watchdog fields

    @property
    def stall(self) -> StallPolicy:
        """The watchdog's policy for each worker of this run."""
        return StallPolicy(self.stall_factor, self.stall_floor_s)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TuneConfig:
    """One Ray Tune sweep: each trial is a Ray Train run built by the same build_trainer."""

    num_samples: int = 4
    """Trials to sample from the model's search space."""
    max_concurrent_trials: int | None = None
    """Trials running at once; default: as many as the cluster's CPUs hold."""
    workers_per_trial: int | None = None
    """Ray Train workers per trial; default: decided by measuring the model's step against an
    allreduce (raylife.training.sizing). 1: the trial's own process trains, with no worker group."""
    grace_period: int | None = None
    """ASHA: epochs every trial runs before it may be stopped (default: a sixth of the epochs)."""
    reduction_factor: int = 3
    """ASHA: keep the top 1/reduction_factor at each rung."""
    scheduler: Literal["asha", "fifo"] = "asha"
    """asha (early stopping) or fifo (every trial runs all epochs)."""
    seed: int = 0
    """Seed of the search algorithm's sampling."""
    name: str | None = None
    """Sweep name (Tune experiment); generated when None. Reusing a name resumes the sweep."""

    def __post_init__(self) -> None:
        _require(self.num_samples >= 1, "num samples must be >= 1")
        _require(
            self.max_concurrent_trials is None or self.max_concurrent_trials >= 1,
            "max concurrent trials must be >= 1",
        )
        _require(
            self.workers_per_trial is None or self.workers_per_trial >= 1,
            f"workers per trial must be >= 1, got {self.workers_per_trial}",
        )
        _require(self.grace_period is None or self.grace_period >= 1, "grace period must be >= 1")
        _require(self.reduction_factor >= 2, "reduction factor must be >= 2")
        _require(self.scheduler in ("asha", "fifo"), "scheduler must be asha or fifo")
