"""Serve section: raylife's Ray Serve apps vs a bare FastAPI + uvicorn process on the same artifact.

Both serve the same API code (raylife.serve.api over raylife.serve.model_service), so the comparison is between
servers. The load comes from `raylife loadtest`'s client; Serve and bare alternate per repeat.
Batching on vs off is switched live on the running Serve app (user_config), also alternated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from raylife.catalog.lookup import get_spec, model_names
from raylife.cluster import free_port
from raylife.config import TrainConfig
from raylife.lifecycle.store import ModelStore
from raylife.lifecycle.train_and_store import train_and_register
from raylife.serve import config as serve_config
from raylife.serve import local as serving
from raylife.settings import Settings
from raylife_dev import loadtest, wrk
from raylife_dev.bench.stats import Section, alternate


@dataclass(frozen=True)
class ServeBenchSetup:
    served: tuple[str, ...]
    """Apps deployed, as `raylife serve` deploys them (all four: idle replicas cost CPU too)."""
    models: tuple[str, ...]
    """Apps load-tested, each against its bare server."""
    concurrencies: tuple[int, ...]
    requests: int
    repeats: int
    wrk_seconds: float
    """Seconds per wrk run (the third-party load generator, when installed)."""
    batching: bool
    """Also compare @serve.batch on vs off (concurrency 16)."""
    train_epochs: int
    """Epochs of the stand-in model trained when the bench store has none (speed, not quality,
    matters here: the architecture is the registry default)."""


def setup_for(quick: bool) -> ServeBenchSetup:
    if quick:
        return ServeBenchSetup(
            ("iris",), ("iris",), (16,), 200, 1, 2.0, batching=False, train_epochs=1
        )
    return ServeBenchSetup(
        tuple(model_names()),
        ("iris", "mnist"),
        (1, 16),
        1500,
        3,
        8.0,
        batching=True,
        train_epochs=2,
    )


def ensure_models(settings: Settings, setup: ServeBenchSetup, say: Callable[[str], None]) -> None:
    store = ModelStore(settings.store_uri)
    for model in setup.served:
        if store.pointer(model) is None:
            say(f"  serve: training a stand-in {model} ({setup.train_epochs} epochs) to serve")
            hparams = get_spec(model).defaults.replace(epochs=setup.train_epochs)
            cfg = TrainConfig(model=model, hparams=hparams, num_workers=1)
            train_and_register(cfg, settings, promote=True)


@contextlib.contextmanager
def bare_servers(models: tuple[str, ...], store: str) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        yield {m: stack.enter_context(loadtest.bare_server(m, store)) for m in models}


def set_batching(settings: Settings, local: serving.LocalServe, model: str, on: bool) -> None:
    serving.update_deployments(
        settings,
        local,
        [model],
        lambda deployment: (
            deployment.setdefault("user_config", {}).setdefault("batching", {}).update(enabled=on)
        ),
    )


@contextlib.contextmanager
def section_serve(settings: Settings, models: list[str]) -> Iterator[serving.LocalServe]:
    """Serve for one bench section, on a port of its own, shut down when the section ends: Serve's
    HTTP port cannot change while it runs, so the next section starts its own. The cluster stays
    (the runner owns it)."""
    from ray import serve

    local = serving.start(settings, models, port=free_port())
    try:
        yield local
    finally:
        with contextlib.suppress(Exception):  # a section may have shut it down itself
            serve.shutdown()


def run(settings: Settings, quick: bool, say: Callable[[str], None] = print) -> Section:
    setup = setup_for(quick)
    section = Section("serve", asdict(setup))
    started = time.monotonic()
    ensure_models(settings, setup, say)
    with section_serve(settings, list(setup.served)) as local:
        _measure(section, settings, local, setup, say)
    section.seconds = time.monotonic() - started
    return section


def _measure(
    section: Section,
    settings: Settings,
    local: serving.LocalServe,
    setup: ServeBenchSetup,
    say: Callable[[str], None],
) -> None:
    section.extra["cluster_env"] = serve_config.cluster_env("local")
    with bare_servers(setup.models, settings.store_uri) as bare:
        for model in setup.models:
            for concurrency in setup.concurrencies:
                say(f"  serve: {model} at concurrency {concurrency}, Serve vs bare uvicorn")
                summary = loadtest.compare(
                    local.url, bare[model], model, setup.requests, concurrency, setup.repeats
                )
                _add_comparison(section, f"{model} c{concurrency}", summary)
                say("    " + loadtest.format_comparison(summary).replace("\n", "\n    "))
        if "iris" in setup.models:
            say("  serve: CPU per request, by process (iris, concurrency 16)")
            section.extra["iris c16 CPU ms per request"] = {
                "serve": cpu_profile(client_load(f"{local.url}/iris", setup.requests)),
                "bare": cpu_profile(client_load(f"{bare['iris']}/iris", setup.requests)),
            }
            if wrk.available():
                _wrk_comparison(section, f"{local.url}/iris", f"{bare['iris']}/iris", setup, say)
            else:
                say("  serve: wrk not installed, its comparison skipped (apt-get install wrk)")
    if setup.batching:
        for model in setup.models:
            _batching(section, settings, local, model, setup, say)
    _checks(section, setup)


PROCESS_GROUPS = (
    ("Serve replica", "ServeReplica:"),
    ("HAProxy", "haproxy"),
    ("bare uvicorn", "raylife_dev.bare"),
    ("Serve controller and proxy", "ServeController"),
    ("Ray core (raylet, GCS, dashboard, agents)", "ray/"),
)
"""Where a request's CPU goes, by process: the first pattern found in a command line names it."""


