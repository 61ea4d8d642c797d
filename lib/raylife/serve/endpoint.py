"""ModelEndpoint: one model's whole HTTP API in a replica, whoever hosts it.

A dedicated model application (serve_apps/models.py) holds one; the model pool
(serve_apps/pool.py, raylife.serve.pool) holds many, loaded on first use. Both answer the same
API because both are this: the promoted version (ModelService), its canary or shadow (Rollouts),
request capture, and the FastAPI app of raylife.serve.api (native rows, image upload, /info,
/healthz, /docs, /feedback, /rollout and the Open Inference Protocol under the model's prefix).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from raylife.serve.api import build_model_api
from raylife.serve.capture import CaptureWriter
from raylife.serve.endpoint_config import EndpointConfig
from raylife.serve.http import MAX_ROWS
from raylife.serve.model_service import ModelService
from raylife.serve.oip import Forwarded, OipCall
from raylife.serve.rollout import ChampionFn, Rollouts

OFFLOAD_MIN_VALUES = 2048
"""Requests with at least this many input values (160 Boston rows, 3 MNIST images) run off-loop."""


class ModelEndpoint:
    def __init__(
        self,
        model: str,
        store: str,
        torch_threads: int = 1,
        max_rows: int = MAX_ROWS,
        model_uri: str | None = None,
        tracking_uri: str | None = None,
        champion: ChampionFn | None = None,
    ) -> None:
        """champion: how the promoted version answers (default: one request at a time,
        `predict_champion`); a dedicated app passes its batching path."""
        self.champion = champion or self.predict_champion
        self.service = ModelService(
            model, store, torch_threads, model_uri=model_uri, tracking_uri=tracking_uri
        )
        self.capture = CaptureWriter(store, model)
        self.rollouts = Rollouts(model, self.service.device, self.service.load_version)
        self.app = build_model_api(
            self.service, self.predict, max_rows, rollouts=self.rollouts, capture=self.capture
        )
        self.config = EndpointConfig()

    @property
    def model(self) -> str:
        return self.service.model

    def nbytes(self) -> int:
        """What the loaded versions weigh (the pool's memory budget counts this)."""
        predictors = [self.service.current.predictor, self.rollouts.challenger]
        return sum(
            t.numel() * t.element_size()
            for p in predictors
            if p is not None
            for t in p.artifact.state_dict.values()
        )

    async def predict(self, X: np.ndarray) -> tuple[str, list[dict[str, Any]]]:
        """The answer of the version the rollout (if any) routes this request to."""
        return await self.rollouts.answer(X, self.service.current.version, self.champion)

    async def predict_champion(self, X: np.ndarray) -> tuple[str, list[dict[str, Any]]]:
        """Small requests run inline (a thread hop would cost ~40% of Iris throughput); large ones
        in a worker thread, so the event loop keeps taking requests meanwhile and Serve's
        autoscaler, which samples in-flight requests on this loop, sees them queue up."""
        if X.size >= OFFLOAD_MIN_VALUES:
            loaded, predictions = await asyncio.to_thread(self.service.predict, X)
        else:
            loaded, predictions = self.service.predict(X)
        return loaded.version, predictions

    async def configure(self, config: EndpointConfig) -> None:
        """Take a new promotion, capture fraction and rollout (what reconfigure() hands over)."""
        self.capture.fraction = config.capture
        # Load off the event loop: requests keep flowing on the old version until the swap.
        await asyncio.to_thread(self.service.reload)
        await self.rollouts.configure(config.rollout, self.service.check_schema)
        self.config = config

    async def oip(self, call: OipCall) -> Forwarded:
        """The Open Inference Protocol at the server's root forwards here."""
        forwarded: Forwarded = await self.app.state.oip.forward(call)
        return forwarded

    def close(self) -> None:
        """Write the captured answers still queued (a replica stops, or the pool evicts it)."""
        self.capture.close()
