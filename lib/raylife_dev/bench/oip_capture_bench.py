"""oip-capture section: what request capture and the Open Inference Protocol cost, on iris's Serve app.

Three contenders, interleaved per round on the same running app: the native route with capture
off, the same route with every request captured (`user_config.capture` 1.0, switched live), and
the OIP `infer` route (capture off) with the same one-row input, under the model's prefix and at
the server's root (forwarded through a deployment handle). Then the count check: N requests
with capture on, Serve shut down gracefully (as `raylife serve` stops), and the Parquet rows
answered in that window counted: exactly N, none duplicated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from raylife.lifecycle.captures import read_captures
from raylife.serve import local as serving
from raylife.settings import Settings
from raylife_dev import loadtest
from raylife_dev.bench import serve_bench
from raylife_dev.bench.stats import Section, alternate

MODEL = "iris"


@dataclass(frozen=True)
class OipCaptureSetup:
    requests: int
    """Requests per measured run of each contender."""
    count_requests: int
    """Requests of the exact-count check (capture on, then a graceful stop)."""
    concurrency: int
    repeats: int


def setup_for(quick: bool) -> OipCaptureSetup:
    return OipCaptureSetup(300, 500, 16, 1) if quick else OipCaptureSetup(3000, 10_000, 16, 3)


def set_capture(settings: Settings, local: serving.LocalServe, fraction: float) -> None:
    serving.update_deployments(
        settings,
        local,
        [MODEL],
        lambda deployment: deployment.setdefault("user_config", {}).update(capture=fraction),
    )


def oip_body(example: list[float], shape: list[int]) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [1, *shape], "datatype": "FP32", "data": example}
    return {"inputs": [tensor]}


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    import httpx

    setup = setup_for(quick)
    section = Section("oip-capture", asdict(setup))
    started = time.monotonic()
    serve_bench.ensure_models(settings, serve_bench.setup_for(True), say)
    with serve_bench.section_serve(settings, [MODEL]) as local:
        url = f"{local.url}/{MODEL}"
        schema = httpx.get(f"{url}/info", timeout=30).json()["input"]
        native = {"row": schema["example"]}
        oip = oip_body(schema["example"], schema["shape"])
        _throughput(section, settings, local, setup, native, oip, say)
        _exact_count(section, settings, local, setup, say)
    section.seconds = time.monotonic() - started
    return section


def _throughput(
    section: Section,
    settings: Settings,
    local: serving.LocalServe,
    setup: OipCaptureSetup,
    native: dict[str, Any],
    oip: dict[str, Any],
    say: Callable[[str], None],
) -> None:
    url = f"{local.url}/{MODEL}"
    state = {"capture": -1.0}

    def load(target: str, body: dict[str, Any], capture: float) -> dict[str, float]:
        if state["capture"] != capture:  # a live user_config change, only when it differs
            set_capture(settings, local, capture)
            state["capture"] = capture
        result = loadtest.run_load(target, setup.requests, setup.concurrency, body=body)
        errors = sum(result.errors.values())
        return {"rps": result.rps, "p99_ms": result.p99_ms, "errors": errors}

    say(
        f"  oip-capture: {MODEL} native (capture off / every request) vs OIP infer (prefix, root), c16"
    )
    measured = alternate(
        {
            "native": lambda _: load(url, native, 0.0),
            "oip": lambda _: load(f"{url}/v2/models/{MODEL}/infer", oip, 0.0),
            "oip root": lambda _: load(f"{local.url}/v2/models/{MODEL}/infer", oip, 0.0),
            "native captured": lambda _: load(url, native, 1.0),
        },
        setup.repeats,
        say,
    )
    for label, values in measured.items():
        section.add(f"{label} rps", values["rps"], "1/s")
        section.add(f"{label} p99_ms", values["p99_ms"], "ms")
        section.add(f"{label} errors", values["errors"], "")
    section.check(
        "capture of every request: throughput on / off",
        section.ratio("native captured rps", "native rps"),
        ">=",
        0.95,
    )
    section.check(
        "OIP infer / native throughput", section.ratio("oip rps", "native rps"), ">=", 0.9
    )
    # The root's /v2 forwards through a deployment handle (one hop more): measured, not gated.
    section.extra["OIP at the root / native throughput"] = round(
        section.ratio("oip root rps", "native rps"), 3
    )


def _exact_count(
    section: Section,
    settings: Settings,
    local: serving.LocalServe,
    setup: OipCaptureSetup,
    say: Callable[[str], None],
) -> None:
    import httpx
    from ray import serve

    n = setup.count_requests
    say(f"  oip-capture: {n} requests captured, then a graceful Serve shutdown")
    set_capture(settings, local, 1.0)
    since = datetime.now(UTC)
    result = loadtest.run_load(f"{local.url}/{MODEL}", n, setup.concurrency, warmup=0)
    dropped = httpx.get(f"{local.url}/{MODEL}/info", timeout=30).json()["capture"]["dropped"]
    stop_started = time.monotonic()
    serve.shutdown()  # what `raylife serve` does on Ctrl-C / SIGTERM: replicas drain, then flush
    stopped_s = time.monotonic() - stop_started
    table = read_captures(settings.store_uri, MODEL, since=since).to_pandas()
    duplicates = int(table.duplicated(["request_id", "row"]).sum())
    section.extra["count check"] = {
        "requests": n,
        "answered": result.ok_final,
        "captured rows": len(table),
        "duplicates": duplicates,
        "dropped (replica queues)": dropped,
        "graceful stop s": round(stopped_s, 2),
        "files": int(table["replica"].nunique()) if len(table) else 0,
    }
    say(f"    {section.extra['count check']}")
    section.check(
        f"captured rows lost or duplicated ({n} requests, graceful stop)",
        abs(len(table) - result.ok_final) + duplicates + (n - result.ok_final),
        "<=",
        0,
    )
