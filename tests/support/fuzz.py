"""Schema-driven HTTP fuzzing: hundreds of generated requests per route; no answer may be a 5xx.

    from tests.support.fuzz import fuzz_routes, problems
    report = fuzz_routes(app, prefix="/iris")              # an ASGI app, in-process (no network)
    report = fuzz_routes("http://127.0.0.1:8000/iris")     # a running server (Serve, bare uvicorn)
    assert not problems(report), problems(report)

The routes and their schemas come from the target's OpenAPI document (`<base>/openapi.json`, which
FastAPI serves for every raylife model app). Every route gets at least `per_route` requests from
three sources:

    positive   schemathesis cases that satisfy the schema (what a correct client sends)
    negative   schemathesis cases that violate it (wrong types, missing or extra fields, sizes)
    malformed  raylife's own: undecodable, truncated and deeply nested JSON, valid bodies with one
               part broken, hostile numbers, wrong methods and content types, junk query strings and
               headers, bodies above the size limit (declared and chunked); for upload routes odd
               and hostile images (wrong sizes, modes and formats, truncated files, headers that
               declare a decompression bomb) and broken multipart bodies

The report counts, per route: requests; server errors (a 5xx answer or, in-process, an exception out
of the app); invalid responses (a 2xx JSON answer that does not match the route's response schema);
connection errors (no answer at all: refused, reset or timed out, which is how a crashed replica
shows); and keeps the first few failing requests as examples. Generation is seeded: the same seed
sends the same requests to the same app.

`python -m tests.support.fuzz http://127.0.0.1:8000/iris [--per-route 300] [--seed 0]` prints the report as
JSON and exits 1 when it found a problem. schemathesis and hypothesis come with the `dev` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import requests
    from hypothesis.strategies import DrawFn, SearchStrategy

ASGI_BASE_URL = "http://testserver"
"""Where requests to an in-process ASGI app go (the host the test client sends)."""
OVERSIZE_BYTES = (1024 * 1024 + 1, 2 * 1024 * 1024)
"""Bodies just above and well above raylife's 1 MiB request limit."""
MAX_KEPT_BODY_CHARS = 100_000
"""Valid bodies longer than this (serialised) are not kept as seeds for mutation."""
_REQUEST_ARGS = {"method", "url", "headers", "files", "data", "params", "auth", "cookies", "json"}


class RouteStats(TypedDict):
    """What one route answered. `by_source` and `statuses` count requests."""

    requests: int
    server_errors: int
    invalid_responses: int
    connection_errors: int
    by_source: dict[str, int]
    statuses: dict[str, int]
    examples: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# Entry points


def fuzz_routes(
    target: str | Any,
    routes: Iterable[str] | None = None,
    per_route: int = 300,
    seed: int = 0,
    *,
    prefix: str = "",
    openapi: dict[str, Any] | None = None,
    schema_share: float = 0.5,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    max_examples: int = 5,
    path_params: dict[str, str] | None = None,
) -> dict[str, RouteStats]:
    """Send at least `per_route` generated requests to every route; report per route.

    target: a base URL ("http://127.0.0.1:8000/iris") or an ASGI app, called in-process.
    routes: keys to fuzz, "METHOD /path" as in the report ("POST /", "GET /info") or a bare path
        for every method on it; default every operation in the OpenAPI document.
    per_route: requests per route, at least (the malformed source fills up what the schema ones
        cannot produce: a GET route without parameters has one positive case and no negative one).
    seed: seeds every source; the same seed sends the same requests.
    prefix: path the app is mounted under, for an ASGI app (for a URL, put it in the URL).
    openapi: the OpenAPI document; default: fetched from <base>/openapi.json.
    schema_share: share of `per_route` asked of schemathesis (half positive, half negative); its
        cases cost ~100x the malformed ones on wide inputs (MNIST's 784 numbers a row).
    headers: sent with every request (e.g. an Authorization header an ingress wants).
    path_params: values for path templates (`{"name": "iris"}` for /v2/models/{name}/infer), so
        requests reach the route's body handling instead of a 404 for a random name.
    Returns {"POST /": RouteStats, ...} in the document's order.
    """
    session, base = _session(target, prefix, headers)
    doc = openapi if openapi is not None else _fetch_openapi(session, base, timeout_s)
    report: dict[str, RouteStats] = {}
    for route in _routes(doc, routes):
        sender = _Sender(session, base, route, timeout_s, max_examples, not isinstance(target, str))
        sender.url = base + _fill(route.path, path_params or {})
        _fuzz_route(route, sender, per_route, seed, schema_share, path_params or {})
        report[route.key] = sender.stats
    return report


