"""Every `RAYLIFE_*` environment variable is read here and nowhere else.

| variable          | field          | default                                         |
| ----------------- | -------------- | ----------------------------------------------- |
| RAYLIFE_HOME      | home           | ./.raylife                                      |
| RAYLIFE_STORE     | store_uri      | <home>/store (a folder or s3://bucket/prefix)   |
| RAYLIFE_RUNS      | runs_uri       | <home>/runs  (Ray Train / Tune storage_path)    |
| RAYLIFE_REGISTRY  | image_registry | the example ECR repository of the manifests     |
| RAYLIFE_MLFLOW_URI| mlflow_uri     | sqlite:///<home>/mlflow/mlflow.db; `off` = none |

A flag (`--store`, `--tracking-uri`, `--no-tracking`) wins over the variable; the variable over
the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TRACKING_OFF = "off"
"""RAYLIFE_MLFLOW_URI=off turns MLflow tracking off, as --no-tracking does (CI, benchmarks)."""

EXAMPLE_REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com/raylife"
"""Placeholder ECR repository: `make kuberay-manifests REGISTRY=...` sets RAYLIFE_REGISTRY."""


@dataclass(frozen=True)
class Settings:
    """Where raylife keeps its files and which image the manifests name."""

    home: Path
    """Working folder: store/, runs/ and plots/ live here."""
    store_uri: str
    """Model store: a local folder or s3://bucket/prefix."""
    runs_uri: str
    """Ray Train / Tune storage: checkpoints and results of every run and sweep (folder or s3://)."""
    image_registry: str = EXAMPLE_REGISTRY
    """Container registry the KubeRay manifests pull raylife's images from."""
    mlflow_uri: str | None = None
    """MLflow tracking URI: the local store under home (sqlite, no server to start) or a tracking
    server (http://...); None: runs and store versions are not tracked."""

    @classmethod
    def from_env(
        cls,
        store: str | None = None,
        home: str | None = None,
        tracking_uri: str | None = None,
        tracking: bool = True,
    ) -> Settings:
        """tracking_uri (--tracking-uri) wins over RAYLIFE_MLFLOW_URI; tracking=False
        (--no-tracking) turns tracking off whatever they say."""
        env = os.environ
        home_path = Path(home or env.get("RAYLIFE_HOME") or ".raylife").expanduser().resolve()
        mlflow_uri = tracking_uri or env.get("RAYLIFE_MLFLOW_URI") or local_mlflow_uri(home_path)
        return cls(
            home=home_path,
            store_uri=store or env.get("RAYLIFE_STORE") or str(home_path / "store"),
            runs_uri=env.get("RAYLIFE_RUNS") or str(home_path / "runs"),
            image_registry=env.get("RAYLIFE_REGISTRY") or EXAMPLE_REGISTRY,
            mlflow_uri=mlflow_uri if tracking and mlflow_uri != TRACKING_OFF else None,
        )

    @property
    def mlflow_dir(self) -> Path:
        """The local MLflow store: mlflow.db (runs, registry) and artifacts/."""
        return self.home / "mlflow"

    @property
    def mlflow_artifacts(self) -> str | None:
        """Where experiments of the local store keep their artifacts (None: a server decides)."""
        if self.mlflow_uri != local_mlflow_uri(self.home):
            return None
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def plots_dir(self) -> Path:
        return self.home / "plots"


def local_mlflow_uri(home: Path) -> str:
    """The default tracking store: one SQLite file under home (MLflow's recommended local backend;
    its plain-folder store is deprecated)."""
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
