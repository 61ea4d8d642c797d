"""Shared fixtures: tiny trained artifacts (plain torch, no Ray) and an isolated RAYLIFE_HOME."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from raylife.catalog.architectures import build_model
from raylife.catalog.lookup import get_spec
from raylife.config import DataConfig, TrainConfig
from raylife.data.contracts import PreparedData
from raylife.data.prepare import prepare
from raylife.lifecycle.artifact import Artifact
from raylife.training.loop import as_tensors, fit, make_loader, make_optimizer, seed_everything
from raylife.training.train import make_artifact, model_args_for

_DATA_CACHE: dict[str, PreparedData] = {}


def prepared(model: str) -> PreparedData:
    if model not in _DATA_CACHE:
        _DATA_CACHE[model] = prepare(get_spec(model), DataConfig())
    return _DATA_CACHE[model]


def quick_artifact(model: str, epochs: int = 1) -> Artifact:
    """An artifact trained for a moment with the plain loop (the same steps Ray Train runs);
    epochs=0: untrained weights, for tests that exercise the serving path, not the answers."""
    spec = get_spec(model)
    cfg = TrainConfig(model=model, hparams=spec.debug.replace(epochs=max(epochs, 1)))
    data = prepared(model)
    seed_everything(0)
    module = build_model(spec.architecture, model_args_for(cfg, data))
    optimizer = make_optimizer(cfg.hparams, module.parameters())
    if epochs:  # the same epochs a Ray Train worker runs (loop.fit), without Ray
        loader = make_loader(data.train, spec.task_obj, cfg.hparams.batch_size, 0)
        for _ in fit(module, loader, spec.task_obj, optimizer, cfg.hparams):
            pass
    return make_artifact(
        cfg, data, module, history=[], metrics={"val_accuracy": 0.5}, run_name="unit"
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated RAYLIFE_HOME (store, runs, plots) per test."""
    monkeypatch.setenv("RAYLIFE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYLIFE_STORE", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="session", autouse=True)
def _no_tracking_by_default():
    """Tests track nothing in MLflow unless they ask for `tracked_home`: a new local store costs
    ~10 s of schema migrations per RAYLIFE_HOME, and a developer's RAYLIFE_MLFLOW_URI must not
    receive test runs. Subprocesses the tests start inherit it."""
    previous = os.environ.get("RAYLIFE_MLFLOW_URI")
    os.environ["RAYLIFE_MLFLOW_URI"] = "off"
    yield
    if previous is None:
        os.environ.pop("RAYLIFE_MLFLOW_URI", None)
    else:
        os.environ["RAYLIFE_MLFLOW_URI"] = previous


def mlflow_template() -> Path:
    """An empty, migrated MLflow SQLite store (creating one takes ~10 s of schema migrations),
    kept in the temp folder per MLflow version and copied by the tests that track."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    path = Path(tempfile.gettempdir()) / f"raylife-mlflow-template-{mlflow.__version__}.db"
    if not path.exists():
        building = path.with_suffix(f".{os.getpid()}.tmp")
        uri = f"sqlite:///{building}"
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
        os.replace(building, path)  # another session may race us: either copy is complete
    return path


@pytest.fixture(scope="session")
def _mlflow_template() -> Path:
    return mlflow_template()


@pytest.fixture
def tracked_home(home: Path, monkeypatch: pytest.MonkeyPatch, _mlflow_template: Path) -> Path:
    """`home` with MLflow tracking on, into its own local store (the default location)."""
    target = home / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True)
    shutil.copy(_mlflow_template, target)
    monkeypatch.delenv("RAYLIFE_MLFLOW_URI", raising=False)
    return home


__all__ = ["as_tensors", "prepared", "quick_artifact"]
