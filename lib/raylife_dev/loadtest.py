"""`raylife loadtest`: drive an endpoint at a fixed concurrency with an async client and report rps,
latency percentiles and errors; optionally against a bare FastAPI + uvicorn process serving the
same artifact (same API code), alternating the two so this noisy machine affects both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from raylife.cluster import free_port
from raylife.errors import RaylifeError
from raylife.waiting import wait_until

RETRY_STATUSES = {500, 502, 503, 504}
"""Retried (predictions are idempotent): 503 = overloaded; 500/502/504 = the replica holding the
request died under it (Serve answers 500 for a request whose replica was killed mid-flight). A
request that fails every try is still counted as an error."""


@dataclass
class LoadResult:
    target: str
    requests: int
    concurrency: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok_first_try: int
    ok_final: int
    retries: int
    errors: dict[str, int] = field(default_factory=dict)
    """Final failures by cause: HTTP status or exception name."""
    versions: dict[str, int] = field(default_factory=dict)
    """Answers per model version (a swap under load shows both)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    # Nearest rank: the smallest value with at least q% of the values at or below it.
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def _example_body(session: Any, url: str) -> dict[str, Any]:
    """One valid request, built from the served model's own input example (GET <url>/info)."""
    import aiohttp

    try:
        async with session.get(f"{url}/info") as response:
            if response.status != 200:
                raise RaylifeError(
                    f"GET {url}/info answered {response.status}; is {url} a model route?"
                )
            info = await response.json()
    except aiohttp.ClientError as exc:
        raise RaylifeError(f"cannot reach {url} ({exc}); is `raylife serve` running?") from exc
    return {"row": info["input"]["example"]}


async def _fetch_example(url: str, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        return await _example_body(session, url)


async def _drive(
    url: str,
    requests: int,
    concurrency: int,
    retries: int,
    timeout_s: float,
    label: str,
    bodies: list[dict[str, Any]],
) -> LoadResult:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        latencies: list[float] = []
        errors: dict[str, int] = {}
        versions: dict[str, int] = {}
        counts = {"first": 0, "final": 0, "retries": 0}
        remaining = iter(range(requests))

        async def one(body: dict[str, Any]) -> None:
            start = time.perf_counter()
            for attempt in range(retries + 1):
                cause = ""
                try:
                    async with session.post(url, json=body) as response:
                        payload = await response.read()
                        if response.status == 200:
                            counts["final"] += 1
                            counts["first"] += attempt == 0
                            version = _version_of(payload)
                            versions[version] = versions.get(version, 0) + 1
                            latencies.append(time.perf_counter() - start)
                            return
                        cause = str(response.status)
                        if response.status not in RETRY_STATUSES:
                            break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # Any transport failure, a response cut short included (ClientPayloadError: a
                    # replica killed mid-answer), is a failed try like a 5xx, never a crash of the run.
                    cause = type(exc).__name__
                if attempt < retries:
                    counts["retries"] += 1
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
            errors[cause] = errors.get(cause, 0) + 1
            latencies.append(time.perf_counter() - start)

        async def worker() -> None:
            for i in remaining:
                await one(bodies[i % len(bodies)])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        target=label,
        requests=requests,
        concurrency=concurrency,
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1),
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p95_ms=round(percentile(latencies, 95) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
        ok_first_try=counts["first"],
        ok_final=counts["final"],
        retries=counts["retries"],
        errors=errors,
        versions=versions,
    )


def _version_of(payload: bytes) -> str:
    import json

    try:
        return str(json.loads(payload).get("version", "?"))
    except ValueError:
        return "?"


def run_load(
    url: str,
    requests: int,
    concurrency: int,
    retries: int = 0,
    timeout_s: float = 30.0,
    label: str = "serve",
    warmup: int = 50,
    body: dict[str, Any] | None = None,
    bodies: list[dict[str, Any]] | None = None,
) -> LoadResult:
    """`requests` POSTs to `url` from `concurrency` workers; the body defaults to the model's
    own input example (one row). `bodies`: request i sends bodies[i % len(bodies)] instead (rows
    with true answers, as the drift scenario sends)."""
    if requests < 1 or concurrency < 1:
        raise RaylifeError("--requests and --concurrency must be at least 1")
    if retries < 0:
        raise RaylifeError(f"--retries must be >= 0 (0: no retries), got {retries}")
    url = url.rstrip("/")
    if bodies is None:
        if body is None:  # fetched once for the warm-up and the measured run
            body = asyncio.run(_fetch_example(url, timeout_s))
        bodies = [body]
    if warmup:
        asyncio.run(_drive(url, warmup, concurrency, retries, timeout_s, label, bodies))
    return asyncio.run(_drive(url, requests, concurrency, retries, timeout_s, label, bodies))


