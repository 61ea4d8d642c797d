"""The Open Inference Protocol v2 (REST) of one model: what KServe, Triton, MLServer and Seldon clients
speak, mapped onto the same `answer` (ModelService/Predictor) as the native route.

Two places answer it. At the server's root (`serve_apps.pool`): a standard client pointed at the
base URL `http://host:8000` (tritonclient's `url="host:8000"`, kserve's `InferenceRESTClient`)
reaches every model there; `/v2/models/<m>/...` is forwarded to the model's replica through a
deployment handle (one hop more). And under each model's own prefix (`/<model>/v2/...`), in the
model's FastAPI app, with no extra hop: a client with the base URL `http://host:8000/<model>`.

Tensors: one input named `input`, shape `[n, *input shape]` (or `[n, values per row]`), any numeric
datatype; outputs `predictions` (class labels as BYTES, or regression values as FP64) and, for
classifiers, `probabilities` (FP32 `[n, classes]`, in the label order of the model's metadata).
Triton's binary tensor extension is supported both ways (`binary_data_size` on inputs, the
`binary_data` / `binary_data_output` parameters on outputs). Every answer carries an `id`: the
request's, else the answer's `x-raylife-request-id` (the id of its captured rows). Errors are the protocol's
`{"error": "<what is wrong and how to fix it>"}`: 400 for a bad request, 404 for an unknown model or
version.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.
import json
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raylife.data.contracts import InputSchema, flatten, validate_rows
from raylife.errors import RaylifeError
from raylife.serve.rollout import RequestInfo, current_request

if TYPE_CHECKING:  # imports torch: the root app (serve_apps.pool) builds without it
    from raylife.serve.model_service import ModelService

INPUT_NAME = "input"
HEADER_LENGTH = "inference-header-content-length"
"""Triton's binary extension: the JSON part's size; binary tensor bytes follow it in the body."""

NUMERIC: dict[str, str] = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
"""Input datatypes taken (little-endian, as the binary extension sends them)."""

AnswerFn = Callable[[np.ndarray, str], Awaitable[tuple[str, list[dict[str, Any]]]]]
"""Raw rows (n, *shape), route name -> (version that answered, one prediction per row)."""


class OipError(RaylifeError):
    """A request the protocol refuses: answered as {"error": message} with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------
# The request body (also the OpenAPI document the fuzzer reads)


class TensorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int] = Field(description="[rows, *input shape], every size >= 0")
    datatype: str = Field(description="FP32 (or any numeric datatype)")
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(default=None, description="row-major, flat or nested")


class OutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorIn] = Field(min_length=1)
    outputs: list[OutputRequest] | None = None


# --------------------------------------------------------------------------------------------------
# Request -> rows


def split_body(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON request and the binary tensor bytes after it (binary extension)."""
    size = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise OipError(
                f"Inference-Header-Content-Length {header_length!r} is not a size within the "
                f"{len(body)}-byte body; send the JSON part's length in bytes"
            )
        size = int(header_length)
    try:
        request = InferenceRequest.model_validate_json(body[:size])
    except ValidationError as exc:
        raise OipError(f"invalid inference request: {_describe(exc)}") from None
    return request, body[size:]


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:4]]
    return "; ".join(parts) + (f" (+{len(errors) - 4} more)" if len(errors) > 4 else "")


def input_spec(schema: InputSchema) -> dict[str, Any]:
    return {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *schema.shape]}


def decode_inputs(
    request: InferenceRequest, binary: bytes, schema: InputSchema, max_rows: int
) -> np.ndarray:
    """The one input tensor -> rows (n, *schema.shape), through the native route's validation."""
    spec = input_spec(schema)
    wanted = f"one tensor named {INPUT_NAME!r}, shape {spec['shape']}, datatype FP32"
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [tensor.name for tensor in request.inputs]
        raise OipError(f"input tensors {names} are not what this model takes: {wanted}")
    tensor = request.inputs[0]
    if tensor.datatype not in NUMERIC:
        raise OipError(
            f"datatype {tensor.datatype!r} of {INPUT_NAME!r} is not numeric; send FP32 "
            f"(or one of {', '.join(NUMERIC)})"
        )
    rows = tensor.shape[0] if tensor.shape else 0
    if tensor.shape[1:] not in (schema.shape, [schema.n_values]) or not 1 <= rows <= max_rows:
        raise OipError(
            f"shape {tensor.shape} of {INPUT_NAME!r} is not [rows, *{schema.shape}] "
            f"(or [rows, {schema.n_values}]) with 1..{max_rows} rows"
        )
    values = _tensor_values(tensor, binary, int(np.prod(tensor.shape)))
    # validate_rows owns what a valid row is (finite numbers), for this route as for the native one
    return validate_rows(values.reshape(rows, -1).tolist(), schema)


def _tensor_values(tensor: TensorIn, binary: bytes, count: int) -> np.ndarray:
    dtype = np.dtype(NUMERIC[tensor.datatype])
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if size != len(binary) or size != count * dtype.itemsize:
            raise OipError(
                f"binary_data_size {size} of {INPUT_NAME!r} must equal the {len(binary)} bytes "
                f"after the JSON header and shape x itemsize = {count * dtype.itemsize}"
            )
        return np.frombuffer(binary, dtype=dtype)
    if tensor.data is None:
        raise OipError(f"tensor {INPUT_NAME!r} has no data; send data (or binary_data_size)")
    flat = flatten(tensor.data)
    if len(flat) != count:
        raise OipError(
            f"tensor {INPUT_NAME!r} has {len(flat)} elements, its shape {tensor.shape} says "
            f"{count}; send exactly shape's product of values"
        )
    integral = dtype.kind in "iu"
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, int if integral else (int, float)):
            raise OipError(
                f"{value!r:.40} in {INPUT_NAME!r} is not a {tensor.datatype} value; send numbers"
            )
    try:
        with np.errstate(over="raise"):  # 1e308 as FP32 is not silently infinity
            return np.asarray(flat, dtype=dtype)
    except (OverflowError, FloatingPointError):
        raise OipError(f"a value in {INPUT_NAME!r} is out of {tensor.datatype}'s range") from None


