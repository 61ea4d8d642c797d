"""Serve application for one model: a FastAPI ingress replica that holds the promoted version.

import_path `serve_apps.models:build_app`, one application per model (route `/<model>`). The replica
loads the store's promoted version at start and again whenever `user_config.promotion` changes, so a
promotion reaches running replicas without a restart (see `raylife promote`).

No `from __future__ import annotations`: Serve reads the builder's argument type at runtime to
validate the config's `args` with it.
"""

import asyncio
from itertools import pairwise
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from raylife.catalog.declaration import NAME_PATTERN
from raylife.serve.http import MAX_ROWS
from raylife.serve.rollout import Rollout

# What only a replica runs (torch, the model, the API) is imported in the replica: the Serve
# controller builds each application from this module in a process of its own, and importing
# torch there cost ~4 s of CPU per application (measured on 2 cores).

OFFLOAD_MIN_VALUES = 2048
"""Requests with at least this many input values (160 Boston rows, 3 MNIST images) run off-loop."""


class ModelAppArgs(BaseModel):
    """`args` of a model application in the Serve config."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        pattern=NAME_PATTERN, description="a declared model's name (its versions are in the store)"
    )
    store: str = Field(description="model store: folder or s3://bucket/prefix")
    max_rows: int = Field(default=MAX_ROWS, ge=1, description="most rows in one request")
    torch_threads: int = Field(
        default=1, ge=0, description="torch threads per replica (0: torch's default)"
    )
    model_uri: str | None = Field(
        default=None,
        description="serve this MLflow registry model instead of the store's promoted version: "
        "models:/<name>@<alias> (followed on every promotion notice) or models:/<name>/<version>",
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow registry of model_uri (default: $RAYLIFE_MLFLOW_URI)"
    )

    def model_post_init(self, context: Any) -> None:
        # The full parse is the replica's (raylife.tracking.registry_mirror imports mlflow: seconds).
        if self.model_uri is not None and not self.model_uri.startswith(
            (f"models:/{self.model}@", f"models:/{self.model}/")
        ):
            raise ValueError(
                f"model_uri {self.model_uri!r} is not models:/{self.model}@<alias> or "
                f"models:/{self.model}/<version>; point it at this app's model"
            )


class Batching(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    max_batch_size: int = Field(default=16, ge=1)
    wait_timeout_s: float = Field(default=0.002, ge=0)


class ModelUserConfig(BaseModel):
    """`user_config` of ModelServer: changing it calls reconfigure() on running replicas."""

    model_config = ConfigDict(extra="forbid")
    promotion: int = Field(
        default=0, description="bump to make replicas reload the promoted version"
    )
    batching: Batching = Field(default_factory=Batching)
    capture: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="fraction of requests captured to <store>/<model>/captures (Parquet); 0: off",
    )
    rollout: Rollout | None = Field(
        default=None, description="a challenger beside the champion (raylife promote --canary)"
    )


@serve.deployment(name="ModelServer")
@serve.ingress()
class ModelServer:
    def __init__(self, args: dict[str, Any]) -> None:
        from raylife.serve.capture import CaptureWriter
        from raylife.serve.model_service import ModelService
        from raylife.serve.rollout import Rollouts

        self.args = ModelAppArgs.model_validate(args)
        self.service = ModelService(
            self.args.model,
            self.args.store,
            self.args.torch_threads,
            model_uri=self.args.model_uri,
            tracking_uri=self.args.tracking_uri,
        )
        self.batching = Batching()
        self.capture = CaptureWriter(self.args.store, self.args.model)
        self.rollouts = Rollouts(self.args.model, self.service.device, self.service.load_version)

    def __serve_build_asgi_app__(self) -> Any:
        from raylife.serve.api import build_model_api

        return build_model_api(
            self.service,
            self.predict,
            self.args.max_rows,
            rollouts=self.rollouts,
            capture=self.capture,
        )

    async def predict(self, X: np.ndarray) -> tuple[str, list[dict[str, Any]]]:
        """The answer of the version the rollout (if any) routes this request to."""
        return await self.rollouts.answer(X, self.service.current.version, self.predict_champion)

    async def predict_champion(self, X: np.ndarray) -> tuple[str, list[dict[str, Any]]]:
        """Small requests run inline (a thread hop would cost ~40% of Iris throughput); large ones
        in a worker thread, so the event loop keeps taking requests meanwhile and Serve's
        autoscaler, which samples in-flight requests on this loop, sees them queue up."""
        if self.batching.enabled:
            result: tuple[str, list[dict[str, Any]]] = await self._predict_batch(X)
            return result
        if X.size >= OFFLOAD_MIN_VALUES:
            loaded, predictions = await asyncio.to_thread(self.service.predict, X)
        else:
            loaded, predictions = self.service.predict(X)
        return loaded.version, predictions

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _predict_batch(
        self, batch: list[np.ndarray]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """Concurrent requests as one forward pass; each gets its own rows back."""
        loaded, predictions = self.service.predict(np.concatenate(batch))
        bounds = np.cumsum([0] + [len(X) for X in batch])
        return [(loaded.version, predictions[a:b]) for a, b in pairwise(bounds)]

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ModelUserConfig.model_validate(user_config)
        self.batching = config.batching
        self.capture.fraction = config.capture
        self._predict_batch.set_max_batch_size(config.batching.max_batch_size)  # type: ignore[attr-defined]  # @serve.batch
        self._predict_batch.set_batch_wait_timeout_s(config.batching.wait_timeout_s)  # type: ignore[attr-defined]
        # Load off the event loop: requests keep flowing on the old version until the swap.
        await asyncio.to_thread(self.service.reload)
        await self.rollouts.configure(config.rollout, self.service.check_schema)

    async def info(self) -> dict[str, Any]:
        return self.service.info()

    def __del__(self) -> None:
        """Serve calls this on a graceful replica stop (after draining requests): the captured
        answers still queued are written before the process goes."""
        if hasattr(self, "capture"):
            self.capture.close()


def build_app(args: ModelAppArgs) -> Application:
    return ModelServer.bind(args.model_dump())  # type: ignore[attr-defined]  # @serve.deployment adds bind