# --------------------------------------------------------------------------------------------------
# The bare baseline: the same artifact and API in one uvicorn process, no Ray


@contextlib.contextmanager
def bare_server(model: str, store: str, port: int | None = None, timeout_s: float = 60.0) -> Any:
    """A `python -m raylife_dev.bare` process; yields its base URL, kills it on exit."""
    import httpx

    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raylife_dev.bare",
            "--model",
            model,
            "--store",
            store,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                stderr = process.stderr.read().decode()[-800:] if process.stderr else ""
                raise RaylifeError(f"the bare baseline server exited: {stderr}")
            return httpx.get(f"{url}/{model}/healthz", timeout=2).status_code == 200

        wait_until(
            healthy,
            timeout_s,
            f"the bare baseline server did not answer within {timeout_s} s",
            interval_s=0.2,
            ignore=(httpx.HTTPError,),
        )
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def compare(
    serve_url: str,
    bare_url: str,
    model: str,
    requests: int,
    concurrency: int,
    repeats: int,
    retries: int = 0,
) -> dict[str, Any]:
    """Serve and bare alternated `repeats` times (A B A B ...); medians and Serve ÷ bare."""
    runs: dict[str, list[LoadResult]] = {"serve": [], "bare": []}
    for _ in range(repeats):
        for label, base in (("serve", serve_url), ("bare", bare_url)):
            runs[label].append(
                run_load(f"{base}/{model}", requests, concurrency, retries, label=label)
            )
    summary = {label: _median_result(results) for label, results in runs.items()}
    summary["ratio_rps"] = round(summary["serve"]["rps"] / summary["bare"]["rps"], 3)
    summary["ratio_p99"] = round(summary["serve"]["p99_ms"] / summary["bare"]["p99_ms"], 3)
    summary["runs"] = {label: [r.to_dict() for r in results] for label, results in runs.items()}
    return summary


def _median_result(results: list[LoadResult]) -> dict[str, Any]:
    from statistics import median

    keys = ("rps", "p50_ms", "p95_ms", "p99_ms")
    out: dict[str, Any] = {k: round(median(getattr(r, k) for r in results), 2) for k in keys}
    out["rps_min_max"] = [min(r.rps for r in results), max(r.rps for r in results)]
    out["errors"] = sum(sum(r.errors.values()) for r in results)
    return out


def format_result(result: LoadResult) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "none"
    return (
        f"{result.target:>6}  {result.requests} requests at concurrency {result.concurrency} in "
        f"{result.seconds:.1f} s: {result.rps:.0f} rps | p50 {result.p50_ms:.1f} ms  "
        f"p95 {result.p95_ms:.1f} ms  p99 {result.p99_ms:.1f} ms | first-try ok "
        f"{result.ok_first_try}/{result.requests}, final ok {result.ok_final}/{result.requests}, "
        f"retries {result.retries}, errors {errors}"
    )


def format_comparison(summary: dict[str, Any]) -> str:
    lines = [
        f"{'':>6}  {'rps (median)':>12}  {'min-max':>13}  {'p50 ms':>7}  {'p99 ms':>7}  errors"
    ]
    for label in ("serve", "bare"):
        s = summary[label]
        lines.append(
            f"{label:>6}  {s['rps']:>12.0f}  {s['rps_min_max'][0]:>6.0f}-{s['rps_min_max'][1]:<6.0f}"
            f"  {s['p50_ms']:>7.1f}  {s['p99_ms']:>7.1f}  {s['errors']}"
        )
    lines.append(
        f"Serve / bare uvicorn: throughput {summary['ratio_rps']:.2f}x, p99 {summary['ratio_p99']:.2f}x"
    )
    return "\n".join(lines)
