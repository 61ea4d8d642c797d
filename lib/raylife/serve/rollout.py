"""Canary and shadow inside one Serve replica: the rollout state, per-request routing between the
champion and a challenger, live figures per version, and the ledger that adds them up.

The rollout is a field of the model deployment's `user_config` (`rollout`), so it travels in the
Serve config (serveConfigV2 on EKS) and a restarted controller or replica comes back in the same
state. Each replica holds both versions (the models are small) and routes each request by weight:
a stable hash of the sticky header's value when the caller sends one (a caller stays on its version
as the weight grows), else at random; the pin header forces a version.

Replicas are several and an HTTP request reaches one, so their figures go to one named, detached
Ray actor per model (`Ledger`), in small batches off the request path; the stats and feedback
routes read it, whichever replica they reach. The step controller is raylife.serve.canary.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import math
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raylife.errors import RaylifeError

if TYPE_CHECKING:  # Predictor imports torch; a Rollout config must parse without it
    from raylife.inference.predict import Predictor

PIN_HEADER = "x-raylife-version"
"""A request with this header is answered by the version it names (debugging; 422 if not served)."""
REQUEST_ID_HEADER = "x-raylife-request-id"
"""Every answer carries one (the caller's own, if it sent a usable one): feedback names it. Not
x-request-id: Serve's proxy sets that one on its own answers, and a second would join the first."""
TRACE_ID_HEADER = "x-request-id"
"""The de facto request id (load balancers, tracing, Serve). Serve sets it on every request it
takes in, so reusing it gives one id per request across Serve's logs and raylife's captures."""
LEDGER_NAMESPACE = "raylife"
FLUSH_S = 0.2
"""How often a replica sends its figures to the ledger (feedback waits this long for stragglers)."""
MAX_LATENCIES = 50_000
"""Latency samples kept per version and step (the bench's largest step stays below it)."""
MAX_PENDING = 200_000
"""Predictions awaiting feedback, oldest forgotten first."""
SHADOW_QUEUE = 256
"""Mirrored requests waiting for the challenger; beyond it they are dropped (and counted)."""

Answer = tuple[str, list[dict[str, Any]]]
ChampionFn = Callable[[np.ndarray], Awaitable[Answer]]


class Rollout(BaseModel):
    """`user_config.rollout`: a challenger served beside the champion (None: the champion alone)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, description="this rollout (keys its figures)")
    challenger: str = Field(min_length=1, description="store version of the challenger")
    mode: Literal["canary", "shadow"] = "canary"
    weight: float = Field(default=0.0, ge=0, le=100, description="canary: % of requests")
    step: int = Field(default=0, ge=0, description="index of the current step (figures per step)")
    shadow_fraction: float = Field(
        default=0.0, ge=0, le=1, description="shadow: share of requests mirrored"
    )
    sticky_header: str | None = Field(
        default=None, description="requests with the same value of this header see one version"
    )


# --------------------------------------------------------------------------------------------------
# Routing


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    headers: Mapping[str, str]


_draws = random.Random()
"""Routing and mirroring draws: a generator of their own, so nothing that seeds the global one
(a test framework, a library) can skew the split."""

current_request: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "raylife_request", default=None
)


def _usable_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def request_id_of(headers: Mapping[str, str]) -> str:
    """A request's id from its (lower-case) headers: the caller's x-raylife-request-id when
    usable, else its x-request-id when usable (the one Serve logs it under), else a fresh one."""
    for given in (headers.get(REQUEST_ID_HEADER, ""), headers.get(TRACE_ID_HEADER, "")):
        if _usable_id(given):
            return given
    return uuid.uuid4().hex


class RequestIds:
    """ASGI middleware: each HTTP request gets an id (request_id_of), visible to the route's code
    through `current_request` and echoed in the answer's headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_of(headers)
        token = current_request.set(RequestInfo(request_id, headers))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = [(REQUEST_ID_HEADER.encode(), request_id.encode())]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request.reset(token)


def sticky_bucket(value: str) -> float:
    """A caller's fixed place in [0, 100): the same value always lands on the same side of any
    weight, and a caller on the challenger at weight w stays there at every weight above w."""
    digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


def choose(rollout: Rollout | None, champion: str, headers: Mapping[str, str]) -> str:
    """The version that answers a request with these headers (lower-case names)."""
    served = {champion} | ({rollout.challenger} if rollout and rollout.mode == "canary" else set())
    pinned = headers.get(PIN_HEADER)
    if pinned is not None:
        if pinned not in served:
            raise RaylifeError(
                f"{PIN_HEADER}: {pinned!r} is not served here; served: {', '.join(sorted(served))} "
                f"(drop the header to be routed by weight)"
            )
        return pinned
    if rollout is None or rollout.mode != "canary" or rollout.weight <= 0:
        return champion
    sticky = headers.get(rollout.sticky_header.lower()) if rollout.sticky_header else None
    draw = sticky_bucket(sticky) if sticky else _draws.random() * 100
    return rollout.challenger if draw < rollout.weight else champion


# --------------------------------------------------------------------------------------------------
# Figures


@dataclass
class VersionStats:
    """What one version did in one step: answers, 5xx, latencies and fed-back truths."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    feedback: int = 0
    correct: int = 0
    squared_error: float = 0.0

    def add(self, other: VersionStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        room = MAX_LATENCIES - len(self.latencies_ms)
        self.latencies_ms.extend(other.latencies_ms[: max(room, 0)])
        self.feedback += other.feedback
        self.correct += other.correct
        self.squared_error += other.squared_error

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def p99_ms(self) -> float:
        return self.latency_ms(99)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.squared_error / self.feedback) if self.feedback else None

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p50_ms": round(percentile(self.latencies_ms, 50), 3),
            "p99_ms": round(self.p99_ms(), 3),
            "feedback": self.feedback,
            "accuracy": self.accuracy,
            "rmse": self.rmse,
        }


@dataclass
class ShadowStats:
    """Mirrored requests: how often the challenger agreed, by how much it differed, how fast."""

    mirrored: int = 0
    dropped: int = 0
    errors: int = 0
    agreed: int = 0
    abs_difference: float = 0.0
    champion_ms: list[float] = field(default_factory=list)
    challenger_ms: list[float] = field(default_factory=list)

    def add(self, other: ShadowStats) -> None:
        self.mirrored += other.mirrored
        self.dropped += other.dropped
        self.errors += other.errors
        self.agreed += other.agreed
        self.abs_difference += other.abs_difference
        for mine, theirs in (
            (self.champion_ms, other.champion_ms),
            (self.challenger_ms, other.challenger_ms),
        ):
            mine.extend(theirs[: max(MAX_LATENCIES - len(mine), 0)])

    def report(self) -> dict[str, Any]:
        compared = self.mirrored - self.errors
        return {
            "mirrored": self.mirrored,
            "dropped": self.dropped,
            "errors": self.errors,
            "agreement_rate": self.agreed / compared if compared else None,
            "mean_abs_difference": self.abs_difference / compared if compared else None,
            "champion_ms": distribution(self.champion_ms),
            "challenger_ms": distribution(self.challenger_ms),
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def distribution(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 90, 99)} | {"n": len(values)}


def _answer_value(prediction: dict[str, Any]) -> Any:
    """What feedback is compared with: the label (classification) or the value (regression)."""
    return prediction["label"] if "label" in prediction else float(prediction["value"])


@dataclass
class Tally:
    """A replica's figures since its last flush, and the figures a ledger adds them into."""

    versions: dict[tuple[int, str], VersionStats] = field(default_factory=dict)
    shadow: dict[int, ShadowStats] = field(default_factory=dict)
    pending: list[tuple[str, int, str, Any]] = field(default_factory=list)
    """(request id, step, version, answer) of single-row canary answers, for feedback."""

    def version(self, step: int, version: str) -> VersionStats:
        return self.versions.setdefault((step, version), VersionStats())

    def step_shadow(self, step: int) -> ShadowStats:
        return self.shadow.setdefault(step, ShadowStats())

    def empty(self) -> bool:
        return not (self.versions or self.shadow or self.pending)


class Ledger:
    """The figures of one model's current rollout, summed over replicas (a Ray actor)."""

    def __init__(self) -> None:
        self.rollout_id = ""
        self.tally = Tally()
        self.pending: OrderedDict[str, tuple[int, str, Any]] = OrderedDict()

    def _for(self, rollout_id: str) -> None:
        if rollout_id != self.rollout_id:  # a new rollout starts from nothing
            self.rollout_id, self.tally, self.pending = rollout_id, Tally(), OrderedDict()

    def add(self, rollout_id: str, tally: Tally) -> None:
        self._for(rollout_id)
        for key, stats in tally.versions.items():
            self.tally.version(*key).add(stats)
        for step, shadow in tally.shadow.items():
            self.tally.step_shadow(step).add(shadow)
        for request_id, step, version, answer in tally.pending:
            self.pending[request_id] = (step, version, answer)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def feedback(self, rollout_id: str, request_id: str, truth: Any) -> dict[str, Any] | None:
        """Score `truth` against the answer `request_id` got (once); None: no such answer."""
        self._for(rollout_id)
        found = self.pending.pop(request_id, None)
        if found is None:
            return None
        step, version, answer = found
        scored = VersionStats(feedback=1)
        if isinstance(answer, str):
            scored.correct = int(answer == truth)
            result: dict[str, Any] = {"correct": bool(scored.correct)}
        else:
            scored.squared_error = (float(answer) - float(truth)) ** 2
            result = {"abs_error": abs(float(answer) - float(truth))}
        self.tally.version(step, version).add(scored)
        return {"request_id": request_id, "version": version, "step": step, **result}

    def snapshot(self, rollout_id: str) -> dict[str, Any]:
        """Per step: each version's figures and the shadow report (JSON-able)."""
        if rollout_id != self.rollout_id:
            return {"rollout_id": rollout_id, "steps": {}}
        steps: dict[str, Any] = {}
        for (step, version), stats in self.tally.versions.items():
            steps.setdefault(str(step), {"versions": {}})["versions"][version] = asdict(stats)
        for step, shadow in self.tally.shadow.items():
            steps.setdefault(str(step), {"versions": {}})["shadow"] = asdict(shadow)
        return {"rollout_id": rollout_id, "steps": steps}


def ledger_name(model: str) -> str:
    return f"raylife-rollout-{model}"


def ledger_actor(model: str) -> Any:
    """The model's ledger, created by the first replica that asks (detached: it outlives any one
    replica; it holds no resources)."""
    import ray

    return (
        ray.remote(Ledger)
        .options(
            name=ledger_name(model),
            namespace=LEDGER_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
        )
        .remote()
    )


# --------------------------------------------------------------------------------------------------
# The replica side


class Rollouts:
    """One replica's rollout: the challenger it holds, the routing, the mirror and the figures.

    `ledger` is None outside Serve (tests): figures then stay in `self.tally`."""

    def __init__(self, model: str, device: str, load: Callable[[str], Predictor]) -> None:
        self.model, self.device, self.load = model, device, load
        self.rollout: Rollout | None = None
        self.challenger: Predictor | None = None
        self.tally = Tally()
        self.ledger: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._mirror: asyncio.Queue[tuple[np.ndarray, dict[str, Any], float, int]] | None = None

    async def configure(
        self, rollout: Rollout | None, schema_check: Callable[[Predictor], None]
    ) -> None:
        """Take the new rollout state: load (or drop) the challenger, then switch routing."""
        await self.flush()
        if rollout is None:
            self.rollout, self.challenger = None, None
            return
        if self.challenger is None or self.challenger.version != rollout.challenger:
            challenger = await asyncio.to_thread(self.load, rollout.challenger)
            schema_check(challenger)
            self.challenger = challenger
        if self.ledger is None and _in_ray():
            self.ledger = await asyncio.to_thread(ledger_actor, self.model)
        self.rollout = rollout

    async def answer(self, X: np.ndarray, champion: str, champion_fn: ChampionFn) -> Answer:
        """The answer to one request, from the version routing picks (and its mirror, if any)."""
        rollout, info = self.rollout, current_request.get()
        headers = info.headers if info else {}
        chosen = choose(rollout, champion, headers)
        if rollout is None:
            return await champion_fn(X)
        self._ensure_background()
        start = time.perf_counter()
        stats = self.tally.version(rollout.step, chosen)
        stats.requests += 1
        try:
            if chosen == champion:
                version, predictions = await champion_fn(X)
            else:
                version, predictions = await self._challenger(X)
        except Exception:
            stats.errors += 1
            raise
        elapsed_ms = (time.perf_counter() - start) * 1000
        stats.latencies_ms.append(elapsed_ms)
        if info is not None and len(predictions) == 1 and rollout.mode == "canary":
            self.tally.pending.append(
                (info.request_id, rollout.step, version, _answer_value(predictions[0]))
            )
        if rollout.mode == "shadow" and _draws.random() < rollout.shadow_fraction:
            self._enqueue_mirror(X, predictions, elapsed_ms, rollout.step)
        return version, predictions

    async def _challenger(self, X: np.ndarray) -> Answer:
        assert self.challenger is not None
        challenger = self.challenger
        predictions = (
            await asyncio.to_thread(challenger.predict_array, X)
            if X.size >= 2048
            else challenger.predict_array(X)
        )
        return challenger.version, predictions

    # ---- shadow: the caller has its answer; the challenger runs after, off its path

    def _enqueue_mirror(
        self, X: np.ndarray, answer: list[dict[str, Any]], champion_ms: float, step: int
    ) -> None:
        assert self._mirror is not None
        try:
            self._mirror.put_nowait((X, answer[0] if len(answer) == 1 else {}, champion_ms, step))
        except asyncio.QueueFull:
            self.tally.step_shadow(step).dropped += 1

    async def _mirror_worker(self) -> None:
        assert self._mirror is not None
        while True:
            X, champion_answer, champion_ms, step = await self._mirror.get()
            rollout, shadow = self.rollout, self.tally.step_shadow(step)
            if rollout is None or self.challenger is None:
                continue
            shadow.mirrored += 1
            start = time.perf_counter()
            try:
                _, predictions = await self._challenger(X)
            except Exception:
                shadow.errors += 1
                continue
            shadow.challenger_ms.append((time.perf_counter() - start) * 1000)
            shadow.champion_ms.append(champion_ms)
            if champion_answer and len(predictions) == 1:
                mine, theirs = _answer_value(predictions[0]), _answer_value(champion_answer)
                if isinstance(mine, str):
                    shadow.agreed += mine == theirs
                else:
                    shadow.abs_difference += abs(mine - theirs)
            await asyncio.sleep(0)  # let waiting requests go first

    # ---- figures to the ledger

    def _ensure_background(self) -> None:
        """Start the flusher and the mirror worker on the loop that serves requests."""
        if self._tasks:
            return
        self._mirror = asyncio.Queue(maxsize=SHADOW_QUEUE)
        for work in (self._flush_forever(), self._mirror_worker()):
            task = asyncio.get_running_loop().create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            with contextlib.suppress(Exception):  # a lost batch of figures must not stop serving
                await self.flush()

    async def flush(self) -> None:
        if self.ledger is None or self.rollout is None or self.tally.empty():
            return
        tally, self.tally = self.tally, Tally()
        await self.ledger.add.remote(self.rollout.id, tally)

    async def feedback(self, request_id: str, truth: Any) -> dict[str, Any] | None:
        """Score a truth sent back for `request_id`; None when no answer of this rollout has it.
        A miss waits one flush period: the answer may sit in another replica's batch."""
        if self.rollout is None or self.ledger is None:
            return None
        await self.flush()
        for wait_s in (0.0, 2.5 * FLUSH_S):
            await asyncio.sleep(wait_s)
            result: dict[str, Any] | None = await self.ledger.feedback.remote(
                self.rollout.id, request_id, truth
            )
            if result is not None:
                return result
        return None

    async def snapshot(self) -> dict[str, Any]:
        """The current rollout's figures over every replica (from the ledger)."""
        if self.rollout is None or self.ledger is None:
            return {"rollout": None, "steps": {}}
        await self.flush()
        figures: dict[str, Any] = await self.ledger.snapshot.remote(self.rollout.id)
        return {"rollout": self.rollout.model_dump(), **figures}


def _in_ray() -> bool:
    try:
        import ray

        return bool(ray.is_initialized())
    except ImportError:
        return False


# --------------------------------------------------------------------------------------------------
# Routes: POST /feedback, GET /rollout


class Feedback(BaseModel):
    """The truth for an answer this model gave: scored live during a rollout, kept beside the
    captures while capture is on (what `raylife monitor` measures the live metric with)."""

    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(
        min_length=1, max_length=64, description=f"the answer's {REQUEST_ID_HEADER}"
    )
    row: int = Field(
        default=0, ge=0, le=100_000, description="which row of that request (0: the first)"
    )
    label: str | int | None = Field(default=None, description="classification: label or index")
    value: float | None = Field(
        default=None, allow_inf_nan=False, description="regression: the true value"
    )


Keep = Callable[[str, int, "str | None", "float | None"], bool]
"""(request id, row, label, value) -> kept: how a route keeps a truth (CaptureWriter.record_feedback)."""


def truth_of(body: Feedback, labels: list[str]) -> Any:
    """The truth as the ledger compares it (a label name or a float); RaylifeError names why not."""
    if labels:
        if body.label is None or body.value is not None:
            raise RaylifeError('this is a classifier: send "label" (a label name or its index)')
        if isinstance(body.label, int) and not isinstance(body.label, bool):
            if not 0 <= body.label < len(labels):
                raise RaylifeError(f"label index {body.label} is not in 0..{len(labels) - 1}")
            return labels[body.label]
        if body.label not in labels:
            raise RaylifeError(f"unknown label {body.label!r}; choose one of: {', '.join(labels)}")
        return body.label
    if body.value is None or body.label is not None:
        raise RaylifeError('this is a regression model: send "value" (the true number)')
    return float(body.value)


def add_rollout_routes(
    app: Any, rollouts: Rollouts, labels: Callable[[], list[str]], keep: Keep | None = None
) -> None:
    """POST /feedback (a truth for an answer) and GET /rollout (live figures of the rollout).
    keep: where feedback is kept beyond the rollout (the capture writer's record_feedback)."""
    from fastapi.responses import JSONResponse

    @app.post(
        "/feedback", summary="The true label or value of an answer: online accuracy, monitoring"
    )
    async def feedback(body: Feedback) -> Any:
        truth = truth_of(body, labels())
        label, value = (truth, None) if isinstance(truth, str) else (None, float(truth))
        kept = keep(body.request_id, body.row, label, value) if keep else False
        scored = await rollouts.feedback(body.request_id, truth) if body.row == 0 else None
        if scored is not None:
            return {**scored, "kept": kept}
        if kept:
            return {"request_id": body.request_id, "row": body.row, "kept": True}
        return JSONResponse(
            {
                "error": "unknown_request_id",
                "message": f"no answer of the current rollout has request id {body.request_id!r} "
                "(ids are kept for single-row answers during a canary, and scored once), and "
                "capture is off, so nothing keeps feedback; send the "
                f"{REQUEST_ID_HEADER} header of an answer, or turn capture on",
            },
            status_code=404,
        )

    @app.get("/rollout", summary="The rollout in progress and its live figures per version")
    async def rollout_figures() -> dict[str, Any]:
        return await rollouts.snapshot()