# --------------------------------------------------------------------------------------------------
# Predictions -> output tensors


def output_specs(labels: list[str]) -> list[dict[str, Any]]:
    if not labels:
        return [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    return [
        {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
    ]


def encode_outputs(predictions: list[dict[str, Any]], labels: list[str]) -> dict[str, np.ndarray]:
    if not labels:
        return {"predictions": np.array([p["value"] for p in predictions], dtype=np.float64)}
    return {
        "predictions": np.array([p["label"] for p in predictions], dtype=object),
        "probabilities": np.array(
            [[p["probabilities"][name] for name in labels] for p in predictions], dtype=np.float32
        ),
    }


def wanted_outputs(request: InferenceRequest, known: list[str]) -> dict[str, bool]:
    """Output name -> send as binary, in the order asked (all outputs when none is named)."""
    default = bool((request.parameters or {}).get("binary_data_output", False))
    if request.outputs is None:
        return dict.fromkeys(known, default)
    unknown = [o.name for o in request.outputs if o.name not in known]
    if unknown:
        raise OipError(f"unknown outputs {unknown}; this model answers {known}")
    for output in request.outputs:
        if (output.parameters or {}).get("class_count"):
            raise OipError(
                "the classification extension (class_count) is not supported; "
                "ask for 'probabilities' instead"
            )
    return {o.name: bool((o.parameters or {}).get("binary_data", default)) for o in request.outputs}


def infer_response(
    request: InferenceRequest,
    model: str,
    version: str,
    tensors: dict[str, np.ndarray],
    binary: dict[str, bool],
    datatypes: dict[str, str],
) -> Response:
    # Every answer has an id, as MLServer's: the request's own, else the answer's request id header
    # (the id of its captured rows and of feedback).
    known = current_request.get()
    answer_id = request.id or (known.request_id if known is not None else uuid.uuid4().hex)
    head: dict[str, Any] = {"id": answer_id, "model_name": model, "model_version": version}
    head["outputs"], blobs = [], []
    for name, as_binary in binary.items():
        array = tensors[name]
        out: dict[str, Any] = {
            "name": name,
            "datatype": datatypes[name],
            "shape": list(array.shape),
        }
        if as_binary:
            blob = _to_bytes(array, datatypes[name])
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = array.reshape(-1).tolist()
        head["outputs"].append(out)
    if not blobs:
        return JSONResponse(head)
    header = json.dumps(head).encode()
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _to_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":  # each element: 4-byte little-endian length, then its bytes
        return b"".join(
            struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in array.flat)
        )
    return np.ascontiguousarray(array, dtype=np.dtype(NUMERIC[datatype])).tobytes()


# --------------------------------------------------------------------------------------------------
# The routes


def request_schema() -> dict[str, Any]:
    """InferenceRequest's JSON schema with its definitions inlined: the body is documented through
    `openapi_extra` (the route reads raw bytes), where `#/$defs/...` would point nowhere."""
    schema = InferenceRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return dict(inline(schema))


def oip_error(exc: OipError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


Forwarded = tuple[int, dict[str, str], bytes]
"""A protocol answer across a deployment handle: status, headers, body."""


@dataclass(frozen=True)
class OipCall:
    """A protocol model route's request as plain values a deployment handle can carry: the root
    (serve_apps.pool) forwards it to the model, pooled or dedicated (OipEndpoint.forward)."""

    what: str
    """metadata | ready | infer"""
    name: str
    version: str | None = None
    raw: bytes = b""
    """infer: the request body"""
    header_length: str | None = None
    """infer: the Inference-Header-Content-Length header (binary tensors)"""
    request: RequestInfo | None = None
    """The root request's id and headers (its RequestIds middleware's): the model answers,
    captures and takes feedback under that id, and routes by those headers."""


class OipEndpoint:
    """One model's protocol answers, whoever asks: the model app's own /v2 routes, and the root's
    (`serve_apps.pool`, which forwards through a deployment handle: `forward`)."""

    def __init__(self, service: "ModelService", answer: AnswerFn, max_rows: int) -> None:
        self.service, self.answer, self.max_rows = service, answer, max_rows

    def check(self, name: str, version: str | None) -> None:
        model = self.service.model
        if name != model:
            raise OipError(f"unknown model {name!r}; this endpoint serves {model!r}", 404)
        if version is not None and version != self.service.current.version:
            raise OipError(
                f"version {version!r} of {model!r} is not served; the served version is "
                f"{self.service.current.version!r} (or leave the version out)",
                404,
            )

    def _checked(
        self, name: str, version: str | None, body: Callable[[], dict[str, Any]]
    ) -> Response:
        """The body for a served model and version, else the protocol's 404."""
        try:
            self.check(name, version)
        except OipError as exc:
            return oip_error(exc)
        return JSONResponse(body())

    def metadata(self, name: str, version: str | None = None) -> Response:
        service = self.service
        return self._checked(
            name,
            version,
            lambda: {
                "name": service.model,
                "versions": [service.current.version],
                "platform": "pytorch",
                "inputs": [input_spec(service.schema)],
                "outputs": output_specs(service.label_names),
                "parameters": {"labels": service.label_names},
            },
        )

    def ready(self, name: str, version: str | None = None) -> Response:
        return self._checked(name, version, lambda: {"name": name, "ready": True})

    async def infer(
        self, name: str, version: str | None, raw: bytes, header_length: str | None
    ) -> Response:
        try:
            self.check(name, version)
            body, binary = split_body(raw, header_length)
            X = decode_inputs(body, binary, self.service.schema, self.max_rows)
            labels = self.service.label_names
            specs = {spec["name"]: spec["datatype"] for spec in output_specs(labels)}
            asked = wanted_outputs(body, list(specs))
            served, predictions = await self.answer(X, "oip")
            tensors = encode_outputs(predictions, labels)
        except OipError as exc:
            return oip_error(exc)
        except RaylifeError as exc:  # the shared validation (validate_rows, the predictor)
            return oip_error(OipError(str(exc)))
        return infer_response(body, self.service.model, served, tensors, asked, specs)

    async def forward(self, call: OipCall) -> Forwarded:
        """A call forwarded from the root, answered as plain values a deployment handle carries."""
        if call.what == "infer":
            # A deployment handle does not carry the root's request context: restore it.
            token = None
            if call.request is not None and current_request.get() is None:
                token = current_request.set(call.request)
            try:
                response = await self.infer(call.name, call.version, call.raw, call.header_length)
            finally:
                if token is not None:
                    current_request.reset(token)
        elif call.what == "metadata":
            response = self.metadata(call.name, call.version)
        else:
            response = self.ready(call.name, call.version)
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length",)
        }
        return response.status_code, headers, bytes(response.body)


def server_metadata() -> dict[str, Any]:
    return {"name": "raylife", "version": "2", "extensions": ["binary_tensor_data"]}


def add_server_routes(target: Any, prefix: str, ready: Callable[[], Awaitable[Any]]) -> None:
    """GET <prefix> (server metadata), <prefix>/health/live and <prefix>/health/ready on an app or
    router: one model's (always ready while it answers) or the root's (`ready` asks every model)."""
    tags: list[str] = ["Open Inference Protocol v2"]

    @target.get(prefix, summary="Server metadata", tags=tags)
    async def server() -> dict[str, Any]:
        return server_metadata()

    @target.get(f"{prefix}/health/live", summary="Server live", tags=tags)
    async def live() -> dict[str, bool]:
        return {"live": True}

    @target.get(f"{prefix}/health/ready", summary="Server ready", tags=tags)
    async def is_ready() -> Any:
        return await ready()


def oip_router(endpoint: OipEndpoint) -> APIRouter:
    """GET /v2, /v2/health/{live,ready}, /v2/models/<m>[/versions/<v>][/ready];
    POST /v2/models/<m>[/versions/<v>]/infer."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
    service = endpoint.service

    async def ready() -> dict[str, bool]:
        return {"ready": True}

    add_server_routes(router, "", ready)

    @router.get("/models/{name}", summary="Model metadata")
    @router.get("/models/{name}/versions/{version}", summary="Model version metadata")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        return endpoint.metadata(name, version)

    @router.get("/models/{name}/ready", summary="Model ready")
    @router.get("/models/{name}/versions/{version}/ready", summary="Model version ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        return endpoint.ready(name, version)

    example = {
        "inputs": [{**input_spec(service.schema), "shape": [1, *service.schema.shape]}],
    }
    example["inputs"][0]["data"] = service.schema.example
    body_schema = {**request_schema(), "examples": [example]}
    infer_doc = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}
    }

    @router.post("/models/{name}/infer", summary="Infer", openapi_extra=infer_doc)
    @router.post(
        "/models/{name}/versions/{version}/infer", summary="Infer", openapi_extra=infer_doc
    )
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        raw = await request.body()
        return await endpoint.infer(name, version, raw, request.headers.get(HEADER_LENGTH))

    return router
