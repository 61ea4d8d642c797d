"""Serve application for one model: a FastAPI ingress replica that holds the promoted version.

import_path `serve_apps.models:build_app`, one application per model (route `/<model>`). The replica
loads the store's promoted version at start and again whenever `user_config.promotion` changes, so a
promotion reaches running replicas without a restart (see `raylife promote`).

No `from __future__ import annotations`: Serve reads the builder's argument type at runtime to
validate the config's `args` with it.
"""

from itertools import pairwise
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from raylife.catalog.declaration import NAME_PATTERN
from raylife.serve.endpoint_config import EndpointConfig
from raylife.serve.http import MAX_ROWS
from raylife.serve.oip import Forwarded, OipCall

# What only a replica runs (torch, the model, the API) is imported in the replica: the Serve
# controller builds each application from this module in a process of its own, and importing
# torch there cost ~4 s of CPU per application (measured on 2 cores).


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


class ModelUserConfig(EndpointConfig):
    """`user_config` of ModelServer: changing it calls reconfigure() on running replicas."""

    batching: Batching = Field(default_factory=Batching)


@serve.deployment(name="ModelServer")
@serve.ingress()
class ModelServer:
    def __init__(self, args: dict[str, Any]) -> None:
        from raylife.serve.endpoint import ModelEndpoint

        self.args = ModelAppArgs.model_validate(args)
        self.endpoint = ModelEndpoint(
            self.args.model,
            self.args.store,
            self.args.torch_threads,
            self.args.max_rows,
            model_uri=self.args.model_uri,
            tracking_uri=self.args.tracking_uri,
            champion=self.predict_champion,  # batching is this app's own
        )
        self.batching = Batching()

    def __serve_build_asgi_app__(self) -> Any:
        return self.endpoint.app

    async def predict_champion(self, X: np.ndarray) -> tuple[str, list[dict[str, Any]]]:
        """Concurrent requests in one forward pass when batching is on, else one at a time."""
        if self.batching.enabled:
            result: tuple[str, list[dict[str, Any]]] = await self._predict_batch(X)
            return result
        return await self.endpoint.predict_champion(X)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _predict_batch(
        self, batch: list[np.ndarray]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """Concurrent requests as one forward pass; each gets its own rows back."""
        loaded, predictions = self.endpoint.service.predict(np.concatenate(batch))
        bounds = np.cumsum([0] + [len(X) for X in batch])
        return [(loaded.version, predictions[a:b]) for a, b in pairwise(bounds)]

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ModelUserConfig.model_validate(user_config)
        self.batching = config.batching
        self._predict_batch.set_max_batch_size(config.batching.max_batch_size)  # type: ignore[attr-defined]  # @serve.batch
        self._predict_batch.set_batch_wait_timeout_s(config.batching.wait_timeout_s)  # type: ignore[attr-defined]
        await self.endpoint.configure(config)

    async def info(self) -> dict[str, Any]:
        return self.endpoint.service.info()

    async def oip(self, call: OipCall) -> Forwarded:
        """The Open Inference Protocol at the server's root (serve_apps.pool) forwards here."""
        return await self.endpoint.oip(call)

    def __del__(self) -> None:
        """Serve calls this on a graceful replica stop (after draining requests): the captured
        answers still queued are written before the process goes."""
        if hasattr(self, "endpoint"):
            self.endpoint.close()


def build_app(args: ModelAppArgs) -> Application:
    return ModelServer.bind(args.model_dump())  # type: ignore[attr-defined]  # @serve.deployment adds bind
