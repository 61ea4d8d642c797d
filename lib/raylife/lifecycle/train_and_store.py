"""Train or sweep, then register the chosen checkpoint in the store (and promote it, through the
promotion gate: a refused version stays registered, not promoted, and `Registered` says why).

Each function is a short list of named steps over the modules that do the work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylife.catalog.lookup import get_spec
from raylife.config import TrackingConfig, TrainConfig, TuneConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.lifecycle.artifact import Artifact
from raylife.lifecycle.evaluate import (
    evaluate_artifact,
    test_data_for,
    with_validation_predictions,
)
from raylife.lifecycle.promotion import Outcome
from raylife.lifecycle.promotion import promote as gated_promote
from raylife.lifecycle.store import ModelStore, Pointer, load_artifact_dir
from raylife.settings import Settings
from raylife.tracking import runs as tracking
from raylife.training.train import TrainOutcome, new_run_name, run_training
from raylife.training.tune import SweepOutcome, run_sweep

if TYPE_CHECKING:  # the mirror imports mlflow: only when tracking is on
    from raylife.tracking.registry_mirror import Mirror


@dataclass
class Registered:
    version: str
    artifact: Artifact
    pointer: Pointer | None
    """Set when the version was promoted."""
    promotion: Outcome | None = None
    """What the promotion gate decided (None: promotion was not asked for)."""
    mirror_problem: str = ""
    """Why the version is not (yet) in the MLflow registry ("" = mirrored, or no mirror)."""

    @property
    def promotion_line(self) -> str:
        """One line for run output: promoted, or registered but not promoted and why."""
        if self.promotion is None:
            line = f"promote it with: raylife promote {self.artifact.model} {self.version}"
        elif self.promotion.action == "refuse":
            line = f"{self.artifact.model} {self.version} registered, {self.promotion.line}"
        else:
            line = self.promotion.line
        return f"{line}; {self.mirror_problem}" if self.mirror_problem else line


@contextmanager
def local_checkpoint(path: str) -> Iterator[Path]:
    """A local folder for a checkpoint path that may live on S3 (Ray downloads it)."""
    if "://" not in path:
        yield Path(path)
        return
    from ray.train import Checkpoint

    with Checkpoint(path=path).as_directory() as folder:
        yield Path(folder)


def register_checkpoint(
    store: ModelStore,
    checkpoint_path: str,
    run_info: dict[str, Any],
    promote: bool,
    data: PreparedData | None = None,
    mirror: Mirror | None = None,
) -> Registered:
    """Checkpoint -> test metrics -> new store version -> (optionally) promoted, if the gate lets
    it: a refusal leaves the version registered and the champion serving. With a mirror, the
    version is also an MLflow Model (best-effort: a mirror failure is reported, never raised)."""
    with local_checkpoint(checkpoint_path) as folder:
        artifact = load_artifact_dir(folder)
    artifact.run = {**artifact.run, "checkpoint": checkpoint_path, **run_info}
    data = data or test_data_for(artifact)
    artifact.metrics = {**artifact.metrics, **evaluate_artifact(artifact, data)}
    artifact.profile = with_validation_predictions(artifact, data)
    artifact.created_at = ""
    version = store.register(artifact)
    problem = mirror.add_version(store, artifact.model, version, artifact) if mirror else ""
    if not promote:
        return Registered(version, artifact, None, mirror_problem=problem)
    outcome = gated_promote(store, artifact.model, version, data=data, mirror=mirror)
    pointer = outcome.pointer if outcome.action == "promote" else None
    return Registered(version, artifact, pointer, outcome, problem)


def train_and_register(
    cfg: TrainConfig, settings: Settings, promote: bool, data: PreparedData | None = None
) -> tuple[TrainOutcome, Registered]:
    # Prepared once: training and the test-split evaluation share it (a URL table is read once).
    data = data or prepare(get_spec(cfg.model), cfg.data)
    cfg = tracking.prepare(cfg.replace(tracking=tracking.config_for(settings)))
    cfg = cfg.replace(run_name=cfg.run_name or new_run_name(cfg.model))
    try:
        outcome = run_training(cfg, settings, data)
    except BaseException:
        tracking.end_run(cfg.tracking, str(cfg.run_name), "FAILED")
        raise
    registered = register_checkpoint(
        ModelStore(settings.store_uri),
        outcome.checkpoint_path,
        {"source": "train"},
        promote,
        data,
        _mirror(cfg.tracking),
    )
    return outcome, registered


def tune_and_register(
    base: TrainConfig,
    tune_cfg: TuneConfig,
    settings: Settings,
    promote: bool,
    data: PreparedData | None = None,
) -> tuple[SweepOutcome, Registered]:
    data = data or prepare(get_spec(base.model), base.data)
    base = tracking.prepare(base.replace(tracking=tracking.config_for(settings)))
    name = tune_cfg.name or new_run_name(base.model, kind="tune")
    tune_cfg = dataclasses.replace(tune_cfg, name=name)
    sweep = tracking.start_sweep(base, tune_cfg, data)  # the parent run its trials nest under
    try:
        outcome = run_sweep(base.replace(tracking=sweep.tracking), tune_cfg, settings, data)
    except BaseException:
        tracking.finish_sweep(sweep, None, {}, failed=True)
        raise
    tracking.finish_sweep(sweep, outcome.trials, outcome.best_metrics)
    info = {
        "source": "tune",
        "sweep": outcome.name,
        "trial_hparams": {k: _plain(v) for k, v in outcome.best_config.items()},
    }
    registered = register_checkpoint(
        ModelStore(settings.store_uri),
        outcome.checkpoint_path,
        info,
        promote,
        data,
        _mirror(base.tracking),
    )
    return outcome, registered


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _mirror(config: TrackingConfig | None) -> Mirror | None:
    """The store's MLflow registry mirror; None when tracking is off."""
    if config is None:
        return None
    # lazy: the mirror imports mlflow (seconds), needed only when tracking is on
    from raylife.tracking.registry_mirror import Mirror

    return Mirror(config)
