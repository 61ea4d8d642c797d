"""Every `RAYLIFE_*` environment variable is read here and nowhere else.

| variable          | field          | default                                         |
| ----------------- | -------------- | ----------------------------------------------- |
| RAYLIFE_HOME      | home           | ./.raylife                                      |
| RAYLIFE_STORE     | store_uri      | <home>/store (a folder or s3://bucket/prefix)   |
| RAYLIFE_RUNS      | runs_uri       | <home>/runs  (Ray Train / Tune storage_path)    |
| RAYLIFE_REGISTRY  | image_registry | the example ECR repository of the manifests     |

A flag (`--store`) wins over the variable; the variable over the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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

    @classmethod
    def from_env(cls, store: str | None = None, home: str | None = None) -> Settings:
        env = os.environ
        home_path = Path(home or env.get("RAYLIFE_HOME") or ".raylife").expanduser().resolve()
        return cls(
            home=home_path,
            store_uri=store or env.get("RAYLIFE_STORE") or str(home_path / "store"),
            runs_uri=env.get("RAYLIFE_RUNS") or str(home_path / "runs"),
            image_registry=env.get("RAYLIFE_REGISTRY") or EXAMPLE_REGISTRY,
        )

    @property
    def plots_dir(self) -> Path:
        return self.home / "plots"
