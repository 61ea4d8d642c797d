"""The HTTP API of one model: typed request/response models generated from its input schema, routes,
and errors that always name the problem (JSON, 4xx, never a 5xx for bad input).

The same FastAPI app runs inside a Ray Serve replica (serve_apps/models.py) and in the bare uvicorn
baseline (raylife_dev.bare), so the load test compares servers, not APIs.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime and
# the request models are local variables it could not resolve from strings.
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from raylife.data.contracts import InputSchema, validate_rows
from raylife.errors import RaylifeError
from raylife.inference.predict import image_to_array
from raylife.serve.capture import CaptureWriter, new_request_id
from raylife.serve.http import MAX_ROWS, error_response
from raylife.serve.model_service import ModelService
from raylife.serve.oip import OipEndpoint, oip_router
from raylife.serve.rollout import RequestIds, Rollouts, add_rollout_routes, current_request
from raylife.tasks import TASKS

MAX_BODY_BYTES = 1024 * 1024

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite JSON number: strings, booleans, NaN and Infinity are refused, never coerced."""

PredictFn = Callable[[np.ndarray], Awaitable[tuple[str, list[dict[str, Any]]]]]
"""Raw rows (n, *shape) -> (version that answered, one prediction per row)."""


# --------------------------------------------------------------------------------------------------
# Request and response models, generated per model from its artifact


def row_type(model: str, schema: InputSchema) -> Any:
    """What one row may look like: named features or a flat list (tabular), or pixels (images)."""
    title = model.capitalize()
    flat = Annotated[
        list[Number],
        Field(
            min_length=schema.n_values,
            max_length=schema.n_values,
            description=f"{schema.n_values} numbers in the order of the input schema",
        ),
    ]
    if schema.feature_names:
        example: Any = dict(zip(schema.feature_names, schema.example, strict=False))
        named = create_model(  # type: ignore[call-overload]
            f"{title}Features",
            __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
            **{
                f"f{i}": (Number, Field(alias=name, title=name))
                for i, name in enumerate(schema.feature_names)
            },
        )
        return named | flat
    # Images: flat, the model's own nesting ([1][28][28]), or plain rows of pixels ([28][28]).
    shapes = [schema.shape] + ([schema.shape[1:]] if schema.shape[0] == 1 else [])
    nested = [_nested(shape) for shape in shapes]
    return Union[tuple([flat, *nested])]  # noqa: UP007 - a runtime-built union


def _nested(shape: list[int]) -> Any:
    """list of list ... of numbers with exactly `shape` lengths (grayscale values 0..255)."""
    inner: Any = Number
    for size in reversed(shape):
        inner = Annotated[list[inner], Field(min_length=size, max_length=size)]
    return inner


