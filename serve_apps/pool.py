"""Serve application at `/`: the model pool, plus health, readiness, `/models` and the Open
Inference Protocol for every model on one base URL.

import_path `serve_apps.pool:build_app`, one application (`pool`, deployment `ModelPool`). Its
replicas serve every pooled model (`args.models`) at `/<model>`, each loaded on first use and
evicted beyond the budget (raylife.serve.pool); a model declared dedicated has an application of
its own (serve_apps.models), whose longer route prefix Serve matches first. The protocol's model
routes at the root answer a pooled model here and forward a dedicated one through its deployment
handle. Unknown routes get a JSON 404 naming the served models instead of the proxy's plain text.

No `from __future__ import annotations`: Serve reads the builder's argument type at runtime.
"""

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from raylife.errors import RaylifeError
from raylife.serve.endpoint_config import EndpointConfig
from raylife.serve.http import MAX_ROWS, error_response
from raylife.serve.oip import HEADER_LENGTH, OipCall, add_server_routes
from raylife.serve.rollout import RequestIds, current_request

MODEL_DEPLOYMENT = "ModelServer"
OIP_TAG = "Open Inference Protocol v2"


class PoolAppArgs(BaseModel):
    """`args` of the pool application in the Serve config."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=list, description="the pooled models")
    dedicated: list[str] = Field(
        default_factory=list, description="models with an application of their own (reported here)"
    )
    store: str = Field(default="", description="model store: folder or s3://bucket/prefix")
    max_models: int = Field(default=128, ge=1, description="models one replica keeps loaded")
    max_bytes: int = Field(
        default=1 << 30, ge=1, description="bytes of weights one replica keeps loaded"
    )
    max_concurrent_loads: int = Field(default=2, ge=1, description="loads from the store at once")
    max_rows: int = Field(default=MAX_ROWS, ge=1, description="most rows in one request")
    torch_threads: int = Field(default=1, ge=0, description="torch threads per replica")
    timeout_s: float = Field(default=2.0, gt=0, description="per-model answer deadline of /models")


class PoolUserConfig(BaseModel):
    """`user_config` of ModelPool: per pooled model, what a dedicated app's user_config holds
    (promotion, capture, rollout); changing it reconfigures the loaded models in place."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, EndpointConfig] = Field(default_factory=dict)


def build_root_api(pool: "PoolApp") -> FastAPI:
    app = FastAPI(title="raylife", description="The served models, health and the protocol root.")
    app.add_middleware(RequestIds)  # every answer's id, as a model app's (rollout.RequestIds)

    @app.get("/healthz", summary="Liveness of the Serve application")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready when every model answers with a version")
    async def readyz() -> JSONResponse:
        models = await pool.models()
        ready = all("version" in entry for entry in models.values())
        return JSONResponse({"ready": ready, "models": models}, status_code=200 if ready else 503)

    @app.get("/models", summary="What is served: model, version, promotion generation, route")
    async def models() -> dict[str, Any]:
        return await pool.models()

    @app.get("/pool", summary="This replica's pool: loaded models, bytes, budget, failures")
    async def pool_stats() -> dict[str, Any]:
        return pool.pool.stats() if pool.pool is not None else {}

    add_oip_routes(app, pool)

    @app.api_route(
        "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
    )
    async def not_found(request: Request, path: str) -> JSONResponse:
        return error_response(
            404,
            "not_found",
            f"no route {request.method} /{path}; models: "
            + ", ".join(f"POST /{name}" for name in pool.names())
            + "; see /models, /<model>/docs",
        )

    return app


def add_oip_routes(app: FastAPI, pool: "PoolApp") -> None:
    """The Open Inference Protocol at the root: what KServe, Triton and MLServer clients call
    with the bare base URL."""

    async def ready() -> JSONResponse:
        models = await pool.models()
        is_ready = all("version" in entry for entry in models.values())
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    add_server_routes(app, "/v2", ready)

    def route_for(what: str) -> Any:
        async def route(request: Request, name: str, version: str | None = None) -> Response:
            raw = await request.body() if what == "infer" else b""
            length = request.headers.get(HEADER_LENGTH)
            # The request's id (the root's RequestIds) goes with it, whichever replica answers.
            return await pool.oip(OipCall(what, name, version, raw, length, current_request.get()))

        return route

    for suffix, what, method in (
        ("", "metadata", "GET"),
        ("/ready", "ready", "GET"),
        ("/infer", "infer", "POST"),
    ):
        for path in (
            f"/v2/models/{{name}}{suffix}",
            f"/v2/models/{{name}}/versions/{{version}}{suffix}",
        ):
            app.add_api_route(
                path, route_for(what), methods=[method], tags=[OIP_TAG], summary=f"Model {what}"
            )