def _cpu_by_group() -> dict[str, float]:
    import psutil

    totals: dict[str, float] = {}
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info.get("cmdline") or [])
        group = next((label for label, pattern in PROCESS_GROUPS if pattern in line), None)
        if group is None:
            continue
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            totals[group] = totals.get(group, 0.0) + times.user + times.system
    return totals


def client_load(url: str, requests: int) -> Callable[[], int]:
    """raylife's client: `requests` requests at concurrency 16 (a load for cpu_profile)."""

    def load() -> int:
        loadtest.run_load(url, requests, 16, 0, warmup=0)
        return requests

    return load


def cpu_profile(load: Callable[[], int]) -> dict[str, float]:
    """CPU milliseconds per request in each process group (and in this client) over one run.
    load: runs the load and returns the requests it made."""
    import os

    before, client_before = _cpu_by_group(), os.times()
    requests = load()
    after, client_after = _cpu_by_group(), os.times()
    per_request = {
        group: round((after[group] - before.get(group, 0.0)) * 1000 / requests, 3)
        for group in after
        if after[group] - before.get(group, 0.0) > 0
    }
    client = (client_after.user + client_after.system) - (client_before.user + client_before.system)
    per_request["load-test client (this process)"] = round(client * 1000 / requests, 3)
    return per_request


def _wrk_comparison(
    section: Section,
    serve_url: str,
    bare_url: str,
    setup: ServeBenchSetup,
    say: Callable[[str], None],
) -> None:
    """Iris at concurrency 16 driven by wrk, Serve and bare alternated (the issue's own method: a
    C client leaves both cores to the servers), then where each request's CPU goes under wrk."""
    import httpx

    say(f"  serve: iris at concurrency 16 under wrk ({setup.wrk_seconds:g} s runs), Serve vs bare")
    body = {"row": httpx.get(f"{serve_url}/info", timeout=30).json()["input"]["example"]}

    def run(url: str, seconds: float = setup.wrk_seconds) -> wrk.WrkResult:
        return wrk.run(url, body, seconds, 16)

    def load(url: str) -> dict[str, float]:
        result = run(url)
        return {
            "rps": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": result.non_2xx + result.socket_errors,
        }

    run(serve_url, 2)  # warm both before the first timed round
    run(bare_url, 2)
    measured = alternate(
        {"serve": lambda _: load(serve_url), "bare": lambda _: load(bare_url)}, setup.repeats, say
    )
    for label, values in measured.items():
        section.add(f"iris c16 wrk {label} rps", values["rps"], "1/s")
        section.add(f"iris c16 wrk {label} p50_ms", values["p50_ms"], "ms")
        section.add(f"iris c16 wrk {label} p99_ms", values["p99_ms"], "ms")
        section.add(f"iris c16 wrk {label} errors", values["errors"], "")

    section.extra["iris c16 wrk CPU ms per request"] = {
        "serve": cpu_profile(lambda: run(serve_url).requests),
        "bare": cpu_profile(lambda: run(bare_url).requests),
    }


def _add_comparison(section: Section, key: str, summary: dict[str, Any]) -> None:
    for label in ("serve", "bare"):
        runs = summary["runs"][label]
        section.add(f"{key} {label} rps", [r["rps"] for r in runs], "1/s")
        section.add(f"{key} {label} p50_ms", [r["p50_ms"] for r in runs], "ms")
        section.add(f"{key} {label} p99_ms", [r["p99_ms"] for r in runs], "ms")
        section.add(f"{key} {label} errors", [sum(r["errors"].values()) for r in runs], "")


def _batching(
    section: Section,
    settings: Settings,
    local: serving.LocalServe,
    model: str,
    setup: ServeBenchSetup,
    say: Callable[[str], None],
) -> None:
    say(f"  serve: {model} batching on vs off (concurrency 16)")
    url = f"{local.url}/{model}"

    def load(on: bool) -> dict[str, float]:
        set_batching(settings, local, model, on)
        result = loadtest.run_load(url, setup.requests, 16, 0, label="on" if on else "off")
        return {"rps": result.rps, "p99_ms": result.p99_ms}

    measured = alternate(
        {"on": lambda _: load(True), "off": lambda _: load(False)}, setup.repeats, say
    )
    default = _default_batching(model)
    set_batching(settings, local, model, default)
    for label, values in measured.items():
        section.add(f"{model} batching {label} rps", values["rps"], "1/s")
        section.add(f"{model} batching {label} p99_ms", values["p99_ms"], "ms")
    section.extra[f"{model} batching default"] = "on" if default else "off"


def _default_batching(model: str) -> bool:
    config = serve_config.for_models(serve_config.render("local"), [model])
    app = next(a for a in config["applications"] if a.get("args", {}).get("model") == model)
    return bool(app["deployments"][0]["user_config"]["batching"]["enabled"])


def _checks(section: Section, setup: ServeBenchSetup) -> None:
    if "iris" not in setup.models or 16 not in setup.concurrencies:
        return
    section.check(
        "Iris c=16 Serve / bare throughput",
        section.ratio("iris c16 serve rps", "iris c16 bare rps"),
        ">=",
        0.8,
    )
    section.check(
        "Iris c=16 Serve p99 / bare p99",
        section.ratio("iris c16 serve p99_ms", "iris c16 bare p99_ms"),
        "<=",
        1.5,
    )
    if "iris c16 wrk serve rps" in section.figures:
        section.check(
            "Iris c=16 Serve / bare throughput (wrk)",
            section.ratio("iris c16 wrk serve rps", "iris c16 wrk bare rps"),
            ">=",
            0.8,
        )
        section.check(
            "Iris c=16 Serve p99 / bare p99 (wrk)",
            section.ratio("iris c16 wrk serve p99_ms", "iris c16 wrk bare p99_ms"),
            "<=",
            1.5,
        )