class _OneOrBatch(BaseModel):
    """Base of every request model: exactly one of `row` or `rows`."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _one_of(self) -> "_OneOrBatch":
        if (getattr(self, "row", None) is None) == (getattr(self, "rows", None) is None):
            raise ValueError('send exactly one of "row" (one input) or "rows" (a batch)')
        return self


def request_model(model: str, schema: InputSchema, max_rows: int) -> type[BaseModel]:
    row = row_type(model, schema)
    batch = Annotated[list[row], Field(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
    return create_model(
        f"{model.capitalize()}Request",
        __base__=_OneOrBatch,
        row=(Optional[row], Field(default=None, description="one input")),  # noqa: UP045
        rows=(
            Optional[batch],  # noqa: UP045
            Field(default=None, description=f"a batch of 1..{max_rows} inputs"),
        ),
    )


def response_model(model: str, task: str, labels: list[str]) -> type[BaseModel]:
    title = model.capitalize()
    if not TASKS[task].is_classification:
        prediction: Any = create_model(f"{title}Prediction", value=(float, ...))
    else:
        label_type: Any = Literal[tuple(labels)] if labels else str
        prediction = create_model(
            f"{title}Prediction",
            label=(label_type, ...),
            probabilities=(dict[str, float], Field(description="per class, summing to 1")),
        )
    return create_model(
        f"{title}Response",
        model=(str, ...),
        version=(str, Field(description="store version that produced the predictions")),
        predictions=(list[prediction], ...),
    )


def rows_to_array(request: BaseModel, schema: InputSchema) -> np.ndarray:
    """The typed request's rows through the same validation `raylife predict` uses (data.py):
    pydantic gives the OpenAPI schema and the 422s; validate_rows owns what a valid row is."""
    rows = [request.row] if request.rows is None else request.rows  # type: ignore[attr-defined]
    plain = [
        {name: getattr(row, f"f{i}") for i, name in enumerate(schema.feature_names)}
        if isinstance(row, BaseModel)
        else row
        for row in rows
    ]
    return validate_rows(plain, schema)


# --------------------------------------------------------------------------------------------------
def _describe(errors: list[Any]) -> str:
    """Readable pydantic errors. An input that matches none of a union's forms (named features, flat
    list, nested pixels) yields one error per element per form; keep the first error of each form."""
    kept: dict[tuple[str, ...], str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        form = next((i for i, part in enumerate(loc) if "[" in part or part[:1].isupper()), None)
        key = tuple(loc if form is None else loc[: form + 1])
        kept.setdefault(key, f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    parts = list(kept.values())
    more = f" (+{len(parts) - 6} more)" if len(parts) > 6 else ""
    return "; ".join(parts[:6]) + more


def install_error_handlers(app: FastAPI, media_types: dict[str, str]) -> None:
    """media_types: route path -> the content type it takes (to tell 415 from 422)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(error.get("type") == "json_invalid" for error in errors):
            return error_response(
                400, "malformed_json", f"the body is not valid JSON ({_describe(errors)})"
            )
        expected = media_types.get(request.scope.get("route_path", ""), "") or media_types.get(
            request.url.path.removeprefix(request.scope.get("root_path", "")), ""
        )
        sent = request.headers.get("content-type", "").split(";")[0].strip()
        if expected and sent != expected:
            return error_response(
                415,
                "unsupported_media_type",
                f"content type {sent or '(none)'!r} is not accepted here; send {expected}",
            )
        return error_response(
            422,
            "invalid_input",
            f"{_describe(errors)}. See the request schema at docs/ (OpenAPI)",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /models and <model>/docs"
        if exc.status_code == 400 and "parsing the body" in message:
            return error_response(
                400,
                "malformed_json",
                "the body is not valid JSON (undecodable bytes); send UTF-8 JSON",
            )
        return error_response(exc.status_code, kinds.get(exc.status_code, "http_error"), message)

    @app.exception_handler(RaylifeError)
    async def _raylife(request: Request, exc: RaylifeError) -> JSONResponse:
        return error_response(422, "invalid_input", str(exc))


def too_large(max_bytes: int) -> str:
    return f"request body above {max_bytes} bytes; send fewer rows per request"


class PrefixRootIsIndex:
    """POST /iris reaches the route "/" directly. Serve mounts the app at /iris, where Starlette sees
    an empty path and would answer 307 to /iris/, a round trip many clients do not follow for POST."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == scope.get("root_path", "") != "":
            scope = {**scope, "path": scope["path"] + "/"}
        await self.app(scope, receive, send)


class BodyLimit:
    """413 with a JSON error for bodies above max_bytes, declared (Content-Length) or streamed
    (chunked): the body is never buffered past the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode() or "0"
        if not declared.isdigit() or int(declared) > self.max_bytes:
            response = error_response(
                413 if declared.isdigit() else 400,
                "body_too_large" if declared.isdigit() else "bad_request",
                too_large(self.max_bytes)
                if declared.isdigit()
                else f"Content-Length {declared!r} is not a number",
            )
            return await response(scope, receive, send)
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # fastapi's HTTPException: FastAPI re-raises it as is while reading the body
                    raise HTTPException(413, detail=too_large(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


# --------------------------------------------------------------------------------------------------
# The app


def build_model_api(
    service: ModelService,
    predict: PredictFn,
    max_rows: int = MAX_ROWS,
    max_body_bytes: int = MAX_BODY_BYTES,
    rollouts: Rollouts | None = None,
    capture: CaptureWriter | None = None,
) -> FastAPI:
    """POST / (JSON rows), POST /image (PNG upload, image models), GET /info, GET /healthz, /docs;
    with `rollouts` (Serve): POST /feedback, GET /rollout. Every answer has an x-raylife-request-id.
    /v2/...: the Open Inference Protocol (raylife.serve.oip). `capture` samples answers to Parquet."""
    model, schema = service.model, service.schema
    Request_ = request_model(model, schema, max_rows)
    Response_ = response_model(model, service.task, service.label_names)
    app = FastAPI(
        title=f"raylife {model}",
        description=f"Predictions from the promoted version of {model!r}.",
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(PrefixRootIsIndex)
    app.add_middleware(RequestIds)
    media_types = {"/": "application/json"}
    if rollouts is not None:
        media_types["/feedback"] = "application/json"
        keep = capture.record_feedback if capture is not None else None
        add_rollout_routes(app, rollouts, lambda: service.label_names, keep)

    async def _predict(X: np.ndarray, route: str) -> tuple[str, list[dict[str, Any]]]:
        """Every route's answers come from here (and are captured here)."""
        started = time.perf_counter()
        version, predictions = await predict(X)
        if capture is not None:
            known = current_request.get()  # the RequestIds middleware's id: the answer's header
            request_id = known.request_id if known is not None else new_request_id()
            elapsed_ms = (time.perf_counter() - started) * 1e3
            capture.record(request_id, X, version, predictions, elapsed_ms, route)
        return version, predictions

    async def _answer(X: np.ndarray, route: str = "predict") -> dict[str, Any]:
        version, predictions = await _predict(X, route)
        return {"model": model, "version": version, "predictions": predictions}

    @app.post("/", response_model=Response_, summary=f"Predict with {model}")
    async def predict_rows(body: Request_) -> dict[str, Any]:  # type: ignore[valid-type]
        return await _answer(rows_to_array(body, schema))

    if schema.is_image:
        media_types["/image"] = "multipart/form-data"

        @app.post("/image", response_model=Response_, summary=f"Predict {model} from a PNG")
        async def predict_image(
            file: Annotated[UploadFile, File(description="grayscale PNG, white digit on black")],
        ) -> dict[str, Any]:
            return await _answer(image_to_array(await file.read(), schema), "image")

    @app.get("/info", summary="Served version, input schema and metrics")
    async def info() -> dict[str, Any]:
        return service.info() | ({"capture": capture.stats()} if capture is not None else {})

    @app.get("/healthz", summary="Liveness: the replica answers and holds a model")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model, "version": service.current.version}

    app.state.oip = OipEndpoint(service, _predict, max_rows)  # the root's /v2 forwards here too
    app.include_router(oip_router(app.state.oip))
    install_error_handlers(app, media_types)
    return app
