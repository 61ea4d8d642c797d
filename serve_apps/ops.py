"""Serve application at `/`: health, readiness and `/models` for the model applications.

Route prefixes are matched longest first, so this app only sees what no model app claims, and an
unknown route gets a JSON 404 instead of the proxy's plain-text one.
"""

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from raylife.serve.http import error_response

MODEL_DEPLOYMENT = "ModelServer"


class OpsAppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(description="names of the model applications to report on")
    timeout_s: float = Field(default=2.0, gt=0, description="per-model answer deadline")


def build_ops_api(ops: "Ops") -> FastAPI:
    app = FastAPI(title="raylife", description="Health, readiness and the served models.")

    @app.get("/healthz", summary="Liveness of the Serve application")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready when every model application answers with a version")
    async def readyz() -> JSONResponse:
        models = await ops.models()
        ready = all("version" in entry for entry in models.values())
        return JSONResponse({"ready": ready, "models": models}, status_code=200 if ready else 503)

    @app.get("/models", summary="What is served: model, version, promotion generation, route")
    async def models() -> dict[str, Any]:
        return await ops.models()

    @app.api_route(
        "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
    )
    async def not_found(request: Request, path: str) -> JSONResponse:
        return error_response(
            404,
            "not_found",
            f"no route {request.method} /{path}; models: "
            + ", ".join(f"POST /{name}" for name in ops.args.models)
            + "; see /models, /<model>/docs",
        )

    return app


@serve.deployment(name="Ops", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ops:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = OpsAppArgs.model_validate(args)
        self._handles: dict[str, Any] = {}

    def __serve_build_asgi_app__(self) -> Any:
        return build_ops_api(self)

    async def _one(self, name: str) -> dict[str, Any]:
        try:
            if name not in self._handles:  # one lookup per app, not one per /models call
                self._handles[name] = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)
            handle = self._handles[name]
            info = await asyncio.wait_for(handle.info.remote(), self.args.timeout_s)
        except Exception as exc:  # any failure means "not ready", reported as such
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return {
            "version": info["version"],
            "generation": info["generation"],
            "task": info["task"],
            "route": f"/{name}",
        }

    async def models(self) -> dict[str, Any]:
        answers = await asyncio.gather(*(self._one(name) for name in self.args.models))
        return dict(zip(self.args.models, answers, strict=True))


def build_app(args: OpsAppArgs) -> Application:
    return Ops.bind(args.model_dump())  # type: ignore[attr-defined]  # @serve.deployment adds bind
