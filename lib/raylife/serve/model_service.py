"""ModelService: the promoted version of one model, ready to answer requests; swaps versions safely.

Both servers share it: the Ray Serve replica (serve_apps/models.py) and the bare uvicorn baseline
(raylife_dev.bare). It knows nothing of HTTP or Ray.

The version comes from the store's promotion pointer, or, given a `model_uri`
(`models:/iris@champion`, `models:/iris/3`), from an MLflow registry (raylife.tracking.registry_mirror's
RegistryModel, imported only then): a reload then follows the alias.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raylife.data.contracts import InputSchema
from raylife.errors import ArtifactError
from raylife.inference.predict import Predictor
from raylife.lifecycle.store import ModelStore
from raylife.settings import Settings

if TYPE_CHECKING:
    from raylife.tracking.registry_mirror import Registered, RegistryModel


@dataclass(frozen=True)
class Loaded:
    """One immutable (predictor, version, generation): requests take a reference and keep it, so a
    swap never changes the model under a request that is already running."""

    predictor: Predictor
    version: str
    generation: int


class ModelService:
    def __init__(
        self,
        model: str,
        store_uri: str,
        torch_threads: int = 1,
        model_uri: str | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        # One intra-op thread per replica: these models are tiny and replicas scale out, so more
        # threads only fight each other (and the HTTP event loop) for the same cores.
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.model = model
        self.store = ModelStore(store_uri)
        # A Serve replica given GPUs sees them (CUDA_VISIBLE_DEVICES); one given none sees none.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._swap_lock = threading.Lock()
        self.registry = registry_model(model_uri, tracking_uri) if model_uri else None
        self.current = self._load_promoted()

    @property
    def schema(self) -> InputSchema:
        return self.current.predictor.artifact.schema

    @property
    def task(self) -> str:
        return self.current.predictor.artifact.task

    @property
    def label_names(self) -> list[str]:
        return list(self.current.predictor.artifact.label_names or [])

    @property
    def source(self) -> str:
        """Where versions come from: the store, or the registry model URI."""
        return self.registry.uri if self.registry is not None else self.store.uri

    def _load_promoted(self) -> Loaded:
        if self.registry is not None:
            return self._load_registered(self.registry.resolve())
        pointer = self.store.pointer(self.model)
        if pointer is None:
            raise ArtifactError(
                f"no promoted version of {self.model!r} in store {self.store.uri}; "
                f"run: raylife promote {self.model} VERSION"
            )
        version, artifact = self.store.load(self.model, pointer.version)
        return Loaded(Predictor(artifact, version, self.device), version, pointer.generation)

    def _load_registered(self, found: Registered) -> Loaded:
        assert self.registry is not None
        predictor = self.registry.load(found, self.device)
        if predictor.artifact.model != self.model:
            raise ArtifactError(
                f"{self.registry.uri} (MLflow version {found.mlflow_version}) is a "
                f"{predictor.artifact.model} model, not {self.model}; point model_uri at "
                f"models:/{self.model}@champion"
            )
        # No promotion generation in a registry: its own version number stands in.
        return Loaded(predictor, found.store_version, int(found.mlflow_version))

    def _unchanged(self) -> Loaded | Registered | None:
        """The current Loaded (generation refreshed) when the source still names its version;
        else what to load: the registry's version, or None (the store's pointer moved)."""
        if self.registry is not None:
            found = self.registry.resolve()
            return self.current if found.store_version == self.current.version else found
        pointer = self.store.pointer(self.model)
        if pointer is not None and pointer.version == self.current.version:
            current = self.current
            return Loaded(current.predictor, current.version, pointer.generation)
        return None

    def reload(self) -> bool:
        """Load the version the store's pointer names now, if it changed. True when swapped.

        A new version must take the same input schema: the HTTP request models were generated from
        the first one, and a silent change would turn valid requests into wrong answers.
        """
        with self._swap_lock:
            named = self._unchanged()
            if isinstance(named, Loaded):
                self.current = named
                return False
            loaded = self._load_promoted() if named is None else self._load_registered(named)
            self.check_schema(loaded.predictor)
            self.current = loaded
            return True

    def check_schema(self, predictor: Predictor) -> None:
        """Refuse a version whose inputs differ from the served one's (a swap or a challenger)."""
        old, new = self.schema, predictor.artifact.schema
        if (old.feature_names, old.shape) != (new.feature_names, new.shape):
            raise ArtifactError(
                f"{self.model} version {predictor.version} takes inputs {new.shape} "
                f"{new.feature_names[:4]}..., the served one {old.shape} {old.feature_names[:4]}...; "
                "a schema change needs a new deployment (redeploy the Serve app), not a swap"
            )

    def load_version(self, version: str) -> Predictor:
        """A version of this model from the store, beside the served one (a rollout's challenger)."""
        resolved, artifact = self.store.load(self.model, version)
        return Predictor(artifact, resolved, self.device)

    def predict(self, X: np.ndarray) -> tuple[Loaded, list[dict[str, Any]]]:
        """Raw inputs (n, *shape) -> (the version that answered, one prediction per row)."""
        loaded = self.current
        return loaded, loaded.predictor.predict_array(X)

    def info(self) -> dict[str, Any]:
        loaded = self.current
        artifact = loaded.predictor.artifact
        return {
            "model": self.model,
            "source": self.source,
            "version": loaded.version,
            "generation": loaded.generation,
            "device": self.device,
            "task": artifact.task,
            "labels": artifact.label_names,
            "input": artifact.schema.to_dict(),
            "metrics": artifact.metrics,
        }


def registry_model(model_uri: str, tracking_uri: str | None) -> RegistryModel:
    """The MLflow registry model a service loads (tracking_uri: default RAYLIFE_MLFLOW_URI)."""
    # lazy: imports mlflow, needed only on this path
    from raylife.tracking.registry_mirror import RegistryModel

    uri = tracking_uri or Settings.from_env().mlflow_uri
    if uri is None:
        raise ArtifactError(
            f"model_uri {model_uri} needs an MLflow registry, but tracking is off "
            "(RAYLIFE_MLFLOW_URI=off); set tracking_uri in the app's args"
        )
    return RegistryModel(model_uri, uri)