def problems(report: dict[str, RouteStats]) -> list[str]:
    """One line per route with server errors, invalid responses or connection errors (the first
    example included); empty when every route passed."""
    lines = []
    for key, stats in report.items():
        bad = {
            name: stats[name]
            for name in ("server_errors", "invalid_responses", "connection_errors")
            if stats[name]
        }
        if bad:
            first = json.dumps(stats["examples"][0])[:600] if stats["examples"] else ""
            lines.append(f"{key}: {bad} of {stats['requests']} requests; first: {first}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fuzz", description=__doc__)
    parser.add_argument("url", help="base URL of one model app, e.g. http://127.0.0.1:8000/iris")
    parser.add_argument("--per-route", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--route", action="append", help="METHOD /path (repeatable; default all)")
    args = parser.parse_args(argv)
    report = fuzz_routes(args.url, args.route, per_route=args.per_route, seed=args.seed)
    print(json.dumps(report, indent=2))
    found = problems(report)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


# --------------------------------------------------------------------------------------------------
# Routes and sending


@dataclass
class _Route:
    key: str
    method: str
    path: str
    operation: Any
    """schemathesis APIOperation: its positive and negative case strategies."""
    content_types: list[str]
    json_fields: list[str]
    """Top-level properties of a JSON request body (to aim junk at)."""
    file_fields: list[str]
    """Binary properties of a multipart request body (upload fields)."""
    response_check: Callable[[Any], bool] | None
    """Validates a 2xx JSON answer against the documented response schema."""
    valid_bodies: list[Any] = field(default_factory=list)
    """Bodies the target accepted (2xx), and documented examples: seeds for mutation."""


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _session(
    target: str | Any, prefix: str, headers: dict[str, str] | None
) -> tuple[requests.Session, str]:
    import requests

    if isinstance(target, str):
        session, base = requests.Session(), target.rstrip("/")
    else:
        from schemathesis.python.asgi import get_client

        session, base = get_client(target), ASGI_BASE_URL + prefix.rstrip("/")
    session.headers.update({"User-Agent": "raylife-fuzz", **(headers or {})})
    return session, base


def _fetch_openapi(session: requests.Session, base: str, timeout_s: float) -> dict[str, Any]:
    from raylife.errors import RaylifeError

    url = f"{base}/openapi.json"
    response = session.get(url, timeout=timeout_s)
    if response.status_code != 200:
        raise RaylifeError(
            f"GET {url} answered {response.status_code}; pass the app's base URL (e.g. "
            "http://127.0.0.1:8000/iris) or its OpenAPI document as openapi="
        )
    doc: dict[str, Any] = response.json()
    return doc


def _routes(doc: dict[str, Any], wanted: Iterable[str] | None) -> list[_Route]:
    import schemathesis
    from schemathesis.core.result import Err

    from raylife.errors import RaylifeError

    routes = []
    for result in schemathesis.openapi.from_dict(doc).get_all_operations():
        if isinstance(result, Err):
            raise RaylifeError(f"the OpenAPI document has an invalid operation: {result.err()}")
        routes.append(_route(doc, result.ok()))
    if wanted is None:
        return routes
    wanted = list(wanted)
    chosen = [r for r in routes if r.key in wanted or r.path in wanted]
    missing = [w for w in wanted if not any(w in (r.key, r.path) for r in routes)]
    if missing:
        raise RaylifeError(
            f"routes {missing} are not in the OpenAPI document; it has: "
            + ", ".join(r.key for r in routes)
        )
    return chosen


def _route(doc: dict[str, Any], operation: Any) -> _Route:
    method, path = operation.method.upper(), operation.path
    spec = doc["paths"][path][operation.method.lower()]
    content = (spec.get("requestBody") or {}).get("content") or {}
    json_schema = _resolve(doc, (content.get("application/json") or {}).get("schema") or {})
    form_schema = _resolve(doc, (content.get("multipart/form-data") or {}).get("schema") or {})
    file_fields = [
        name
        for name, prop in (form_schema.get("properties") or {}).items()
        if _resolve(doc, prop).get("format") == "binary"
        or _resolve(doc, prop).get("contentMediaType") == "application/octet-stream"
    ]
    route = _Route(
        key=f"{method} {path}",
        method=method,
        path=path,
        operation=operation,
        content_types=list(content),
        json_fields=list(json_schema.get("properties") or {}),
        file_fields=file_fields or (["file"] if form_schema else []),
        response_check=_response_check(doc, spec),
    )
    route.valid_bodies.extend(_documented_examples(doc, json_schema, route.json_fields))
    return route


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _documented_examples(
    doc: dict[str, Any], schema: dict[str, Any], fields: list[str]
) -> list[Any]:
    """Request bodies built from documented examples (FastAPI puts a row model's examples there)."""
    bodies: list[Any] = list(schema.get("examples") or [])
    for name in fields:
        prop = _resolve(doc, (schema.get("properties") or {}).get(name) or {})
        for option in [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]:
            for example in _resolve(doc, option).get("examples") or []:
                bodies.append({name: example})
    return bodies


def _response_check(doc: dict[str, Any], spec: dict[str, Any]) -> Callable[[Any], bool] | None:
    from jsonschema import Draft202012Validator

    ok: dict[str, Any] = next(
        (spec["responses"][code] for code in ("200", "201") if code in spec["responses"]), {}
    )
    schema = ((ok.get("content") or {}).get("application/json") or {}).get("schema")
    if not schema:
        return None
    # References point into the document's components: validate with them at the root.
    validator = Draft202012Validator({**schema, "components": doc.get("components", {})})
    return validator.is_valid


class _Sender:
    """Sends one request, classifies the answer, counts, keeps examples of failures."""

    def __init__(
        self,
        session: requests.Session,
        base: str,
        route: _Route,
        timeout_s: float,
        max_examples: int,
        in_process: bool,
    ) -> None:
        self.session, self.base, self.route = session, base, route
        self.url = base + route.path
        self.timeout_s, self.max_examples, self.in_process = timeout_s, max_examples, in_process
        self.stats: RouteStats = {
            "requests": 0,
            "server_errors": 0,
            "invalid_responses": 0,
            "connection_errors": 0,
            "by_source": {},
            "statuses": {},
            "examples": [],
        }

    def send(self, source: str, kwargs: dict[str, Any]) -> bool:
        """False when the request cannot even be built (the caller rejects that example)."""
        import requests

        kwargs = {k: v for k, v in kwargs.items() if k in _REQUEST_ARGS}
        kwargs.setdefault("url", self.url)
        try:
            prepared = self.session.prepare_request(requests.Request(**kwargs))
        except (ValueError, TypeError, requests.RequestException):
            return False  # e.g. a header value requests itself refuses: never reached the server
        stats = self.stats
        stats["requests"] += 1
        stats["by_source"][source] = stats["by_source"].get(source, 0) + 1
        try:
            response = self.session.send(prepared, timeout=self.timeout_s)
        except requests.RequestException as exc:
            if not self.in_process:
                return self._fail("connection_errors", source, prepared, None, repr(exc))
            return self._fail("server_errors", source, prepared, None, repr(exc))
        except Exception as exc:  # in-process: the app raised (a server would answer 500)
            return self._fail("server_errors", source, prepared, None, repr(exc))
        status = response.status_code
        stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
        if status >= 500:
            return self._fail("server_errors", source, prepared, status, response.text)
        if 200 <= status < 300:
            return self._check_answer(source, prepared, response, kwargs)
        return True

    def _check_answer(
        self, source: str, prepared: Any, response: Any, kwargs: dict[str, Any]
    ) -> bool:
        check = self.route.response_check
        if check is not None:
            try:
                valid = check(response.json())
            except ValueError:
                valid = False
            if not valid:
                return self._fail("invalid_responses", source, prepared, 200, response.text)
        body = kwargs.get("json")
        if (
            source == "positive"
            and body is not None
            and len(self.route.valid_bodies) < 32
            and len(json.dumps(body)) <= MAX_KEPT_BODY_CHARS
        ):
            self.route.valid_bodies.append(body)
        return True

    def _fail(self, kind: str, source: str, prepared: Any, status: int | None, answer: str) -> bool:
        self.stats[kind] += 1  # type: ignore[literal-required]
        if len(self.stats["examples"]) < self.max_examples:
            body = prepared.body
            if isinstance(body, bytes):
                body = body[:300].decode("utf-8", "backslashreplace")
            elif body is not None and not isinstance(body, str):
                body = "<streamed body>"
            self.stats["examples"].append(
                {
                    "kind": kind,
                    "source": source,
                    "request": f"{prepared.method} {prepared.url}",
                    "content_type": prepared.headers.get("Content-Type"),
                    "body": None if body is None else str(body)[:300],
                    "status": status,
                    "answer": answer[:300],
                }
            )
        return True


# --------------------------------------------------------------------------------------------------
# Driving the sources


def _fuzz_route(
    route: _Route,
    sender: _Sender,
    per_route: int,
    seed: int,
    schema_share: float,
    path_params: dict[str, str],
) -> None:
    from schemathesis import GenerationMode

    schema_n = int(per_route * schema_share)
    for mode, count in (
        (GenerationMode.POSITIVE, schema_n // 2),
        (GenerationMode.NEGATIVE, schema_n - schema_n // 2),
    ):
        source = mode.value

        def send_case(case: Any, source: str = source) -> bool:
            fixed = {k: v for k, v in path_params.items() if k in (case.path_parameters or {})}
            case.path_parameters = {**(case.path_parameters or {}), **fixed} or None
            try:
                kwargs = case.as_transport_kwargs(base_url=sender.base)
            except Exception:  # a case schemathesis cannot serialise: not a request at all
                return False
            return sender.send(source, kwargs)

        _drive(route.operation.as_strategy(generation_mode=mode), count, seed, send_case)
    # Malformed requests fill up to per_route; their space is infinite, so this always gets there.
    attempt = 0
    while sender.stats["requests"] < per_route and attempt < 20:
        missing = per_route - sender.stats["requests"]
        strategy = _malformed_requests(route)
        _drive(strategy, missing, seed + attempt, lambda kw: sender.send("malformed", kw))
        attempt += 1


def _drive(
    strategy: SearchStrategy[Any], count: int, seed: int, send: Callable[[Any], bool]
) -> int:
    """Draw up to `count` examples (fewer when the strategy's space is smaller) and send each."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
    from hypothesis import seed as seeded
    from hypothesis.errors import Unsatisfiable

    if count <= 0:
        return 0
    sent = 0

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @seeded(seed)
    @given(strategy)
    def one(example: Any) -> None:
        nonlocal sent
        if sent >= count:
            return
        if not send(example):
            reject()
        sent += 1

    with contextlib.suppress(Unsatisfiable):  # e.g. no negative case for a route without inputs
        one()
    return sent


# --------------------------------------------------------------------------------------------------
# Malformed requests (hypothesis strategies of requests.Request keyword arguments)

_OTHER_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=raylife",
    "image/png",
    "application/octet-stream",
    "application/json; charset=latin-1",
    "application/jsonx",
    "*/*",
    "",
]
_HOSTILE_NUMBERS: list[Any] = [
    1e308,
    -1e308,
    5e-324,
    10**400,
    -(10**400),
    2**63,
    -(2**63) - 1,
    -0.0,
    float("nan"),
    float("inf"),
    float("-inf"),
]
_UPLOAD_KINDS = [
    *("image", "image", "truncated", "png_header", "png_header", "bytes", "empty"),
    *("wrong_field", "two_files", "text_field", "raw_multipart"),
]
_NEST_DEPTHS = [64, 999, 1001, 5000, 100_000]
_IMAGE_SIDES = [1, 27, 28, 29, 32, 64, 224]
_IMAGE_FORMATS = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"],
    "GIF": ["L", "P"],
    "BMP": ["1", "L", "P", "RGB"],
    "JPEG": ["L", "RGB"],
    "TIFF": ["1", "L", "RGB", "RGBA", "I", "F"],
}


def _strategies() -> Any:
    from hypothesis import strategies as st

    return st


@functools.cache
def _json_values() -> SearchStrategy[Any]:
    """Any JSON value, hostile numbers included. Built once: hypothesis analyses each new
    recursive strategy, which cost more than the drawing when it was rebuilt per request."""
    st = _strategies()
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(_HOSTILE_NUMBERS),
    )
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )


def _malformed_requests(route: _Route) -> SearchStrategy[dict[str, Any]]:
    st = _strategies()
    takes_json = "application/json" in route.content_types
    takes_upload = "multipart/form-data" in route.content_types
    bodies = [_json_bodies(route)] if takes_json or not takes_upload else []
    if takes_upload:
        bodies.append(_upload_bodies(route))
    bodies.append(_raw_bodies())

    @st.composite
    def request(draw: DrawFn) -> dict[str, Any]:
        kwargs: dict[str, Any] = draw(st.one_of(*bodies))
        kwargs.setdefault("headers", {})
        same_method = draw(st.integers(0, 9)) > 0
        kwargs["method"] = route.method if same_method else draw(st.sampled_from(_OTHER_METHODS))
        if draw(st.integers(0, 3)) == 0:
            kwargs["params"] = draw(
                st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)
                | st.text(max_size=40)
            )
        if draw(st.integers(0, 4)) == 0:
            header = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
            name = draw(st.sampled_from(["Accept", "Accept-Encoding", "X-Forwarded-For", "Range"]))
            kwargs["headers"][name] = draw(header)
        return kwargs

    return request()


def _raw_bodies() -> SearchStrategy[dict[str, Any]]:
    """Any route: no body, random bytes, or a body above the size limit (declared or chunked)."""
    st = _strategies()

    @st.composite
    def raw(draw: DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(["none", "bytes", "bytes", "oversize", "oversize_chunked"]))
        content_type = draw(st.sampled_from(["application/json", *_CONTENT_TYPES]))
        headers = {"Content-Type": content_type} if content_type else {}
        if kind == "none":
            return {"headers": headers}
        if kind == "bytes":
            return {"headers": headers, "data": draw(st.binary(max_size=512))}
        size = draw(st.sampled_from(OVERSIZE_BYTES))
        if kind == "oversize":
            return {"headers": headers, "data": b"[" + b"0," * (size // 2) + b"0]"}
        return {"headers": headers, "data": _chunks(size)}

    return raw()


def _chunks(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A streamed body (Transfer-Encoding: chunked): no Content-Length for a limit to trust."""
    yield b"["
    for _ in range(size // chunk + 1):
        yield b"0," * (chunk // 2)


def _json_bodies(route: _Route) -> SearchStrategy[dict[str, Any]]:
    st = _strategies()
    fields = route.json_fields or ["row"]
    valid = tuple(route.valid_bodies)  # a snapshot: generation must not depend on what comes back

    @st.composite
    def body(draw: DrawFn) -> dict[str, Any]:
        kinds = ["any", "fields", "truncated", "nested", "hostile"]
        if valid:
            kinds += ["mutated", "mutated", "mutated", "valid"]
        kind = draw(st.sampled_from(kinds))
        content_type = "application/json"
        if draw(st.integers(0, 7)) == 0:
            content_type = draw(st.sampled_from(_CONTENT_TYPES))
        if kind == "any":
            text = json.dumps(draw(_json_values()))
        elif kind == "fields":  # the documented top-level fields, each with junk (or all at once)
            names = draw(st.lists(st.sampled_from([*fields, "unknown"]), min_size=1, max_size=3))
            text = json.dumps({name: draw(_json_values()) for name in names})
        elif kind == "truncated":
            whole = json.dumps(draw(st.sampled_from(valid)) if valid else draw(_json_values()))
            text = whole[: draw(st.integers(0, max(len(whole) - 1, 0)))]
        elif kind == "nested":
            depth = draw(st.sampled_from(_NEST_DEPTHS))
            inner = "[" * depth + "1" + "]" * depth
            text = json.dumps({draw(st.sampled_from(fields)): None}).replace("null", inner)
        elif kind == "hostile":  # numbers JSON allows and floats cannot hold
            value = draw(st.sampled_from([*_HOSTILE_NUMBERS, "1e999", "-1e999", "1" + "0" * 400]))
            width = draw(st.integers(1, 8))
            text = json.dumps({draw(st.sampled_from(fields)): [[value] * width]})
            text = text.replace('"1e999"', "1e999").replace('"-1e999"', "-1e999")
            text = text.replace('"1' + "0" * 400 + '"', "1" + "0" * 400)
        elif kind == "mutated":
            text = json.dumps(_mutate(draw, draw(st.sampled_from(valid))))
        else:  # a body the target accepted: the success path stays in the mix
            return {"json": draw(st.sampled_from(valid))}
        return {"headers": {"Content-Type": content_type}, "data": text.encode()}

    return body()


def _mutate(draw: DrawFn, value: Any) -> Any:
    """One change at a random place in a JSON value; containers on the way are copied, not shared."""
    st = _strategies()
    if not isinstance(value, (list, dict)) or not value or draw(st.integers(0, 5)) == 0:
        action = draw(st.sampled_from(["junk", "wrap", "empty"]))
        if action == "wrap":
            return [value]
        if action == "empty":
            return {} if isinstance(value, dict) else []
        return draw(_json_values())
    key: Any = (
        draw(st.integers(0, len(value) - 1))
        if isinstance(value, list)
        else draw(st.sampled_from(sorted(value)))
    )
    copy: Any = list(value) if isinstance(value, list) else dict(value)
    action = draw(
        st.sampled_from(["descend", "descend", "descend", "delete", "duplicate", "extra"])
    )
    if action == "descend":
        copy[key] = _mutate(draw, value[key])
    elif action == "delete":
        del copy[key]
    elif action == "duplicate" and isinstance(copy, list):
        copy.insert(key, copy[key])
    else:
        extra = draw(_json_values())
        if isinstance(copy, list):
            copy.append(extra)
        else:
            copy[draw(st.text(max_size=8))] = extra
    return copy


def _upload_bodies(route: _Route) -> SearchStrategy[dict[str, Any]]:
    """Multipart uploads: real images of odd sizes, modes and formats, truncated files, crafted PNG
    headers (a decompression bomb declares billions of pixels in a few bytes), broken multipart."""
    st = _strategies()
    field_name = route.file_fields[0]

    @st.composite
    def upload(draw: DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(_UPLOAD_KINDS))
        if kind == "raw_multipart":
            boundary = draw(
                st.sampled_from(["", "; boundary=", "; boundary=raylife", '; boundary="x"'])
            )
            data = draw(st.binary(max_size=256))
            if draw(st.booleans()):
                data = b"--raylife\r\n" + data + b"\r\n--raylife--\r\n"
            return {"headers": {"Content-Type": "multipart/form-data" + boundary}, "data": data}
        if kind == "text_field":
            return {"files": {field_name: (None, draw(st.text(max_size=64)))}}
        if kind in ("bytes", "empty"):
            content = b"" if kind == "empty" else draw(st.binary(max_size=512))
        elif kind == "png_header":
            content = _crafted_png(draw)
        else:
            content = _image(draw)
            if kind == "truncated":
                content = content[: draw(st.integers(0, max(len(content) - 1, 0)))]
        mime = draw(st.sampled_from(["image/png", "application/octet-stream", "text/plain", ""]))
        name = draw(st.sampled_from(["digit.png", "", "../../etc/passwd", "x" * 300]))
        files: dict[str, Any] = {field_name: (name, content, mime or None)}
        if kind == "wrong_field":
            files = {
                draw(st.sampled_from(["image", "files", "", field_name.upper()])): files[field_name]
            }
        elif kind == "two_files":
            files = {field_name: files[field_name], "extra": ("b.png", content, "image/png")}
        return {"files": files}

    return upload()


def _image(draw: DrawFn) -> bytes:
    import numpy as np
    from PIL import Image

    st = _strategies()
    side = st.sampled_from(_IMAGE_SIDES) | st.integers(1, 96)
    width = draw(side)
    height = width if draw(st.booleans()) else draw(side)
    image_format = draw(st.sampled_from(sorted(_IMAGE_FORMATS)))
    mode = draw(st.sampled_from(_IMAGE_FORMATS[image_format]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels, mode="L").convert(mode).save(buffer, format=image_format)
    except (OSError, ValueError, KeyError):  # a mode this Pillow cannot write in that format
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _crafted_png(draw: DrawFn) -> bytes:
    """A PNG signature and chunks written by hand: any declared size, depth and colour type."""
    st = _strategies()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        if draw(st.integers(0, 9)) == 0:
            crc ^= 1  # a corrupt checksum now and then
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    dimension = st.sampled_from([0, 1, 28, 4096, 30_000, 100_000, 2**31 - 1]) | st.integers(
        0, 2**32 - 1
    )
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    header = struct.pack(">IIBBBBB", draw(dimension), draw(dimension), depth, colour, 0, 0, 0)
    zeros = draw(st.sampled_from([0, 10, 1000, 100_000]))
    idat = zlib.compress(b"\0" * zeros) if draw(st.booleans()) else draw(st.binary(max_size=64))
    end = chunk(b"IEND", b"") if draw(st.booleans()) else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + end


if __name__ == "__main__":
    sys.exit(main())