class PoolRouter:
    """ASGI: `/<pooled model>/...` goes to that model's own app (mounted at /<model>, as Serve
    mounts a dedicated one); everything else to the root's."""

    def __init__(self, root: Any, pool: "PoolApp") -> None:
        self.root, self.pool = root, pool

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.pool.pool is not None:
            prefix = scope.get("root_path", "")
            model = scope["path"][len(prefix) :].lstrip("/").split("/", 1)[0]
            if model in self.pool.pool.known:
                try:
                    entry = await self.pool.pool.get(model)
                except RaylifeError as exc:  # raylife.serve.pool.PoolError: 404 or 503
                    status = getattr(exc, "status", 503)
                    kind = "unknown_model" if status == 404 else "model_unavailable"
                    await error_response(status, kind, str(exc))(scope, receive, send)
                    return
                scoped = {**scope, "root_path": f"{prefix}/{model}"}
                await entry.app(scoped, receive, send)
                return
        await self.root(scope, receive, send)


class PoolApp:
    """What a pool replica does, apart from Serve (the deployment below adds Serve's hooks)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = PoolAppArgs.model_validate(args)
        self._handles: dict[str, Any] = {}
        self.pool: Any = None
        if self.args.models:
            # lazy: the models (torch) load in the replica only, never where Serve builds the app
            from raylife.serve.endpoint import ModelEndpoint
            from raylife.serve.pool import Budget
            from raylife.serve.pool import ModelPool as Pool

            a = self.args
            self.pool = Pool(
                a.models,
                Budget(a.max_models, a.max_bytes, a.max_concurrent_loads),
                lambda model: ModelEndpoint(model, a.store, a.torch_threads, a.max_rows),
            )

    def names(self) -> list[str]:
        return sorted([*self.args.models, *self.args.dedicated])

    def handle(self, name: str) -> Any:
        if name not in self._handles:  # one lookup per app, not one per request
            self._handles[name] = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)
        return self._handles[name]

    async def oip(self, call: OipCall) -> Response:
        """A protocol model route at the root: a pooled model answers here, a dedicated one
        through its handle; an unknown one is the protocol's 404."""
        name = call.name
        try:
            if self.pool is not None and name in self.pool.known:
                status, headers, body = await (await self.pool.get(name)).oip(call)
            elif name in self.args.dedicated:
                status, headers, body = await self.handle(name).oip.remote(call)
            else:
                return JSONResponse(
                    {"error": f"unknown model {name!r}; served: {', '.join(self.names())}"},
                    status_code=404,
                )
        except Exception as exc:  # a model that cannot load, or its replicas restarting: not a 500
            status = getattr(exc, "status", 503)
            return JSONResponse({"error": f"{exc}"[:500]}, status_code=status)
        return Response(body, status_code=status, headers=headers)

    async def _dedicated(self, name: str) -> dict[str, Any]:
        try:
            handle = self.handle(name)
            info = await asyncio.wait_for(handle.info.remote(), self.args.timeout_s)
        except Exception as exc:  # any failure means "not ready", reported as such
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return {
            "version": info["version"],
            "generation": info["generation"],
            "task": info["task"],
            "route": f"/{name}",
        }

    async def _pooled(self, name: str) -> dict[str, Any]:
        entry = self.pool.entries.get(name)
        if entry is not None:
            info = entry.service.info()
            return {
                "version": info["version"],
                "generation": info["generation"],
                "task": info["task"],
                "route": f"/{name}",
                "pooled": True,
                "loaded": True,
            }
        failed = self.pool.failure(name)
        if failed:
            return {"error": failed, "route": f"/{name}", "pooled": True}
        return await asyncio.to_thread(self._from_store, name)

    def _from_store(self, name: str) -> dict[str, Any]:
        from raylife.lifecycle.store import ModelStore

        store = ModelStore(self.args.store)
        pointer = store.pointer(name)
        if pointer is None:
            return {
                "error": f"no promoted version of {name!r}",
                "route": f"/{name}",
                "pooled": True,
            }
        task = store.metadata(name, pointer.version).get("task")
        return {
            "version": pointer.version,
            "generation": pointer.generation,
            "task": task,
            "route": f"/{name}",
            "pooled": True,
            "loaded": False,
        }

    async def models(self) -> dict[str, Any]:
        names = self.names()
        answers = await asyncio.gather(
            *(self._pooled(n) if n in self.args.models else self._dedicated(n) for n in names)
        )
        return dict(zip(names, answers, strict=True))

    def __del__(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.close()


@serve.deployment(name="ModelPool")
@serve.ingress()
class ModelPool(PoolApp):
    def __serve_build_asgi_app__(self) -> Any:
        return PoolRouter(build_root_api(self), self)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = PoolUserConfig.model_validate(user_config)
        if self.pool is not None:
            await self.pool.configure(config.models)


def build_app(args: PoolAppArgs) -> Application:
    return ModelPool.bind(args.model_dump())  # type: ignore[attr-defined]  # @serve.deployment adds bind
